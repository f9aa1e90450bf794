"""Dataset distillation on the demo shapes: distilled vs random real images, and seconds per outer step.

    .venv/bin/python benchmarks/distillation.py                 # the figures in docs/distillation.md
    .venv/bin/python benchmarks/distillation.py --smoke         # a few seconds: every path, tiny budgets
    .venv/bin/python benchmarks/distillation.py --method gradient_matching --counts 10 --outer-steps 40 \
        --inner-steps 10 --real-batch 128 --extra-per-class 40 --eval-steps 300 --eval-inits 4
                                                                # the long evaluation (docs/distillation.md)

The folder is the 40 bundled images plus `nnvis demo images --per-class N`
(another seed, so no image repeats). It is split per class into images to distil
from and held-out test images (seeded). For each count K, the chosen method
(`--method`: unrolled, Wang et al. 2018, by default) distils K images per class for fresh initializations of the
demo convnet's architecture (He init, never the trained weights); then fresh
initializations that took no part in the distillation are trained on the
distilled images, on K random real images per class, and on the whole
distillation part, with the distillation's learned step sizes, and tested on
the held-out images. The random-real baseline is also given its best fixed
step size from a grid (chosen on the test images themselves, which favours the
baseline); `--real-draws N` draws the random real images N times, so that the
baseline's spread includes which images were drawn. Last, seconds per outer step
of the three methods at the same settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nnvis_core.demo import CLASS_NAMES, load_demo_model
from nnvis_core.demo.model import normalize
from nnvis_plugins.distillation.architecture import Architecture
from nnvis_plugins.distillation.data import random_real, split
from nnvis_plugins.distillation.distribution import distil_distribution
from nnvis_plugins.distillation.evaluation import LongTraining, Score, held_out_score
from nnvis_plugins.distillation.matching import distil_matching
from nnvis_plugins.distillation.synthetic import Settings, draw_seed
from nnvis_plugins.distillation.unrolled import distil_unrolled

ROOT = Path(__file__).resolve().parent.parent
GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
METHODS = {"unrolled": distil_unrolled, "gradient_matching": distil_matching,
           "distribution_matching": distil_distribution}


def folder_images(extra_per_class: int, work: Path) -> dict[int, list[torch.Tensor]]:
    """The bundled images plus generated ones, normalized as the demo model sees them (64 px)."""
    from PIL import Image

    folders = [ROOT / "examples" / "demo" / "images"]
    if extra_per_class:
        subprocess.run([sys.executable, "-m", "nnvis_cli.main", "demo", "images", str(work), "--per-class",
                        str(extra_per_class), "--seed", "77"], check=True, capture_output=True)
        folders.append(work / "images")
    by_class: dict[int, list[torch.Tensor]] = {}
    for folder in folders:
        for label, name in enumerate(CLASS_NAMES):
            for path in sorted((folder / name).glob("*.png")):
                with Image.open(path) as image:
                    pixels = np.array(image.convert("RGB").resize((64, 64)))
                by_class.setdefault(label, []).append(normalize(pixels[None])[0])
    return by_class


def random_real_score(arch, data, count, draws, step_sizes, seeds, long, generator) -> Score:
    """K random real images per class, drawn `draws` times, each draw trained from every
    initialization: the baseline's spread includes which images happened to be drawn.
    Accuracies are ordered draw by draw."""
    accuracies = []
    for _ in range(draws):
        images, labels = random_real(data, count, generator)
        accuracies += held_out_score(arch, data, images, labels, step_sizes, seeds, long).accuracies
    return Score(accuracies)


def summary(score) -> dict:
    return {"mean": round(score.mean, 4), "std": round(score.std, 4), "each": [round(a, 4) for a in score.accuracies]}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extra-per-class", type=int, default=15)
    parser.add_argument("--counts", default="1,10")
    parser.add_argument("--outer-steps", default="200,40", help="outer steps for each count")
    parser.add_argument("--inner-steps", type=int, default=3)
    parser.add_argument("--real-batch", type=int, default=32)
    parser.add_argument("--eval-inits", type=int, default=5)
    parser.add_argument("--timing-steps", type=int, default=1)
    parser.add_argument("--start", default="real", help="noise (Wang et al.) or real (Zhao et al.)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.01, help="initial inner step size")
    parser.add_argument("--image-lr", type=float, default=0.05)
    parser.add_argument("--soft-labels", action="store_true")
    parser.add_argument("--fixed-init", action="store_true",
                        help="distil for one initialization and evaluate every training set on it alone")
    parser.add_argument("--per-class-limit", type=int, default=0, help="use at most this many images per class")
    parser.add_argument("--method", default="unrolled", choices=tuple(METHODS))
    parser.add_argument("--eval-steps", type=int, default=0,
                        help="evaluate with this many Adam steps (batches of 64) instead of the learned step sizes")
    parser.add_argument("--eval-lr", type=float, default=1e-3)
    parser.add_argument("--real-draws", type=int, default=1,
                        help="draws of the random real images, each trained from every initialization")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets, to check the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.extra_per_class, args.counts, args.outer_steps = 0, "1", "1"
        args.inner_steps, args.eval_inits, args.timing_steps, args.per_class_limit = 1, 1, 1, 3
    return args


def run(args: argparse.Namespace) -> dict:
    """Every figure of the benchmark, printed as JSON lines as they come and returned together."""
    counts = [int(c) for c in args.counts.split(",")]
    outer = [int(s) for s in args.outer_steps.split(",")]
    outer += [outer[-1]] * (len(counts) - len(outer))
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp())
    try:
        by_class = folder_images(args.extra_per_class, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.per_class_limit:
        by_class = {label: images[:args.per_class_limit] for label, images in by_class.items()}
    generator = torch.Generator().manual_seed(args.seed)
    data = split(by_class, 0.3, generator, CLASS_NAMES)
    arch = Architecture(load_demo_model(), torch.device("cpu"))
    seeds = [draw_seed(generator) for _ in range(args.eval_inits)]
    long = LongTraining(args.eval_steps, args.eval_lr) if args.eval_steps else None
    results: dict = {"folder": {"train": len(data.train_images), "test": len(data.test_images)},
                     "threads": torch.get_num_threads(), "settings": vars(args), "counts": {}}
    print(json.dumps(results["folder"]), flush=True)
    for count, steps in zip(counts, outer):
        settings = Settings(inner_steps=args.inner_steps, outer_steps=steps, lr=args.lr, image_lr=args.image_lr,
                            real_batch=args.real_batch, start=args.start, soft_labels=args.soft_labels,
                            fixed_init=args.fixed_init)
        begun = time.perf_counter()
        distil_with = METHODS[args.method]
        distilled = distil_with(arch, data, count, len(CLASS_NAMES), settings, generator)
        seconds = time.perf_counter() - begun
        learned = distilled.step_sizes
        evaluated = [distilled.fixed_seed] if args.fixed_init else seeds
        row = {
            "outer_steps": steps, "distil_seconds": round(seconds, 1),
            "step_sizes": [round(float(s), 4) for s in learned],
            "curve_first_last": [round(distilled.curve[0], 3), round(distilled.curve[-1], 3)],
            "distilled": summary(held_out_score(arch, data, distilled.images, distilled.targets, learned, evaluated,
                                                long)),
            "random_real": summary(random_real_score(arch, data, count, args.real_draws, learned, evaluated, long,
                                                     generator)),
            "full_split": summary(held_out_score(arch, data, data.train_images, data.train_labels, learned,
                                                 evaluated, long)),
        }
        best = None
        real_images, real_labels = random_real(data, count, generator)
        for lr in GRID if long is None else ():  # the step-size grid is for the few-step evaluation only
            constant = torch.full((args.inner_steps,), lr)
            score = held_out_score(arch, data, real_images, real_labels, constant, evaluated)
            if best is None or score.mean > best[1].mean:
                best = (lr, score)
        if best is not None:
            row["random_real_best_fixed_lr"] = {"lr": best[0], **summary(best[1])}
        # Per initialization: distilled minus the mean over the random draws evaluated from it.
        draws = [row["random_real"]["each"][i::len(evaluated)] for i in range(len(evaluated))]
        margins = [d - statistics.fmean(r) for d, r in zip(row["distilled"]["each"], draws)]
        row["margin"] = {"mean": round(statistics.fmean(margins), 4),
                         "std": round(statistics.stdev(margins), 4) if len(margins) > 1 else 0.0}
        results["counts"][count] = row
        print(json.dumps({count: row}), flush=True)
    timing, per_update = {}, {}
    for name, distil in METHODS.items():
        for count in counts:
            settings = Settings(inner_steps=args.inner_steps, outer_steps=args.timing_steps, lr=0.01,
                                image_lr=0.05, real_batch=args.real_batch, start=args.start)
            begun = time.perf_counter()
            distil(arch, data, count, len(CLASS_NAMES), settings, torch.Generator().manual_seed(1))
            per_step = (time.perf_counter() - begun) / args.timing_steps
            timing[f"{name} {count}/class"] = round(per_step, 2)
            # Gradient matching updates the images once per inner step, the other two once per outer step.
            updates = args.inner_steps if name == "gradient_matching" else 1
            per_update[f"{name} {count}/class"] = round(per_step / updates, 2)
    results["seconds_per_outer_step"] = timing
    results["seconds_per_image_update"] = per_update
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"seconds_per_outer_step": timing, "seconds_per_image_update": per_update,
                      "wall_seconds": results["wall_seconds"]}), flush=True)
    return results


if __name__ == "__main__":
    run(parse())
