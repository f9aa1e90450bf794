"""Unit-level views on token and channels-last layers: channel objectives, layer sampling,
top units, semantic dictionaries and pooled features read a ViT's tokens as a patch grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.toolkit.featvis import objectives as obj
from nnvis_core.toolkit.featvis.render import Settings, layer_outputs, render
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins.dataset.features import pool
from nnvis_plugins.featvis.layers import hidden_units, sample_layers
from nnvis_plugins.featvis.semantic_dictionary import top_channels


def tiny_vit(classes: int = 8) -> nn.Module:
    """A torchvision ViT for the demo's 64-px images: 8-px patches, an 8x8 grid, 4 blocks."""
    torch.manual_seed(0)
    model = torchvision_models().VisionTransformer(image_size=64, patch_size=8, num_layers=4, num_heads=2,
                                                   hidden_dim=32, mlp_dim=128, num_classes=classes)
    nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision starts the head at zero
    return model.eval()


HIDDEN = "encoder.layers.encoder_layer_1.mlp.0"  # Linear 32 -> 128: the MLP's hidden units


def test_a_token_layer_is_recorded_as_maps_on_its_patch_grid():
    model, x = tiny_vit(), torch.randn(2, 3, 64, 64)
    recorded = layer_outputs(model, x, [HIDDEN])[HIDDEN]
    tokens = {}
    handle = model.get_submodule(HIDDEN).register_forward_hook(lambda m, a, out: tokens.setdefault("t", out))
    with torch.no_grad():
        model(x)
    handle.remove()
    raw = tokens["t"]  # (2, 65, 128): a class token, then 64 patches in raster order
    assert raw.shape == (2, 65, 128) and recorded.shape == (2, 128, 8, 8)
    assert torch.equal(recorded[1, 7, 2, 5], raw[1, 1 + 2 * 8 + 5, 7])


def test_a_channel_objective_on_tokens_is_the_mean_over_patch_tokens_and_rises():
    model = tiny_vit()
    x = torch.randn(1, 3, 64, 64)
    maps = layer_outputs(model, x, [HIDDEN])[HIDDEN]
    with torch.no_grad():
        raw = model.encoder.layers[1].mlp[0](model.encoder.layers[1].ln_2(
            model.encoder.layers[1].self_attention(*[model.encoder.layers[1].ln_1(_block_input(model, x))] * 3,
                                                   need_weights=False)[0] + _block_input(model, x)))
    score = obj.channel(HIDDEN, 9)({HIDDEN: maps})
    assert score.item() == pytest.approx(raw[0, 1:, 9].mean().item(), abs=1e-5)  # class token left out
    made = render(model, obj.channel(HIDDEN, [3, 9]), 2, Settings(size=64, steps=32, lr=0.2, seed=1))
    start = render(model, obj.channel(HIDDEN, [3, 9]), 2, Settings(size=64, steps=0, lr=0.2, seed=1))
    assert (made.scores > start.scores + 0.05).all()  # both units gain, from the same start


def _block_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The token sequence entering encoder block 1 (embedding, class token, position, block 0)."""
    tokens = model._process_input(x)
    tokens = torch.cat([model.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
    tokens = model.encoder.layers[0](tokens + model.encoder.pos_embedding)
    return tokens


def test_layers_sampled_on_a_transformer_are_its_mlp_hidden_units_not_attention():
    assert sample_layers(tiny_vit(), 2) == ["encoder.layers.encoder_layer_2.mlp.0",
                                            "encoder.layers.encoder_layer_3.mlp.0"]
    swin = torchvision_models().swin_t(weights=None).eval()
    # Swin's qkv Linear widens 3x, its MLP 4x: the MLP is what is read.
    assert hidden_units(swin, "features.7") == "features.7.0.mlp.0"
    assert sample_layers(swin, 1) == ["features.7.0.mlp.0"]


def test_semantic_dictionary_positions_are_the_patch_grid():
    units, activations = top_channels(tiny_vit(), torch.randn(1, 3, 64, 64), "encoder.layers.encoder_layer_3.ln_1", 3)
    assert units.shape == activations.shape == (8, 8, 3)
    assert (np.diff(activations, axis=2) <= 0).all()


def test_pooled_token_features_are_the_mean_of_the_patch_tokens():
    model = tiny_vit()
    tokens = torch.randn(2, 65, 32)
    pooled = pool(tokens, model, (64, 64))
    assert torch.allclose(pooled, tokens[:, 1:].mean(dim=1))
    assert pool(tokens).shape == (2, 65 * 32)  # without the model nothing tells tokens apart


def test_top_units_on_a_vit_read_the_patch_grid(tmp_path):
    from nnvis_core.run.registry import load_registry
    from nnvis_core.testing import check_plugin

    check = check_plugin(load_registry().plugin("top_units"), params={"channels": "0,5", "examples": 3},
                         images=4, model=tiny_vit())
    [result] = check.results.values()
    titles = [a.title for a in result.artifacts]
    # auto: the middle block and the default layer (the last block's first norm), never conv_proj
    assert titles == ["encoder.layers.encoder_layer_2 channel 0", "encoder.layers.encoder_layer_2 channel 5",
                      "encoder.layers.encoder_layer_3.ln_1 channel 0", "encoder.layers.encoder_layer_3.ln_1 channel 5"]
    assert all(len(a.images) == 3 for a in result.artifacts)


def test_channel_maximization_auto_on_a_vit_optimizes_mlp_hidden_units():
    from nnvis_core.run.registry import load_registry
    from nnvis_core.testing import check_plugin

    params = {"sample": 1, "per_layer": 2, "steps": 8, "cache": False}
    check = check_plugin(load_registry().plugin("channel_maximization"), params=params, images=1, model=tiny_vit())
    [result] = check.results.values()
    assert [a.title for a in result.artifacts] == ["channel maximization at encoder.layers.encoder_layer_3.mlp.0"]
    assert np.isfinite(list(result.metrics.values())).all()


def test_an_image_size_the_model_rejects_is_a_one_line_objective_error():
    with pytest.raises(obj.ObjectiveError, match=r"the model rejects 32x32 images .*set size to its input size"):
        render(tiny_vit(), obj.channel(HIDDEN, 0), 1, Settings(size=32, steps=2))
