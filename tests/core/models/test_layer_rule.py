"""layer=auto reads what the model computes: never a module after the global pooling, never a single
token, never a residual branch that is zero before its add; where the name-based rule lands on one of
those, the output of the last block with a spatial map is read instead, or the model is refused in
one line. On timm families where the name-based rule went wrong (issue 33), with random weights."""

from __future__ import annotations

import pytest
import torch

from nnvis_core.models import LayerNotFound
from nnvis_core.models.layers import (
    default_layer,
    first_conv,
    reached,
    readable_problem,
    remember_input_size,
    spatial_problem,
)
from nnvis_core.models.outputs import TOKENS, Layout, output_layout
from nnvis_core.models.timm_source import import_timm

timm = import_timm()

# family: (model, the layer the name-based rule picked, and why it could not carry a map)
WRONG_BEFORE = {
    "dla34": "fc",  # a 1x1 classifier conv after the global pooling
    "ghostnetv2_100": "conv_head",  # the same
    "resnetv2_50": "head",  # (N, C) logits
    "regnety_002": "s4.b7.conv3",  # a residual branch whose last norm starts at zero
}


def built(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


def map_of(model: torch.nn.Module, layer: str) -> torch.Tensor:
    """Grad-CAM's ingredients at `layer` on a seeded noise image: activations x gradients, summed."""
    captured = {}
    module = model.get_submodule(layer)
    handle = module.register_forward_hook(lambda m, args, out: captured.setdefault("out", out))
    try:
        x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        logits = model(x)
        activation = captured["out"]
        gradient, = torch.autograd.grad(logits[0, logits[0].argmax()], activation)
    finally:
        handle.remove()
    return (gradient * activation).sum(dim=1)[0]


@pytest.mark.parametrize("name", WRONG_BEFORE)
def test_auto_reads_a_spatial_block_output_where_the_name_rule_did_not(name):
    model = built(name)
    assert spatial_problem(model, WRONG_BEFORE[name]) is not None
    layer = default_layer(model)
    assert spatial_problem(model, layer) is None and layer != first_conv(model)
    cam = map_of(model, layer)
    assert cam.dim() == 2 and min(cam.shape) > 1 and float(cam.max() - cam.min()) > 0


def test_a_token_model_whose_default_is_one_token_reads_its_last_readable_block():
    """CrossViT's name rule lands on a class-token projection; at its own 240 px the last block a map
    reader can read is its first branch's transformer blocks (20x20 patches and a class token)."""
    model = built("crossvit_tiny_240")
    assert "single token" in spatial_problem(model, "blocks.2.revert_projs.1.0")
    layer = default_layer(model)
    assert layer == "blocks.2.blocks.0" and readable_problem(model, layer) is None


def test_a_model_with_no_readable_layer_is_refused_in_one_line_that_says_so():
    """At 64 px CrossViT resizes its input inside forward, so no token count fits a 64 px patch grid:
    no layer to suggest, and the refusal says so instead of naming one the plugins would refuse."""
    model = built("crossvit_tiny_240")
    remember_input_size(model, (64, 64))
    with pytest.raises(LayerNotFound) as refused:
        default_layer(model)
    message = str(refused.value.args[0])
    assert "\n" not in message and "no repeated blocks" in message
    assert message.endswith("no layer of CrossVit gives a spatial output the class score depends on at 64x64 px "
                            "that a map reader can read")


def test_a_layer_only_the_class_token_leaves_is_not_read():
    """CoaT-Lite's final norm feeds the head through its class token alone: the score's gradient reaches
    one of its positions. The last serial block but one is read instead, which the score does reach."""
    model = built("coat_lite_tiny")
    assert "reaches at most one position" in spatial_problem(model, "norm4")
    layer = default_layer(model)
    assert layer.startswith("serial_blocks4.") and readable_problem(model, layer) is None
    assert reached(model, layer) and not reached(model, "norm4")


def test_a_conv_inside_a_blocks_branch_is_read_at_its_block():
    """EfficientFormerV2's last conv is in its blocks' Mlp, a residual branch: the block's output, after
    the add, is read."""
    assert default_layer(built("efficientformerv2_s0")) == "stages.3.blocks.3"


def test_a_stem_is_never_the_fallback():
    """Hiera's only map a reader could read is its patch embedding's output (its tokens are unrolled):
    refused rather than read."""
    with pytest.raises(LayerNotFound, match=r"no layer of Hiera gives .*$"):
        default_layer(built("hiera_tiny_224"))


def test_tokens_behind_conv_stages_lie_on_the_grid_timm_states():
    """PiT's tokens come from an overlapping conv embedding and conv pooling, with no patch grid stated;
    its feature_info states stride 32 for the last stage, whose second-to-last block is the last one
    whose patch tokens reach the class token through attention."""
    model = built("pit_ti_224")
    layer = default_layer(model)
    assert layer == "transformers.2.blocks.2"
    captured = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, args, out: captured.setdefault("out", out))
    try:
        logits = model(torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    finally:
        handle.remove()
    tokens = captured["out"]
    assert output_layout(model, tokens, (224, 224)) == Layout(TOKENS, 1, (7, 7))
    gradient, = torch.autograd.grad(logits[0, logits[0].argmax()], tokens)
    assert int((gradient[0, 1:].abs().sum(dim=-1) > 0).sum()) == 49  # every patch carries the score


def test_xcit_tokens_are_read_on_the_grid_its_conv_embedding_states():
    """XCiT embeds patches with strided convs (no kernel = stride conv), stating its patch size and
    count: its tokens lie on that 8 px grid. Its class-attention blocks come after the trunk, and the
    picture-making plugins spread over the trunk, not over those two blocks alone."""
    from nnvis_core.models.outputs import patch_size
    from nnvis_plugins.featvis.activations import default_activations_layer
    from nnvis_plugins.synthesis.layers import spread_layers

    model = built("xcit_nano_12_p8_224")
    remember_input_size(model, (64, 64))
    assert patch_size(model) == 8
    assert default_layer(model) == "cls_attn_blocks.1.norm1"
    assert default_activations_layer(model) == "blocks.7"
    assert spread_layers(model) == ["blocks.0", "blocks.4", "blocks.9", "cls_attn_blocks.1"]


def test_a_class_token_alone_is_never_a_block_of_the_run():
    """CaiT's class-attention blocks return the class token alone: no map, so never the blocks the
    picture-making plugins read (one token is not laid on a 1x1 grid)."""
    from nnvis_core.models.layers import repeated_blocks

    blocks, _ = repeated_blocks(built("cait_xxs24_224"))
    assert blocks[-1] == "blocks.23"


def test_a_model_without_a_run_of_blocks_spreads_over_its_readable_blocks():
    """CrossViT's multi-scale blocks return lists: the picture-making plugins read the outermost blocks
    whose tokens lie on a grid, in forward order, instead of refusing."""
    from nnvis_core.models.layers import model_blocks
    from nnvis_plugins.featvis.activations import default_activations_layer

    model = built("crossvit_tiny_240")
    blocks = model_blocks(model)
    assert {"blocks.1.blocks.0", "blocks.2.blocks.0"} <= set(blocks)  # the first branch's blocks; no stem
    assert all(readable_problem(model, block, gradient=False) is None for block in blocks)
    assert default_activations_layer(model) == blocks[len(blocks) // 2]
