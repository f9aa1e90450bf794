"""The report in a real browser: it loads offline, cleanly, and its links work."""

from __future__ import annotations

from pathlib import Path

import pytest
from page_waits import settled_layout, settled_top

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.reader import read_report


def load_every_image(page) -> list[str]:
    """Make lazy images load now, wait for them, and return the sources of those that failed."""
    page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    # page.evaluate runs outside the page's CSP; wait_for_function polls with eval, which it forbids.
    page.evaluate("Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
    return page.evaluate("[...document.images].filter(i => i.naturalWidth === 0).map(i => i.getAttribute('src'))")


def test_demo_report_loads_cleanly_offline(few_demo_images, tmp_path, open_report):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, plugins=["saliency", "gradcam", "sanity_check"]),
                 load_registry())
    opened = open_report(out / "index.html")
    page = opened.page
    assert load_every_image(page) == []
    assert page.evaluate("document.images.length") >= 6 * 3
    assert opened.console_errors == [] and opened.page_errors == []
    assert all(url.startswith("file://") for url in opened.requests), opened.requests

    settled_layout(page)
    page.click("nav a[href='#img-3']")
    assert page.evaluate("location.hash") == "#img-3"
    assert abs(settled_top(page, "#img-3")) < 5
    assert page.locator("#dataset svg.chart polyline").count() >= 1


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_images):
    """What `make demo` writes: the bundled demo images, with masks, through every plugin; the
    optimizing and sampling plugins with fewer steps (the page is the same; the suite's time
    is not: 68 s with the defaults, most of it in feature inversion and texture synthesis)."""
    out = tmp_path_factory.mktemp("demo") / "nnvis-report"
    registry = load_registry()
    quick = {"steps": 32}
    params = {"semantic_dictionary": {"steps": 12}, "channel_maximization": quick, "class_maximization": quick,
              "feature_inversion": {"steps": 10}, "texture_synthesis": {"steps": 10},
              "smoothgrad": {"samples": 8}, "integrated_gradients": {"steps": 8},
              "dataset_distillation": {"outer_steps": 4}, "sanity_check": {"images": 2, "max_levels": 6},
              "scorecam": {"channels": 8}, "hidden_subnetwork": {"epochs": 1, "keep": "10,50"},
              "craft": {"concepts": 4, "designs": 8, "picture_steps": 16},
              "concept_dictionary": {"steps": 200, "picture_steps": 16}}
    for name, entry in registry.plugins.items():  # shorter deletion and insertion curves
        if any(p.name == "faithfulness_steps" for p in entry.item.params):
            params.setdefault(name, {})["faithfulness_steps"] = 8
    config = ReportConfig(demo_images, out, plugins=["all"], masks=demo_images.parent / "masks", params=params)
    assert build_report(config, registry).exit_code == 0
    return out


def detail_documents(report_folder: Path) -> list[Path]:
    """The documents that hold the images' detail: index.html, or its pages when the report is paged
    (with every built-in, about 150 KB of detail an image, the demo's 40 images no longer fit one)."""
    pages = sorted((report_folder / "pages").glob("images-*.html"))
    return pages or [report_folder / "index.html"]


def shown_sources(page, report_folder: Path) -> set[str]:
    """The report-relative paths of every picture on the page (a page under pages/ sets its base to the
    report folder, so each src is resolved as the browser resolves it)."""
    folder = report_folder.resolve().as_uri() + "/"
    return {src.removeprefix(folder) for src in page.evaluate("[...document.images].map(i => i.src)")}


def test_the_demo_run_opens_with_no_errors_and_no_request_outside_its_folder(demo_run, open_report):
    report = read_report(demo_run)
    expected = {report_image["input"] for report_image in report["images"]}
    for report_image in report["images"]:
        expected |= {a["path"] for r in report_image["results"].values() for a in r["artifacts"] if "path" in a}
    shown: set[str] = set()
    folder = demo_run.resolve().as_uri() + "/"
    for number, document in enumerate([demo_run / "index.html", *detail_documents(demo_run)]):
        if number and document.name == "index.html":
            continue  # not paged: the index is the one document
        opened = open_report(document)
        page = opened.page
        page.wait_for_timeout(300)
        if document == detail_documents(demo_run)[0]:
            loaded_at_first = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0)"
                                            ".length")
            pictures = page.evaluate("document.images.length")
            assert 0 < loaded_at_first < pictures / 2, "pictures far below the fold should wait (loading=lazy)"
        assert load_every_image(page) == [], document
        shown |= shown_sources(page, demo_run)
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_timeout(200)
        assert opened.console_errors == [] and opened.page_errors == [] and opened.alerts() == [], document
        assert [url for url in opened.requests if not url.startswith(folder)] == [], document
    assert expected <= shown


def test_every_link_in_the_navigation_reaches_its_section(demo_run, open_report):
    page = open_report(demo_run / "index.html").page
    targets = page.evaluate("[...document.querySelectorAll('nav a[href^=\"#\"]')].map(a => a.getAttribute('href'))")
    report = read_report(demo_run)
    if (demo_run / "pages").is_dir():  # paged: the index's own sections; an image is a matrix row's link away
        assert len(targets) >= 2 and not [t for t in targets if t.startswith("#img-")]
    else:
        assert targets[: len(report["images"])] == [f"#img-{i['index']}" for i in report["images"]]
    viewport = page.evaluate("window.innerHeight")
    clicks = targets[::-1] + targets[:3]  # bottom to top, then back down
    for target in clicks:
        page.click(f"nav a[href='{target}']")
        assert page.evaluate("location.hash") == target
        box = page.evaluate(f"document.querySelector('{target}').getBoundingClientRect().toJSON()")
        assert -2 <= box["top"] < viewport / 2 or box["bottom"] > 0 and page.evaluate(
            "Math.ceil(window.scrollY + window.innerHeight) >= document.body.scrollHeight"), (target, box)
        assert page.evaluate(f"document.querySelector('{target}').matches(':target')")
    page.go_back()
    visited = [t for i, t in enumerate(clicks) if i == 0 or t != clicks[i - 1]]  # a repeated hash adds no entry
    assert page.evaluate("location.hash") == visited[-2]
    if targets[0].startswith("#img-"):
        heading = page.locator(f"{targets[0]} h2 a")  # an image section's own heading links to itself
        heading.click()
        assert page.evaluate("location.hash") == targets[0]
