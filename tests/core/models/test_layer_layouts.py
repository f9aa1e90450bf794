"""Layers as modern classifiers give them: feature maps, tokens with prefix tokens, channels-last
maps (nnvis_core.models.outputs), and defaults per architecture family that are never the stem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnvis_core.models.layers import LayerNotFound, default_layer
from nnvis_core.models.outputs import CHANNELS_LAST, MAP, TOKENS, Layout, LayoutError, output_layout, token_layout
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins.attribution import gradcam


class TinyViT(nn.Module):
    """Patch embedding, `prefix` learned tokens (class, distillation, registers), two blocks, class-token head."""

    def __init__(self, prefix: int = 1, patch: int = 8, dim: int = 16, classes: int = 5):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.prefix = nn.Parameter(torch.randn(1, prefix, dim))
        self.blocks = nn.Sequential(*[TinyBlock(dim) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.prefix.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])


class TinyBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


@pytest.mark.parametrize("prefix", [1, 2, 5])
def test_tokens_are_read_on_their_patch_grid_for_non_square_inputs(prefix):
    torch.manual_seed(0)
    model = TinyViT(prefix).eval()
    patches = torch.randn(2, 16, 3 * 5)  # (B, C, h, w) to be laid out as tokens
    tokens = torch.cat([torch.randn(2, prefix, 16), patches.flatten(2).transpose(1, 2)], dim=1)
    layout = output_layout(model, tokens, (24, 40))
    assert layout == Layout(TOKENS, prefix, (3, 5))
    assert torch.equal(layout.to_map(tokens), patches.view(2, 16, 3, 5))
    assert f"{prefix} prefix token" in layout.describe() and "3x5 patches" in layout.describe()


def test_channels_last_and_channels_first_maps_are_told_apart():
    model = nn.Conv2d(3, 4, 4, stride=4)
    swin_like = torch.randn(1, 7, 7, 768)
    assert output_layout(model, swin_like, (224, 224)).kind == CHANNELS_LAST
    assert torch.equal(output_layout(model, swin_like, (224, 224)).to_map(swin_like), swin_like.permute(0, 3, 1, 2))
    assert output_layout(model, torch.randn(1, 768, 7, 7), (224, 224)).kind == MAP
    assert output_layout(model, torch.randn(1, 64, 14, 21), (224, 336)).kind == MAP
    assert output_layout(model, torch.randn(1, 14, 21, 64), (224, 336)).kind == CHANNELS_LAST


def test_tokens_that_fit_no_grid_are_refused():
    with pytest.raises(LayoutError, match="fit no patch grid"):
        token_layout(TinyViT(), (32, 32), 50)
    with pytest.raises(LayoutError, match="no patch embedding"):
        token_layout(nn.Sequential(nn.Conv2d(3, 4, 3)), (32, 32), 17)


def test_the_default_of_a_token_model_is_its_last_blocks_first_norm():
    assert default_layer(TinyViT().eval()) == "blocks.1.norm1"


def test_a_patch_model_without_blocks_reads_its_last_readable_layer_or_says_what_to_do():
    model = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.Flatten(), nn.Linear(4 * 56 * 56, 3))
    assert default_layer(model) == "0"  # no run of blocks, but its one map is read by the score
    flat = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    flat[0].weight.data.zero_()  # a zero map: nothing a reader could show
    flat[0].bias.data.zero_()
    with pytest.raises(LayerNotFound, match="no repeated blocks.*; no layer of Sequential gives"):
        default_layer(flat)


class StemThenTokens(nn.Module):
    """A convolutional stem, then Linear blocks on a token sequence without a patch embedding (LeViT's plan)."""

    def __init__(self, dim: int = 16, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(dim, dim, 3, stride=2, padding=1))
        self.blocks = nn.Sequential(*[nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
                                      for _ in range(3)])
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x).flatten(2).transpose(1, 2)).mean(dim=1))


def test_a_conv_stem_before_token_blocks_is_no_default_layer():
    # its tokens have no grid nnvis can tell, and its stem is no explanation: nothing to suggest
    expected = r"last Conv2d \(stem.2\) is a stem .*; no layer of StemThenTokens gives .* a map reader can read$"
    with pytest.raises(LayerNotFound, match=expected):
        default_layer(StemThenTokens().eval())
    # VGG's many Linear layers after its last conv read flat vectors: the convnet rule stands
    vgg_like = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                             *[nn.Linear(16, 16) for _ in range(4)])
    assert default_layer(vgg_like.eval()) == "1"


