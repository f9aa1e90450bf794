"""The lrp plugin in a report on the demo net: the contract check a plugin author runs, and what the card says."""

from __future__ import annotations

import lrp_models as models

from nnvis_core.testing import check_installed, check_plugin
from nnvis_plugins.lrp.plugin import LRP

setup_module, teardown_module = models.one_thread()


def test_the_plugin_is_installed():
    assert check_installed("lrp").item.name == "lrp"


def test_the_plugin_follows_the_contract_and_names_its_rules():
    check = check_plugin(LRP(), params={"composite": "epsilon-plus-flat", "rules": "linear=epsilon",
                                        "faithfulness_steps": 4}, images=2)
    heatmaps = [artifact for result in check.results.values() for artifact in result.artifacts
                if artifact.title == "lrp"]
    assert len(heatmaps) == 2
    for heatmap in heatmaps:
        assert heatmap.signed
        assert "epsilon-plus-flat: first layer flat, conv z-plus, linear epsilon" in heatmap.caption


def test_the_rules_parameter_is_checked_before_a_run():
    rules = next(param for param in LRP.params if param.name == "rules")
    assert rules.check("conv=gamma,first=none") is None
    assert "unknown rule 'gama'" in rules.check("conv=gama")
