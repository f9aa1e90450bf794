"""An nn.Module given without `preprocess` (nnvis.models.assumed_preprocess): a warning names what
was assumed and how to say otherwise; a module whose input size can be read off (a first Linear
layer, or a tiny input it takes where it refuses 224) is fed that size, not ImageNet's 224."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import nnvis
from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC, load_demo_model


def cifar_like() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 16 * 16, 10))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


@pytest.mark.parametrize("model", [mlp, cifar_like], ids=["first-linear", "tiny-input"])
def test_a_module_whose_input_size_can_be_read_off_is_not_resized_to_224(model):
    with pytest.warns(UserWarning, match=r"was given without preprocess: .*3x32x32.*class names class 0.*"
                                         r"Say otherwise with preprocess=") as caught:
        explained = nnvis.explain(model(), torch.rand(3, 32, 32), "saliency", device="cpu")
    assert explained.map.shape == (32, 32)
    assert len([w for w in caught if "without preprocess" in str(w.message)]) == 1
    assert caught[0].filename == __file__  # points at the user's call


def test_a_module_that_takes_224_is_warned_of_imagenet_s_preprocessing():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.warns(UserWarning, match="ImageNet's preprocessing: resize 256, crop 224"):
        assert nnvis.explain(model, torch.rand(3, 32, 32), "saliency", device="cpu").map.shape == (224, 224)


def test_nothing_is_said_when_preprocess_and_class_names_are_given():
    preprocess = {"resize": DEMO_SPEC["input_size"], "crop": DEMO_SPEC["input_size"],
                  "mean": DEMO_SPEC["mean"], "std": DEMO_SPEC["std"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnvis.explain(load_demo_model(None), torch.rand(3, 64, 64), "saliency", preprocess=preprocess,
                      class_names=CLASS_NAMES, device="cpu")


def test_a_module_given_with_preprocess_but_no_class_names_is_warned_of_the_names_only():
    with pytest.warns(UserWarning) as caught:
        nnvis.explain(mlp(), torch.rand(3, 32, 32), "saliency", preprocess={"resize": 32, "crop": 32}, device="cpu")
    messages = [str(w.message) for w in caught]
    assert messages == ["nnvis: Sequential was given without class_names: class names class 0, class 1... "
                        "Say otherwise with class_names=[...]"]
