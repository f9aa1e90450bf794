"""Time to first render of a large report in Chromium, and that the page stays usable at that size.

    python benchmarks/report_render.py                          # 100 and 1,000 demo images
    python benchmarks/report_render.py --sizes 100000 --plugins saliency,tsne --jobs 2 --keep /tmp/render
    python benchmarks/report_render.py --synthetic --sizes 1000,100000   # the page alone, at scale

Without --synthetic, each size is a real run: generate that many 64 px demo
shapes, compute the report with the given plugins (as `nnvis report` does, with
--jobs worker processes), and print the run's time, its peak memory (this
process and the largest worker) and the report's size on disk before the page
figures. An interrupted run is resumed when the command is given again with the
same --keep folder; a finished one is reused.

--synthetic writes report.json for N images without running a model: every image
entry (64 px, one saliency map with deletion and insertion AUCs, eight classes,
one prediction in ten wrong) points at the same few PNG files, so 100,000 images
take seconds to make and what is measured is the page alone. --tile REPORT does
the same with a finished report's image entries (every card of `make demo`, say)
repeated N times under new names, its pictures linked:

    python benchmarks/report_render.py --tile nnvis-report --sizes 10000   # every built-in, 10,000 images

The page is opened from file:// in headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright, as in the tests) --repeats times, keeping the best of each
figure: index.html's size, first contentful paint, the matrix's first rows and
every row chunk loaded (interactive across the folder), the t-SNE scatter drawn
and one zoom frame (when the report has one), and the first paint and load of the
last detail page (reports of more than 500 images put details on pages).

The sizes run side by side, so the ratios between them show how the page scales.
Nothing here is asserted; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from nnvis_core.demo.bundle import write_bundle
from nnvis_core.demo.shapes import CLASS_NAMES
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.render import write_html

CHROMIUM = os.environ.get("NNVIS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

SCALE = """async () => {
  const nav = performance.getEntriesByType('navigation')[0];
  const matrix = document.querySelector('[data-matrix]');
  const until = async (test) => { while (!test()) await new Promise(r => setTimeout(r, 5)); return performance.now(); };
  await until(() => performance.getEntriesByName('first-contentful-paint').length);
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  const view = document.querySelector('.scatter-view');  // none without a t-SNE
  const [first_rows, all_rows, scatter_ready] = await Promise.all([
    until(() => matrix.querySelector('tbody tr')), until(() => matrix.dataset.loaded === 'all'),
    view ? until(() => view.nnvisScatter) : NaN]);
  const canvas = view && view.querySelector('canvas');
  const frames = [];
  for (let k = 0; view && k < 5; k++) {  // zoom in a step: the time to the second frame after the wheel event
    const start = performance.now();
    canvas.dispatchEvent(new WheelEvent('wheel',
        {deltaY: -120, clientX: 300, clientY: 300, bubbles: true, cancelable: true}));
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    frames.push(performance.now() - start);
  }
  return {first_paint: paint ? paint.startTime : NaN, dom_content_loaded: nav.domContentLoadedEventEnd,
          first_rows: first_rows, all_rows: all_rows, scatter_ready: scatter_ready,
          scatter_frame: frames.length ? frames.sort((a, b) => a - b)[2] : NaN,
          elements: document.getElementsByTagName('*').length};
}"""

PAGE = """async () => {
  const nav = performance.getEntriesByType('navigation')[0];
  const until = async (test) => { while (!test()) await new Promise(r => setTimeout(r, 5)); };
  await until(() => performance.getEntriesByName('first-contentful-paint').length);
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  return {page_first_paint: paint ? paint.startTime : NaN, page_load: nav.loadEventEnd};
}"""


def synthetic_report(out: Path, size: int) -> None:
    """report.json and a few shared PNGs for `size` images, as a saliency run on 64 px shapes would write them."""
    import numpy as np
    from PIL import Image

    from nnvis_core.demo.shapes import CLASS_NAMES as NAMES
    from nnvis_reports.writer import REPORT_FORMAT, SCHEMA_VERSION

    shared = out / "assets" / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("input", "overlay", "map"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(shared / f"{name}.png")
    np.save(shared / "raw.npy", rng.random((64, 64), dtype=np.float32))
    model = {"name": "demo", "label": "demo", "source": "demo", "weights": "embedded", "architecture": "DemoNet",
             "num_classes": 8, "parameters": 0, "device": "cpu", "notes": [],
             "preprocess": {"resize": 64, "crop": 64, "mean": [0.5] * 3, "std": [0.25] * 3}}
    images = []
    for index in range(size):
        truth = index % len(NAMES)
        said = (truth + 1) % len(NAMES) if index % 10 == 9 else truth
        p = float(rng.uniform(0.4, 1.0))
        images.append({
            "index": index, "path": f"{NAMES[truth]}/{NAMES[truth]}_{index:06d}.png", "folder": NAMES[truth],
            "status": "ok", "error": None, "input": "assets/shared/input.png",
            "true_class": {"index": truth, "name": NAMES[truth], "probability": p if said == truth else 1 - p},
            "predictions": [{"index": said, "name": NAMES[said], "probability": p}],
            "results": {"saliency": {
                "status": "ok", "seconds": 0.01, "error": None, "traceback": None,
                "metrics": {"deletion_auc": float(rng.random()), "insertion_auc": float(rng.random())},
                "artifacts": [{"kind": "heatmap", "title": "gradient", "caption": "",
                               "path": "assets/shared/overlay.png",
                               "map_path": "assets/shared/map.png", "raw": "assets/shared/raw.npy", "range": [0, 1],
                               "signed": False, "label": "|gradient|"}]}}})
    # A t-SNE-like scatter of every image: eight clusters, thumbnails on sprite sheets.
    from nnvis_reports.assets import save_sprites

    centres = rng.normal(0, 10, (len(NAMES), 2))
    points = centres[[i % len(NAMES) for i in range(size)]] + rng.normal(0, 2, (size, 2))
    np.save(shared / "tsne.npy", points.astype(np.float32))
    sprite = save_sprites([shared / "input.png"] * size, shared / "tsne.sprite.png")
    sprite["sheets"] = [path.relative_to(out).as_posix() for path in sprite["sheets"]]
    scatter = {"kind": "scatter", "title": "t-SNE", "caption": "", "points": points.round(3).tolist(),
               "raw": "assets/shared/tsne.npy", "labels": [image["predictions"][0]["name"] for image in images],
               "true_labels": [image["true_class"]["name"] for image in images], "image_ids": list(range(size)),
               "sprite": {"path": sprite["sheets"][0], **sprite}}
    tsne = {"name": "tsne", "title": "t-SNE", "description": "", "scope": "dataset", "origin": "nnvis", "params": {},
            "attribution": False, "param_help": {}, "metrics_summary": {}, "seconds": 1.0, "calls": 1, "failures": 0}
    plugin = {"name": "saliency", "title": "Gradient saliency", "description": "", "scope": "image", "origin": "nnvis",
              "params": {}, "attribution": True, "param_help": {}, "metrics_summary": {}, "seconds": 0.01 * size,
              "calls": size, "failures": 0}
    report = {"format": REPORT_FORMAT, "schema_version": SCHEMA_VERSION,
              "input": {"root": "synthetic", "image_count": size, "readable": size, "unreadable": 0},
              "models": [model], "versions": {"nnvis": "bench"}, "seed": 0,
              "timing": {"started": "", "seconds": 0.0}, "load_failures": [], "leaderboard": [],
              "by_model": [{"model": model, "plugins": [plugin, tsne], "skipped_plugins": [], "images": images,
                            "dataset": {"tsne": {"status": "ok", "seconds": 1.0, "error": None, "traceback": None,
                                                 "metrics": {}, "artifacts": [scatter]}},
                            "model_results": {}}]}
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")


def tiled_report(source: Path, out: Path, size: int) -> None:
    """A real report's images repeated to `size` entries, each with its own name, sharing the source's files.

    For page figures at a size no run of every plugin reaches here: every card
    kind, metric and picture of the real run appears, `size` times over. The
    folder-level results (t-SNE, neighbours) keep the source's images. The
    source's asset files are linked, not copied; the page's own scripts
    (matrix rows, scatter data) are written afresh.
    """
    report = json.loads((source / "report.json").read_text(encoding="utf-8"))
    (out / "assets").mkdir(parents=True, exist_ok=True)
    for entry in (source / "assets").iterdir():
        link = out / "assets" / entry.name
        if entry.name not in ("matrix", "scatter") and not link.exists():
            link.symlink_to(entry.resolve())
    for section in report["by_model"]:
        real = section["images"]
        tiled = []
        for index in range(size):
            image = dict(real[index % len(real)])
            stem, dot, suffix = image["path"].rpartition(".")
            image.update(index=index, path=f"{stem}_{index // len(real):05d}{dot}{suffix}")
            tiled.append(image)
        section["images"] = tiled
    report["input"].update(image_count=size, readable=size)
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")


def keep_best(best: dict, figures: dict) -> None:
    """Fold one load's figures into the best so far: the lowest of each time, the latest of the rest."""
    for key, value in figures.items():
        best[key] = value if key not in best or not isinstance(value, float) else min(best[key], value)


