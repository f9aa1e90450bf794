"""Every CAM equals pytorch-grad-cam 1.5.7 (and torchcam 0.5.0 where it has the method) on the raw map at
the layer's resolution, before any ReLU or normalization, to 1e-5 relative error (max-abs difference over
the reference's max-abs value).

Models: torchvision resnet18 (layer3 and layer4) and vgg16_bn (its last conv's ReLU), random weights
calibrated as the architecture sweep does (BatchNorm statistics of demo images, unit logit spread), at
64 px; vit_b_16 (tokens, the library's reshape transform) and swin_t (channels-last) at 224 px for the
gradient methods. Where a reference adds an epsilon or upsamples its masks another way than the paper, the
test reproduces that step on nnvis's side through the function's argument, and docs/attribution.md says
so; nnvis's default follows the paper.
"""

from __future__ import annotations

import copy

import architecture_sweep as sweep
import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.models.layers import find_layer
from nnvis_core.toolkit import resolve_layer
from nnvis_core.toolkit.cams import read_layer
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins.attribution import gradcam
from nnvis_plugins.cams import ablationcam, eigencam, gradcam_plusplus, hirescam, layercam, scorecam, xgradcam

torchvision_models()  # torchvision imported through nnvis's workaround before the references import it
pytest.importorskip("cv2")  # pytorch-grad-cam imports OpenCV (opencv-python-headless in the test extra)
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

torchcam = pytest.importorskip("torchcam.methods")

SIZE = 64
TARGETS = [1, 3]
CONVNETS = {"resnet18": ("layer3", "layer4"), "vgg16_bn": ("features.42",)}


def assert_close(ours: torch.Tensor | np.ndarray, theirs: torch.Tensor | np.ndarray, tolerance: float = 1e-5) -> None:
    ours, theirs = torch.as_tensor(np.asarray(ours, dtype=np.float64)), torch.as_tensor(
        np.asarray(theirs, dtype=np.float64))
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = theirs.abs().max()
    assert scale > 0, "degenerate comparison: the reference's map is all zero"
    error = float((ours - theirs).abs().max() / scale)
    assert error <= tolerance, f"relative error {error:.2e}"


@pytest.fixture(scope="module")
def convnets() -> dict[str, nn.Module]:
    built = {}
    for name in CONVNETS:
        torch.manual_seed(0)
        model = getattr(torchvision_models(), name)(weights=None).eval()
        sweep.calibrate(model, SIZE)
        built[name] = model
    return built


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return sweep.calibration_images(SIZE)[:2] + 0.1 * torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator()
                                                                    .manual_seed(3))


def library_reading(model: nn.Module, layer: nn.Module, x: torch.Tensor, reshape=None):
    """pytorch-grad-cam's own activations and gradients at the layer (one forward and backward pass)."""
    cam = pgc.GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    targets = [ClassifierOutputTarget(t) for t in TARGETS[:len(x)]]
    outputs = cam.activations_and_grads(x)
    model.zero_grad()
    sum(t(o) for t, o in zip(targets, outputs)).backward()
    activations = cam.activations_and_grads.activations[0].cpu().numpy()
    grads = cam.activations_and_grads.gradients[0].cpu().numpy()
    cam.activations_and_grads.release()
    return targets, activations, grads


GRADIENT_METHODS = {  # name: (nnvis's raw map, pytorch-grad-cam's class)
    "gradcam": (lambda m, x, layer: gradcam.layer_attribute(m, x, TARGETS[:len(x)], layer, relu=False), pgc.GradCAM),
    "gradcam_plusplus": (lambda m, x, layer: gradcam_plusplus.layer_attribute(m, x, TARGETS[:len(x)], layer,
                                                                              eps=1e-6)[0], pgc.GradCAMPlusPlus),
    "xgradcam": (lambda m, x, layer: xgradcam.layer_attribute(m, x, TARGETS[:len(x)], layer, eps=1e-7)[0],
                 pgc.XGradCAM),
    "hirescam": (lambda m, x, layer: hirescam.layer_attribute(m, x, TARGETS[:len(x)], layer)[0], pgc.HiResCAM),
    "gradcam_elementwise": (lambda m, x, layer: hirescam.layer_attribute(m, x, TARGETS[:len(x)], layer, True)[0],
                            pgc.GradCAMElementWise),
    "layercam": (lambda m, x, layer: layercam.layer_attribute(m, x, TARGETS[:len(x)], layer)[0], pgc.LayerCAM),
    "eigen_gradcam": (lambda m, x, layer: eigencam.layer_attribute(m, x, TARGETS[:len(x)], layer, center=True,
                                                                   gradients=True)[0], pgc.EigenGradCAM),
}
EIGEN = {"eigen_gradcam"}  # a singular vector's sign is arbitrary: compared up to each image's sign


