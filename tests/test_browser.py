"""The report in a real browser: it loads offline, cleanly, and its links work."""

from __future__ import annotations

from nnvis_core.config import ReportConfig
from nnvis_core.registry import load_registry
from nnvis_reports.build import build_report


def test_demo_report_loads_cleanly_offline(few_demo_images, tmp_path, open_report):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, plugins=["saliency", "gradcam", "sanity_check"]),
                 load_registry())
    opened = open_report(out / "index.html")
    page = opened.page
    # page.evaluate runs outside the page's CSP; wait_for_function would need 'unsafe-eval'.
    page.evaluate("""Promise.all([...document.images].map(i => {
        i.loading = 'eager';
        return i.decode().catch(() => null);
    }))""")
    broken = page.evaluate("[...document.images].filter(i => i.naturalWidth === 0).map(i => i.src)")
    assert page.evaluate("document.images.length") >= 6 * 3
    assert broken == []
    assert opened.console_errors == [] and opened.page_errors == []
    assert all(url.startswith("file://") for url in opened.requests), opened.requests

    page.click("nav a[href='#img-3']")
    assert page.evaluate("location.hash") == "#img-3"
    top = page.evaluate("document.getElementById('img-3').getBoundingClientRect().top")
    assert abs(top) < 5
    assert page.locator("#dataset svg.chart polyline").count() >= 1
