"""Texture synthesis and feature inversion (plugins/synthesis): the mathematics against hand
computations, the layer picks per family, and the evidence of docs/synthesis.md on the bundled images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnvis_core.demo import DEMO_SPEC
from nnvis_core.testing import check_plugin
from nnvis_core.toolkit import frozen
from nnvis_plugins.synthesis.feature_inversion import FeatureInversion
from nnvis_plugins.synthesis.features import FeatureReader
from nnvis_plugins.synthesis.gram import gram_distance, gram_loss, gram_matrix
from nnvis_plugins.synthesis.inversion import invert_features, pixel_correlation, total_variation
from nnvis_plugins.synthesis.layers import parse_layers, spread_layers
from nnvis_plugins.synthesis.optimize import optimize, pixel_logits
from nnvis_plugins.synthesis.texture import device_normalizer, source_grams, synthesize_texture
from nnvis_plugins.synthesis.texture_synthesis import TextureSynthesis

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from synthesis import demo_pixels  # noqa: E402  (the benchmark's loader of the bundled images)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a busy 2-core machine, two threads contending with other work made the
    texture test 20x slower (157 s instead of 8 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo():
    from nnvis_core.demo import load_demo_model

    names, pixels = demo_pixels()
    normalize = device_normalizer(DEMO_SPEC["mean"], DEMO_SPEC["std"], torch.device("cpu"))
    return load_demo_model(), normalize, names, pixels


def test_gram_matrix_is_the_mean_outer_product_over_positions():
    maps = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected = np.zeros((2, 3, 3))
    for b in range(2):
        for c in range(3):
            for d in range(3):
                products = (float(maps[b, c, y, x] * maps[b, d, y, x]) for y in range(4) for x in range(5))
                expected[b, c, d] = sum(products) / 20
    np.testing.assert_allclose(gram_matrix(maps).numpy(), expected, rtol=1e-12)
    # Normalised by size: the same statistics over a larger field give the same Gram.
    np.testing.assert_allclose(gram_matrix(maps.repeat(1, 1, 3, 2)).numpy(), expected, rtol=1e-12)
    assert gram_loss(gram_matrix(maps), gram_matrix(maps)).abs().max() == 0
    assert gram_distance(gram_matrix(maps)[0], gram_matrix(maps)[0]) == 0


def test_total_variation_and_correlation_by_hand():
    pixels = torch.zeros(1, 1, 2, 3)
    pixels[0, 0, 0, 1] = 1.0  # differs from 2 horizontal and 1 vertical neighbour
    assert float(total_variation(pixels)[0]) == pytest.approx(2 / 4 + 1 / 3)
    picture = torch.rand(3, 8, 8)
    assert pixel_correlation(picture, 2 * picture + 1) == pytest.approx(1.0)
    assert pixel_correlation(picture, -picture) == pytest.approx(-1.0)


def test_optimizers_minimize_a_known_quadratic():
    target = torch.rand(2, 3, 4, 4) * 0.8 + 0.1
    for optimizer, steps in (("lbfgs", 20), ("adam", 300)):
        result = optimize(pixel_logits(torch.full_like(target, 0.5)),
                          lambda p: (p - target).pow(2).flatten(1).sum(1), steps, optimizer)
        assert result.curve.shape[1] == 2 and result.curve[-1].max() < 1e-3 * result.curve[0].min()
        assert torch.allclose(result.pixels, target, atol=0.02)


def test_layers_spread_over_depth_per_family():
    from nnvis_core.demo import DemoNet
    from nnvis_core.torchvision_compat import torchvision_models

    assert spread_layers(DemoNet()) == ["features.1", "features.6", "features.11", "features.16"]
    models = torchvision_models()
    assert spread_layers(models.resnet18()) == ["relu", "layer2.0", "layer3.1", "layer4.1"]
    vit = models.VisionTransformer(image_size=32, patch_size=8, num_layers=4, num_heads=2, hidden_dim=16, mlp_dim=32)
    assert spread_layers(vit) == [f"encoder.layers.encoder_layer_{i}" for i in (0, 1, 2, 3)]
    assert parse_layers(DemoNet(), "features.3, features.8") == ["features.3", "features.8"]
    with pytest.raises(KeyError):
        parse_layers(DemoNet(), "features.99")


def test_gram_losses_read_token_layers_of_a_vit():
    """Tokens (B, N, C) become maps (the class token dropped): texture synthesis runs on a ViT."""
    from nnvis_core.torchvision_compat import torchvision_models

    torch.manual_seed(0)
    vit = torchvision_models().VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32).eval()
    layers = spread_layers(vit)
    with frozen(vit):
        maps = FeatureReader(vit, layers)(torch.zeros(1, 3, 32, 32))
    assert all(tuple(m.shape) == (1, 16, 4, 4) for m in maps.values())
    result = synthesize_texture(vit, lambda p: p, torch.rand(1, 3, 32, 32), layers, steps=30)
    assert result.curve[-1, 0] < 0.1 * result.curve[0, 0]


def test_texture_gram_loss_falls_and_matches_its_own_source(demo):
    """Evidence (docs/synthesis.md): from white noise the Gram loss falls by more than 100x, and the
    texture's Grams are nearer its own source's than any other bundled image's (40 images)."""
    model, normalize, names, pixels = demo
    layers = spread_layers(model)
    with frozen(model):
        grams = source_grams(FeatureReader(model, layers), normalize, pixels)
    for index in (names.index("arrow/arrow_00.png"), names.index("crescent/crescent_00.png")):
        result = synthesize_texture(model, normalize, pixels[index:index + 1], layers, steps=200)
        assert result.curve[0, 0] / result.curve[-1, 0] >= 100
        with frozen(model):
            made = source_grams(FeatureReader(model, layers), normalize, result.pixels)
        distance = [sum(gram_distance(made[n][0], grams[n][j]) for n in layers) for j in range(len(names))]
        assert int(np.argmin(distance)) == index
        # And not by copying the picture: the layout is gone.
        assert abs(pixel_correlation(result.pixels[0], pixels[index])) < 0.5


