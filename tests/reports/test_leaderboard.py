"""The method leaderboard: its figures from the report's own per-image results, and the first screen."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pytest
from conftest import copy_demo
from page_waits import settled_top

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.leaderboard import COLUMNS, SANITY_PASS_BELOW, best, leaderboard
from nnvis_reports.reader import read_report

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())


def result(seconds, status="ok", **metrics):
    return {"status": status, "seconds": seconds, "metrics": metrics, "artifacts": []}


def synthetic_report() -> dict:
    plugins = [{"name": "saliency", "title": "Saliency", "attribution": True},
               {"name": "mine", "title": "Third party", "attribution": True},
               {"name": "activations", "title": "Activations", "attribution": False},
               {"name": "sanity_check", "title": "Sanity", "attribution": False}]
    images = [
        {"results": {"saliency": result(1.0, deletion_auc=0.2, mask_share=0.5), "mine": result(3.0, deletion_auc=0.1),
                     "activations": result(9.0)}},
        {"results": {"saliency": result(2.0, deletion_auc=0.4, mask_share=0.3),
                     "mine": result(5.0, status="error")}},
    ]
    sanity = {"status": "ok", "metrics": {"gradient_final_spearman": 0.1, "mine_final_spearman": SANITY_PASS_BELOW}}
    return {"model": {"name": "m"}, "plugins": plugins, "images": images, "dataset": {"sanity_check": sanity}}


def test_rows_are_the_attribution_methods_with_means_over_their_successful_calls():
    rows = {row["method"]: row for row in leaderboard(synthetic_report())}
    assert list(rows) == ["saliency", "mine"]  # activations is not an attribution method
    saliency, mine = rows["saliency"], rows["mine"]
    assert saliency["deletion_auc"] == pytest.approx(0.3) and saliency["mask_share"] == pytest.approx(0.4)
    assert saliency["seconds_per_image"] == pytest.approx(1.5) and saliency["insertion_auc"] is None
    assert (saliency["images"], saliency["failures"]) == (2, 0)
    assert (mine["images"], mine["failures"], mine["seconds_per_image"]) == (1, 1, 3.0)  # the failure is not timed
    assert mine["mask_share"] is None
    # The sanity check's "gradient" is the saliency card's map; pass is strictly below the threshold.
    assert (saliency["sanity_spearman"], saliency["sanity"]) == (0.1, "pass")
    assert (mine["sanity_spearman"], mine["sanity"]) == (SANITY_PASS_BELOW, "fail")
    assert all(row["model"] == "m" for row in rows.values())


def test_without_a_sanity_check_or_masks_the_columns_are_empty_not_zero():
    report = synthetic_report()
    report["dataset"]["sanity_check"]["status"] = "error"
    rows = leaderboard(report)
    assert [row["sanity"] for row in rows] == [None, None]
    assert [row["sanity_spearman"] for row in rows] == [None, None]


def test_best_follows_each_columns_direction_and_needs_two_values():
    rows = [{"deletion_auc": 0.3, "insertion_auc": 0.8, "mask_share": None, "seconds_per_image": 2.0},
            {"deletion_auc": 0.1, "insertion_auc": 0.9, "mask_share": 0.5, "seconds_per_image": 1.0}]
    marked = best(rows)
    assert marked == {"deletion_auc": 0.1, "insertion_auc": 0.9, "seconds_per_image": 1.0}
    assert {c.key for c in COLUMNS if c.better == "lower"} == {"deletion_auc", "sanity_spearman", "seconds_per_image"}


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory, demo_images):
    """Three methods and the sanity check on a few demo images, with their masks."""
    root = tmp_path_factory.mktemp("leaderboard")
    images = copy_demo(demo_images, root / "images")
    classes = sorted(p.name for p in images.iterdir())
    misfiled = sorted((images / classes[2]).glob("*.png"))[0]  # filed under the wrong class: a wrong prediction
    (images / classes[0] / "misfiled.png").write_bytes(misfiled.read_bytes())
    out = root / "out"
    config = ReportConfig(images, out, masks=demo_images.parent / "masks",
                          plugins=["saliency", "gradcam", "occlusion", "activations", "sanity_check"],
                          params={"sanity_check": {"methods": "gradient,gradcam", "images": 2, "max_levels": 3},
                                  "occlusion": {"faithfulness_steps": 0}})
    assert build_report(config, load_registry()).exit_code == 0
    report = read_report(out)
    jsonschema.validate(read_report(out, model=None), SCHEMA)
    return report, out


def test_the_report_json_leaderboard_matches_the_per_image_results(demo_report):
    report, _ = demo_report
    assert report["models"] == [report["model"]]
    rows = {row["method"]: row for row in report["leaderboard"]}
    assert list(rows) == ["saliency", "gradcam", "occlusion"]
    for name, row in rows.items():
        ok = [image["results"][name] for image in report["images"] if image["results"][name]["status"] == "ok"]
        assert row["images"] == len(ok) == 7
        for key in ("mask_share", "mask_gain"):  # the misfiled image has no mask: the mean is over the other six
            measured = [r["metrics"][key] for r in ok if key in r["metrics"]]
            assert len(measured) == 6 and row[key] == pytest.approx(np.mean(measured))
        assert row["seconds_per_image"] == pytest.approx(np.mean([r["seconds"] for r in ok]))
    for name in ("saliency", "gradcam"):
        assert rows[name]["deletion_auc"] == pytest.approx(
            np.mean([image["results"][name]["metrics"]["deletion_auc"] for image in report["images"]]))
    assert rows["occlusion"]["deletion_auc"] is None  # faithfulness_steps=0: not measured
    sanity = report["dataset"]["sanity_check"]["metrics"]
    assert rows["saliency"]["sanity_spearman"] == sanity["gradient_final_spearman"]
    assert rows["gradcam"]["sanity_spearman"] == sanity["gradcam_final_spearman"]
    assert rows["occlusion"]["sanity"] is None


def test_the_page_opens_on_the_leaderboard_and_its_columns_sort(demo_report, open_report, tmp_path):
    report, out = demo_report
    opened = open_report(out / "index.html")
    page = opened.page
    assert page.evaluate("document.querySelector('h2').textContent") == "Which method to trust on this model"
    assert page.evaluate("document.querySelector('#leaderboard').getBoundingClientRect().top") < 200
    # the run details wait behind a summary
    assert page.evaluate("document.querySelector('details.run-details').open") is False
    page.screenshot(path=str(tmp_path / "first-screen.png"))

    def column(key):
        return page.evaluate(f"[...document.querySelectorAll('table.leaderboard tbody td[data-key={key}]')]"
                             ".map(td => td.dataset.value)")

    def methods():
        return page.evaluate("[...document.querySelectorAll('table.leaderboard tbody tr')].map(r => r.dataset.method)")

    rows = {row["method"]: row for row in report["leaderboard"]}
    assert methods() == list(rows)
    page.click("table.leaderboard th[data-better] button:text('mass on object')")
    by_share = sorted(rows, key=lambda m: -rows[m]["mask_share"])  # higher is better: best first
    assert methods() == by_share
    page.click("table.leaderboard th[data-better] button:text('mass on object')")
    assert methods() == by_share[::-1]
    page.click("table.leaderboard th[data-better] button:text('deletion AUC')")
    values = column("deletion_auc")
    assert values[-1] == ""  # occlusion's missing value stays last
    assert [float(v) for v in values[:-1]] == sorted(float(v) for v in values[:-1])  # lower is better: ascending
    # the best value of each column is marked, and only that one
    best_share = page.evaluate(
        "[...document.querySelectorAll('td.best[data-key=mask_share]')].map(td => td.dataset.value)")
    assert [float(v) for v in best_share] == [max(row["mask_share"] for row in rows.values())]
    verdicts = page.evaluate("[...document.querySelectorAll('table.leaderboard .verdict')].map(v => v.textContent)")
    assert sorted(verdicts) == sorted(row["sanity"] for row in rows.values() if row["sanity"])
    assert opened.console_errors == [] and opened.page_errors == []


def test_the_folder_at_a_glance_marks_wrong_predictions(demo_report, open_report):
    report, out = demo_report
    page = open_report(out / "index.html").page
    tiles = page.evaluate("[...document.querySelectorAll('#folder li')].map(li => [li.className, "
                          "li.querySelector('a').getAttribute('href')])")
    images = [image for image in report["images"] if image["status"] == "ok"]
    assert [href for _, href in tiles] == [f"#img-{image['index']}" for image in images]
    expected = ["wrong" if image["predictions"][0]["index"] != image["true_class"]["index"] else "right"
                for image in images]
    assert [cls for cls, _ in tiles] == expected and expected.count("wrong") == 1
    wrong = page.evaluate("document.querySelector('#folder li.wrong .said').textContent")
    assert wrong.startswith("✗ ")


def test_a_confusion_count_lists_those_images_in_the_matrix(demo_report, open_report):
    report, out = demo_report
    opened = open_report(out / "index.html")
    page = opened.page
    images = [image for image in report["images"] if image["status"] == "ok"]
    [misfiled] = [image for image in images if image["predictions"][0]["index"] != image["true_class"]["index"]]
    counts = page.evaluate("[...document.querySelectorAll('.confusion-matrix td.off button')].map(b => b.textContent)")
    assert counts == ["1"]
    page.click(".confusion-matrix td.off button")
    rows = page.evaluate("[...document.querySelectorAll('#matrix tbody tr')].map(r => r.textContent)")
    assert len(rows) == 1 and misfiled["path"].split("/")[-1] in rows[0]
    assert settled_top(page, "#matrix") < 50
    diagonal = page.evaluate("document.querySelectorAll('.confusion-matrix td.diagonal button').length")
    assert diagonal == len({image["true_class"]["index"] for image in images})
    assert opened.console_errors == [] and opened.page_errors == []


def test_each_card_carries_the_curves_behind_its_aucs(demo_report):
    from nnvis_reports.curves import image_curves

    report, _ = demo_report
    for image in report["images"]:
        for name in ("saliency", "gradcam"):
            result = image["results"][name]
            chart = image_curves(result)
            x = np.asarray(chart["x"])
            assert len(x) == 33 and x[0] == 0 and x[-1] == 1  # faithfulness_steps=32
            for series in ("deletion", "insertion"):
                y = np.asarray(chart["series"][series])
                trapezoid = float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())
                assert result["metrics"][f"{series}_auc"] == pytest.approx(trapezoid)
        assert image_curves(image["results"]["occlusion"]) is None  # faithfulness_steps=0


def test_the_mean_curves_are_drawn_per_method(demo_report, open_report):
    from nnvis_reports.curves import image_curves, mean_curves

    report, out = demo_report
    curves = {entry["method"]: entry for entry in mean_curves(report)}
    assert list(curves) == ["saliency", "gradcam"]  # occlusion measured none
    for name, entry in curves.items():
        stacked = np.asarray([image_curves(image["results"][name])["series"]["deletion"] for image in report["images"]])
        assert entry["n"] == 7
        assert np.allclose(entry["deletion"]["mean"], stacked.mean(axis=0))
        assert np.allclose(entry["deletion"]["high"], np.clip(stacked.mean(axis=0) + stacked.std(axis=0), 0, 1))
    opened = open_report(out / "index.html")
    figures = opened.page.locator("#leaderboard figure.curve")
    assert figures.evaluate_all("fs => fs.map(f => f.dataset.method)") == ["saliency", "gradcam"]
    assert figures.first.locator("polyline.mean").count() == 2 and figures.first.locator("polygon.band").count() == 2
    assert opened.console_errors == [] and opened.page_errors == []


def test_metric_columns_sit_under_their_category_and_only_when_measured():
    from nnvis_reports.leaderboard import GROUPS, columns_for

    rows = [{"deletion_auc": 0.2, "sparseness": 0.4, "roc_auc": 0.7}, {"deletion_auc": 0.3, "sparseness": 0.6}]
    columns = columns_for(rows)
    keys = [c.key for c in columns]
    assert "sparseness" in keys and "roc_auc" in keys and "complexity" not in keys  # complexity not measured
    assert [GROUPS.index(c.group) for c in columns] == sorted(GROUPS.index(c.group) for c in columns)
    assert {c.key: c.group for c in columns}["roc_auc"] == "localisation"
    assert best(rows)["sparseness"] == 0.6  # higher is better for the Gini index


def test_category_ranks_average_each_methods_rank_over_a_categorys_columns():
    from nnvis_reports.leaderboard import category_ranks

    rows = [{"model": "m", "deletion_auc": 0.1, "insertion_auc": 0.5, "sparseness": 0.2, "complexity": 3.0},
            {"model": "m", "deletion_auc": 0.2, "insertion_auc": 0.9, "sparseness": 0.9, "complexity": 1.0},
            {"model": "m", "deletion_auc": 0.3, "insertion_auc": 0.1, "sparseness": 0.9, "complexity": 2.0},
            {"model": "other", "deletion_auc": 0.9, "insertion_auc": 0.0}]  # ranked only among its own model's
    ranks = category_ranks(rows)
    # faithfulness: deletion (lower better) ranks 1, 2, 3; insertion (higher better) 2, 1, 3
    assert [r["faithfulness"] for r in ranks[:3]] == [1.5, 1.5, 3.0]
    # complexity: sparseness 3, 1.5, 1.5 (a tie shares its mean rank); complexity (lower better) 3, 1, 2
    assert [r["complexity"] for r in ranks[:3]] == [3.0, 1.25, 1.75]
    assert ranks[0]["localisation"] is None
    assert ranks[3] == {group: None for group in ranks[3]}  # alone in its model: nothing to rank against


def test_the_schema_names_every_trust_metric():
    from nnvis_core.metrics.suite import METRICS

    listed = SCHEMA["properties"]["leaderboard"]["items"]["properties"]
    assert [m.name for m in METRICS if m.name not in listed] == []


def test_the_default_trust_metrics_are_scored_per_image_and_averaged_per_method(demo_report):
    """--metrics default: the cheap ones (no model call beyond completeness's), localisation where a mask is."""
    from nnvis_core.metrics.suite import METRICS

    report, _ = demo_report
    cheap = {m.name for m in METRICS if m.cheap}
    rows = {row["method"]: row for row in report["leaderboard"]}
    for name in ("saliency", "gradcam", "occlusion"):
        ok = [image["results"][name] for image in report["images"] if image["results"][name]["status"] == "ok"]
        for key in ("sparseness", "complexity", "effective_complexity", "pointing_game", "roc_auc"):
            measured = [r["metrics"][key] for r in ok if key in r["metrics"]]
            assert len(measured) == (6 if key in ("pointing_game", "roc_auc") else 7)  # the misfiled image: no mask
            assert rows[name][key] == pytest.approx(np.mean(measured))
        assert "completeness" not in rows[name]  # none of these three promises its map adds up
        scored = {key for r in ok for key in r["metrics"]}
        assert scored & {m.name for m in METRICS} <= cheap


def test_under_each_map_its_figures_sit_under_their_categories(demo_report):
    """The card's table: a header per category in the leaderboard's order, each figure by its column's
    label with its direction, and a plugin's own figures last, under "other"."""
    from nnvis_reports.leaderboard import GROUPS, OTHER, metric_groups
    from nnvis_reports.render import environment

    report, _ = demo_report
    result = next(image["results"]["saliency"] for image in report["images"]
                  if "pointing_game" in image["results"]["saliency"]["metrics"])
    groups = metric_groups({**result["metrics"], "my_own_figure": 2.5})
    names = [group for group, _ in groups]
    assert names == ["faithfulness", "localisation", "complexity", OTHER]
    assert names[:-1] == sorted(names[:-1], key=GROUPS.index)
    assert sorted(column.key for _, entries in groups for column, _ in entries) == sorted(
        [*result["metrics"], "my_own_figure"])
    html = environment().get_template("result.html.j2").render(
        result={**result, "artifacts": [], "metrics": {**result["metrics"], "my_own_figure": 2.5}},
        plugin={"title": "Saliency", "description": ""})
    headers = re.findall(r'<tr class="metric-group"><th colspan="2"[^>]*>([a-z]+)</th>', html)
    assert headers == names
    assert html.index("deletion AUC") < html.index("Pointing game") < html.index("Sparseness") < html.index(
        "my_own_figure")
    assert '<th title="sparseness:' in html and "higher is better" in html
    assert '<th title="mask_area: the mask' in html  # localisation's, though no column ranks by it
    only_own = environment().get_template("result.html.j2").render(
        result={"status": "ok", "artifacts": [], "metrics": {"units": 3.0}}, plugin={"title": "x", "description": ""})
    assert "metric-group" not in only_own and "<th>units</th>" in only_own  # no lone "other" header
