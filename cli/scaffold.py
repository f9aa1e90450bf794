"""`nnvis plugins new NAME --kind KIND`: write a plugin package that installs, registers and passes its own tests.

Each kind is a small working plugin of one shape, under the chosen name:

- image: the tutorial's plugin of docs/plugins.md (a brightness heatmap with one
  parameter and one metric), so that the guide and the generated files tell the
  same story; a test keeps them equal.
- attribution: a method on nnvis_core.toolkit.AttributionPlugin (gradient times
  the difference from a baseline image), scored by deletion/insertion AUC and
  usable by the sanity check.
- dataset: the folder's mean confidence per class, as a table and a chart.
- model: the size of each layer's weights, as a table and a chart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from nnvis_core.run.registry import PLUGIN_NAME


class ScaffoldError(ValueError):
    """A name or a folder that a skeleton cannot be written to."""


@dataclass(frozen=True)
class Kind:
    """One kind of skeleton: its module and test templates, and how to try it in a report ($name etc. filled in)."""

    module: str
    test: str
    try_it: str  # the report command the README and `nnvis plugins new` suggest


def package_names(name: str) -> dict[str, str]:
    """The names derived from a plugin name: distribution, import module, class, title."""
    if not PLUGIN_NAME.match(name):
        raise ScaffoldError(f"plugin name {name!r} must match {PLUGIN_NAME.pattern} (lower case, e.g. brightness)")
    words = [w for w in re.split(r"[-_]", name) if w]
    return {
        "name": name,
        "distribution": "nnvis-plugin-" + "-".join(words),
        "module": "nnvis_" + "_".join(words),
        "cls": "".join(w.capitalize() for w in words),
        "title": " ".join(words).capitalize(),
    }


def try_it(name: str, kind: str = "image") -> str:
    """The `nnvis report` command that shows a freshly written plugin of this kind."""
    return Template(_kind(kind).try_it).substitute(package_names(name))


def write_plugin_package(name: str, parent: Path, kind: str = "image") -> Path:
    """Write the skeleton of plugin `name` of `kind` (one of KINDS) into parent/nnvis-plugin-NAME; return that folder.

    Refuses a folder that exists and is not empty, so nothing is overwritten.
    """
    names = package_names(name)
    chosen = _kind(kind)
    values = {**names, "try_it": try_it(name, kind)}
    root = Path(parent) / names["distribution"]
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root}: already exists and is not empty; choose another name or folder")
    files = {"pyproject.toml": PYPROJECT, "README.md": README, "$module/__init__.py": chosen.module,
             "tests/test_$module.py": chosen.test}
    for relpath, template in files.items():
        path = root / Template(relpath).substitute(names)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(values), encoding="utf-8")
    return root


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ScaffoldError(f"unknown plugin kind {kind!r}: choose one of {', '.join(KINDS)}")
    return KINDS[kind]


PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "An nnvis plugin: $title."
requires-python = ">=3.10"
dependencies = ["nnvis>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# nnvis finds plugins through this entry-point group.
[project.entry-points.nnvis]
$name = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

# --- image: the tutorial's plugin (docs/plugins.md shows these files; a test keeps them equal) ---

IMAGE_MODULE = '''\
"""$title: an nnvis plugin. Replace the computation in run_image with your own."""

from nnvis_core import Heatmap, Param, Plugin, Result, Scope, hookimpl


class $cls(Plugin):
    name = "$name"
    title = "$title"
    description = "Brightness of each input pixel (mean of R, G and B), raised to a power."
    scope = Scope.IMAGE
    params = (Param("gamma", float, 1.0, "exponent applied to the brightness", minimum=0.1, maximum=10.0),)

    def run_image(self, ctx, item, params):
        brightness = (item.pixels.mean(axis=2) / 255.0) ** params["gamma"]
        confidence = float(item.probabilities[item.predicted])
        return Result(
            [Heatmap("$name", brightness, label="brightness", caption=f"gamma {params['gamma']}")],
            metrics={"confidence": confidence},
        )


@hookimpl
def nnvis_register_plugins(register):
    register($cls())
'''

IMAGE_TEST = '''\
"""Tests for $name, with nnvis's plugin test kit (nnvis_core.testing)."""

