"""A third-party distribution, installed with pip from a fixture folder, is listed and runs."""

from __future__ import annotations

import pytest
from conftest import run_nnvis as nnvis

from nnvis_reports.reader import read_report


@pytest.fixture(scope="module")
def installed_plugin(plugin_packages) -> dict:
    return plugin_packages


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
    report = read_report(out)
    origins = {p["name"]: p["origin"] for p in report["plugins"]}
    assert origins["tiny-channel-means"] == "nnvis-plugin-tiny 0.3.1"
    table = report["images"][0]["results"]["tiny-channel-means"]["artifacts"][0]
    assert table["columns"] == ["channel", "mean"] and [row[0] for row in table["rows"]] == ["R", "G", "B"]
    assert all(round(row[1], 2) == row[1] for row in table["rows"])
