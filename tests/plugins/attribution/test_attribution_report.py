"""The attribution plugins end to end: `nnvis report` on demo images with masks."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.reader import read_report

jsonschema = pytest.importorskip("jsonschema")
PER_IMAGE = ["deconvnet", "guided_backprop", "smoothgrad", "integrated_gradients", "gradcam", "guided_gradcam",
             "gradient_x_input"]


def test_every_attribution_plugin_in_one_report(few_demo_images, demo_images, tmp_path):
    out = tmp_path / "out"
    masks = demo_images.parent / "masks"
    params = {"smoothgrad": {"samples": "8"}, "integrated_gradients": {"steps": "16"},
              "sanity_check": {"images": "2", "max_levels": "4", "samples": "4", "steps": "4"}}
    config = ReportConfig(few_demo_images, out, masks=masks if masks.is_dir() else None,
                          plugins=PER_IMAGE + ["sanity_check"], params=params, batch_size=8)
    outcome = build_report(config, load_registry())
    assert outcome.exit_code == 0
    report = read_report(out)
    schema = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
    jsonschema.validate(read_report(out, model=None), schema)
    summaries = {p["name"]: p["metrics_summary"] for p in report["plugins"]}
    for name in PER_IMAGE:
        summary = summaries[name]
        assert summary["deletion_auc"]["n"] == len(report["images"]), name
        assert summary["insertion_auc"]["mean"] > summary["deletion_auc"]["mean"], name  # better than chance
        if config.masks is not None:
            assert summary["mask_share"]["mean"] > summary["mask_area"]["mean"], name  # points at the object
        for image in report["images"]:
            heatmap = image["results"][name]["artifacts"][0]
            assert heatmap["kind"] == "heatmap" and heatmap["caption"].startswith("towards ")
            values = np.load(out / heatmap["raw"])
            assert values.shape == (64, 64) and np.isfinite(values).all()
    assert "completeness_gap" in summaries["integrated_gradients"]
    sanity = report["dataset"]["sanity_check"]
    assert sanity["status"] == "ok"
    chart = sanity["artifacts"][0]
    assert chart["kind"] == "chart" and chart["x_ticks"][0] == "trained" and len(chart["series"]) == 8
