"""Attention capture (nnvis_core.toolkit.attention) and the transformer plugins (nnvis_plugins.transformer).

The mathematics is checked on a tiny ViT-like model whose attention the tests
compute by hand; torchvision's vit_b_16 and swin_t (random weights) check that a
capture leaves real models' outputs unchanged, and the plugins run on vit_b_16
through their run method. The demo convnet checks the one-line refusals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.images import ImageRecord
from nnvis_core.models.loaded import LoadedModel, Preprocess
from nnvis_core.testing import ContractError, check_plugin, model_changes, model_state
from nnvis_core.toolkit import AttributionError, preserved
from nnvis_core.toolkit.attention import (
    EXPLICIT,
    FUSED,
    MULTI_HEAD,
    captured_attention,
    global_attention,
)
from nnvis_plugins.transformer import maps, relevance, rollout

TOL = 1e-6


class Block(nn.Module):
    """Pre-norm transformer block; attention through F.scaled_dot_product_attention or nn.MultiheadAttention."""

    def __init__(self, dim: int, heads: int, kind: str) -> None:
        super().__init__()
        self.heads, self.kind = heads, kind
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        if kind == "sdpa":
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        else:
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, heads, T, d) queries, keys and values of the normalized input x."""
        b, t, c = x.shape
        weight, bias = (self.qkv.weight, self.qkv.bias) if self.kind == "sdpa" else (
            self.attn.in_proj_weight, self.attn.in_proj_bias)
        qkv = F.linear(x, weight, bias).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def mix(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The block's output from its input and the attention output (B, heads, T, d)."""
        b, h, t, d = attended.shape
        merged = attended.transpose(1, 2).reshape(b, t, h * d)
        projection = self.proj if self.kind == "sdpa" else self.attn.out_proj
        x = x + projection(merged)
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "sdpa":
            q, k, v = self.qkv_heads(self.norm1(x))
            return self.mix(x, F.scaled_dot_product_attention(q, k, v))
        y = self.norm1(x)
        attended, _ = self.attn(y, y, y, need_weights=False)
        x = x + attended
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """4-pixel patches, a class token, no position embedding (so any input size works), 2 blocks."""

    def __init__(self, kind: str = "sdpa", dim: int = 8, heads: int = 2, depth: int = 2, classes: int = 3,
                 class_token: bool = True) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim)) if class_token else None
        self.blocks = nn.ModuleList(Block(dim, heads, kind) for _ in range(depth))
        self.head = nn.Linear(dim, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        if self.cls is None:
            return tokens
        return torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(tokens[:, 0] if self.cls is not None else tokens.mean(dim=1))


def by_hand(model: TinyViT, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The model's output and each layer's softmax(q k^T / sqrt(d)), computed without the model's attention call."""
    tokens, weights = model.embed(x), []
    for block in model.blocks:
        q, k, v = block.qkv_heads(block.norm1(tokens))
        attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        if attention.requires_grad:
            attention.retain_grad()
        weights.append(attention)
        tokens = block.mix(tokens, attention @ v)
    return model.head(tokens[:, 0] if model.cls is not None else tokens.mean(dim=1)), weights


@pytest.fixture
def tiny() -> TinyViT:
    torch.manual_seed(0)
    return TinyViT().eval()


def image(height: int = 20, width: int = 28, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


# --- the capture -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sdpa", "mha"])
def test_captured_weights_are_softmax_qk_and_outputs_do_not_change(kind):
    torch.manual_seed(0)
    model = TinyViT(kind).eval()
    x = image()  # non-square: a 5x7 patch grid and a class token, 36 tokens
    before = model_state(model)
    with torch.no_grad():
        plain = model(x)
        with captured_attention(model) as attentions:
            captured = model(x)
        expected_output, expected = by_hand(model, x)
    assert model_changes(before, model_state(model)) == []
    assert (captured - plain).abs().max() <= TOL
    assert (expected_output - plain).abs().max() <= 1e-5
    assert [a.source for a in attentions] == [FUSED if kind == "sdpa" else MULTI_HEAD] * 2
    for attention, weights in zip(attentions, expected):
        assert attention.weights.shape == (2, 2, 36, 36)
        torch.testing.assert_close(attention.weights, weights, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["sdpa", "mha"])
def test_capture_keeps_the_graph_for_gradients(kind):
    torch.manual_seed(0)
    tiny = TinyViT(kind).eval()
    x = image(batch=1)
    with captured_attention(tiny) as attentions:
        score = tiny(x)[0, 1]
    grads = torch.autograd.grad(score, [a.weights for a in attentions])
    output, weights = by_hand(tiny, x)
    output[0, 1].backward()
    for grad, weight in zip(grads, weights):
        torch.testing.assert_close(grad, weight.grad, atol=1e-5, rtol=1e-4)
    assert all(p.grad is not None for p in tiny.parameters())  # the by-hand pass, not the capture
    tiny.zero_grad(set_to_none=True)


def test_multihead_attention_in_every_form():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2).eval()  # sequence-first, need_weights by default
    x = torch.randn(5, 3, 8)
    with torch.no_grad():
        out, weights = mha(x, x, x)
        per_head_out, per_head = mha(x[:, 0], x[:, 0], x[:, 0], average_attn_weights=False)  # unbatched
        with captured_attention(mha) as attentions:
            out2, weights2 = mha(x, x, x)
            per_head_out2, per_head2 = mha(x[:, 0], x[:, 0], x[:, 0], average_attn_weights=False)
    for a, b in ((out, out2), (weights, weights2), (per_head_out, per_head_out2), (per_head, per_head2)):
        assert a.shape == b.shape and (a - b).abs().max() <= TOL
    assert [tuple(a.weights.shape) for a in attentions] == [(3, 2, 5, 5), (1, 2, 5, 5)]
    torch.testing.assert_close(attentions[0].weights.mean(dim=1), weights)

    batch_first = nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=4)
    query, key, value = torch.randn(3, 5, 8), torch.randn(3, 7, 6), torch.randn(3, 7, 4)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[:, -2:] = True
    causal = torch.rand(5, 7) > 0.7  # True: masked out
    causal[:, 0] = False
    for options in ({"key_padding_mask": padding}, {"attn_mask": causal}, {"attn_mask": torch.randn(6, 5, 7)}):
        expected = batch_first(query, key, value, **options)
        with captured_attention(batch_first) as attentions:
            got = batch_first(query, key, value, **options)
        assert (got[0] - expected[0]).abs().max() <= TOL and (got[1] - expected[1]).abs().max() <= TOL, options
        assert attentions[0].weights.shape == (3, 2, 5, 7) and attentions[0].weights.requires_grad

    extra = nn.MultiheadAttention(8, 2, add_bias_kv=True).eval()  # computed by torch itself, recorded detached
    with torch.no_grad():
        expected = extra(x, x, x)[0]
    with captured_attention(extra) as attentions:
        got = extra(x, x, x)[0]
    assert (got - expected).abs().max() <= TOL and attentions[0].weights.shape == (3, 2, 5, 6)
    assert not attentions[0].weights.requires_grad


def test_transformer_encoder_layer_fast_path_is_not_taken():
    torch.manual_seed(0)
    layer = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2,
                                  enable_nested_tensor=False).eval()
    x = torch.randn(2, 10, 16)
    with torch.inference_mode():  # where torch takes its fused kernels
        plain = layer(x)
    with torch.no_grad(), captured_attention(layer) as attentions:
        captured = layer(x)
    assert (captured - plain).abs().max() <= 1e-5
    assert len(attentions) == 2 and attentions[0].weights.shape == (2, 4, 10, 10)


