"""The example package's own tests: the plugin contract through nnvis's test kit, the
statistics against their definition, and the zoo model source."""

from __future__ import annotations

import json

import pytest
import torch
from nnvis_example.activations import MeanActivations, layer_statistics
from nnvis_example.zoo import ZooSource
from torch import nn

from nnvis_core.models import ModelLoadError, ModelOptions
from nnvis_core.testing import check_installed, check_plugin


def test_follows_the_plugin_contract():
    check = check_plugin(MeanActivations())
    table, chart = check.artifacts("circle/circle_00.png")
    assert [row[0] for row in table.rows] == [f"features.{i}" for i in (1, 4, 6, 9, 11, 14, 16)]
    assert chart.x_ticks == [row[0] for row in table.rows]


def test_convolutions_can_be_measured_instead():
    check = check_plugin(MeanActivations(), params={"layers": "convolutions"}, images=1)
    table, _ = check.artifacts("circle/circle_00.png")
    assert {row[1] for row in table.rows} == {"Conv2d"} and len(table.rows) == 7


def test_statistics_follow_their_definition():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model[0].bias.zero_()
    [(name, kind, mean, active)] = layer_statistics(model, torch.tensor([[2.0, 4.0]]), (nn.ReLU,))
    assert (name, kind) == ("1", "ReLU")
    assert mean == pytest.approx((2.0 + 4.0 + 0.0) / 3) and active == pytest.approx(2 / 3)
    assert not model[1]._forward_hooks  # removed after use


def test_is_found_through_its_entry_points():
    found = check_installed("mean-activations")
    assert found.origin.distribution == "nnvis-plugin-example"


def write_zoo(root, name="shapes"):
    from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC, load_demo_model

    folder = root / name
    folder.mkdir(parents=True)
    torch.save(load_demo_model().state_dict(), folder / "weights.pt")
    (folder / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (folder / "model.json").write_text(json.dumps({
        "architecture": "demo", "resize": 64, "crop": 64, "mean": DEMO_SPEC["mean"], "std": DEMO_SPEC["std"]}))
    return root


def test_zoo_loads_a_model_from_the_registry_folder(tmp_path, monkeypatch):
    from nnvis_core.demo import load_demo_model

    monkeypatch.setenv("NNVIS_ZOO", str(write_zoo(tmp_path)))
    loaded = ZooSource().load("shapes", ModelOptions())
    assert loaded.class_names[0] == "circle" and loaded.preprocess.crop == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module.eval()(x), load_demo_model().eval()(x))


def test_zoo_names_what_is_available(tmp_path, monkeypatch):
    monkeypatch.setenv("NNVIS_ZOO", str(write_zoo(tmp_path)))
    with pytest.raises(ModelLoadError, match=r"no model 'nope' in .* \(available: shapes\)"):
        ZooSource().load("nope", ModelOptions())
