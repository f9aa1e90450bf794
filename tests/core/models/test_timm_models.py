"""nnvis's layer layouts, default layers, Grad-CAM and transformer methods on timm's model families.

Random weights, at small input sizes and reduced depths where a family allows it
(the kwargs go to timm.create_model), so that every family costs a few seconds:
what is checked is the wiring (which layer, which layout, how many prefix tokens,
which attention is captured), not what trained weights would show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core import torchvision_compat as tv

tv.import_torchvision()  # timm imports torchvision: it must come through nnvis's import first
timm = pytest.importorskip("timm")

from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.images import ImageRecord
from nnvis_core.models.layers import default_layer
from nnvis_core.models.loaded import LoadedModel, Preprocess
from nnvis_core.models.outputs import CHANNELS_LAST, MAP, TOKENS, Layout, output_layout
from nnvis_core.testing import check_plugin, model_changes, model_state
from nnvis_core.toolkit.attention import FUSED, captured_attention
from nnvis_plugins.attribution import gradcam
from nnvis_plugins.transformer import maps, relevance, rollout

GLOBAL, WINDOWS, NONE, NO_GRID = "global", "windows", "none", "no grid"
REFUSALS = {
    WINDOWS: "attends within local windows",
    NONE: "needs a transformer: the model computed no attention",
    NO_GRID: "tokens, but the model has no patch embedding",
}


@dataclass(frozen=True)
class Family:
    name: str
    kwargs: dict = field(hash=False)
    size: int  # the input's height and width
    kind: str  # layout of the default layer's output
    default: str  # the layer layer=auto picks
    attention: str  # GLOBAL: the transformer methods run; else the kind of their refusal
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def __str__(self) -> str:
        return self.name


FAMILIES = [
    # class + distillation token
    Family("deit_tiny_distilled_patch16_224", {"img_size": 112, "depth": 4}, 112, TOKENS, "blocks.3.norm1", GLOBAL, 2,
           (7, 7)),
    # class token + 4 registers
    Family("vit_small_patch14_reg4_dinov2", {"img_size": 56, "depth": 3}, 56, TOKENS, "blocks.2.norm1", GLOBAL, 5,
           (4, 4)),
    # 4 registers, no class token, average-pooled patches
    Family("vit_little_patch16_reg4_gap_256", {"img_size": 64, "depth": 3}, 64, TOKENS, "blocks.2.norm1", GLOBAL, 4,
           (4, 4)),
    # rotary position embedding applied to q and k before the fused attention
    Family("eva02_tiny_patch14_224", {"img_size": 112, "depth": 3}, 112, TOKENS, "blocks.2.norm1", GLOBAL, 1, (8, 8)),
    # relative position bias passed to the fused attention as a float mask
    Family("beit_base_patch16_224", {"img_size": 64, "depth": 2}, 64, TOKENS, "blocks.1.norm1", GLOBAL, 1, (4, 4)),
    # ResNet stem, then a 1x1 projection to tokens: a 32-pixel patch grid with no kernel = stride conv
    Family("vit_tiny_r_s16_p8_224", {"img_size": 128, "depth": 3}, 128, TOKENS, "blocks.2.norm1", GLOBAL, 1, (4, 4)),
    # stem and stages are both Sequentials: the default is the last stage, not the whole trunk
    Family("convnextv2_atto", {}, 96, MAP, "stages.3", NONE),
    # stages give channels-last (B, H, W, C) maps; attention within 4x4 windows
    Family("swin_tiny_patch4_window7_224", {"img_size": 128, "window_size": 4, "depths": (1, 1, 2, 1)}, 128,
           CHANNELS_LAST, "layers.3", WINDOWS),
    # conv stages, then attention over flattened tokens with no patch embedding (fixed 224 px)
    Family("efficientformer_l1", {}, 224, MAP, "stages.3.blocks.2", NO_GRID),
]
TOKEN_FAMILIES = [f for f in FAMILIES if f.kind == TOKENS]


@cache
def build(family: Family) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(family.name, pretrained=False, **family.kwargs).eval()


def image(family: Family) -> torch.Tensor:
    return torch.randn(1, 3, family.size, family.size, generator=torch.Generator().manual_seed(1))


def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    record = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, args, out: record.setdefault("out", out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return record["out"]


def context(module: nn.Module, size: int) -> tuple[RunContext, ImageItem]:
    """A run context around `module` and one random picture, as the runner would build them."""
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    loaded = LoadedModel(module, "test", "none", [f"class {i}" for i in range(1000)], Preprocess(None, size), "test")
    tensor = loaded.preprocess.normalize(pixels)
    with torch.no_grad():
        probabilities = torch.softmax(module(tensor[None]), dim=1)[0]
    item = ImageItem(ImageRecord(0, Path("x.png"), "x.png", None), pixels, tensor, None, probabilities)
    return RunContext(loaded, torch.device("cpu")), item


def usable(heat: torch.Tensor | np.ndarray, size: int) -> bool:
    heat = torch.as_tensor(heat)
    return tuple(heat.shape[-2:]) == (size, size) and bool(torch.isfinite(heat).all()) and float(heat.std()) > 0


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_the_default_layer_is_the_last_block_and_its_layout_is_read_right(family):
    model = build(family)
    layer = default_layer(model)
    assert layer == family.default
    assert not layer.startswith(("patch_embed", "stem"))
    layout = output_layout(model, layer_output(model, layer, image(family)), (family.size, family.size))
    assert (layout.kind, layout.prefix, layout.grid) == (family.kind, family.prefix, family.grid)
    if family.kind == TOKENS:
        assert layout.prefix == model.num_prefix_tokens  # timm's own count: class, distillation, registers


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_gradcam_at_the_default_layer_gives_a_usable_map(family):
    model, x = build(family), image(family)
    before = model_state(model)
    cam = gradcam.attribute(model, x, 3, "auto", relu=False)  # random weights: the rectified map may be 0
    assert usable(cam, family.size)
    if family.grid is not None:
        assert gradcam.layer_attribute(model, x, 3, "auto", relu=False).shape[-2:] == family.grid
    assert model_changes(before, model_state(model)) == []


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.attention == GLOBAL], ids=str)
def test_fused_attention_is_captured_without_changing_the_outputs(family):
    model, x = build(family), image(family)
    with torch.no_grad():
        plain = model(x)
        with captured_attention(model) as attentions:
            captured = model(x)
    assert (captured - plain).abs().max() <= 1e-5
    tokens = family.prefix + family.grid[0] * family.grid[1]
    assert len(attentions) == len(model.blocks) and all(a.source == FUSED for a in attentions)
    assert all(a.weights.shape[-2:] == (tokens, tokens) for a in attentions)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.attention == GLOBAL], ids=str)
def test_transformer_methods_give_usable_maps(family):
    model, x = build(family), image(family)
    assert usable(rollout.attribute(model, x), family.size)
    grids = maps.attention_maps(model, x, layers="-1", heads="mean")
    assert list(grids) == [len(model.blocks) - 1] and grids[len(model.blocks) - 1].shape[-2:] == family.grid
    assert usable(relevance.attribute(model, x, 3), family.size)


def test_without_a_class_token_the_methods_read_the_patch_rows_the_head_pools():
    """A register is no class token: reading its row (what the head never reads) gave a flat relevance."""
    from nnvis_plugins.transformer.tokens import has_class_token, query_name, query_row

    family = next(f for f in FAMILIES if "gap" in f.name)
    model = build(family)
    layout = Layout(TOKENS, family.prefix, family.grid)
    assert model.cls_token is None and not has_class_token(model, layout)
    matrix = torch.randn(1, 2, 4 + 16, 4 + 16)
    assert torch.equal(query_row(matrix, layout, model), matrix[..., 4:, :].mean(dim=-2))
    assert "patch tokens' rows" in query_name(layout, model)
    deit = build(FAMILIES[0])
    assert has_class_token(deit, Layout(TOKENS, 2, (7, 7)))
    assert torch.equal(query_row(matrix, Layout(TOKENS, 2, (7, 7)), deit), matrix[..., 0, :])


def test_transformer_plugins_name_the_prefix_tokens_they_drop():
    family = FAMILIES[0]  # DeiT: class and distillation tokens
    model = build(family)
    ctx, item = context(model, family.size)
    for plugin in (rollout.AttentionRollout(), relevance.TransformerAttribution(), maps.AttentionMaps()):
        assert plugin.applies_to(ctx) is None
        values = {p.name: p.default for p in plugin.params} | {"faithfulness_steps": 0}
        result = plugin.run_image(ctx, item, values)
        result.validate()
        caption = result.artifacts[0].caption
        assert usable(result.artifacts[0].values, family.size), plugin.name
        assert "2 prefix tokens dropped" in caption and "7x7 patches" in caption, caption


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.attention != GLOBAL], ids=str)
def test_transformer_plugins_refuse_other_families_in_one_line(family):
    ctx, _ = context(build(family), family.size)
    for plugin in (rollout.AttentionRollout(), relevance.TransformerAttribution(), maps.AttentionMaps()):
        reason = plugin.applies_to(ctx)
        assert reason is not None and REFUSALS[family.attention] in reason and "\n" not in reason, reason


@pytest.mark.slow
def test_a_timm_vit_passes_the_plugin_contract_in_a_report():
    """Grad-CAM and Transformer Attribution through a whole report on the demo images (64 px, 8 classes)."""
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=64, depth=3,
                              num_classes=8).eval()
    for plugin in (gradcam.GradCAM(), relevance.TransformerAttribution()):
        check = check_plugin(plugin, {"faithfulness_steps": 0}, images=1, model=model)
        [result] = check.results.values()
        assert "2 prefix tokens dropped, 4x4 patches" in result.artifacts[0].caption