def library_maps(model, layer, x, reshape=None) -> dict[str, np.ndarray]:
    """Each gradient method's raw map from pytorch-grad-cam's get_cam_image, on one shared reading."""
    targets, activations, grads = library_reading(model, layer, x, reshape)
    maps = {}
    for name, (_, cls) in GRADIENT_METHODS.items():
        method = cls(model=model, target_layers=[layer], reshape_transform=reshape)
        maps[name] = method.get_cam_image(x, layer, targets, activations, grads, eigen_smooth=False)
        method.activations_and_grads.release()
    return maps


def signed_like(ours: torch.Tensor, theirs: np.ndarray) -> torch.Tensor:
    """Each image of `ours` turned to the sign that agrees with the reference's (for singular vectors)."""
    ours = ours.detach().double()
    agree = (ours.flatten(1) * torch.as_tensor(theirs, dtype=torch.float64).flatten(1)).sum(1)
    return ours * torch.where(agree < 0, -1.0, 1.0)[:, None, None, None]


@pytest.mark.parametrize("name, layer_name", [(n, layer) for n, layers in CONVNETS.items() for layer in layers])
def test_gradient_cams_equal_pytorch_grad_cam_on_convnets(convnets, images, name, layer_name):
    model = convnets[name]
    layer = find_layer(model, layer_name)
    theirs = library_maps(model, layer, images)
    for method, (ours_of, _) in GRADIENT_METHODS.items():
        ours = ours_of(model, images, layer)
        if method in EIGEN:
            ours = signed_like(ours, theirs[method])
        assert_close(ours[:, 0], theirs[method])


