"""The method x image matrix of the report, in a real browser (Chromium, opened from file://):
its filters, sorting, lazy rows, keyboard, and hostile names that stay text."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import NAME_PAYLOADS, add_hostile_names, copy_demo, registry_with
from page_waits import settled_top

from nnvis_core import Heatmap, Plugin, Result, Scope, Text
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.reader import read_report

ROWS = "[...document.querySelectorAll('#matrix tbody tr')].map(r => Number(r.dataset.image))"
MATRIX_IMAGES = "document.querySelectorAll('#matrix tbody img').length"
TRUTH_OPTIONS = "[...document.querySelectorAll('#matrix select[data-filter=truth] option')].map(o => o.textContent)"
SOURCE = "i => i.getAttribute('src')"
PAGE = 50  # rows matrix.js adds at a time


class Flaky(Plugin):
    """A heatmap method that is not an attribution plugin, fails on image 0 and reports one metric."""

    name = "flaky"
    title = "Flaky map"
    description = "A gradient that fails on the first image."
    scope = Scope.IMAGE

    def run_image(self, ctx, item, params):
        if item.record.index == 0:
            raise ValueError("no map for the first image")
        return Result([Heatmap("flaky", np.linspace(0, 1, 64).reshape(8, 8))], {"spread": (item.record.index * 7) % 5})


class Notes(Plugin):
    """An image plugin without a heatmap: it has no column in the matrix."""

    name = "notes"
    title = "Notes"
    description = "Text only."
    scope = Scope.IMAGE

    def run_image(self, ctx, item, params):
        return Result([Text("note", "nothing to draw")])


@pytest.fixture(scope="module")
def matrix_report(tmp_path_factory, demo_images):
    """Six class-folder images plus a misfiled one (predicted wrong) and one outside any class folder
    (true class unknown), through saliency, Grad-CAM, Flaky (fails on image 0) and Notes (no heatmap)."""
    root = tmp_path_factory.mktemp("matrix")
    images = root / "images"
    copy_demo(demo_images, images, classes=3, per_class=2)
    shutil.copy(demo_images / "circle" / "circle_02.png", images / "arrow" / "misfiled_circle.png")
    (images / "unsorted").mkdir()
    shutil.copy(demo_images / "star" / "star_00.png", images / "unsorted" / "star.png")
    out = root / "out"
    steps = {"faithfulness_steps": 8}
    config = ReportConfig(images, out, plugins=["flaky", "saliency", "gradcam", "notes"],
                          params={"saliency": steps, "gradcam": steps}, quiet=True)
    build_report(config, registry_with(Flaky(), Notes()))
    report = read_report(out)
    return out, report


def outcome(image: dict) -> str:
    if not image["true_class"]:
        return "unknown"
    return "correct" if image["predictions"][0]["index"] == image["true_class"]["index"] else "wrong"


def indices(images) -> list[int]:
    return [image["index"] for image in images]


def test_the_matrix_opens_from_file_with_a_row_per_image_and_a_column_per_heatmap_method(
        matrix_report, open_report, tmp_path):
    out, report = matrix_report
    opened = open_report(out / "index.html")
    page = opened.page
    assert {outcome(image) for image in report["images"]} == {"correct", "wrong", "unknown"}

    assert page.evaluate(ROWS) == indices(report["images"])
    assert page.locator("#matrix .matrix-count").text_content() == "8 of 8 images"
    headings = page.evaluate("[...document.querySelectorAll('#matrix thead th')].map(th => th.textContent)")
    assert headings == ["input", "file", "predicted", "true class", "Gradient saliency", "Grad-CAM", "Flaky map"]

    first = page.locator("#matrix tbody tr").first
    cells = first.locator("td")
    assert cells.nth(1).text_content() == report["images"][0]["path"]
    top = report["images"][0]["predictions"][0]
    assert cells.nth(2).text_content() == f"{top['name']} ({100 * top['probability']:.1f}%)"
    assert cells.nth(3).text_content() == report["images"][0]["true_class"]["name"]
    assert "failed" in cells.nth(6).get_attribute("class")
    error = report["images"][0]["results"]["flaky"]["error"]
    assert error.endswith("no map for the first image")
    assert cells.nth(6).locator(".matrix-failed").text_content() == "✗ failed"
    assert cells.nth(6).locator(".matrix-error").text_content() == error
    wrong = next(image for image in report["images"] if outcome(image) == "wrong")
    assert page.locator(f"#matrix tr[data-image='{wrong['index']}'] td.predicted").text_content().startswith("✗ ")
    unknown = next(image for image in report["images"] if outcome(image) == "unknown")
    assert page.locator(f"#matrix tr[data-image='{unknown['index']}'] td.truth").text_content() == "unknown"

    # Every picture is there and loads, from the report's own folder only.
    page.evaluate("document.querySelectorAll('#matrix img').forEach(i => i.loading = 'eager')")
    page.evaluate("Promise.all([...document.querySelectorAll('#matrix img')].map(i => i.decode().catch(() => null)))")
    assert page.evaluate("[...document.querySelectorAll('#matrix img')].filter(i => i.naturalWidth === 0).length") == 0
    expected = {r["artifacts"][0]["path"] for image in report["images"] for name, r in image["results"].items()
                if name != "notes" and r["status"] == "ok"} | {image["input"] for image in report["images"]}
    assert set(page.evaluate(f"[...document.querySelectorAll('#matrix img')].map({SOURCE})")) == expected
    folder = out.resolve().as_uri() + "/"
    assert [url for url in opened.requests if not url.startswith(folder)] == []
    assert opened.console_errors == [] and opened.page_errors == [] and opened.alerts() == []
    handlers = page.evaluate("[...document.querySelectorAll('#matrix *')].flatMap(e => [...e.attributes]"
                             ".filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name))")
    assert handlers == []

    page.locator("#matrix").scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "matrix.png")
    assert (tmp_path / "matrix.png").stat().st_size > 10_000


def test_the_switch_shows_maps_alone_or_over_the_input(matrix_report, open_report):
    out, report = matrix_report
    page = open_report(out / "index.html").page
    heatmaps = [r["artifacts"][0] for image in report["images"] for name, r in image["results"].items()
                if name != "notes" and r["status"] == "ok"]
    sources = "[...document.querySelectorAll('#matrix img.matrix-map')].map(i => i.getAttribute('src'))"
    assert sorted(page.evaluate(sources)) == sorted(a["path"] for a in heatmaps)
    page.select_option("#matrix .matrix-show", "map")
    assert sorted(page.evaluate(sources)) == sorted(a["map_path"] for a in heatmaps)
    assert all(a["map_path"] != a["path"] for a in heatmaps)  # the switch does change every picture
    page.select_option("#matrix .matrix-show", "overlay")
    assert sorted(page.evaluate(sources)) == sorted(a["path"] for a in heatmaps)


def test_every_filter_keeps_the_matching_images(matrix_report, open_report):
    out, report = matrix_report
    page = open_report(out / "index.html").page
    images = report["images"]
    count = page.locator("#matrix .matrix-count")

    def check(select: str, value: str, expected: list[dict]) -> None:
        page.select_option(f"#matrix select[data-filter={select}]", value)
        assert page.evaluate(ROWS) == indices(expected), (select, value)
        assert count.text_content() == f"{len(expected)} of {len(images)} images"
        page.select_option(f"#matrix select[data-filter={select}]", "")
        assert page.evaluate(ROWS) == indices(images)

    arrow = next(image["true_class"] for image in images if image["true_class"])
    check("truth", str(arrow["index"]),
          [i for i in images if i["true_class"] and i["true_class"]["index"] == arrow["index"]])
    check("truth", "none", [i for i in images if not i["true_class"]])
    circle = next(i["predictions"][0] for i in images if outcome(i) == "wrong")
    check("predicted", str(circle["index"]), [i for i in images if i["predictions"][0]["index"] == circle["index"]])
    for kind in ("correct", "wrong", "unknown"):
        check("outcome", kind, [i for i in images if outcome(i) == kind])
    check("failed", "failed", [i for i in images if i["results"]["flaky"]["status"] == "error"])
    check("failed", "clean", [i for i in images if i["results"]["flaky"]["status"] == "ok"])

    # The class lists hold the classes that occur, by name, and filters combine.
    truths = page.evaluate(TRUTH_OPTIONS)
    assert truths == ["any", *sorted({i["true_class"]["name"] for i in images if i["true_class"]}), "unknown"]
    page.select_option("#matrix select[data-filter=truth]", str(arrow["index"]))
    page.select_option("#matrix select[data-filter=outcome]", "wrong")
    assert page.evaluate(ROWS) == indices(i for i in images if i["true_class"] and outcome(i) == "wrong"
                                          and i["true_class"]["index"] == arrow["index"])
    page.select_option("#matrix select[data-filter=predicted]", str(arrow["index"]))
    assert page.evaluate(ROWS) == []
    assert page.locator("#matrix .matrix-empty").is_visible()
    assert count.text_content() == f"0 of {len(images)} images"


def test_sorting_by_confidence_and_by_every_metric_both_ways(matrix_report, open_report):
    out, report = matrix_report
    page = open_report(out / "index.html").page
    images = report["images"]
    labels = page.evaluate("[...document.querySelectorAll('#matrix .matrix-sort option')].map(o => o.textContent)")
    assert labels[:2] == ["file order", "lowest confidence first"]
    assert {"Grad-CAM: deletion_auc, worst (highest) first", "Grad-CAM: deletion_auc, best (lowest) first",
            "Gradient saliency: insertion_auc, worst (lowest) first", "Flaky map: spread, highest first",
            "Flaky map: spread, lowest first"} <= set(labels)
    # two AUCs and the three complexity metrics (--metrics default; no masks here) for each attribution
    # method, one metric for Flaky
    assert len(labels) == 2 + 2 * (2 * (2 + 3) + 1)

    page.select_option("#matrix .matrix-sort", label="lowest confidence first")
    assert page.evaluate(ROWS) == indices(sorted(images, key=lambda i: i["predictions"][0]["probability"]))

    def metric_order(plugin: str, metric: str, descending: bool) -> list[int]:
        def key(image):
            result = image["results"][plugin]
            value = result["metrics"].get(metric) if result["status"] == "ok" else None
            return (value is None, 0 if value is None else (-value if descending else value))
        return indices(sorted(images, key=key))  # stable: ties stay in file order, like the page

    cases = [("Grad-CAM: deletion_auc, worst (highest) first", "gradcam", "deletion_auc", True),
             ("Grad-CAM: deletion_auc, best (lowest) first", "gradcam", "deletion_auc", False),
             ("Gradient saliency: insertion_auc, worst (lowest) first", "saliency", "insertion_auc", False),
             ("Flaky map: spread, highest first", "flaky", "spread", True),
             ("Flaky map: spread, lowest first", "flaky", "spread", False)]
    for label, plugin, metric, descending in cases:
        page.select_option("#matrix .matrix-sort", label=label)
        expected = metric_order(plugin, metric, descending)
        assert page.evaluate(ROWS) == expected, label
        assert expected[-1] == 0 or plugin != "flaky"  # the failed call has no value: last both ways
    # The sorted-by value is written under each picture of that method.
    values = page.evaluate("[...document.querySelectorAll('#matrix td.method .matrix-value')].map(s => s.textContent)")
    assert values[0] == "spread 0" and values[-1] == "–"
    # Sorting keeps the filter, and "file order" brings the walk's order back.
    page.select_option("#matrix select[data-filter=outcome]", "correct")
    assert len(page.evaluate(ROWS)) == sum(outcome(i) == "correct" for i in images)
    page.select_option("#matrix select[data-filter=outcome]", "")
    page.select_option("#matrix .matrix-sort", "file")
    assert page.evaluate(ROWS) == indices(images)


def test_a_click_opens_the_detail_and_escape_comes_back_to_the_cell(matrix_report, open_report):
    out, report = matrix_report
    page = open_report(out / "index.html").page
    target = report["images"][3]["index"]
    page.locator(f"#matrix tr[data-image='{target}'] td.file").click()
    assert page.evaluate("location.hash") == f"#img-{target}"
    assert abs(settled_top(page, f"#img-{target}")) < 5

    page.keyboard.press("Escape")
    assert page.evaluate("location.hash") == "#matrix"
    focused = page.evaluate("[document.activeElement.parentElement.dataset.image, document.activeElement.cellIndex]")
    assert focused == [str(target), 1]
    box = page.evaluate("document.activeElement.getBoundingClientRect().toJSON()")
    assert 0 <= box["top"] and box["bottom"] <= page.evaluate("window.innerHeight")

    # Opening the same image again scrolls there again, though the hash is already set once.
    page.keyboard.press("Enter")
    page.evaluate("window.scrollTo(0, 0)")
    page.locator(f"#matrix tr[data-image='{target}'] td.file").click()
    assert abs(settled_top(page, f"#img-{target}")) < 5


def test_arrow_keys_move_between_cells_and_enter_opens_the_image(matrix_report, open_report):
    out, report = matrix_report
    page = open_report(out / "index.html").page
    where = "[document.activeElement.parentElement.dataset.image, document.activeElement.cellIndex]"
    tabbable = "document.querySelectorAll('#matrix tbody [tabindex=\"0\"]').length"
    first, second = (str(image["index"]) for image in report["images"][:2])

    page.focus("#matrix .matrix-sort")
    page.keyboard.press("Tab")  # one tab stop for the whole grid: its current cell
    assert page.evaluate(where) == [first, 0]
    for key, expected in [("ArrowRight", [first, 1]), ("ArrowRight", [first, 2]), ("ArrowDown", [second, 2]),
                          ("ArrowLeft", [second, 1]), ("ArrowUp", [first, 1]), ("ArrowUp", [first, 1]),
                          ("End", [first, 6]), ("ArrowRight", [first, 6]), ("Home", [first, 0]),
                          ("ArrowLeft", [first, 0])]:
        page.keyboard.press(key)
        assert page.evaluate(where) == expected, key
        assert page.evaluate(tabbable) == 1
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == f"#img-{second}"
    page.keyboard.press("Escape")
    assert page.evaluate(where) == [second, 1]
    assert page.evaluate("location.hash") == "#matrix"
    page.keyboard.press("Escape")  # outside a detail Escape does nothing
    assert page.evaluate("location.hash") == "#matrix"


@pytest.fixture(scope="module")
def many_images(tmp_path_factory, demo_images):
    """120 images (the demo folder three times over) through saliency alone, no faithfulness curves."""
    root = tmp_path_factory.mktemp("matrix-many")
    images = root / "images"
    for copy in range(3):
        for source in sorted(demo_images.rglob("*.png")):
            folder = images / source.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, folder / f"{copy}_{source.name}")
    out = root / "out"
    build_report(ReportConfig(images, out, plugins=["saliency"], params={"saliency": {"faithfulness_steps": 0}},
                              quiet=True), load_registry())
    return out


def test_rows_and_pictures_come_as_the_matrix_scrolls(many_images, open_report):
    opened = open_report(many_images / "index.html")
    page = opened.page
    total = read_report(many_images)["input"]["readable"]
    assert total == 120
    page.wait_for_timeout(300)
    assert page.locator("#matrix .matrix-count").text_content() == "120 of 120 images"
    rows = page.evaluate(ROWS)
    assert len(rows) == PAGE
    assert page.evaluate(MATRIX_IMAGES) == PAGE * 2 < total * 2  # input and saliency, only for the rows made

    seen = [len(rows)]
    for _ in range(5):
        page.evaluate("(box => box.scrollTop = box.scrollHeight)(document.querySelector('#matrix .matrix-scroll'))")
        page.wait_for_timeout(300)
        seen.append(len(page.evaluate(ROWS)))
    assert seen[1] == 2 * PAGE and seen[-1] == total
    assert page.evaluate(ROWS) == list(range(total))
    assert page.evaluate(MATRIX_IMAGES) == total * 2
    assert page.locator("#matrix .matrix-more").is_hidden()
    assert opened.console_errors == [] and opened.page_errors == []

    # A filter starts again from one page; the arrow key past the last row made brings the next page.
    page.select_option("#matrix .matrix-sort", label="lowest confidence first")
    assert len(page.evaluate(ROWS)) == PAGE
    page.locator("#matrix tbody tr").nth(PAGE - 1).locator("td.truth").focus()
    page.keyboard.press("ArrowDown")
    assert len(page.evaluate(ROWS)) == 2 * PAGE
    assert page.evaluate("document.activeElement.parentElement.rowIndex") == PAGE + 1  # thead row first
    # The button below the rows does the same without scrolling.
    page.locator("#matrix .matrix-more").click()
    assert len(page.evaluate(ROWS)) == total


# Each payload, run as script, would call alert(); each must show in the matrix as plain text.
PAYLOADS = ["<img src=x onerror=alert(1)>", '"><script>alert(2)</script>', "'><svg onload=alert(3)>",
            "</td></tr><b onmouseover=alert(4)>"]


class HostileMap(Plugin):
    """A heatmap method whose title, metric names and error messages are markup."""

    name = "hostile_map"
    title = "Hostile " + PAYLOADS[1]
    description = PAYLOADS[2]
    scope = Scope.IMAGE

    def run_image(self, ctx, item, params):
        if item.record.index == 0:
            raise ValueError(f"failed on {PAYLOADS[0]}")
        return Result([Heatmap(PAYLOADS[3], np.ones((4, 4)), caption=PAYLOADS[0])], {PAYLOADS[3]: 0.5})


def test_hostile_names_stay_text_in_the_matrix(few_demo_images, tmp_path, open_report):
    labels = tmp_path / "labels.txt"
    class_names = add_hostile_names(few_demo_images, labels, PAYLOADS)
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, labels=labels, plugins=["hostile_map", "saliency"],
                              params={"saliency": {"faithfulness_steps": 0}}, quiet=True), registry_with(HostileMap()))
    report = read_report(out)

    opened = open_report(out / "index.html")
    page = opened.page
    page.select_option("#matrix .matrix-show", "map")
    page.select_option("#matrix .matrix-sort", index=2)
    page.evaluate("""document.querySelectorAll('#matrix *').forEach(e => {  // what a payload's handler waits for
        for (const type of ['mouseover', 'mouseenter', 'focus']) e.dispatchEvent(new MouseEvent(type));
    })""")
    page.wait_for_timeout(300)
    assert opened.alerts() == [] and opened.dialogs == []
    assert opened.page_errors == [] and opened.console_errors == []
    handlers = page.evaluate("[...document.querySelectorAll('*')].flatMap(e => [...e.attributes]"
                             ".filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name))")
    assert handlers == []
    injected = "#matrix img[src='x'], #matrix b, #matrix svg, #matrix script:not(.matrix-data)"
    assert page.evaluate(f"document.querySelectorAll(\"{injected}\").length") == 0
    assert "<" not in page.evaluate("document.querySelector('#matrix script.matrix-data').textContent")

    # Every hostile string is in the matrix as text: file names, class names, the title, the
    # error, the metric name (a sort option); the table still has one cell per column.
    text = page.evaluate("document.getElementById('matrix').textContent")
    hostile_paths = [i["path"] for i in report["images"] if any(n in i["path"] for n in NAME_PAYLOADS)]
    assert len(hostile_paths) == len(NAME_PAYLOADS)
    shown_classes = {i["predictions"][0]["name"] for i in report["images"]} | {class_names[0]}
    for payload in [*hostile_paths, *shown_classes, HostileMap.title, f"failed on {PAYLOADS[0]}", PAYLOADS[3]]:
        assert payload in text, payload
    files = page.evaluate("[...document.querySelectorAll('#matrix td.file')].map(td => td.textContent)")
    assert sorted(files) == sorted(i["path"] for i in report["images"])
    assert page.evaluate("[...document.querySelectorAll('#matrix tbody tr')].every(r => r.cells.length === 6)")
    assert page.locator("#matrix thead th").nth(5).text_content() == HostileMap.title
    truths = page.evaluate(TRUTH_OPTIONS)
    assert class_names[0] in truths