def test_scaled_dot_product_options_match_the_kernel():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    mask = torch.rand(6, 6) > 0.3
    mask.fill_diagonal_(True)
    bias = torch.randn(6, 6)
    cases = [{"is_causal": True}, {"attn_mask": mask}, {"attn_mask": bias, "scale": 0.3}, {"enable_gqa": True}]
    for options in cases:
        keys, values = (k, v) if options.get("enable_gqa") else (k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1))
        expected = F.scaled_dot_product_attention(q, keys, values, **options)
        with captured_attention(nn.Identity()) as attentions:
            got = F.scaled_dot_product_attention(q, keys, values, **options)
        assert (got - expected).abs().max() <= 1e-5, options
        assert attentions[0].weights.shape == (2, 4, 6, 6)


def test_a_convnet_has_no_attention_and_methods_refuse_in_one_line():
    from nnvis_core.demo import load_demo_model

    model = load_demo_model().eval()
    with torch.no_grad(), captured_attention(model) as attentions:
        model(torch.randn(1, 3, 64, 64))
    assert attentions == []
    with pytest.raises(AttributionError, match="needs a transformer") as error:
        rollout.attribute(model, torch.randn(1, 3, 64, 64))
    assert "\n" not in str(error.value)


# --- the methods against their formulas ----------------------------------------------------------


