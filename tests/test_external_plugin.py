"""A third-party distribution, installed with pip from a fixture folder, is listed and runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "nnvis-plugin-tiny"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> dict:
    """pip-install the fixture into its own folder and return an environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "nnvis-plugin-tiny"
    shutil.copytree(FIXTURE, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def nnvis(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnvis_cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_external_plugin_is_listed_with_its_distribution(installed_plugin):
    result = nnvis(installed_plugin, "plugins")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("tiny-channel-means"))
    assert "nnvis-plugin-tiny 0.3.1" in row and row.rstrip().endswith("ok")


def test_external_plugin_runs_in_a_report(installed_plugin, few_demo_images, tmp_path):
    out = tmp_path / "out"
    result = nnvis(installed_plugin, "report", str(few_demo_images), "-o", str(out),
                   "--plugins", "saliency,tiny-channel-means", "--set", "tiny-channel-means.decimals=2")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    origins = {p["name"]: p["origin"] for p in report["plugins"]}
    assert origins["tiny-channel-means"] == "nnvis-plugin-tiny 0.3.1"
    table = report["images"][0]["results"]["tiny-channel-means"]["artifacts"][0]
    assert table["columns"] == ["channel", "mean"] and [row[0] for row in table["rows"]] == ["R", "G", "B"]
    assert all(round(row[1], 2) == row[1] for row in table["rows"])
