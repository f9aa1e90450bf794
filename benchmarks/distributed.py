"""The Ray engine's cost over the local engine on the same cores, and what one worker does.

    python benchmarks/distributed.py --images 5000 --small 100  # docs/distributed.md: 2 h 20 min on 2 cores
    python benchmarks/distributed.py --images 1000 --small 100  # its 1,000-image figures (31 minutes)
    python benchmarks/distributed.py --images 160 --small 40    # a quick look (6 minutes)
    python benchmarks/distributed.py --images 400 --small 40 --only ray  # the Ray engine alone

Generates demo images (64 px shapes, `nnvis demo images`) and writes the same report
(--plugins saliency,gradcam,occlusion) with each engine, one after the other, as a user
would: `nnvis report` in a fresh process, timed from start to exit.

- `local, 2 threads`: the default, torch's intra-op pool over both cores;
- `local, 1 thread`: OMP_NUM_THREADS=1, the model work of one Ray worker;
- `local, 2 jobs`: `--jobs 2`, two worker processes of the local engine (one torch
  thread each), the Ray workers' split of the work without Ray;
- `ray, 1 worker` and `ray, 2 workers`: a local Ray instance started and stopped by the run.

Every configuration runs on a small folder (--small images) and on the full one, so the
fixed cost (process start, model load, Ray start and stop, report assembly) and the
marginal cost per image are told apart: marginal = (T_full - T_small) / (full - small).
The driver's CPU seconds (the `nnvis report` process alone, sampled from /proc) show how
much of an image's cost stays on the driver: with the Ray engine it bounds the images per
second that any number of workers can reach.

Printed: a table per configuration and the ratios the issue asks about (Ray 1 worker over
local 1 thread, the overhead; Ray 2 workers over Ray 1 worker, the scaling; local 2 jobs
against both). Nothing is
asserted; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import make_images, nnvis

PLUGINS = "saliency,gradcam,occlusion"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (not its children), or None once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_report(images: Path, out: Path, engine_args: list[str], env: dict[str, str]) -> dict:
    """Wall seconds from start to exit, and the driver's CPU seconds (last sample before exit)."""
    command = [*nnvis(), "report", str(images), "--plugins", PLUGINS, "-o", str(out), "-q", *engine_args]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    driver_cpu = 0.0
    while process.poll() is None:
        sample = cpu_seconds(process.pid)
        if sample is not None:
            driver_cpu = sample
        time.sleep(0.2)
    wall = time.perf_counter() - start
    stderr = process.stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    images_ok = sum(1 for entry in report["by_model"][0]["images"] if entry["status"] == "ok")
    return {"wall": wall, "driver_cpu": driver_cpu, "images": images_ok}


def configurations(threads: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    base = dict(os.environ)
    single = {**base, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return {
        f"local, {threads} threads": ([], base),
        "local, 1 thread": ([], single),
        f"local, {threads} jobs": (["--jobs", str(threads)], base),
        "ray, 1 worker": (["--engine", "ray", "--workers", "1"], base),
        f"ray, {threads} workers": (["--engine", "ray", "--workers", str(threads)], base),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images in the full folder (8 classes)")
    parser.add_argument("--small", type=int, default=200, help="images in the small folder")
    parser.add_argument("--keep", type=Path, help="keep images and reports here (reused images)")
    parser.add_argument("--only", choices=("local", "ray"), help="run only that engine's configurations")
    args = parser.parse_args()
    threads = os.cpu_count() or 2

    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        folders = {}
        for name, count in (("small", args.small), ("full", args.images)):
            per_class = max(1, count // 8)
            target = root / f"{name}-{per_class * 8}"
            folders[name] = target / "images" if (target / "images").is_dir() else make_images(target, per_class, 7)
        sizes = {name: sum(1 for _ in folder.rglob("*.png")) for name, folder in folders.items()}
        print(f"{sizes['full']} and {sizes['small']} demo images, plugins {PLUGINS}, {threads} cores", flush=True)

        rows = {}
        for label, (engine_args, env) in configurations(threads).items():
            if args.only and not label.startswith(args.only):
                continue
            measured = {}
            for name, folder in folders.items():
                out = root / f"report-{label.replace(', ', '-').replace(' ', '')}-{name}"
                measured[name] = run_report(folder, out, engine_args, env)
                print(f"  {label:<20} {name:<5} {measured[name]['wall']:8.1f} s wall, "
                      f"driver {measured[name]['driver_cpu']:7.1f} s CPU", flush=True)
            extra = sizes["full"] - sizes["small"]
            marginal = (measured["full"]["wall"] - measured["small"]["wall"]) / extra
            driver = (measured["full"]["driver_cpu"] - measured["small"]["driver_cpu"]) / extra
            fixed = measured["small"]["wall"] - marginal * sizes["small"]
            rows[label] = {"full": measured["full"]["wall"], "fixed": fixed, "marginal_ms": 1000 * marginal,
                           "driver_ms": 1000 * driver, "per_second": 1 / marginal,
                           "workers": int(label.split()[1]) if label.startswith("ray") or label.endswith("jobs")
                           else None}

    print(f"\n| configuration | {sizes['full']} images | fixed cost | per image | images/s | per worker | "
          "driver CPU per image |")
    print("|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        per_worker = f"{row['per_second'] / row['workers']:.1f}" if row["workers"] else "-"
        print(f"| {label} | {row['full']:.1f} s | {row['fixed']:.1f} s | {row['marginal_ms']:.1f} ms | "
              f"{row['per_second']:.1f} | {per_worker} | {row['driver_ms']:.1f} ms |")

    if args.only:
        return
    one_thread, ray_one = rows["local, 1 thread"], rows["ray, 1 worker"]
    ray_all, local_all = rows[f"ray, {threads} workers"], rows[f"local, {threads} threads"]
    print(f"\nRay overhead per image, 1 worker over local at 1 thread: "
          f"{100 * (ray_one['marginal_ms'] / one_thread['marginal_ms'] - 1):+.1f}%")
    print(f"Ray overhead, whole run of {sizes['full']} images, 1 worker over local at 1 thread: "
          f"{100 * (ray_one['full'] / one_thread['full'] - 1):+.1f}%")
    print(f"Ray {threads} workers over local {threads} threads, per image: "
          f"{100 * (ray_all['marginal_ms'] / local_all['marginal_ms'] - 1):+.1f}%")
    print(f"Scaling, Ray {threads} workers over 1 worker: {ray_one['marginal_ms'] / ray_all['marginal_ms']:.2f}x")
    jobs = rows[f"local, {threads} jobs"]
    print(f"Local {threads} jobs over local {threads} threads, per image: "
          f"{100 * (jobs['marginal_ms'] / local_all['marginal_ms'] - 1):+.1f}%; over Ray {threads} workers: "
          f"{100 * (jobs['marginal_ms'] / ray_all['marginal_ms'] - 1):+.1f}%")
    print(f"Driver bound (images/s the driver alone can take): {1000 / ray_all['driver_ms']:.0f}")


if __name__ == "__main__":
    main()