class StatesItsReduction(StemThenTokens):
    """LeViT's plan with timm's feature_info: the stem's reduction (4) states the tokens' grid."""

    feature_info = [{"num_chs": 16, "reduction": 4, "module": "blocks"}]


class Unroll(nn.Module):
    """Hiera's token order: a fixed permutation of the raster order (mask units first)."""

    def forward(self, tokens):
        return tokens.flip(1)


class UnrollsItsTokens(StatesItsReduction):
    def __init__(self):
        super().__init__()
        self.unroll = Unroll()

    def forward(self, x):
        return self.head(self.blocks(self.unroll(self.stem(x).flatten(2).transpose(1, 2))).mean(dim=1))


def test_tokens_lie_on_the_grid_of_a_reduction_the_model_states():
    model = StatesItsReduction().eval()
    assert token_layout(model, (32, 32), 64) == Layout(TOKENS, 0, (8, 8))
    assert token_layout(model, (30, 30), 64) == Layout(TOKENS, 0, (8, 8))  # a stride-2 stem rounds up
    assert default_layer(model) == "blocks"
    with pytest.raises(LayoutError, match="reorders them"):
        token_layout(UnrollsItsTokens(), (32, 32), 64)
    with pytest.raises(LayerNotFound, match="no layer of UnrollsItsTokens gives"):
        default_layer(UnrollsItsTokens().eval())


def test_a_stated_reduction_lays_no_tokens_on_a_grid_by_guessing_a_prefix():
    model = StatesItsReduction()
    with pytest.raises(LayoutError, match=r"65 tokens fit the grid of none of the reductions .* \(4\)"):
        token_layout(model, (32, 32), 65)  # (B, C, N) channels first, or a prefix the model does not state
    model.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
    assert token_layout(model, (32, 32), 65) == Layout(TOKENS, 1, (8, 8))


class PoolsTokens(nn.Module):
    """PiT's plan: its last Conv2d sits in a token-pooling module that returns (tokens, class tokens)."""

    class Pool(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.conv = nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim)

        def forward(self, x, cls_token):
            return self.conv(x), cls_token

    def __init__(self, dim: int = 8, classes: int = 3):
        super().__init__()
        self.embed = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pool = PoolsTokens.Pool(dim)
        self.block = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x, cls_token = self.pool(self.embed(x), self.cls_token.expand(len(x), -1, -1))
        tokens = torch.cat([cls_token, x.flatten(2).transpose(1, 2)], dim=1)
        return self.head(self.block(tokens)[:, 0])


def test_a_default_whose_output_is_not_a_tensor_is_refused_with_a_name_to_try():
    # the token block's positions reach the head only through the class token: no layer to suggest
    with pytest.raises(LayerNotFound, match=r"picks pool, which returns a tuple, not a tensor.*; no layer of "
                                            r"PoolsTokens gives .* a map reader can read$"):
        default_layer(PoolsTokens().eval())


@pytest.mark.parametrize("name, expected", [
    ("vit_b_16", "encoder.layers.encoder_layer_11.ln_1"),
    ("swin_t", "features.7"),
    ("convnext_tiny", "features.7"),
    ("resnet18", "layer4"),
    ("mobilenet_v3_small", "features.12.2"),
    # Their auxiliary classifiers are defined last but run only in training: never the default.
    ("googlenet", "inception5b"),
    # The last conv ends a residual branch (conv + BatchNorm, then add and ReLU in the block): the trunk.
    ("regnet_x_400mf", "trunk_output"),
    ("inception_v3", "Mixed_7c"),
])
def test_family_defaults_of_torchvision_classifiers(name, expected):
    torch.manual_seed(0)
    model = getattr(torchvision_models(), name)(weights=None).eval()
    assert default_layer(model) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("vit_b_16", 224), ("swin_t", 112), ("convnext_tiny", 96)])
