"""`nnvis demo planted FOLDER` writes what a report needs to look for the planted concept, and the three
concept plugins run on it from the command line (a model trained for one epoch here: the page's
structure is checked, not the finding, which test_planted_concept.py checks)."""

from __future__ import annotations

import json
import shlex

from click.testing import CliRunner

from nnvis_cli.main import cli


def test_the_planted_folder_feeds_a_concept_report(tmp_path):
    folder = tmp_path / "planted"
    result = CliRunner().invoke(cli, ["demo", "planted", str(folder), "--train-size", "64", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert (folder / "planted.pt").is_file() and len(list((folder / "images").rglob("*.png"))) == 64
    assert sorted(p.name for p in (folder / "concepts").iterdir()) == ["blue", "stripes"]
    [command] = [line.strip() for line in (folder / "README.md").read_text().splitlines()
                 if line.strip().startswith("nnvis report")]
    arguments = shlex.split(command)[1:] + ["--set", "tcav.random_sets=2", "--set", "tcav.set_size=4",
                                            "--set", "craft.designs=4", "--set", "craft.concepts=3",
                                            "--set", "concept_dictionary.steps=20", "-q"]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "report" / "report.json").read_text())
    dataset = report["by_model"][0]["dataset"]
    assert {name: dataset[name]["status"] for name in ("tcav", "craft", "concept_dictionary")} == {
        "tcav": "ok", "craft": "ok", "concept_dictionary": "ok"}
    assert (folder / "report" / "index.html").is_file()