import numpy as np
from nnvis_core.testing import check_installed, check_plugin

from $module import $cls


def test_follows_the_plugin_contract():
    check_plugin($cls())


def test_gamma_is_applied():
    plain = check_plugin($cls(), params={"gamma": 1.0}, images=2)
    squared = check_plugin($cls(), params={"gamma": 2.0}, images=2)
    for image in plain.results:
        np.testing.assert_allclose(squared.artifacts(image)[0].values, plain.artifacts(image)[0].values ** 2)


def test_is_found_through_its_entry_point():
    assert check_installed("$name").origin.distribution == "$distribution"
'''

# --- attribution: one step on the toolkit's base class ---

ATTRIBUTION_MODULE = '''\
"""$title: an nnvis attribution method. Replace the computation in attribute with your own,
and check it in the tests' test_computes_what_the_method_defines (skipped until you write it).

The base class, nnvis_core.toolkit.AttributionPlugin, does the rest: it resolves the
target class, draws the map with a colour bar, adds the deletion and insertion AUC
(and the mask share when the images have masks), checks that the model is left as
it was found, and lets the sanity check test the method (sanity_check.methods=$name).
"""

import torch

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import FAITHFULNESS_STEPS, TARGET, AttributionPlugin, Explanation, gradient, model_baseline

BASELINES = ("black", "grey", "blur")


def attribute(model: torch.nn.Module, inputs: torch.Tensor, target: int, baseline: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W): (inputs - baseline) times the gradient of the target class score at the inputs."""
    return (inputs - baseline).detach() * gradient(model, inputs, target)


class $cls(AttributionPlugin):
    name = "$name"
    title = "$title"
    description = (
        "The gradient of the target class score times the difference between the image and a baseline "
        "image: to first order, how much moving each input value from the baseline to the image raises "
        "the score. Signed: red supports the class."
    )
    label = "gradient x (input - baseline)"
    params = (
        TARGET,
        Param("baseline", str, "black", "the image compared with: black, grey, or blur (the image blurred)",
              choices=BASELINES),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params):
        baseline = model_baseline(params["baseline"], inputs, ctx.model.preprocess)
        attribution = attribute(ctx.module, inputs, target, baseline)[0]  # (C, H, W): the base sums the channels
        return Explanation(attribution, caption=f"baseline {params['baseline']}")


@hookimpl
def nnvis_register_plugins(register):
    register($cls())
'''

ATTRIBUTION_TEST = '''\
"""Tests for $name, with nnvis's plugin test kit (nnvis_core.testing).

