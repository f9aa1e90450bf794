"""The report in a real browser: it loads offline, cleanly, and its links work."""

from __future__ import annotations

import pytest
from page_waits import settled_top

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
    params = {"semantic_dictionary": quick, "channel_maximization": quick, "class_maximization": quick,
              "feature_inversion": {"steps": 10}, "texture_synthesis": {"steps": 10},
              "smoothgrad": {"samples": 8}, "integrated_gradients": {"steps": 8},
              "dataset_distillation": {"outer_steps": 4}}
    for name, entry in registry.plugins.items():  # shorter deletion and insertion curves
        if any(p.name == "faithfulness_steps" for p in entry.item.params):
            params.setdefault(name, {})["faithfulness_steps"] = 8
    config = ReportConfig(demo_images, out, plugins=["all"], masks=demo_images.parent / "masks", params=params)
    assert build_report(config, registry).exit_code == 0
    return out


def test_the_demo_run_opens_with_no_errors_and_no_request_outside_its_folder(demo_run, open_report):
    opened = open_report(demo_run / "index.html")
    page = opened.page
    report = read_report(demo_run)
    page.wait_for_timeout(300)
    loaded_at_first = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
    pictures = page.evaluate("document.images.length")
    assert 0 < loaded_at_first < pictures / 2, "pictures far below the fold should wait (loading=lazy)"

    assert load_every_image(page) == []
    expected = {report_image["input"] for report_image in report["images"]}
    for report_image in report["images"]:
        expected |= {a["path"] for r in report_image["results"].values() for a in r["artifacts"] if "path" in a}
    shown = set(page.evaluate("[...document.images].map(i => i.getAttribute('src'))"))
    assert expected <= shown
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_timeout(200)
    assert opened.console_errors == [] and opened.page_errors == [] and opened.alerts() == []
    folder = demo_run.resolve().as_uri() + "/"
    assert [url for url in opened.requests if not url.startswith(folder)] == []


def test_every_link_in_the_navigation_reaches_its_section(demo_run, open_report):
    page = open_report(demo_run / "index.html").page
    targets = page.evaluate("[...document.querySelectorAll('nav a[href^=\"#\"]')].map(a => a.getAttribute('href'))")
    report = read_report(demo_run)
    assert targets[: len(report["images"])] == [f"#img-{i['index']}" for i in report["images"]]
    viewport = page.evaluate("window.innerHeight")
    for target in targets[::-1] + targets[:3]:  # bottom to top, then back down
        page.click(f"nav a[href='{target}']")
        assert page.evaluate("location.hash") == target
        box = page.evaluate(f"document.querySelector('{target}').getBoundingClientRect().toJSON()")
        assert -2 <= box["top"] < viewport / 2 or box["bottom"] > 0 and page.evaluate(
            "Math.ceil(window.scrollY + window.innerHeight) >= document.body.scrollHeight"), (target, box)
        assert page.evaluate(f"document.querySelector('{target}').matches(':target')")
    page.go_back()
    assert page.evaluate("location.hash") == targets[1]
    heading = page.locator(f"{targets[0]} h2 a")  # a section's own heading links to itself
    heading.click()
    assert page.evaluate("location.hash") == targets[0]