def print_ratios(rows: list[tuple[int, dict]], keys: tuple[str, ...]) -> None:
    """Each figure of the largest size over the smallest's, when more than one size ran."""
    if len(rows) > 1:
        (small, a), (large, b) = rows[0], rows[-1]
        print(f"ratios {large}/{small} images: " + ", ".join(f"{key} {b[key] / a[key]:.1f}x" for key in keys if a[key]))


def measure_scale(out: Path, repeats: int) -> dict:
    """The best of `repeats` loads of index.html and of the last detail page (when the report has pages)."""
    from playwright.sync_api import sync_playwright

    pages = sorted((out / "pages").glob("images-*.html"))
    best: dict = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for _ in range(repeats):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto((out / "index.html").resolve().as_uri(), wait_until="domcontentloaded")
            figures = page.evaluate(SCALE)
            if pages:
                page.goto(pages[-1].resolve().as_uri(), wait_until="load")
                figures.update(page.evaluate(PAGE))
            context.close()
            keep_best(best, figures)
        browser.close()
    return best


def measure_and_print(out: Path, size: int, repeats: int, run: dict) -> dict:
    """Write index.html again from report.json, load it `repeats` times and print one line of figures."""
    import time

    from nnvis_reports.reader import read_report

    start = time.perf_counter()
    write_html(read_report(out, model=None), out / "index.html")
    figures = {**run, "render_s": time.perf_counter() - start, **measure_scale(out, repeats)}
    figures["html_kib"] = (out / "index.html").stat().st_size / 1024
    pages = sorted((out / "pages").glob("images-*.html"))
    figures["largest_page_kib"] = max((p.stat().st_size for p in pages), default=0) / 1024
    computed = (f"computed in {run['run_s']:.0f} s ({1000 * run['run_s'] / size:.1f} ms per image, peak memory "
                f"{run['rss_mib']:.0f} MiB here, {run['child_rss_mib']:.0f} MiB in a worker), report "
                f"{run['report_mib']:.0f} MiB on disk, " if run else "")
    print(f"{size:>7} images: {computed}index.html {figures['html_kib']:8.0f} KiB, first paint "
          f"{figures['first_paint']:7.1f} ms, first matrix rows {figures['first_rows']:7.1f} ms, every row loaded "
          f"{figures['all_rows']:8.1f} ms, scatter drawn {figures['scatter_ready']:7.1f} ms (zoom frame "
          f"{figures['scatter_frame']:5.1f} ms), "
          f"last page first paint {figures.get('page_first_paint', float('nan')):7.1f} ms "
          f"(load {figures.get('page_load', float('nan')):7.1f} ms, "
          f"largest page {figures['largest_page_kib']:.0f} KiB), "
          f"{len(pages)} pages, index written in {figures['render_s']:.1f} s", flush=True)
    return figures