def test_feature_inversion_matches_features_and_early_layers_keep_the_picture(demo):
    """Evidence: every layer's relative feature error ends below 0.35; the first layer's reconstruction
    correlates with the input far better than the last one's."""
    model, normalize, names, pixels = demo
    index = names.index("square/square_02.png")
    result = invert_features(model, normalize, pixels[index:index + 1], spread_layers(model), steps=100)
    assert max(result.errors) < 0.35
    assert result.correlations[0] > 0.95 and result.correlations[0] > result.correlations[-1] + 0.5


@pytest.mark.parametrize("plugin", [TextureSynthesis(), FeatureInversion()], ids=lambda p: p.name)
def test_plugins_follow_the_contract_and_respect_the_cap(plugin):
    check = check_plugin(plugin, params={"steps": 5, "max_images": 1}, images=2)
    kinds = [[type(a).__name__ for a in check.artifacts(image)] for image in sorted(check.results)]
    assert kinds[0][:2] == ["Image", "Image" if plugin.name == "texture_synthesis" else "Gallery"]
    assert kinds[1] == ["Text"]  # past max_images: said, not computed


def test_style_transfer_keeps_the_content_layer_and_takes_the_style_grams(demo):
    from nnvis_plugins.synthesis.layers import middle_layer
    from nnvis_plugins.synthesis.style import transfer_style

    model, normalize, names, pixels = demo
    content, style = names.index("star/star_00.png"), names.index("ring/ring_02.png")
    layers = spread_layers(model)
    result = transfer_style(model, normalize, pixels[content:content + 1], pixels[style:style + 1],
                            middle_layer(model), layers, steps=60)
    assert result.curve[-1, 0] < 0.1 * result.curve[0, 0]
    with frozen(model):
        batch = torch.cat([result.pixels, pixels[[content, style]]])
        grams = source_grams(FeatureReader(model, layers), normalize, batch)
    to_style = sum(gram_distance(grams[n][0], grams[n][2]) for n in layers)
    to_content = sum(gram_distance(grams[n][0], grams[n][1]) for n in layers)
    assert to_style < to_content


