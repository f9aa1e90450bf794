"""Peak memory of a run stays flat as the folder grows: 2,000 images need at most 1.25x what 200 need.

    python benchmarks/memory.py                                   # 200 and 2,000 demo images
    python benchmarks/memory.py --sizes 200,2000,5000 --plugins saliency,gradcam

Each size is a fresh `nnvis report` process over generated demo shapes (with
their masks) and the same per-image plugins; its peak resident set size comes
from the kernel (the rusage that wait4 returns for that child alone). The
images are streamed one batch at a time and every result's files are written as
it arrives, so what should grow with the folder is only the small JSON entry
per image. Exit status 1 when the largest size's peak exceeds --limit times the
smallest's. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nnvis_core.demo.bundle import write_bundle
from nnvis_core.demo.shapes import CLASS_NAMES


def peak_rss_of_run(images: Path, masks: Path, out: Path, plugins: str, extra: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one `nnvis report` child process."""
    command = [sys.executable, "-m", "nnvis_cli.main", "report", str(images), "-o", str(out), "--masks", str(masks),
               "--plugins", plugins, "--device", "cpu", "-q", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode() if child.stderr else ""
    if child.returncode not in (0, 1):
        raise SystemExit(f"nnvis report failed ({child.returncode}): {errors}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,2000", help="image counts, comma-separated (smallest first)")
    parser.add_argument("--plugins", default="saliency,gradcam", help="per-image plugins to run")
    parser.add_argument("--set", dest="assignments", action="append", default=["gradcam.faithfulness_steps=8"],
                        help="plugin parameters, as for nnvis report --set")
    parser.add_argument("--limit", type=float, default=1.25, help="allowed ratio of the peaks")
    parser.add_argument("--keep", type=Path, help="write the images and reports here instead of a temp folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    extra = [item for a in args.assignments for item in ("--set", a)]

    with tempfile.TemporaryDirectory() as temporary:
        root = args.keep or Path(temporary)
        rows = []
        for size in sizes:
            bundle = root / f"demo-{size}"
            if not (bundle / "images").is_dir():
                write_bundle(bundle, per_class=-(-size // len(CLASS_NAMES)), seed=7)
            count = sum(1 for _ in (bundle / "images").rglob("*.png"))
            peak, seconds = peak_rss_of_run(bundle / "images", bundle / "masks", root / f"report-{size}",
                                            args.plugins, extra)
            rows.append((count, peak, seconds))
            print(f"{count:>6} images  peak RSS {peak:8.1f} MiB  {seconds:7.1f} s", flush=True)
    ratio = rows[-1][1] / rows[0][1]
    verdict = "ok" if ratio <= args.limit else "TOO HIGH"
    print(f"peak RSS ratio {rows[-1][0]} / {rows[0][0]} images: {ratio:.3f} (limit {args.limit}) {verdict}")
    print(f"plugins: {args.plugins}; {' '.join(extra)}")
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