def vit_tokens(tensor: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's reshape transform for ViT: class token dropped, tokens on their 14 x 14 grid."""
    grid = tensor[:, 1:, :].reshape(tensor.size(0), 14, 14, tensor.size(2))
    return grid.permute(0, 3, 1, 2)


def swin_maps(tensor: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's reshape transform for Swin: channels-last to channels-first."""
    return tensor.permute(0, 3, 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("name, layer_name, reshape", [
    ("vit_b_16", "encoder.layers.encoder_layer_11.ln_1", vit_tokens),
    ("swin_t", "norm", swin_maps),  # features.7 feeds a LayerNorm: HiResCAM refuses there
])
def test_gradient_cams_equal_pytorch_grad_cam_on_tokens_and_channels_last(name, layer_name, reshape):
    torch.manual_seed(0)
    model = getattr(torchvision_models(), name)(weights=None).eval()
    head = model.heads.head if name == "vit_b_16" else model.head
    nn.init.normal_(head.weight, std=0.02)  # torchvision starts ViT's head at zero: no gradient would flow
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    layer = find_layer(model, layer_name)
    assert read_layer(model, image, 1, layer).layout.kind == ("tokens" if name == "vit_b_16" else "channels_last")
    theirs = library_maps(model, layer, image, reshape)
    for method, (ours_of, _) in GRADIENT_METHODS.items():
        ours = ours_of(model, image, layer)
        if method in EIGEN:
            ours = signed_like(ours, theirs[method])
        assert_close(ours[:, 0], theirs[method])


@pytest.mark.parametrize("name", list(CONVNETS))
def test_eigencam_centred_equals_pytorch_grad_cam_up_to_sign(convnets, images, name):
    model = convnets[name]
    layer = find_layer(model, CONVNETS[name][-1])
    method = pgc.EigenCAM(model=model, target_layers=[layer])
    _, activations, _ = library_reading(model, layer, images)
    theirs = method.get_cam_image(images, layer, None, activations, None, eigen_smooth=False)
    method.activations_and_grads.release()
    ours, _ = eigencam.layer_attribute(model, images, 0, layer, center=True)
    assert_close(signed_like(ours, theirs)[:, 0], theirs)


def perturbation_inputs(name: str, images: torch.Tensor) -> torch.Tensor:
    """Score-CAM and Ablation-CAM run one forward pass per channel (512 here): vgg16_bn gets one 32-px image."""
    if name != "vgg16_bn":
        return images
    return torch.nn.functional.interpolate(images[:1], size=(32, 32), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", list(CONVNETS))
def test_scorecam_weights_equal_pytorch_grad_cam(convnets, images, name):
    """The library upsamples each channel with aligned corners and adds 1e-8 to its range: reproduced."""
    model = convnets[name]
    layer = find_layer(model, CONVNETS[name][-1])
    x = perturbation_inputs(name, images)
    targets, activations, _ = library_reading(model, layer, x)
    method = pgc.ScoreCAM(model=model, target_layers=[layer])
    theirs = method.get_cam_image(x, layer, targets, activations, None, eigen_smooth=False)
    method.activations_and_grads.release()
    reading = read_layer(model, x, TARGETS[:len(x)], layer, gradients=False)
    weights = scorecam.channel_weights(model, x, TARGETS[:len(x)], reading.maps, eps=1e-8, align_corners=True)
    assert_close((weights[:, :, None, None] * reading.maps).sum(1), theirs)


def test_scorecam_equals_torchcam_with_its_masks(convnets, images):
    """torchcam scales each channel to [0, 1] before upsampling it (corners not aligned), and subtracts the
    unmasked image's logit before the softmax (which changes no weight): its masks, given to nnvis's
    weighting, give torchcam's map."""
    model = convnets["resnet18"]
    with torchcam.ScoreCAM(model, target_layer="layer4", batch_size=64, input_shape=(3, SIZE, SIZE)) as extractor:
        with torch.no_grad():
            scores = model(images)
        [theirs] = extractor(class_idx=TARGETS, scores=scores, normalized=False)
    reading = read_layer(model, images, TARGETS, "layer4", gradients=False)
    low = reading.maps.amin(dim=(2, 3), keepdim=True)
    high = reading.maps.amax(dim=(2, 3), keepdim=True)
    scaled = (reading.maps - low) / (high - low + 1e-8)
    weights = []
    for n in range(len(images)):
        def masks(start, stop, n=n):
            return torch.nn.functional.interpolate(scaled[n:n + 1, start:stop], size=(SIZE, SIZE), mode="bilinear",
                                                   align_corners=False)[0][:, None]
        weights.append(torch.softmax(scorecam.masked_scores(model, images[n:n + 1], masks, scaled.shape[1],
                                                            TARGETS[n]), 0))
    ours = (torch.stack(weights)[:, :, None, None] * reading.maps).sum(1).relu()
    assert_close(ours, theirs)


ABLATED = {"resnet18": "layer3", "vgg16_bn": "features.12"}  # ReLU outputs of 256 and 128 channels


@pytest.mark.parametrize("name", list(CONVNETS))
def test_ablationcam_equals_pytorch_grad_cam_after_a_relu(convnets, images, name):
    """After a ReLU the layer's minimum is 0 and pytorch-grad-cam zeroes the channel, as the paper does.
    Its weights are small differences of two logits, which it rounds to float32 first: both sides run in
    float64 (one image, a layer of a few hundred channels: float64 convolutions are slow) and nnvis rounds
    the logits to float32 too, or float32 rounding alone would differ by 1e-3."""
    model = copy.deepcopy(convnets[name]).double()
    layer = find_layer(model, ABLATED[name])
    x = perturbation_inputs(name, images)[:1].double()
    targets, activations, _ = library_reading(model, layer, x)
    assert activations.min() == 0
    method = pgc.AblationCAM(model=model, target_layers=[layer], batch_size=64)
    theirs = method.get_cam_image(x, layer, targets, activations, None, eigen_smooth=False)
    method.activations_and_grads.release()
    assert resolve_layer(model, ABLATED[name]) is layer  # the library put the layer back
    ours, _ = ablationcam.layer_attribute(model, x, TARGETS[:len(x)], layer, rounding=torch.float32)
    assert_close(ours[:, 0], theirs)


@pytest.mark.parametrize("cls, ours_of", [
    ("XGradCAM", lambda m, x: xgradcam.layer_attribute(m, x, TARGETS, "layer4", eps=1e-8)[0]),
    ("LayerCAM", lambda m, x: layercam.layer_attribute(m, x, TARGETS, "layer4")[0]),
])
def test_xgradcam_and_layercam_equal_torchcam(convnets, images, cls, ours_of):
    model = convnets["resnet18"]
    with getattr(torchcam, cls)(model, target_layer="layer4", input_shape=(3, SIZE, SIZE)) as extractor:
        scores = model(images)
        [theirs] = extractor(class_idx=TARGETS, scores=scores, normalized=False)
    assert_close(ours_of(model, images)[:, 0].relu(), theirs)


def test_layercam_fusion_equals_torchcam(convnets, images):
    """torchcam min-max normalizes each layer's map before tanh(2 x cam), where the paper divides by the
    maximum: the test subtracts each map's minimum first, as torchcam does."""
    model = convnets["resnet18"]
    layers = ["layer2", "layer3", "layer4"]
    with torchcam.LayerCAM(model, target_layer=layers, input_shape=(3, SIZE, SIZE)) as extractor:
        scores = model(images)
        cams = extractor(class_idx=TARGETS, scores=scores)
        theirs = torchcam.LayerCAM.fuse_cams(cams)
    rectified = [layercam.layer_attribute(model, images, TARGETS, layer)[0].relu() for layer in layers]
    shifted = [cam - cam.amin(dim=(2, 3), keepdim=True) for cam in rectified]
    assert_close(layercam.fuse(shifted)[:, 0], theirs)
