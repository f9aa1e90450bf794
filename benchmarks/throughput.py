"""The saliency report against the bare forward+backward passes it needs, on the same images.

    python benchmarks/throughput.py                        # 1,000 demo images (the figure in docs/distributed.md)
    python benchmarks/throughput.py --images 200 --small 40  # a quick look
    python benchmarks/throughput.py --settings "curves off"  # the issue's setting alone (a minute)
    python benchmarks/throughput.py --jobs 1,2               # this process, then 2 worker processes

The distributed-engine issue's single-machine target: `nnvis report` with the
saliency plugin over 1,000 generated demo images (64 px) within 2x of the bare
model passes it needs for them on the same cores. Two settings of the plugin:

- `curves off` (`--set saliency.faithfulness_steps=0`): what the issue measured
  (its 5.5x): the model work is one forward+backward pass per image;
- `default`: saliency as shipped, which also scores its map with deletion and
  insertion curves (32 steps): 2 x 33 more forward passes per image.

For each, one after the other:

- the report: `nnvis report IMAGES --plugins saliency -o OUT` in a fresh process,
  timed from start to exit, on the full folder and on a small one, so that the
  fixed cost (process start, model load, report assembly) and the cost per image
  are told apart: per image = (T_full - T_small) / (full - small);
- the bound: the same images already decoded and normalized in memory, the
  gradient of each image's top logit with respect to its pixels, in batches of
  `--batch`, plus (default setting) one forward pass per image over its 66
  perturbed copies: the model work and nothing else.

With `--jobs 1,2` each report runs once per value of `--jobs` (1: the plugin calls
in the report's own process; N: in N worker processes of the local engine), side
by side. Printed: both figures and their ratio, per image and for the whole run.
Nothing is asserted; not part of the test suite.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import make_images, nnvis
from PIL import Image

from nnvis_core.demo import load_demo_model
from nnvis_core.demo.model import normalize


def report_seconds(images: Path, out: Path, steps: int, jobs: int) -> float:
    command = [*nnvis(), "report", str(images), "--plugins", "saliency", "-o", str(out), "-q",
               "--set", f"saliency.faithfulness_steps={steps}", *(["--jobs", str(jobs)] if jobs > 1 else [])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def decoded(images: Path) -> torch.Tensor:
    pixels = [np.array(Image.open(path).convert("RGB")) for path in sorted(images.rglob("*.png"))]
    return normalize(np.stack(pixels))


def bound_seconds(model: torch.nn.Module, x: torch.Tensor, batch: int, steps: int, repeats: int) -> float:
    """Best of `repeats`: input gradients of every image's top logit, `batch` images at a time,
    and with `steps`, a forward pass over 2 x (steps + 1) copies of each image (the curves' inputs)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(x), batch):
            chunk = x[first:first + batch].clone().requires_grad_()
            logits = model(chunk)
            logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
            if steps:
                with torch.no_grad():
                    for image in chunk.detach():
                        model(image.expand(2 * (steps + 1), *image.shape).contiguous())
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the full folder (8 classes)")
    parser.add_argument("--small", type=int, default=200, help="images in the small folder")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the bound")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of the bound")
    parser.add_argument("--settings", default="curves off,default", help="which of the two settings to run")
    parser.add_argument("--jobs", default="1", help="comma-separated values of nnvis report --jobs to time")
    args = parser.parse_args()
    jobs = [int(value) for value in args.jobs.split(",")]

    settings = {label: steps for label, steps in (("curves off", 0), ("default", 32))
                if label in args.settings.split(",")}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        folders = {name: make_images(root / name, max(1, count // 8), 7)
                   for name, count in (("small", args.small), ("full", args.images))}
        sizes = {name: sum(1 for _ in folder.rglob("*.png")) for name, folder in folders.items()}
        print(f"{sizes['full']} and {sizes['small']} demo images, {torch.get_num_threads()} threads", flush=True)
        walls = {(label, n, name): report_seconds(folder, root / f"report-{steps}-{n}-{name}", steps, n)
                 for label, steps in settings.items() for n in jobs for name, folder in folders.items()}
        x = decoded(folders["full"])

    model = load_demo_model()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    extra = sizes["full"] - sizes["small"]
    for label, steps in settings.items():
        bound = bound_seconds(model, x, args.batch, steps, args.repeats)
        bound_per_image = bound / sizes["full"]
        print(f"\n{label} (faithfulness_steps={steps})")
        print(f"  bound, {sizes['full']} images: {bound:.2f} s ({1000 * bound_per_image:.2f} ms per image)")
        for n in jobs:
            full, small = walls[(label, n, "full")], walls[(label, n, "small")]
            per_image = (full - small) / extra
            fixed = small - per_image * sizes["small"]
            print(f"  report --jobs {n}, {sizes['full']} images: {full:.1f} s wall ({sizes['small']} images: "
                  f"{small:.1f} s); fixed cost {fixed:.1f} s, {1000 * per_image:.2f} ms per image; "
                  f"over the bound: {per_image / bound_per_image:.2f}x per image, {full / bound:.2f}x whole run")

if __name__ == "__main__":
    main()