def main_synthetic(sizes: list[int], repeats: int, root: Path, source: Path | None) -> int:
    rows = []
    for size in sizes:
        out = root / (f"tiled-{size}" if source else f"synthetic-{size}")
        if source and not (out / "report.json").is_file():
            tiled_report(source, out, size)
        elif not (out / "report.json").is_file():
            synthetic_report(out, size)
        rows.append((size, measure_and_print(out, size, repeats, {})))
    print_ratios(rows, ("html_kib", "first_paint", "first_rows", "all_rows"))
    return 0


def compute_report(bundle: Path, out: Path, plugins: list[str], jobs: int) -> dict:
    """Run the report as `nnvis report` would; an interrupted run under `out` is resumed, a finished one reused."""
    import resource
    import time

    from nnvis_core.allocator import keep_freed_memory
    from nnvis_reports.output import work_folder

    if (out / "report.json").is_file():
        return {}
    keep_freed_memory()  # as `nnvis report` does
    start = time.perf_counter()
    build_report(ReportConfig(bundle / "images", out, plugins=plugins, quiet=True, jobs=jobs,
                              resume=work_folder(out).is_dir()),
                 load_registry())
    seconds = time.perf_counter() - start
    on_disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"run_s": seconds, "report_mib": on_disk / 2**20,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "child_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="image counts, comma-separated")
    parser.add_argument("--plugins", default="saliency", help="plugins for the reports")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the report runs (--jobs)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep images and reports here (reused when present)")
    parser.add_argument("--synthetic", action="store_true", help="write report.json directly (the page alone)")
    parser.add_argument("--tile", type=Path, metavar="REPORT",
                        help="repeat a finished report's images (the page alone)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as temporary:
        root = args.keep or Path(temporary)
        if args.synthetic or args.tile:
            return main_synthetic(sizes, args.repeats, root, args.tile)
        rows = []
        for size in sizes:
            bundle = root / f"demo-{size}"
            if not (bundle / "images").is_dir():
                write_bundle(bundle, per_class=-(-size // len(CLASS_NAMES)), seed=11)
            out = root / f"report-{size}-{args.plugins.replace(',', '_')}"
            run = compute_report(bundle, out, args.plugins.split(","), args.jobs)
            rows.append((size, measure_and_print(out, size, args.repeats, run)))
        print_ratios(rows, ("html_kib", "first_paint", "first_rows", "all_rows"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