def test_gradcam_reads_the_last_block_of_transformers_and_convnext(name, size):
    """Grad-CAM at the default layer of a ViT (tokens), Swin (channels-last) and ConvNeXt: a finite,
    non-constant map of the input's size, at the block's resolution, not the stem's."""
    torch.manual_seed(0)
    model = getattr(torchvision_models(), name)(weights=None).eval()
    if name == "vit_b_16":  # torchvision starts the ViT head at zero: no gradient would reach any layer
        nn.init.normal_(model.heads.head.weight, std=0.02)
    image = torch.randn(1, 3, size, size)
    layer = default_layer(model)
    cam = gradcam.layer_attribute(model, image, 3, layer, relu=False)
    assert cam.shape[-2:] == {"vit_b_16": (14, 14), "swin_t": (4, 4), "convnext_tiny": (3, 3)}[name]
    full = gradcam.attribute(model, image, 3, layer, relu=False)  # random weights: the rectified map may be 0
    assert full.shape[-2:] == (size, size) and torch.isfinite(full).all() and full.std() > 0


def test_gradcam_on_tokens_equals_gradcam_on_the_same_features_laid_out_as_maps():
    """The token reading is the convnet Grad-CAM of the patch grid: weights are the mean gradient
    over patches, prefix tokens take no part."""
    torch.manual_seed(0)
    model = TinyViT(prefix=2).eval()
    image = torch.randn(1, 3, 24, 32)
    cam = gradcam.layer_attribute(model, image, 1, "blocks.1.norm1", relu=False)
    record = {}
    handle = model.blocks[1].norm1.register_forward_hook(lambda m, a, out: record.setdefault("out", out))
    x = image.clone().requires_grad_(True)
    score = model(x)[0, 1]
    handle.remove()
    (grad,) = torch.autograd.grad(score, record["out"])
    tokens, grads = record["out"][0, 2:].detach(), grad[0, 2:]  # (12, C): a 3x4 grid
    expected = (tokens * grads.mean(0)).sum(1).view(3, 4)
    assert torch.allclose(cam[0, 0], expected, atol=1e-6)


def test_occlusion_reads_the_feature_map_of_a_token_layer():
    """Occlusion's feature panel on a ViT block: channel totals over the patch tokens, prefix
    tokens left out, from the batched engine (the incremental one does not follow tokens)."""
    from nnvis_plugins import occlusion

    torch.manual_seed(0)
    model = TinyViT(prefix=2).eval()
    image = torch.randn(1, 3, 24, 32)
    maps = occlusion.occlusion_maps(model, image, window=8, stride=8, layer="blocks.1.norm1")
    assert maps.engine == "batched" and maps.layer == "blocks.1.norm1"
    record = {}
    handle = model.blocks[1].norm1.register_forward_hook(lambda m, a, out: record.setdefault("out", out))
    with torch.no_grad():
        model(image)
    handle.remove()
    totals = record["out"][0, 2:].double().sum(0)  # per channel, over the 3x4 patch tokens only
    assert maps.channel == int(totals.argmax())
    assert maps.base_feature == pytest.approx(float(totals.max()), rel=1e-6)
    assert maps.feature.shape == maps.probability.shape and torch.isfinite(torch.as_tensor(maps.feature)).all()


def test_activations_show_a_middle_block_of_a_token_model_on_its_patch_grid(tmp_path):
    """Not the patch embedding (the only Conv2d, hence 'the middle conv'): the middle block's tokens,
    prefix tokens dropped, as one map per channel."""
    from nnvis_core.run.registry import load_registry
    from nnvis_core.testing import check_plugin

    torch.manual_seed(0)
    model = TinyViT(prefix=1).eval()  # 64-px demo images, 8-px patches: an 8x8 grid
    model.head = nn.Linear(16, 8)  # the demo's eight classes
    check = check_plugin(load_registry().plugin("activations"), params={"max_maps": 16}, images=2, model=model)
    [gallery] = [a for a in next(iter(check.results.values())).artifacts if a.kind == "gallery"]
    assert gallery.title == "feature maps of blocks.1"
    assert "tokens (1 prefix token dropped, 8x8 patches)" in gallery.caption
    assert len(gallery.images) == 16 and gallery.images[0].shape[:2] == (8, 8)


def test_the_layer_listing_says_what_each_layer_gives_and_which_auto_picks():
    from nnvis_core.models.listing import layer_rows

    torch.manual_seed(0)
    rows = {row.name: row for row in layer_rows(TinyViT(prefix=2).eval(), (24, 32))}
    assert rows["conv_proj"].output == "map 16x3x4" and rows["conv_proj"].default_for == ""
    assert rows["blocks.1.norm1"].output == "tokens 2+3x4 x16" and rows["blocks.1.norm1"].default_for == "layer=auto"
    assert rows["head"].output == "(1, 5)"


