"""The hidden_subnetwork plugin on real digits (scikit-learn's 8x8): the search, its card, and the
exported checkpoints in a two-model report."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from nnvis_cli.main import cli
from nnvis_core.demo.digits import write_digits
from nnvis_plugins.subnetworks.plugin import init_names, keep_shares


def test_parameters_are_read_or_refused_in_one_line():
    assert keep_shares("90,10,50") == [0.1, 0.5, 0.9]
    assert init_names("signed_constant, loaded") == ["signed_constant", "loaded"]
    with pytest.raises(ValueError, match="keep: expected comma-separated percentages between 0 and 100"):
        keep_shares("0,50")
    with pytest.raises(ValueError, match="init: expected comma-separated names from kaiming_normal"):
        init_names("xavier")


def test_a_subnetwork_of_random_weights_reads_digits_and_exports_for_a_two_model_report(tmp_path):
    pytest.importorskip("sklearn")
    digits = tmp_path / "digits"
    write_digits(digits, "sklearn", seed=0, per_class=30)
    out, exported = tmp_path / "report", tmp_path / "nets"
    settings = ["init=signed_constant", "keep=30,70", "epochs=8", "batch=64", "maps=2", f"export={exported}"]
    result = CliRunner().invoke(cli, ["report", str(digits), "--model", "convnet:width=32,depth=2", "--plugins",
                                      "hidden_subnetwork", *[p for s in settings for p in ("--set",
                                                                                           f"hidden_subnetwork.{s}")],
                                      "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    found = json.loads((out / "report.json").read_text())["by_model"][0]["dataset"]["hidden_subnetwork"]
    assert found["status"] == "ok", found.get("error")
    metrics = found["metrics"]
    assert metrics["chance"] == pytest.approx(0.1)  # the digits' own test/ part: 30 of each class
    assert metrics["best_subnetwork_accuracy"] > 0.6  # never-trained weights, far above chance
    assert metrics["dense_accuracy"] > metrics["chance"]
    kinds = [artifact["kind"] for artifact in found["artifacts"]]
    assert kinds == ["chart", "table", "table", "gallery", "gallery", "gallery", "table", "text"]
    kept = found["artifacts"][2]["rows"]
    assert {round(row[3], 1) for row in kept} <= {0.3, 0.7} and len(kept) == 3  # 2 convs, the classifier
    subnetwork = torch.load(exported / "subnetwork.pt", weights_only=True)
    zeros = sum(int(v.eq(0).sum()) for k, v in subnetwork["state_dict"].items() if k.endswith("weight"))
    assert zeros > 0  # the pruned weights are zero in the checkpoint
    both = CliRunner().invoke(cli, ["report", str(digits / "test"), "--model", str(exported / "dense.pt"),
                                    "--model", str(exported / "subnetwork.pt"), "--plugins", "saliency",
                                    "-o", str(tmp_path / "both"), "-q"])
    assert both.exit_code == 0, both.output
    assert len(json.loads((tmp_path / "both" / "report.json").read_text())["by_model"]) == 2
