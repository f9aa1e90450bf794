"""Each CAM against its definition, on cases where the answer is known without the method's code:
conservation on a global-average-pooled head, a formula evaluated element by element, ablation and
masking done one channel at a time, the algebra of the first singular vector; and their refusals."""

from __future__ import annotations

import copy

import architecture_sweep as sweep
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.demo import DemoNet
from nnvis_core.toolkit import AttributionError, bytes_per_image, preserved
from nnvis_core.toolkit.cams import read_layer
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins.cams import ablationcam, eigencam, gradcam_plusplus, hirescam, layercam, scorecam, xgradcam

SIZE = 64


def budget_for(model: nn.Module, image: torch.Tensor, images: int) -> float:
    """A memory budget (MiB) that holds `images` copies of `image` at once: forces several chunks."""
    return bytes_per_image(model, image) * images / 2 ** 20


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision_models().resnet18(weights=None).eval()
    sweep.calibrate(model, SIZE)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return sweep.calibration_images(SIZE)[2:4]


def test_hirescam_and_xgradcam_conserve_the_score_before_a_global_average_pool(resnet, images):
    """resnet18's layer4 feeds the average pool and one linear layer: both maps sum over positions to the
    target's logit less the head's bias (HiResCAM's faithfulness, XGrad-CAM's conservation axiom)."""
    targets = [2, 7]
    with torch.no_grad():
        logits = resnet(images)[[0, 1], targets] - resnet.fc.bias[targets]
    for method in (hirescam, xgradcam):
        cam, _ = method.layer_attribute(resnet, images, targets, "layer4")
        assert torch.allclose(cam.sum(dim=(1, 2, 3)), logits, rtol=1e-4, atol=1e-6), method.__name__


def test_gradcam_plusplus_weights_follow_the_closed_form_element_by_element():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(1, 3, 2, 2, generator=generator)
    grads = torch.randn(1, 3, 2, 2, generator=generator)
    grads[0, 1, 0, 0] = 0.0  # alpha is 0 where the gradient is (its 0/0)
    expected = torch.zeros(3, dtype=torch.float64)
    for k in range(3):
        total = float(maps[0, k].sum())
        for i in range(2):
            for j in range(2):
                g = float(grads[0, k, i, j])
                if g != 0:
                    alpha = g ** 2 / (2 * g ** 2 + total * g ** 3)
                    expected[k] += alpha * max(g, 0.0)
    assert torch.allclose(gradcam_plusplus.channel_weights(maps, grads)[0].double(), expected, atol=1e-6)


def test_layercam_weighs_each_position_by_its_positive_gradient(resnet, images):
    reading = read_layer(resnet, images, 3, "layer3")
    cam, _ = layercam.layer_attribute(resnet, images, 3, "layer3")
    expected = (reading.gradients.clamp(min=0) * reading.maps).sum(1, keepdim=True)
    assert torch.allclose(cam, expected) and cam.shape[-2:] == (4, 4)


def test_layercam_fusion_scales_each_layer_and_keeps_the_larger_value():
    fine = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    coarse = torch.tensor([[[[3.0]]]])
    fused = layercam.fuse([fine, coarse])
    assert fused.shape == (1, 1, 2, 2)
    expected = torch.maximum(torch.tanh(2 * fine / 4), torch.full_like(fine, float(torch.tanh(torch.tensor(2.0)))))
    assert torch.allclose(fused, expected)
    assert torch.equal(layercam.fuse([torch.zeros(1, 1, 2, 2)]), torch.zeros(1, 1, 2, 2))  # no division by a zero max


