"""Every built-in plugin passes the same contract check a third-party plugin's author runs
(nnvis_core.testing.check_plugin): valid outputs, the model left as found, reproducible results.

A new built-in joins this list by being registered; give it cheaper parameters in CHEAP when
its defaults take more than a few seconds on two demo images.
"""

from __future__ import annotations

import pytest

from nnvis_core.registry import load_registry
from nnvis_core.testing import check_plugin

BUILTINS = sorted(name for name, reg in load_registry().plugins.items() if reg.origin.distribution == "nnvis")
CHEAP: dict[str, dict] = {"sanity_check": {"max_levels": 4}}


def test_the_built_ins_are_found():
    assert {"saliency", "gradcam", "integrated_gradients"} <= set(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_built_in_plugin_follows_the_contract(name):
    check = check_plugin(load_registry().plugin(name), params=CHEAP.get(name), images=2)
    # A dataset plugin may show everything beside the images (image_artifacts), nothing globally.
    assert check.results and all(result.artifacts or any(result.image_artifacts.values())
                                 for result in check.results.values())
