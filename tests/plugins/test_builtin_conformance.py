"""Every built-in plugin passes the same contract check a third-party plugin's author runs
(nnvis_core.testing.check_plugin): valid outputs, the model left as found, reproducible results.

A new built-in joins this list by being registered; give it cheaper parameters in CHEAP when
its defaults take more than a few seconds on two demo images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnvis_core.run.registry import load_registry
from nnvis_core.testing import check_plugin, demo_items

BUILTINS = sorted(name for name, reg in load_registry().plugins.items() if reg.origin.distribution == "nnvis")
CHEAP: dict[str, dict] = {"sanity_check": {"max_levels": 4},
                          "dataset_distillation": {"outer_steps": 1, "inner_steps": 1, "eval_inits": 1},
                          "hidden_subnetwork": {"keep": "50", "init": "signed_constant", "epochs": 1, "maps": 2},
                          "texture_synthesis": {"steps": 10}, "feature_inversion": {"steps": 10},
                          # the feature visualizations: the contract is the same at 32 steps as at 512
                          "semantic_dictionary": {"steps": 32}, "channel_maximization": {"steps": 32},
                          "class_maximization": {"steps": 32},
                          "style_transfer": {"steps": 5, "style": str(Path(__file__).resolve().parents[2]
                                                                      / "examples/demo/images/ring/ring_00.png")}}
# The demo's own class folders serve as concepts for the concept plugins (8 concepts of 5 images).
CONCEPTS = Path(__file__).resolve().parents[2] / "examples/demo/images"
CHEAP["tcav"] = {"random_sets": 2, "set_size": 2, "min_images": 1}
CHEAP["craft"] = {"concepts": 3, "designs": 8, "min_images": 1, "crop": 32}
CHEAP["concept_dictionary"] = {"atoms": 8, "steps": 20}
# Plugins that need more than two demo images (distillation and the subnetwork search hold out one image of
# each class).
IMAGES: dict[str, int] = {"dataset_distillation": 16, "hidden_subnetwork": 16}


def test_the_built_ins_are_found():
    assert {"saliency", "gradcam", "integrated_gradients"} <= set(BUILTINS)


def tiny_vit() -> torch.nn.Module:
    """A two-block ViT for the demo's 64-px images and classes (transformer methods do not apply
    to the demo convnet). torchvision starts the head at zero; it gets random weights here."""
    from nnvis_core.demo import CLASS_NAMES
    from nnvis_core.torchvision_compat import torchvision_models

    torch.manual_seed(0)
    model = torchvision_models().VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2,
                                                   hidden_dim=32, mlp_dim=64, num_classes=len(CLASS_NAMES))
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


@pytest.mark.parametrize("name", BUILTINS)
def test_built_in_plugin_follows_the_contract(name, tmp_path):
    demo_ctx = demo_items(tmp_path, images=1)[0]
    model = None if load_registry().plugin(name).applies_to(demo_ctx) is None else tiny_vit()
    check = check_plugin(load_registry().plugin(name), params=CHEAP.get(name), images=IMAGES.get(name, 2),
                         model=model, concepts=CONCEPTS)
    # A dataset plugin may show everything beside the images (image_artifacts), nothing globally.
    assert check.results and all(result.artifacts or any(result.image_artifacts.values())
                                 for result in check.results.values())