def rollout_by_formula(weights: list[np.ndarray], fusion: str, discard: float) -> np.ndarray:
    """Abnar & Zuidema's rollout for one image, written out with loops."""
    tokens = weights[0].shape[-1]
    joint = np.eye(tokens)
    for layer in weights:
        fused = {"mean": layer.mean(0), "max": layer.max(0), "min": layer.min(0)}[fusion].astype(np.float64)
        for row in range(tokens):
            others = [col for col in range(tokens) if col != row]
            drop = int(discard * (tokens - 1))
            for col in sorted(others, key=lambda c: fused[row, c])[:drop]:
                fused[row, col] = 0.0
        step = fused + np.eye(tokens)
        step /= step.sum(axis=1, keepdims=True)
        joint = step @ joint
    return joint


@pytest.mark.parametrize("fusion,discard", [("mean", 0.0), ("max", 0.5), ("min", 0.9)])
def test_rollout_equals_the_formula(tiny, fusion, discard):
    x = image(batch=1)
    with torch.no_grad():
        _, weights = by_hand(tiny, x)
    joint = rollout_by_formula([w[0].numpy() for w in weights], fusion, discard)
    expected = joint[0, 1:].reshape(5, 7)  # the class token's row over the 5x7 patches
    got = rollout.attribute(tiny, x, fusion, discard, upsample=False)
    assert got.shape == (1, 1, 5, 7)
    np.testing.assert_allclose(got[0, 0].numpy(), expected, atol=1e-6)
    assert rollout.attribute(tiny, x, fusion, discard).shape == (1, 1, 20, 28)


def test_rollout_without_a_class_token_averages_the_queries():
    torch.manual_seed(0)
    model = TinyViT(class_token=False).eval()
    x = image(16, 16, batch=1)
    with torch.no_grad():
        _, weights = by_hand(model, x)
    joint = rollout_by_formula([w[0].numpy() for w in weights], "mean", 0.0)
    got = rollout.attribute(model, x, upsample=False)
    np.testing.assert_allclose(got[0, 0].numpy(), joint.mean(axis=0).reshape(4, 4), atol=1e-6)


def test_transformer_attribution_equals_the_formula(tiny):
    x = image(batch=1)
    target = 2
    output, weights = by_hand(tiny, x)
    output[0, target].backward()
    tiny.zero_grad(set_to_none=True)
    tokens = weights[0].shape[-1]
    relevance_matrix = np.eye(tokens)
    for attention in weights:
        a, g = attention[0].detach().double().numpy(), attention.grad[0].double().numpy()
        weighted = np.maximum(g * a, 0).mean(axis=0)
        relevance_matrix = relevance_matrix + weighted @ relevance_matrix
    got = relevance.attribute(tiny, x, target, upsample=False)
    np.testing.assert_allclose(got[0, 0].numpy(), relevance_matrix[0, 1:].reshape(5, 7), rtol=1e-4, atol=1e-6)
    other = relevance.attribute(tiny, x, 0, upsample=False)
    assert not torch.allclose(got, other)  # class-specific, unlike rollout


def test_attention_maps_are_the_class_token_rows(tiny):
    x = image(batch=1)
    with torch.no_grad():
        _, weights = by_hand(tiny, x)
    grids = maps.attention_maps(tiny, x, layers="-1", heads="all")
    assert list(grids) == [1] and grids[1].shape == (1, 2, 5, 7)
    torch.testing.assert_close(grids[1][0], weights[1][0, :, 0, 1:].reshape(2, 5, 7), atol=TOL, rtol=0)
    assert maps.parse_layers("all", 12) == list(range(12)) and maps.parse_layers("last", 12) == [11]
    with pytest.raises(AttributionError, match="has 2 attention layers"):
        maps.attention_maps(tiny, x, layers="5")
    assert maps._layers_problem("first") is not None and maps._layers_problem("0,-1") is None


# --- the plugins ---------------------------------------------------------------------------------


def context(module: nn.Module, pixels: np.ndarray, classes: int) -> tuple[RunContext, ImageItem]:
    """A run context around `module` and one image item, as the runner would build them."""
    loaded = LoadedModel(module, "test", "none", [f"class {i}" for i in range(classes)], Preprocess(None, None), "test")
    ctx = RunContext(loaded, torch.device("cpu"))
    tensor = loaded.preprocess.normalize(pixels)
    with torch.no_grad():
        probabilities = torch.softmax(module(tensor[None]), dim=1)[0]
    return ctx, ImageItem(ImageRecord(0, Path("x.png"), "x.png", None), pixels, tensor, None, probabilities)