The first tests check what every attribution method owes nnvis (the contract, a map over
the input, the entry point): they keep passing when you replace the method with your own.
test_computes_what_the_method_defines is the place for your method's own check; it is
skipped until you write it (see the TODO there).
"""

import pytest
import torch
from nnvis_core.testing import check_installed, check_plugin, demo_items

from $module import $cls


def test_follows_the_plugin_contract_and_is_scored():
    check = check_plugin($cls())
    for image, result in check.results.items():
        heatmap = result.artifacts[0]
        assert heatmap.title == "$name" and heatmap.values.shape == (64, 64), image  # the demo input's size
        assert {"deletion_auc", "insertion_auc"} <= set(result.metrics), image


def test_explains_an_image_with_a_finite_map_over_the_input(tmp_path):
    ctx, [item] = demo_items(tmp_path, images=1)
    plugin = $cls()
    defaults = {param.name: param.default for param in plugin.params}
    heat = plugin.heatmap(ctx, item, item.predicted, defaults)  # the (H, W) map the report draws
    assert heat.shape == ctx.input(item).shape[-2:] and bool(torch.isfinite(heat).all())


@pytest.mark.skip(reason="TODO: check what your method computes, then remove this mark")
def test_computes_what_the_method_defines(tmp_path):
    # TODO: assert that explain() computes your method's definition, computed here another way:
    # on the demo model (demo_items, as below), or on a tiny model whose answer you know by hand
    # (a model whose class score reads one pixel should put all the attribution on that pixel).
    # The body below checks the method this package was generated with, gradient x (input - grey);
    # keep it while the method is that one, replace it when you write yours.
    ctx, [item] = demo_items(tmp_path, images=1)
    inputs, target = ctx.input(item), item.predicted
    mean = torch.tensor(ctx.model.preprocess.mean, dtype=inputs.dtype).view(1, -1, 1, 1)
    std = torch.tensor(ctx.model.preprocess.std, dtype=inputs.dtype).view(1, -1, 1, 1)
    grey = (0.5 - mean) / std  # the grey image, normalized as the model sees it
    pixels = inputs.clone().requires_grad_(True)
    (score_gradient,) = torch.autograd.grad(ctx.module(pixels)[0, target], pixels)
    expected = ((inputs - grey) * score_gradient)[0]
    explanation = $cls().explain(ctx, item, inputs, target, {"baseline": "grey"})
    torch.testing.assert_close(explanation.attribution, expected)


def test_is_found_through_its_entry_point():
    assert check_installed("$name").origin.distribution == "$distribution"
'''

# --- dataset: one call over the streamed folder ---

DATASET_MODULE = '''\
"""$title: an nnvis dataset plugin. Replace the computation in run_dataset with your own."""

from collections import defaultdict

from nnvis_core import Chart, Param, Plugin, Result, Scope, Table, Text, hookimpl


class $cls(Plugin):
    name = "$name"
    title = "$title"
    description = (
        "How confident the model is on the folder, class by class: the number of images and the mean "
        "probability the model gives its predicted class, grouped by predicted class or by true class."
    )
    scope = Scope.DATASET
    params = (
        Param("group_by", str, "predicted", "group images by predicted class, or by true class (their class folder)",
              choices=("predicted", "true")),
    )

    def run_dataset(self, ctx, items, params):
        confidences = defaultdict(list)  # class index -> each image's probability of its predicted class
        for item in items:  # streamed: one image at a time, never the whole folder in memory
            group = item.predicted if params["group_by"] == "predicted" else item.true_class
            if group is not None:
                confidences[group].append(float(item.probabilities[item.predicted]))
        if not confidences:
            return [Text("Confidence per class", "No image has a true class: put the images in class folders.")]
        classes = sorted(confidences)
        names = [ctx.class_names[c] for c in classes]
        means = [sum(confidences[c]) / len(confidences[c]) for c in classes]
        rows = [[name, len(confidences[c]), mean] for name, c, mean in zip(names, classes, means)]
        every = [p for c in classes for p in confidences[c]]
        return Result(
            [Table("Confidence per class", ["class", "images", "mean confidence"], rows),
             Chart("Mean confidence per class", list(range(len(classes))), {"mean confidence": means},
                   x_label=f"{params['group_by']} class", y_label="probability", x_ticks=names)],
            metrics={"mean_confidence": sum(every) / len(every)},
        )


@hookimpl
def nnvis_register_plugins(register):
    register($cls())
'''

DATASET_TEST = '''\
"""Tests for $name, with nnvis's plugin test kit (nnvis_core.testing)."""

from collections import defaultdict

import pytest
from nnvis_core.testing import check_installed, check_plugin

from $module import $cls


def test_follows_the_plugin_contract_and_averages_each_predicted_class():
    check = check_plugin($cls())
    predicted = defaultdict(list)  # what report.json says: each image's top class and its probability
    for image in check.report["images"]:
        predicted[image["predictions"][0]["name"]].append(image["predictions"][0]["probability"])
    table = check.artifacts(None)[0]
    assert {row[0]: row[1] for row in table.rows} == {name: len(p) for name, p in predicted.items()}
    for name, count, mean in table.rows:
        assert mean == pytest.approx(sum(predicted[name]) / count, abs=1e-5)


