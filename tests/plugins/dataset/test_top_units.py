"""Top-activating examples: the running top-k, channel choice, influence boxes, and the plugin end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.contract.stream import ImageStream
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.runner import UsageError, prepare
from nnvis_plugins.dataset.top_units import (
    UnitRecord,
    check_channels,
    choose_channels,
    default_layers,
    influence_boxes,
    square,
)
from nnvis_reports import build_report
from nnvis_reports.reader import read_report


def test_running_top_examples_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(11, 4, 3, 5, generator=generator)
    record = UnitRecord(count=3)
    record.add(maps[:6], list(range(6)))
    record.add(maps[6:], list(range(6, 11)))
    peaks = maps.flatten(2).max(dim=2).values.numpy()  # (image, channel)
    for channel in range(4):
        best = np.argsort(-peaks[:, channel])[:3]
        assert record.image_ids[channel].tolist() == best.tolist()
        assert record.values[channel] == pytest.approx(peaks[best, channel])
        for image, (row, column) in zip(best, record.positions[channel]):
            assert maps[image, channel, row, column] == pytest.approx(float(peaks[image, channel]))
    assert record.spread() == pytest.approx(peaks.std(axis=0))


def test_channel_choice():
    record = UnitRecord(count=2)
    maps = torch.zeros(4, 3, 1, 1)
    maps[:, 1, 0, 0] = torch.tensor([0.0, 5.0, -5.0, 1.0])  # channel 1 varies most, then 2
    maps[:, 2, 0, 0] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    record.add(maps, [0, 1, 2, 3])
    assert choose_channels("all", record) == [0, 1, 2]
    assert choose_channels("top:2", record) == [1, 2]
    assert choose_channels("2, 0", record) == [2, 0]
    with pytest.raises(ValueError, match=r"channels \[7\] do not exist: the layer has 3 channels"):
        choose_channels("0,7", record)
    assert check_channels("top:4") is None and check_channels("0,5") is None
    assert "top:N" in check_channels("most")


def test_influence_box_of_a_linear_conv_stack_is_its_receptive_field():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)).eval()
    image = torch.randn(3, 12, 12)
    boxes, gradient = influence_boxes(model, model[1], image, [(0, 5, 6), (1, 0, 11)])
    # Two 3x3 convolutions see 5x5 pixels around the unit, cut at the image border.
    assert boxes == [(3, 4, 8, 9), (0, 9, 3, 12)]
    assert gradient.shape == (2, 3, 12, 12)
    assert square((3, 4, 8, 9), 12, 12) == (3, 4, 8, 9)
    assert square((0, 9, 3, 12), 12, 12) == (0, 9, 3, 12)
    assert square((2, 0, 3, 12), 12, 12) == (0, 0, 12, 12)
    assert square((5, 5, 6, 9), 12, 12) == (3, 5, 7, 9)


def test_default_layers_are_a_middle_and_the_last_conv():
    from nnvis_core.demo.model import DemoNet

    assert default_layers(DemoNet()) == ["features.8", "features.15"]


def test_top_units_plugin_on_the_demo_images(few_demo_images, tmp_path):
    out = tmp_path / "out"
    params = {"top_units": {"layers": "last_conv", "channels": "3,0", "examples": "4", "projection": "true"}}
    config = ReportConfig(few_demo_images, out, plugins=["top_units"], params=params)
    assert build_report(config, load_registry()).exit_code == 0
    report = read_report(out)
    artifacts = report["dataset"]["top_units"]["artifacts"]
    assert [a["title"] for a in artifacts] == ["features.15 channel 3", "features.15 channel 3: deconvnet",
                                               "features.15 channel 0", "features.15 channel 0: deconvnet"]
    # Independent check: the peak of each channel over each image, by a plain forward pass.
    plan = prepare(config, load_registry())
    records, ctx = plan.records, plan.ctx
    with torch.no_grad():
        inputs = torch.stack([item.tensor for item in ImageStream(records, ctx)])
        peaks = ctx.module.features[:16](inputs).amax(dim=(2, 3))
    for gallery, channel in ((artifacts[0], 3), (artifacts[2], 0)):
        best = torch.argsort(peaks[:, channel], descending=True)[:4].tolist()
        assert [t["image_id"] for t in gallery["tiles"]] == best
        assert [float(t["label"]) for t in gallery["tiles"]] == pytest.approx(
            peaks[best, channel].tolist(), rel=1e-2)
        for tile in gallery["tiles"]:
            from PIL import Image

            with Image.open(out / tile["path"]) as patch:
                assert patch.width == patch.height and 8 <= patch.width <= 64
    projections = artifacts[1]["tiles"]
    assert len(projections) == 4 and all((out / t["path"]).is_file() for t in projections)


def test_bad_channel_spec_is_a_usage_error(few_demo_images, tmp_path):
    config = ReportConfig(few_demo_images, tmp_path / "out", plugins=["top_units"],
                          params={"top_units": {"channels": "best"}})
    with pytest.raises(UsageError, match="top_units.channels"):
        prepare(config, load_registry())