LAYER_AUTO_READERS = ("ablationcam", "concept_dictionary", "craft", "eigen_gradcam", "eigencam", "gradcam",
                      "gradcam_elementwise", "gradcam_plusplus", "guided_gradcam", "hirescam", "layercam", "occlusion",
                      "scorecam", "semantic_dictionary", "tcav", "top_units", "xgradcam")


def test_the_layer_listing_names_the_plugins_that_read_each_layer_by_default():
    from nnvis_core.models.listing import layer_rows
    from nnvis_core.run.registry import load_registry

    torch.manual_seed(0)
    plugins = {name: reg.item for name, reg in load_registry().plugins.items()}
    rows = {row.name: row for row in layer_rows(TinyViT(prefix=1).eval(), (24, 32), plugins)}
    assert rows["conv_proj"].plugins == ("filters",)  # never a layer reader's default
    assert rows["blocks.1.norm1"].plugins == LAYER_AUTO_READERS
    assert rows["head"].plugins == ("neighbours", "tsne")  # they read the head's input
    assert "deconvnet" not in {p for row in rows.values() for p in row.plugins}  # class mode reads no layer


@pytest.mark.slow
def test_nnvis_layers_on_a_vit_and_a_swin():
    from click.testing import CliRunner

    from nnvis_cli.main import cli

    result = CliRunner().invoke(cli, ["layers", "--model", "torchvision:vit_b_16", "--weights", "none"])
    assert result.exit_code == 0, result.output
    [line] = [row for row in result.output.splitlines() if row.startswith("encoder.layers.encoder_layer_11.ln_1 ")]
    assert line.split()[1:5] == ["LayerNorm", "tokens", "1+14x14", "x768"]
    assert " ".join(line.split()[5:]) == "layer=auto " + ", ".join(LAYER_AUTO_READERS)
    [line] = [row for row in result.output.splitlines() if row.startswith("encoder.layers.encoder_layer_7.mlp.0 ")]
    assert line.split()[1:] == ["Linear", "tokens", "1+14x14", "x3072", "channel_maximization"]
    result = CliRunner().invoke(cli, ["layers", "--model", "torchvision:swin_t", "--weights", "none"])
    [line] = [row for row in result.output.splitlines() if row.startswith("features.7 ")]
    assert line.split()[1:5] == ["Sequential", "channels-last", "7x7x768", "layer=auto"]


def test_gradcam_refuses_a_one_by_one_layer_rather_than_paint_a_constant():
    from nnvis_core.toolkit import AttributionError
    from nnvis_plugins.attribution import guided_gradcam

    torch.manual_seed(0)
    model = getattr(torchvision_models(), "resnet18")(weights=None).eval()
    x = torch.randn(1, 3, 32, 32)  # layer4 is 1x1 at 32 px
    for method in (gradcam.attribute, guided_gradcam.attribute):
        with pytest.raises(AttributionError, match="layer layer4 is 1x1 at this input size"):
            method(model, x, 3, "layer4", strict=True)
        assert method(model, x, 3, "layer4").shape[-2:] == (32, 32)  # what the sanity check compares
    assert gradcam.attribute(model, torch.randn(1, 3, 64, 64), 3, "layer4").shape == (1, 1, 64, 64)



def test_gradcam_refuses_a_layer_the_gradient_does_not_reach_rather_than_paint_zero():
    """After a ViT's last attention only the class token feeds the head: Grad-CAM at the last
    block's MLP would be zero for every image, whatever the model saw."""
    from nnvis_core.demo.vit import load_demo_vit
    from nnvis_core.toolkit import AttributionError
    from nnvis_plugins.attribution import guided_gradcam

    vit = load_demo_vit()
    x = torch.rand(1, 3, 64, 64)
    last_mlp = "encoder.layers.encoder_layer_3.ln_2"
    for method in (gradcam.attribute, guided_gradcam.attribute):
        with pytest.raises(AttributionError, match=f"gradient is zero at every position of layer {last_mlp}"):
            method(vit, x, 3, last_mlp, strict=True)
    assert not gradcam.attribute(vit, x, 3, last_mlp, relu=False).any()  # the reason for the refusal
    assert gradcam.attribute(vit, x, 3, "encoder.layers.encoder_layer_3.ln_1", strict=True).shape == (1, 1, 64, 64)