def test_scorecam_weights_are_the_softmax_of_masked_logits_one_channel_at_a_time():
    torch.manual_seed(0)
    model = DemoNet().eval()
    image = sweep.calibration_images(SIZE)[:1]
    reading = read_layer(model, image, 4, "features.13", gradients=False)  # 64 channels at 16 x 16
    logits = []
    for k in range(reading.maps.shape[1]):
        up = F.interpolate(reading.maps[:, k:k + 1], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        span = up.max() - up.min()
        mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
        with torch.no_grad():
            logits.append(model(image * mask)[0, 4])
    expected = torch.softmax(torch.stack(logits), 0)
    weights = scorecam.channel_weights(model, image, 4, reading.maps, memory_mb=budget_for(model, image, 24))
    assert torch.allclose(weights[0], expected, atol=1e-6)
    # channels=10: the ten channels whose maps vary most, softmaxed among themselves; the rest weigh 0
    kept = sorted(reading.maps[0].flatten(1).var(1).argsort(descending=True)[:10].tolist())
    fewer = scorecam.channel_weights(model, image, 4, reading.maps, memory_mb=budget_for(model, image, 4), channels=10)
    assert torch.allclose(fewer[0, kept], torch.softmax(torch.stack(logits)[kept], 0), atol=1e-6)
    assert fewer[0].count_nonzero() == 10 and fewer[0].sum() == pytest.approx(1.0)


def test_ablationcam_weights_are_the_share_of_the_logit_lost_one_channel_at_a_time(resnet, images):
    image, target = images[:1], 5
    reading = read_layer(resnet, image, target, "layer4", gradients=False)
    score = float(reading.scores[0])
    weights = ablationcam.channel_weights(resnet, resnet.layer4, image, target, reading,
                                          memory_mb=budget_for(resnet, image, 200))
    for k in (0, 17, 255, 511):
        handle = resnet.layer4.register_forward_hook(lambda m, a, out, k=k: out.index_fill(1, torch.tensor([k]), 0))
        with torch.no_grad():
            ablated = float(resnet(image)[0, target])
        handle.remove()
        assert weights[0, k] == pytest.approx((score - ablated) / score, rel=1e-4, abs=1e-6)
    assert not resnet.layer4._forward_hooks  # the ablation hook is gone


def test_ablationcam_removes_a_token_channel_at_every_token():
    """On tokens (N, tokens, C) the channel is the last dimension: ablating it there equals zeroing the same
    channel of the layer's output by hand."""
    from nnvis_core.demo.vit import load_demo_vit

    model = load_demo_vit().eval()
    layer = model.encoder.layers.encoder_layer_3.ln_1
    image = sweep.calibration_images(SIZE)[:1]
    reading = read_layer(model, image, 2, layer, gradients=False)
    assert reading.layout.kind == "tokens"
    weights = ablationcam.channel_weights(model, layer, image, 2, reading)
    k = 7
    handle = layer.register_forward_hook(lambda m, a, out: out.index_fill(2, torch.tensor([k]), 0))
    with torch.no_grad():
        ablated = float(model(image)[0, 2])
    handle.remove()
    score = float(reading.scores[0])
    assert weights[0, k] == pytest.approx((score - ablated) / score, rel=1e-4, abs=1e-6)


class Counted(nn.Module):
    """Counts the images its wrapped module sees."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.images = module, 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.module(x)


def test_ablationcam_runs_only_the_layers_after_the_one_read_on_copies(resnet, images):
    """The layers before the one read see the image once per chunk, not once per channel, and the logits
    equal those of whole copies of the image: in float64, where the two orders of work round alike to 1e-12
    (in float32, convolutions over one image and over 64 take different kernels, 1e-6 apart)."""
    image, target = images[:1].double(), 5
    model = copy.deepcopy(resnet).double()
    model.conv1 = Counted(model.conv1)
    reading = read_layer(model, image, target, "layer3", gradients=False)
    budget = budget_for(model, image, 64)
    model.conv1.images = 0
    fast = ablationcam.ablated_scores(model, model.layer3, image, reading.layout, 256, target, budget)
    chunks = 256 // 64
    assert model.conv1.images == 1 + chunks  # one pass measures the budget and gives the logit to check, one per chunk
    with torch.no_grad():
        slow = ablationcam._ablate(model, model.layer3, image, reading.layout, 256, target, 64)  # whole copies
    assert torch.allclose(fast, slow, rtol=1e-12, atol=1e-12)


class KeepsBatch(nn.Module):
    """Reads its batch size at the input and reshapes with it after the layer: copies made mid-way would be
    folded into one row. The check copy catches it and whole copies of the image are used instead."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.after = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        n = x.shape[0]
        pooled = self.after(torch.relu(self.conv(x))).reshape(n, 8, -1).mean(2)
        return self.head(pooled)


class ConcatenatesEarlier(nn.Module):
    """Concatenates the layer's output with a tensor from before it (DenseNet): copies made mid-way cannot
    be joined to it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(11, 4)

    def forward(self, x):
        return self.head(torch.cat([x, torch.relu(self.conv(x))], 1).mean((2, 3)))


@pytest.mark.parametrize("model_class", [KeepsBatch, ConcatenatesEarlier])
def test_ablationcam_uses_whole_copies_where_copies_made_mid_way_would_be_wrong(model_class):
    torch.manual_seed(0)
    model = model_class().eval()
    image = torch.randn(1, 3, 16, 16)
    reading = read_layer(model, image, 1, model.conv, gradients=False)
    weights = ablationcam.channel_weights(model, model.conv, image, 1, reading)
    score = float(reading.scores[0])
    for k in range(8):
        handle = model.conv.register_forward_hook(lambda m, a, out, k=k: out.index_fill(1, torch.tensor([k]), 0))
        with torch.no_grad():
            ablated = float(model(image)[0, 1])
        handle.remove()
        assert weights[0, k] == pytest.approx((score - ablated) / score, rel=1e-4, abs=1e-6)
    assert not model.conv._forward_hooks


def test_eigencam_is_the_first_singular_direction_and_never_upside_down(resnet, images):
    reading = read_layer(resnet, images, 0, "layer3", gradients=False)
    cam, _ = eigencam.layer_attribute(resnet, images, 0, "layer3")
    for n in range(len(images)):
        rows = reading.maps[n].flatten(1).T.double()  # positions x channels
        u, s, _ = torch.linalg.svd(rows, full_matrices=False)
        expected = (u[:, 0] * s[0]).abs()  # rectified activations: one sign throughout (Perron-Frobenius)
        assert torch.allclose(cam[n].flatten().double(), expected, rtol=1e-4, atol=1e-5)
    assert (cam >= -1e-5).all()
    other, _ = eigencam.layer_attribute(resnet, images, 9, "layer3")
    assert torch.equal(cam, other)  # no class enters it


def test_centred_eigencam_agrees_in_sign_with_the_channel_sum(resnet, images):
    reading = read_layer(resnet, images, 0, "layer3", gradients=False)
    cam, _ = eigencam.layer_attribute(resnet, images, 0, "layer3", center=True)
    agreement = (cam.flatten(1) * reading.maps.sum(1).flatten(1)).sum(1)
    assert (agreement >= 0).all()


class NormedPositions(nn.Module):
    """A conv whose every position is normalized over its channels (as a Swin stage's LayerNorm does)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.norm(self.conv(x).permute(0, 2, 3, 1))
        return self.head(x.mean(dim=(1, 2)))


def test_hirescam_refuses_a_layer_that_feeds_a_per_position_norm():
    torch.manual_seed(0)
    model = NormedPositions().eval()
    image = torch.randn(1, 3, 16, 16)
    with pytest.raises(AttributionError, match=r"^HiResCAM: at layer conv each position's gradient x activation "
                                               r"sums to zero up to rounding .*read the layer after that norm"):
        hirescam.layer_attribute(model, image, 1, "conv")
    cam, _ = hirescam.layer_attribute(model, image, 1, "norm")  # after the norm: a real map
    assert cam.abs().amax() > 1e-3
    element_wise, _ = hirescam.layer_attribute(model, image, 1, "conv", elementwise_relu=True)
    assert element_wise.amax() > 0  # rectified terms do not cancel


@pytest.mark.parametrize("method", [gradcam_plusplus, xgradcam, hirescam, layercam, scorecam, ablationcam, eigencam])
def test_no_cam_changes_the_model(resnet, images, method):
    with preserved(resnet):
        method.layer_attribute(resnet, images[:1], 1, "layer4")


class ChannelsLast(nn.Module):
    """A stage whose output is (N, h, w, C), as Swin's are, then pooled into a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 4, stride=4)
        self.stage = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.stage(self.conv(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))


@pytest.mark.parametrize("name, method", [
    ("gradcam_plusplus", gradcam_plusplus.layer_attribute), ("xgradcam", xgradcam.layer_attribute),
    ("hirescam", hirescam.layer_attribute), ("layercam", layercam.layer_attribute),
    ("scorecam", scorecam.layer_attribute), ("ablationcam", ablationcam.layer_attribute),
    ("eigencam", eigencam.layer_attribute),
])
def test_every_cam_reads_a_channels_last_stage_as_maps(name, method):
    torch.manual_seed(0)
    model = ChannelsLast().eval()
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cam, reading = method(model, image, 1, "stage")
    assert reading.layout.kind == "channels_last" and cam.shape == (1, 1, 8, 8)
    assert torch.isfinite(cam).all() and cam.std() > 0


@pytest.mark.parametrize("name", ["gradcam_plusplus", "xgradcam", "hirescam", "gradcam_elementwise", "layercam",
                                  "scorecam", "ablationcam", "eigencam", "eigen_gradcam"])
def test_every_cam_plugin_runs_on_the_demo_vit_tokens(name):
    from nnvis_core.demo.vit import load_demo_vit
    from nnvis_core.run.registry import load_registry
    from nnvis_core.testing import check_plugin

    check = check_plugin(load_registry().plugin(name), params={"faithfulness_steps": 0}, images=2,
                         model=load_demo_vit().eval())
    for result in check.results.values():
        assert "tokens (1 prefix token dropped, 8x8 patches)" in result.artifacts[0].caption
        assert result.artifacts[0].values.std() > 0
