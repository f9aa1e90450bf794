"""`nnvis plugins new NAME`: write a plugin package that installs, registers and passes its own tests.

The skeleton is the tutorial's plugin of docs/plugins.md (a brightness heatmap
with one parameter and one metric) under the chosen name, so that the guide and
the generated files tell the same story; a test keeps them equal.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from nnvis_core.registry import PLUGIN_NAME


class ScaffoldError(ValueError):
    """A name or a folder that a skeleton cannot be written to."""


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


def write_plugin_package(name: str, parent: Path) -> Path:
    """Write the skeleton of plugin `name` into parent/nnvis-plugin-NAME and return that folder.

    Refuses a folder that exists and is not empty, so nothing is overwritten.
    """
    names = package_names(name)
    root = Path(parent) / names["distribution"]
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root}: already exists and is not empty; choose another name or folder")
    for relpath, template in FILES.items():
        path = root / Template(relpath).substitute(names)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(names), encoding="utf-8")
    return root


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

MODULE = '''\
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

TEST = '''\
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

README = """\
# $distribution

An nnvis plugin that adds `$name` to `nnvis report`.

    pip install -e ".[test]"
    nnvis plugins                      # lists $name
    nnvis report IMAGES --plugins $name --set $name.gamma=2
    python -m pytest                   # the plugin contract, checked on the demo model
"""

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "$module/__init__.py": MODULE,
    "tests/test_$module.py": TEST,
}
