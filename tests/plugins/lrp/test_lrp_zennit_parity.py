"""Every LRP composite equals Zennit 0.5.1's on torchvision vgg16, vgg16_bn, resnet18 and resnet50.

Random weights, calibrated as the architecture sweep does (BatchNorm statistics from demo images,
the head scaled to unit logit spread), one 32-px demo image, the predicted class. Two things are
reproduced on Zennit's side, both documented in docs/lrp.md:

- Zennit 0.5.1 leaves a merged BatchNorm computing x / sqrt(1 + eps) instead of x; later Zennit
  sets its eps to 0, and so does the canonizer here (nnvis merges BatchNorm into Identity);
- the relevance put on the output is the target logit (attr_output = output * one_hot).

The input is contiguous, as nnvis makes every input: Zennit's residual sum (stack, then sum) turns a
channels-last activation contiguous, which changes the convolution kernels after it and so the
rounding. On those terms the maps agree bitwise; the test allows 1e-5 of the largest |value|.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import lrp_models as models
import pytest
import torch
from architecture_sweep import calibrate, calibration_images

from nnvis_core.models.loaded import IMAGENET_MEAN, IMAGENET_STD
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins import lrp

TORCHVISION = torchvision_models()  # before zennit, which imports torchvision itself
pytest.importorskip("zennit")
from zennit import canonizers as zennit_canonizers  # noqa: E402
from zennit import composites as zennit_composites  # noqa: E402
from zennit import torchvision as zennit_torchvision  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.rules import Flat  # noqa: E402
from zennit.types import Linear  # noqa: E402

setup_module, teardown_module = models.one_thread()

SIZE = 32
MODELS = ("vgg16", "vgg16_bn", "resnet18", "resnet50")
TOLERANCE = 1e-5


class MergeIntoIdentity(zennit_canonizers.SequentialMergeBatchNorm):
    """Zennit 0.5.1's merge, leaving the BatchNorm the identity (eps 0), as Zennit does since."""

    def register(self, linears, batch_norm):
        self.eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.eps


def zennit_composite(model_name: str, name: str, low: torch.Tensor, high: torch.Tensor):
    """Zennit's composite for one of ours; epsilon-gamma-flat is EpsilonGammaBox with Flat first."""
    canonizers = [MergeIntoIdentity()]
    if model_name.startswith("resnet"):
        canonizers = [zennit_canonizers.CompositeCanonizer((
            MergeIntoIdentity(), zennit_torchvision.ResNetBottleneckCanonizer(),
            zennit_torchvision.ResNetBasicBlockCanonizer()))]
    made = {
        "epsilon-plus": lambda: zennit_composites.EpsilonPlus(canonizers=canonizers),
        "epsilon-plus-flat": lambda: zennit_composites.EpsilonPlusFlat(canonizers=canonizers),
        "epsilon-gamma-box": lambda: zennit_composites.EpsilonGammaBox(low=low, high=high, canonizers=canonizers),
        "epsilon-gamma-flat": lambda: zennit_composites.EpsilonGammaBox(
            low=low, high=high, first_map=[(Linear, Flat())], canonizers=canonizers),
        "epsilon-alpha2-beta1": lambda: zennit_composites.EpsilonAlpha2Beta1(canonizers=canonizers),
        "epsilon-alpha2-beta1-flat": lambda: zennit_composites.EpsilonAlpha2Beta1Flat(canonizers=canonizers),
    }
    return made[name]()


@dataclass
class Subject:
    name: str
    model: torch.nn.Module
    zennit_model: torch.nn.Module  # Zennit writes into the weights it canonizes: a copy of its own
    image: torch.Tensor
    target: int


@pytest.fixture(scope="module", params=MODELS)
def subject(request) -> Subject:
    torch.manual_seed(0)
    model = getattr(TORCHVISION, request.param)(weights=None).eval()
    calibrate(model, SIZE)
    image = calibration_images(SIZE)[:1].contiguous()
    with torch.no_grad():
        target = int(model(image).argmax())
    return Subject(request.param, model, copy.deepcopy(model), image, target)


@pytest.mark.parametrize("composite", list(lrp.COMPOSITES))
def test_the_composite_equals_zennit(subject, composite):
    low, high = lrp.box_bounds(IMAGENET_MEAN, IMAGENET_STD)
    ours = lrp.attribute(subject.model, subject.image, subject.target, composite=composite, bounds=(low, high))
    one_hot = torch.zeros(1, 1000)
    one_hot[0, subject.target] = 1
    attributor = Gradient(subject.zennit_model, zennit_composite(subject.name, composite, low, high))
    with attributor:
        _, theirs = attributor(subject.image.clone(), lambda output: output * one_hot)
    difference = float((ours - theirs).abs().max() / theirs.abs().max())
    assert difference <= TOLERANCE, f"{subject.name} {composite}: {difference:.2e} of the largest relevance"
