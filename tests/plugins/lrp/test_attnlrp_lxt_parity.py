"""AttnLRP equals LXT 2.1's rules on timm's ViT-Ti and on torchvision's VisionTransformer.

timm's vit_tiny_patch16_224 (12 blocks, width 192, 3 heads) at 32 px with 8-px patches, random weights
calibrated as the architecture sweep does, one demo image, the predicted class; the reference is the
model's forward written with LXT's explicit rules (lxt_vit.py says why and how). One step is reproduced
on LXT's side, documented in docs/lrp.md: LXT stabilizes a denominator by z + eps whatever z's sign,
nnvis (as Zennit) by eps on z's own side. With it the maps agree to 1e-10 of LXT's largest |value| in
float64 (measured 4e-14) and 1e-4 in float32 (measured 3e-5: rounding, magnified where a denominator
is near zero); without it they differ by about 5e-3 (measured 7.4e-3 float32, 4.7e-3 float64).
torchvision's model (nn.MultiheadAttention, explicit on the copy) is compared with LXT on a timm model
holding its weights.
"""

from __future__ import annotations

import attnlrp_models as vits
import lrp_models as models
import pytest
import torch
from architecture_sweep import calibration_images

from nnvis_plugins.lrp import attnlrp

pytest.importorskip("lxt")
import lxt_vit  # noqa: E402

setup_module, teardown_module = models.one_thread()

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


def relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


@pytest.fixture(scope="module")
def vit_tiny():
    model = vits.timm_vit()
    image = calibration_images(vits.SIZE)[:1]
    with torch.no_grad():
        target = int(model(image).argmax())
    return model, image, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_the_maps_equal_lxts_on_timm_vit_tiny(vit_tiny, attention, dtype):
    model, image, target = vit_tiny
    model, image = model.to(dtype), image.to(dtype)
    ours = attnlrp.attribute(model, image, target, attention=attention)
    with lxt_vit.signed_stabilizer():
        reference = lxt_vit.attribute(model, image, target, held=attention == "cp")
    assert relative(ours, reference) <= TOLERANCE[dtype]
    if dtype == torch.float64 and attention == "attnlrp":
        # The stabilizer's sign is the whole difference to LXT as shipped.
        assert relative(ours, lxt_vit.attribute(model, image, target)) > 1e-3


@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_torchvisions_multi_head_attention_equals_lxt_on_the_same_weights(attention):
    vit = vits.torchvision_vit().double()
    image = vits.images(1, dtype=torch.float64)
    ours = attnlrp.attribute(vit, image, 2, attention=attention)
    with lxt_vit.signed_stabilizer():
        reference = lxt_vit.attribute(vits.as_timm(vit).double(), image, 2, held=attention == "cp")
    assert relative(ours, reference) <= TOLERANCE[torch.float64]
