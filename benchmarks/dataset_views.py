"""Folder views at scale: a generated folder through tsne, neighbours and top_units, and t-SNE alone.

    .venv/bin/python benchmarks/dataset_views.py                 # 10,000 images, 10,000 x 512 t-SNE
    .venv/bin/python benchmarks/dataset_views.py --images 2000 --tsne-points 2000

For each folder size the report runs in a fresh process, so its peak resident
memory (ru_maxrss of the child) is the report's alone. Running two sizes side by
side shows how memory grows with the folder: by the features (N x 128 floats
here) and the report's JSON, not by the pixels. The t-SNE line times openTSNE
on random clustered 512-dimensional vectors with every core and with one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nnvis_core.demo.shapes import CLASS_NAMES, generate_dataset

CHUNK = 500


def write_folder(root: Path, count: int, seed: int = 5) -> None:
    """`count` demo-shape PNGs in class folders, generated CHUNK at a time."""
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    written = 0
    for chunk in range(0, count, CHUNK):
        images, _, labels = generate_dataset(min(CHUNK, count - chunk), seed=seed + chunk)
        for image, label in zip(images, labels):
            Image.fromarray(image).save(root / CLASS_NAMES[label] / f"{written:06d}.png")
            written += 1


REPORT = """
import json, resource, sys, time
from pathlib import Path
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.reader import read_report
images, out, plugins = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
start = time.perf_counter()
outcome = build_report(ReportConfig(images, out, plugins=plugins), load_registry())
report = read_report(out)
print(json.dumps({"exit_code": outcome.exit_code, "seconds": time.perf_counter() - start,
                  "plugin_seconds": {p["name"]: p["seconds"] for p in report["plugins"]},
                  "metrics": {k: v["metrics"] for k, v in report["dataset"].items()},
                  "errors": {k: v["error"] for k, v in report["dataset"].items() if v["error"]},
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "html_mib": (out / "index.html").stat().st_size / 2**20}))
"""


def run_report(images: Path, out: Path, plugins: str) -> dict:
    done = subprocess.run([sys.executable, "-c", REPORT, str(images), str(out), plugins],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_tsne(points: int, dims: int, threads: int) -> float:
    from nnvis_plugins.dataset.embedding import tsne_embed

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, dims)) * 4
    features = (centres[rng.integers(0, 20, points)] + rng.normal(size=(points, dims))).astype(np.float32)
    start = time.perf_counter()
    tsne_embed(features, seed=0, threads=threads)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--compare", type=int, default=2_500,
                        help="a smaller folder for the memory comparison (0: none)")
    parser.add_argument("--plugins", default="tsne,neighbours,top_units")
    parser.add_argument("--tsne-points", type=int, default=10_000)
    parser.add_argument("--tsne-dims", type=int, default=512)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as scratch:
        for count in [c for c in (args.compare, args.images) if c]:
            images = Path(scratch) / f"images-{count}"
            start = time.perf_counter()
            write_folder(images, count)
            print(f"{count} images generated in {time.perf_counter() - start:.0f} s")
            result = run_report(images, Path(scratch) / f"out-{count}", args.plugins)
            print(f"{count} images, plugins {args.plugins}: {result['seconds']:.0f} s, "
                  f"peak memory {result['peak_mib']:.0f} MiB, index.html {result['html_mib']:.1f} MiB")
            print(f"  plugin seconds: {result['plugin_seconds']}")
            print(f"  metrics: {result['metrics']}")
            if result["errors"] or result["exit_code"]:
                print(f"  errors: {result['errors']} (exit code {result['exit_code']})")
    for threads in (os.cpu_count() or 1, 1):
        seconds = time_tsne(args.tsne_points, args.tsne_dims, threads)
        print(f"t-SNE of {args.tsne_points} x {args.tsne_dims} (PCA to 50, openTSNE, {threads} threads): "
              f"{seconds:.0f} s, peak memory of this process "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
