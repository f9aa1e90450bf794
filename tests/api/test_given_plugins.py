"""A Plugin object given to nnvis.run runs, even where an installed plugin has its name, with a
warning that says so (nnvis.models.given_wins); never silently the installed one."""

from __future__ import annotations

import numpy as np
import pytest

import nnvis
from nnvis_core import Heatmap, Plugin, Scope


class Flat(Plugin):
    name = "saliency"  # the name of an installed plugin
    title = "Flat"
    description = "A map of ones: not the installed saliency."
    scope = Scope.IMAGE

    def run_image(self, ctx, item, params):
        return [Heatmap("ones", np.ones(item.pixels.shape[:2]))]


def test_a_given_plugin_with_an_installed_name_wins_with_a_warning(demo_images):
    files = sorted(demo_images.rglob("*.png"))[:1]
    with pytest.warns(UserWarning, match=r"plugin 'saliency': the object given to nnvis.run runs instead of the "
                                         r"installed plugin"):
        run = nnvis.run(files, "demo", plugins=[Flat()], device="cpu", progress=False)
    assert np.array_equal(run.result(run.images[0], "saliency").artifacts[0].values, np.ones((64, 64)))
    assert run.report()["load_failures"] == []
    assert run.view()["plugins"][0]["title"] == "Flat"


def test_a_given_object_that_is_no_plugin_is_a_usage_error(demo_images):
    class NoScope(Flat):
        scope = "sometimes"

    with pytest.raises(nnvis.UsageError, match="plugin 'saliency'"):
        nnvis.run(sorted(demo_images.rglob("*.png"))[:1], "demo", plugins=[NoScope()], progress=False)