def test_style_transfer_without_a_style_is_refused_or_left_out(tmp_path):
    from click.testing import CliRunner

    from nnvis_cli.main import cli

    images = Path(__file__).resolve().parents[3] / "examples" / "demo" / "images" / "star"
    named = CliRunner().invoke(cli, ["report", str(images), "--plugins", "style_transfer", "-o", str(tmp_path / "a")])
    assert named.exit_code == 2 and "style_transfer.style=PATH" in named.output
    missing = CliRunner().invoke(cli, ["report", str(images), "--plugins", "style_transfer", "--set",
                                       "style_transfer.style=nowhere.png", "-o", str(tmp_path / "b")])
    assert missing.exit_code == 2 and "nowhere.png: no such file" in missing.output
    from nnvis_core.run.config import ReportConfig
    from nnvis_core.run.registry import load_registry
    from nnvis_core.runner import prepare

    registry = load_registry()
    plan = prepare(ReportConfig(image_dir=images, out_dir=tmp_path / "c", plugins=["all"]), registry)
    assert "style_transfer" in {s.name for s in plan.skipped}
    assert "style_transfer" not in {r.plugin.name for r in plan.runs}


class HeadsInTheBatch(torch.nn.Module):
    """A conv stem, a conv that runs on images x 2 heads (MViT's attention pooling), a conv, then a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        self.pool = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.after = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        x = self.pool(x.reshape(b * 2, c // 2, h, w)).reshape(b, c, h, w)
        return self.head(self.after(x).mean(dim=(2, 3)))


def test_a_layer_that_folds_heads_into_the_batch_is_never_read_as_images():
    from nnvis_core.models.layers import remember_input_size
    from nnvis_core.toolkit import AttributionError
    from nnvis_plugins.synthesis.features import FeatureReader
    from nnvis_plugins.synthesis.layers import spread_layers

    model = HeadsInTheBatch().eval()
    remember_input_size(model, (16, 16))
    assert spread_layers(model) == ["stem.1", "after.1"]
    with pytest.raises(AttributionError, match="'pool' gives 4 rows for 2 images"):
        FeatureReader(model, ["pool"])(torch.rand(2, 3, 16, 16))


class StemThenTokenBlocks(torch.nn.Module):
    """Hiera's plan: one conv embedding, then most of the weights in Linear blocks on tokens."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Conv2d(3, 8, 4, stride=2)
        self.blocks = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(4)])
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x).flatten(2).transpose(1, 2)).mean(dim=1))


def test_layers_are_never_spread_over_a_stem_alone():
    from nnvis_core.toolkit import LayerNotFound
    from nnvis_plugins.synthesis.layers import spread_layers

    with pytest.raises(LayerNotFound, match=r"its convolutions all run early \(the last, embed,.*name the layers"):
        spread_layers(StemThenTokenBlocks().eval())


class ChannelsLastBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Linear(8, 8)

    def forward(self, x):
        return x + torch.nn.functional.gelu(self.mix(x))


class StemThenChannelsLastBlocks(torch.nn.Module):
    """HieraDet's plan: an overlapping conv embedding, then blocks on channels-last maps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Conv2d(3, 8, 7, stride=4, padding=3)
        self.blocks = torch.nn.Sequential(*[ChannelsLastBlock() for _ in range(6)])
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))


def test_after_a_stem_layers_are_spread_over_blocks_that_give_maps():
    from nnvis_core.models.layers import remember_input_size
    from nnvis_plugins.synthesis.layers import spread_layers

    model = StemThenChannelsLastBlocks().eval()
    remember_input_size(model, (32, 32))
    assert spread_layers(model) == ["blocks.0", "blocks.2", "blocks.3", "blocks.5"]


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_an_optimizer_that_diverges_keeps_its_best_finite_picture(optimizer):
    """A loss that turns NaN part-way (a random net's huge activations sent L-BFGS's line search to
    infinity on EfficientNet): the curve stops at the last finite value, the picture is the best finite
    one, and the run says it diverged, instead of a NaN picture and a chart that cannot be drawn."""
    from nnvis_plugins.synthesis.optimize import optimize, pixel_logits

    def losses(pixels):
        brightness = pixels.flatten(1).mean(1)
        return torch.where(brightness > 0.6, torch.full_like(brightness, float("nan")), -brightness)

    start = pixel_logits(torch.full((1, 3, 4, 4), 0.5))
    result = optimize(start, losses, 40, optimizer)
    assert result.diverged is not None and "diverged" in result.note()
    assert torch.isfinite(result.curve).all() and len(result.curve) == result.diverged + 1
    brightness = float(result.pixels.mean())
    assert 0.5 < brightness <= 0.6 and float(result.curve[-1, 0]) == pytest.approx(-brightness)
