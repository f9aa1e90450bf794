"""Time to first render of a large report in Chromium, and that the page stays usable at that size.

    python benchmarks/report_render.py                          # 100 and 1,000 demo images
    python benchmarks/report_render.py --sizes 1000 --keep /tmp/render

For each size: generate demo shapes, write a report with the given plugins, then
open it from file:// in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright, as in the tests) --repeats times and keep the best of each figure:

- first contentful paint, DOMContentLoaded and load, from the page's own
  performance timeline (milliseconds after navigation start);
- the number of elements in the page and of pictures fetched by the time it has
  loaded (lazy loading keeps this near a screenful, whatever the size);
- the time for a jump to the last image (as a click in the navigation does)
  until the second frame after it is drawn.

With --keep, images and computed reports are reused and only index.html is
rendered again from report.json, so template and style changes can be
measured in seconds.

The sizes run side by side, so the ratios between them show how the page scales
(linear work: about 10x for 10x the images). Nothing here is asserted; not part
of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from nnvis_core.config import ReportConfig
from nnvis_core.demo.bundle import write_bundle
from nnvis_core.demo.shapes import CLASS_NAMES
from nnvis_core.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.render import write_html

CHROMIUM = os.environ.get("NNVIS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

MEASURE = """async () => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  await new Promise(r => setTimeout(r, 500));
  const pictures = [...document.images];
  const sections = document.querySelectorAll('main > section.image');
  const last = sections[sections.length - 1];
  const start = performance.now();
  location.hash = '#' + last.id;
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const jump = performance.now() - start;
  return {
    first_paint: paint ? paint.startTime : NaN,
    dom_content_loaded: nav.domContentLoadedEventEnd,
    load: nav.loadEventEnd,
    elements: document.getElementsByTagName('*').length,
    pictures: pictures.length,
    fetched_at_load: pictures.filter(i => i.complete && i.naturalWidth > 0).length,
    jump_to_last: jump,
    last_in_view: last.getBoundingClientRect().top > -2 && last.getBoundingClientRect().top < innerHeight,
  };
}"""


def measure(index: Path, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    best: dict = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for _ in range(repeats):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(index.resolve().as_uri(), wait_until="load")
            figures = page.evaluate(MEASURE)
            context.close()
            for key, value in figures.items():
                best[key] = value if key not in best or not isinstance(value, float) else min(best[key], value)
        browser.close()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="image counts, comma-separated")
    parser.add_argument("--plugins", default="saliency", help="plugins for the reports")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep images and reports here (reused when present)")
    args = parser.parse_args()
    registry = load_registry()
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        root = args.keep or Path(temporary)
        for size in [int(s) for s in args.sizes.split(",")]:
            bundle = root / f"demo-{size}"
            if not (bundle / "images").is_dir():
                write_bundle(bundle, per_class=-(-size // len(CLASS_NAMES)), seed=11)
            out = root / f"report-{size}-{args.plugins.replace(',', '_')}"
            if not (out / "report.json").is_file():
                build_report(ReportConfig(bundle / "images", out, plugins=args.plugins.split(","), quiet=True),
                             registry)
            write_html(json.loads((out / "report.json").read_text(encoding="utf-8")), out / "index.html")
            figures = measure(out / "index.html", args.repeats)
            figures["html_kib"] = (out / "index.html").stat().st_size / 1024
            rows.append((size, figures))
            print(f"{size:>6} images: first paint {figures['first_paint']:7.1f} ms, DOMContentLoaded "
                  f"{figures['dom_content_loaded']:7.1f} ms, load {figures['load']:7.1f} ms, jump to last "
                  f"{figures['jump_to_last']:6.1f} ms (landed: {figures['last_in_view']}); "
                  f"{figures['elements']} elements, {figures['fetched_at_load']} of {figures['pictures']} "
                  f"pictures fetched at load, index.html {figures['html_kib']:.0f} KiB", flush=True)
    if len(rows) > 1:
        (small, a), (large, b) = rows[0], rows[-1]
        print(f"ratios {large}/{small} images: " + ", ".join(
            f"{key} {b[key] / a[key]:.1f}x" for key in ("first_paint", "dom_content_loaded", "load", "elements")
            if a[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
