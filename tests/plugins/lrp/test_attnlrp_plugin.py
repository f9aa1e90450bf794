"""The attnlrp plugin in a report on the demo ViT (the contract check), and its refusal of convnets."""

from __future__ import annotations

import lrp_models as models
import pytest

from nnvis_core.demo.vit import load_demo_vit
from nnvis_core.models.loaded import Preprocess
from nnvis_core.testing import check_installed, check_plugin
from nnvis_plugins.lrp.attnlrp import AttnLRP

setup_module, teardown_module = models.one_thread()


def test_the_plugin_is_installed():
    assert check_installed("attnlrp").item.name == "attnlrp"


@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_the_plugin_follows_the_contract_on_the_demo_vit(attention):
    check = check_plugin(AttnLRP(), params={"attention": attention, "faithfulness_steps": 2},
                         model=load_demo_vit(), images=2)
    heatmaps = [artifact for result in check.results.values() for artifact in result.artifacts
                if artifact.title == "attnlrp"]
    assert len(heatmaps) == 2
    for heatmap in heatmaps:
        assert heatmap.signed
        assert "linear epsilon; relevance sums to" in heatmap.caption


def test_a_convnet_is_passed_over_with_the_reason():
    class Context:
        class model:
            preprocess = Preprocess(resize=None, crop=32)
        device = "cpu"
        module = models.chain().float()

    assert "needs a transformer" in AttnLRP().applies_to(Context)
