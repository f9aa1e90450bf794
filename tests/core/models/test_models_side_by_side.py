"""Models side by side: `--model` more than once runs every plugin for each model, report.json
keeps each model's results in its own section (schema 2), and the page shows them together,
with the images where the models disagree. Schema 1 reports are still read."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import NAME_PAYLOADS

from nnvis_cli.main import cli
from nnvis_core.demo import CLASS_NAMES, load_demo_model
from nnvis_core.run.config import ConfigError, ModelChoice, ReportConfig, split_models
from nnvis_core.run.registry import load_registry
from nnvis_core.runner import UsageError, prepare_all
from nnvis_reports import build_report
from nnvis_reports.reader import ReportReadError, model_view, read_report, upgrade
from nnvis_reports.render import disagreements, write_html
from nnvis_reports.sink import HtmlReport

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
# The second checkpoint swaps the outputs of two of the three classes copy_demo takes (the first
# three folders by name: arrow, circle, crescent).
SWAPPED = (CLASS_NAMES.index("arrow"), CLASS_NAMES.index("circle"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """The demo weights as a state_dict file, and the same with two classes' outputs swapped: the
    second model calls every arrow a circle and every circle an arrow, and agrees on the rest."""
    root = tmp_path_factory.mktemp("checkpoints")
    state = load_demo_model(None).state_dict()
    torch.save(state, root / "trained.pt")
    swapped = {k: v.clone() for k, v in state.items()}
    a, b = SWAPPED
    for key in ("classifier.2.weight", "classifier.2.bias"):
        swapped[key][[a, b]] = swapped[key][[b, a]]
    torch.save(swapped, root / "swapped.pt")
    return root / "trained.pt", root / "swapped.pt"


def two_checkpoints(images: Path, out: Path, checkpoints, **settings) -> ReportConfig:
    trained, swapped = checkpoints
    return ReportConfig(images, out, model=str(trained), arch="demo",
                        more_models=(ModelChoice(str(swapped), None, "demo"),), **settings)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, demo_images, checkpoints) -> Path:
    """A report of two checkpoints of the demo architecture on six images (arrows, circles, crescents)."""
    from conftest import copy_demo

    root = tmp_path_factory.mktemp("compared")
    images = copy_demo(demo_images, root / "images")
    config = two_checkpoints(images, root / "out", checkpoints, plugins=["saliency", "gradcam", "tsne"],
                             params={"tsne": {"perplexity": 2}})
    assert build_report(config, load_registry()).exit_code == 0
    return root / "out"


# --- settings -----------------------------------------------------------------------------------


def test_weights_and_arch_pair_with_the_models():
    assert split_models(["a.pt", "b.pt"], ["w1", "w2"], "demo") == {
        "model": "a.pt", "weights": "w1", "arch": "demo", "more_models": (ModelChoice("b.pt", "w2", "demo"),)}
    assert split_models(["demo", "demo-vit"], None, None)["more_models"] == (ModelChoice("demo-vit"),)
    assert split_models("demo", "x.pt", None) == {"model": "demo", "weights": "x.pt", "more_models": ()}
    with pytest.raises(ConfigError, match="--weights is given 3 times for 2 models"):
        split_models(["a", "b"], ["1", "2", "3"], None)
    with pytest.raises(ConfigError, match="the same model is given twice"):
        split_models(["demo", "demo"], None, None)


def test_a_config_file_may_list_models(tmp_path, few_demo_images):
    (tmp_path / "run.toml").write_text('model = ["demo", "demo-vit"]\nplugins = ["saliency"]\n')
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out"), "-q",
                                      "--config", str(tmp_path / "run.toml")])
    assert result.exit_code == 0, result.output
    assert [m["name"] for m in read_report(tmp_path / "out", model=None)["models"]] == ["demo", "demo-vit"]


def test_a_plugin_that_applies_to_one_model_runs_for_that_one(few_demo_images, tmp_path):
    plans = prepare_all(ReportConfig(few_demo_images, tmp_path / "out", model="demo",
                                     more_models=(ModelChoice("demo-vit"),), plugins=["saliency", "attention_rollout"]),
                        load_registry())
    assert [[r.plugin.name for r in plan.runs] for plan in plans] == [["saliency"], ["saliency", "attention_rollout"]]
    assert [s.name for s in plans[0].skipped] == ["attention_rollout"]
    assert [(plan.model_index, plan.model_count) for plan in plans] == [(0, 2), (1, 2)]


def test_a_plugin_that_applies_to_no_model_is_a_usage_error(few_demo_images, tmp_path, checkpoints):
    config = two_checkpoints(few_demo_images, tmp_path / "out", checkpoints, plugins=["attention_rollout"])
    with pytest.raises(UsageError, match="attention_rollout applies to none of the models"):
        prepare_all(config, load_registry())
    assert not (tmp_path / "out").exists()


# --- report.json --------------------------------------------------------------------------------


def test_each_model_has_its_own_section(compared, checkpoints):
    report = read_report(compared, model=None)
    jsonschema.validate(report, SCHEMA)
    assert report["schema_version"] == 2
    assert [m["label"] for m in report["models"]] == ["trained.pt", "swapped.pt"]
    assert [s["model"]["name"] for s in report["by_model"]] == ["trained.pt", "swapped.pt"]
    for section in report["by_model"]:
        assert [p["name"] for p in section["plugins"]] == ["saliency", "gradcam", "tsne"]
        assert all(set(image["results"]) == {"saliency", "gradcam"} for image in section["images"])
        assert section["dataset"]["tsne"]["status"] == "ok"
    assert [(row["model"], row["method"]) for row in report["leaderboard"]] == [
        ("trained.pt", "saliency"), ("trained.pt", "gradcam"), ("swapped.pt", "saliency"), ("swapped.pt", "gradcam")]
    second = report["by_model"][1]["images"][0]["results"]["saliency"]["artifacts"][0]
    assert second["raw"].startswith("assets/model-1/img-00000/") and (compared / second["raw"]).is_file()


def test_the_swapped_model_disagrees_exactly_on_the_swapped_classes(compared):
    report = read_report(compared, model=None)
    views = [model_view(report, k) for k in range(2)]
    swapped_names = {CLASS_NAMES[i] for i in SWAPPED}
    for first, second in zip(*(view["images"] for view in views)):
        said = first["predictions"][0]["name"], second["predictions"][0]["name"]
        assert (said[0] != said[1]) == (first["true_class"]["name"] in swapped_names), first["path"]
    expected = {image["index"] for image in views[0]["images"] if image["true_class"]["name"] in swapped_names}
    assert disagreements(views) == expected and len(expected) == 4


def test_each_model_gets_what_a_run_of_it_alone_gets(compared, checkpoints, tmp_path):
    """Nothing of one model leaks into the other: the second section equals a one-model run of it."""
    images = compared.parent / "images"
    alone = tmp_path / "alone"
    config = ReportConfig(images, alone, model=str(checkpoints[1]), arch="demo", plugins=["saliency", "gradcam"])
    assert build_report(config, load_registry()).exit_code == 0
    ours, theirs = model_view(read_report(compared, model=None), 1), read_report(alone)
    for mine, single in zip(ours["images"], theirs["images"]):
        assert mine["predictions"] == single["predictions"]
        for name in ("saliency", "gradcam"):
            a, b = mine["results"][name]["artifacts"][0], single["results"][name]["artifacts"][0]
            assert np.array_equal(np.load(compared / a["raw"]), np.load(alone / b["raw"])), (mine["path"], name)


def test_an_interrupted_comparison_resumes_with_the_first_model_reused(few_demo_images, tmp_path, checkpoints):
    class StopAtSecondModel(HtmlReport):
        def begin(self, plan):
            if plan.model_index == 1:
                raise KeyboardInterrupt
            return super().begin(plan)

    from nnvis_core.runner import run

    registry = load_registry()
    config = two_checkpoints(few_demo_images, tmp_path / "out", checkpoints, plugins=["saliency"])
    with pytest.raises(KeyboardInterrupt):
        run(config, registry, StopAtSecondModel(config.out_dir))
    assert not (tmp_path / "out").exists()
    config.resume = True
    outcome = build_report(config, registry)
    assert outcome.reused == 6  # the first model's six saliency maps; the second model's are new
    assert len(read_report(tmp_path / "out", model=None)["by_model"]) == 2


# --- schema 1 -----------------------------------------------------------------------------------


def as_schema_1(report: dict) -> dict:
    """A one-model schema 2 report written the way nnvis wrote it before models side by side."""
    (section,) = report["by_model"]
    old = {key: value for key, value in report.items() if key != "by_model"}
    old.update(section, schema_version=1)
    del old["model"]["label"]
    return old


def test_a_schema_1_report_is_still_read_and_replaced(few_demo_images, tmp_path):
    out = tmp_path / "out"
    assert build_report(ReportConfig(few_demo_images, out, plugins=["saliency"]), load_registry()).exit_code == 0
    current = read_report(out, model=None)
    (out / "report.json").write_text(json.dumps(as_schema_1(current)), encoding="utf-8")
    upgraded = read_report(out, model=None)
    assert upgraded["by_model"][0]["images"] == current["by_model"][0]["images"]
    assert read_report(out)["images"] == current["by_model"][0]["images"]
    write_html(upgrade(json.loads((out / "report.json").read_text())), tmp_path / "old.html")
    assert "saliency" in (tmp_path / "old.html").read_text(encoding="utf-8")
    # An old report is a report: a new run replaces it without --force.
    assert build_report(ReportConfig(few_demo_images, out, plugins=["saliency"]), load_registry()).exit_code == 0
    assert read_report(out, model=None)["schema_version"] == 2


def test_an_unknown_schema_version_is_refused(tmp_path):
    (tmp_path / "report.json").write_text('{"format": "nnvis-report", "schema_version": 9}')
    with pytest.raises(ReportReadError, match="unknown report schema version 9"):
        read_report(tmp_path)


# --- the page -----------------------------------------------------------------------------------


def test_the_first_screen_shows_both_models(compared, open_report):
    opened = open_report(compared / "index.html")
    page = opened.page
    models = page.locator("table.leaderboard tbody tr").evaluate_all("rows => rows.map(r => r.dataset.model)")
    assert models == ["trained.pt", "trained.pt", "swapped.pt", "swapped.pt"]
    assert page.locator(".confusion").count() == 2
    assert page.locator(".folder-grid li.disagree").count() == 4
    first = page.locator(".folder-grid li").first.locator(".said").all_text_contents()
    assert [text.split(":")[0] for text in first] == ["trained.pt", "swapped.pt"]
    section = page.locator("section.image").first
    assert section.locator("h3.model-heading").all_text_contents() == ["trained.pt", "swapped.pt"]
    assert section.locator(".model-row").count() == 2
    assert page.locator("#dataset").count() == 1 and page.locator("#dataset-1").count() == 1
    assert opened.console_errors == [] and opened.page_errors == []
    page.screenshot(path=str(compared.parent / "two-models.png"), full_page=False)


def test_the_matrix_filters_disagreements_and_each_models_predictions(compared, open_report):
    opened = open_report(compared / "index.html")
    matrix = opened.page.locator("[data-matrix]")
    headings = matrix.locator("thead th.method").all_text_contents()
    assert headings == ["trained.pt · Gradient saliency", "trained.pt · Grad-CAM",
                        "swapped.pt · Gradient saliency", "swapped.pt · Grad-CAM"]
    count = matrix.locator(".matrix-count")
    matrix.locator("select[data-filter=agreement]").select_option("disagree")
    assert count.text_content() == "4 of 6 images"
    matrix.locator("select[data-filter=agreement]").select_option("agree")
    assert count.text_content() == "2 of 6 images"
    matrix.locator("select[data-filter=agreement]").select_option("")
    # "wrong" reads the chosen model's predictions: none for the trained one, four for the swapped one.
    matrix.locator("select[data-filter=outcome]").select_option("wrong")
    assert count.text_content() == "0 of 6 images"
    matrix.locator("select[data-filter=model]").select_option("1")
    assert count.text_content() == "4 of 6 images"
    # A count in the second model's confusion filters by that model's predictions.
    matrix.locator("select[data-filter=outcome]").select_option("")
    matrix.locator("select[data-filter=model]").select_option("0")
    arrow, circle = (str(i) for i in SWAPPED)
    cell = f"[data-confusion][data-model='1'] button[data-truth='{arrow}'][data-predicted='{circle}']"
    opened.page.locator(cell).click()
    assert matrix.locator("select[data-filter=model]").input_value() == "1"
    assert count.text_content() == "2 of 6 images"
    assert opened.console_errors == [] and opened.page_errors == []


def test_hostile_model_names_are_shown_as_text(few_demo_images, tmp_path, checkpoints, open_report):
    hostile = tmp_path / "weights"
    hostile.mkdir()
    names = [f"{payload}.pt" for payload in NAME_PAYLOADS[:2]]
    for name, source in zip(names, checkpoints):
        shutil.copy(source, hostile / name)
    config = ReportConfig(few_demo_images, tmp_path / "out", model=str(hostile / names[0]), arch="demo",
                          more_models=(ModelChoice(str(hostile / names[1]), None, "demo"),), plugins=["saliency"])
    assert build_report(config, load_registry()).exit_code == 0
    opened = open_report(tmp_path / "out" / "index.html")
    page = opened.page
    assert opened.alerts() == [] and opened.dialogs == []
    assert page.locator("table[data-leaderboard] tbody td").first.text_content() == names[0]
    assert names[1] in page.locator("[data-matrix] thead").text_content()
    assert page.locator("[data-matrix] select[data-filter=model] option").all_text_contents() == names
    assert opened.console_errors == [] and opened.page_errors == []


# --- the command ------------------------------------------------------------------------


def test_demo_and_demo_vit_side_by_side_from_the_command_line(few_demo_images, tmp_path):
    masks = Path(__file__).resolve().parents[3] / "examples" / "demo" / "masks"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "--model", "demo", "--model", "demo-vit",
                                      "--masks", str(masks), "--plugins", "saliency,gradcam,occlusion",
                                      "--set", "occlusion.window=16", "--set", "occlusion.stride=16",
                                      "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = read_report(out, model=None)
    jsonschema.validate(report, SCHEMA)
    assert [m["architecture"] for m in report["models"]] == ["DemoNet", "VisionTransformer"]
    rows = {(row["model"], row["method"]): row for row in report["leaderboard"]}
    assert set(rows) == {(m, p) for m in ("demo", "demo-vit") for p in ("saliency", "gradcam", "occlusion")}
    assert all(row["mask_share"] is not None and row["failures"] == 0 for row in rows.values())
    html = (out / "index.html").read_text(encoding="utf-8")
    island = html.split('<script type="application/json" class="matrix-data">')[1].split("</script>")[0]
    assert json.loads(island)["header"]["titles"] == [f"{m} · {t}" for m in ("demo", "demo-vit")
                                            for t in ("Gradient saliency", "Grad-CAM", "Occlusion sensitivity")]