def demo_pixels(size: tuple[int, int]) -> np.ndarray:
    """A demo picture (a shape on a texture) resized to (height, width)."""
    from PIL import Image as PILImage


    picture = min((Path(__file__).resolve().parents[3] / "examples" / "demo" / "images").rglob("*.png"))
    return np.array(PILImage.open(picture).convert("RGB").resize(size[::-1], PILImage.BILINEAR), dtype=np.uint8)


PLUGINS = [rollout.AttentionRollout, relevance.TransformerAttribution, maps.AttentionMaps]


def run_plugin(plugin, ctx, item, **params):
    values = {p.name: p.default for p in plugin.params} | {"faithfulness_steps": 2} | params
    before = model_state(ctx.module)
    result = plugin.run_image(ctx, item, values)
    assert model_changes(before, model_state(ctx.module)) == []
    result.validate()
    return result


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_plugins_on_the_tiny_model_at_a_non_square_size(tiny, plugin):
    ctx, item = context(tiny, demo_pixels((20, 28)), 3)
    result = run_plugin(plugin(), ctx, item)
    heat = result.artifacts[0].values
    assert heat.shape == (20, 28) and np.isfinite(heat).all() and heat.std() > 0
    caption = result.artifacts[0].caption
    assert "1 prefix token dropped" in caption and "5x7 patches" in caption
    assert "layer" in caption
    if plugin is not relevance.TransformerAttribution:
        assert "class-agnostic" in caption


def test_attention_maps_gallery_has_a_tile_per_layer_and_head(tiny):
    ctx, item = context(tiny, demo_pixels((20, 28)), 3)
    result = run_plugin(maps.AttentionMaps(), ctx, item, heads="all", faithfulness_steps=0)
    gallery = result.artifacts[1]
    assert len(gallery.images) == 4 and gallery.labels[-1] == "layer 1 head 1"
    assert gallery.images[0].shape == (69, 96, 3)


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_plugins_refuse_the_demo_convnet_in_one_line(plugin, tmp_path):
    with pytest.raises(ContractError) as error:
        check_plugin(plugin(), {"faithfulness_steps": 0}, images=1, out_dir=tmp_path)
    message = str(error.value)
    assert f"{plugin.name} needs a transformer: the model computed no attention in its forward pass" in message


# --- torchvision models (random weights) -----------------------------------------------------------


@pytest.fixture(scope="module")
def vit_b_16():
    from nnvis_core.torchvision_compat import torchvision_models

    torch.manual_seed(0)
    model = torchvision_models().vit_b_16(weights=None).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the head at zero: no gradient at all
    return model


@pytest.mark.slow
def test_vit_b_16_outputs_equal_with_capture(vit_b_16):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    before = model_state(vit_b_16)
    with torch.no_grad():
        plain = vit_b_16(x)
        with captured_attention(vit_b_16) as attentions:
            captured = vit_b_16(x)
    assert (captured - plain).abs().max() <= TOL
    assert len(attentions) == 12 and attentions[0].weights.shape == (1, 12, 197, 197)
    assert all(a.source == MULTI_HEAD for a in attentions)
    assert model_changes(before, model_state(vit_b_16)) == []


@pytest.mark.slow
def test_plugins_on_vit_b_16(vit_b_16):
    ctx, item = context(vit_b_16, demo_pixels((224, 224)), 1000)
    with preserved(vit_b_16):
        for plugin in PLUGINS:
            result = run_plugin(plugin(), ctx, item, faithfulness_steps=0)
            heat = result.artifacts[0].values
            assert heat.shape == (224, 224) and np.isfinite(heat).all() and heat.std() > 0, plugin.name
            assert "12 attention layers (0-11)" in result.artifacts[0].caption or "layers 0-11 of 12" in \
                result.artifacts[0].caption, result.artifacts[0].caption
            assert "14x14 patches" in result.artifacts[0].caption


@pytest.mark.slow
def test_swin_t_outputs_equal_and_rollout_refuses_windows():
    from nnvis_core.torchvision_compat import torchvision_models

    torch.manual_seed(0)
    model = torchvision_models().swin_t(weights=None).eval()
    x = torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(0))  # non-square
    with torch.no_grad():
        plain = model(x)
        with captured_attention(model) as attentions:
            captured = model(x)
    assert (captured - plain).abs().max() <= TOL
    assert len(attentions) == 12 and all(a.source == EXPLICIT for a in attentions)
    assert attentions[0].weights.shape[-1] == 49 and attentions[0].weights.shape[0] > 1  # 7x7 windows
    with pytest.raises(AttributionError, match="local windows") as error:
        global_attention(attentions, 1, "attention_rollout")
    assert "\n" not in str(error.value)