def test_groups_by_true_class():
    check = check_plugin($cls(), params={"group_by": "true"}, images=2)
    table = check.artifacts(None)[0]
    assert [row[1] for row in table.rows] == [1, 1]  # the kit writes one image per class


def test_is_found_through_its_entry_point():
    assert check_installed("$name").origin.distribution == "$distribution"
'''

# --- model: one call with the model alone ---

MODEL_MODULE = '''\
"""$title: an nnvis model plugin. Replace the computation in run_model with your own."""

import torch

from nnvis_core import Chart, Param, Plugin, Scope, Table, Text, hookimpl

NORMS = {
    "rms": lambda weight: weight.square().mean().sqrt(),
    "l2": lambda weight: weight.square().sum().sqrt(),
    "max_abs": lambda weight: weight.abs().max(),
}


class $cls(Plugin):
    name = "$name"
    title = "$title"
    description = (
        "The size of the weights of each Conv2d and Linear layer, in the order the model defines them, "
        "as a table and a chart: how training spread the weights over depth."
    )
    scope = Scope.MODEL
    params = (
        Param("norm", str, "rms", "rms (root mean square), l2 (Euclidean norm) or max_abs (largest magnitude)",
              choices=tuple(NORMS)),
    )

    def run_model(self, ctx, params):
        norm = params["norm"]
        layers = [(name, module) for name, module in ctx.module.named_modules()
                  if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]
        if not layers:
            return [Text("Weights per layer", "The model has no Conv2d or Linear layer.")]
        with torch.no_grad():
            values = [float(NORMS[norm](module.weight.detach().double())) for _, module in layers]
        rows = [[name, type(module).__name__, module.weight.numel(), value]
                for (name, module), value in zip(layers, values)]
        return [
            Table(f"Weight {norm} per layer", ["layer", "type", "weights", norm], rows),
            Chart(f"Weight {norm} per layer", list(range(len(layers))), {norm: values},
                  x_label="layer", y_label=norm, x_ticks=[name for name, _ in layers]),
        ]


@hookimpl
def nnvis_register_plugins(register):
    register($cls())
'''

MODEL_TEST = '''\
"""Tests for $name, with nnvis's plugin test kit (nnvis_core.testing)."""

import pytest
import torch
from nnvis_core.testing import check_installed, check_plugin, demo_items

from $module import $cls


def test_follows_the_plugin_contract():
    check = check_plugin($cls(), images=1)
    table, chart = check.artifacts(None)
    assert len(table.rows) == len(chart.x) > 0


def test_norms_are_those_of_the_weights(tmp_path):
    ctx, _ = demo_items(tmp_path, images=1)
    table, chart = $cls().run_model(ctx, {"norm": "l2"})
    modules = dict(ctx.module.named_modules())
    for layer, _, count, value in table.rows:
        assert count == modules[layer].weight.numel()
        assert value == pytest.approx(float(torch.linalg.vector_norm(modules[layer].weight.detach())), rel=1e-5)
    assert chart.series["l2"] == [row[3] for row in table.rows]


def test_is_found_through_its_entry_point():
    assert check_installed("$name").origin.distribution == "$distribution"
'''

README = """\
# $distribution

An nnvis plugin that adds `$name` to `nnvis report`.

    pip install -e ".[test]"
    nnvis plugins                      # lists $name
    $try_it
    python -m pytest                   # the plugin contract, checked on the demo model
"""

KINDS: dict[str, Kind] = {
    "image": Kind(IMAGE_MODULE, IMAGE_TEST, "nnvis report IMAGES --plugins $name --set $name.gamma=2"),
    "attribution": Kind(ATTRIBUTION_MODULE, ATTRIBUTION_TEST,
                        "nnvis report IMAGES --plugins $name,sanity_check --set sanity_check.methods=gradient,$name"),
    "dataset": Kind(DATASET_MODULE, DATASET_TEST, "nnvis report IMAGES --plugins $name --set $name.group_by=true"),
    "model": Kind(MODEL_MODULE, MODEL_TEST, "nnvis report IMAGES --plugins $name --set $name.norm=l2"),
}
