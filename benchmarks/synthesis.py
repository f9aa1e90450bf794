"""Evidence and speed for the synthesis plugins (docs/synthesis.md), on the bundled demo images.

    python benchmarks/synthesis.py texture       # Gram-loss drop and nearest Gram source, all 40 images
    python benchmarks/synthesis.py inversion --steps 100   # feature error and pixel correlation per layer
    python benchmarks/synthesis.py speed         # seconds per image and per Adam step against forward+backward

Everything runs single-threaded on the CPU (torch.set_num_threads(1)) so that the
figures do not depend on how busy the machine's other cores are. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import load_model

from nnvis_core.demo import DEMO_SPEC
from nnvis_core.images import discover_images, load_rgb
from nnvis_core.models.loaded import Preprocess
from nnvis_core.toolkit import frozen
from nnvis_plugins.synthesis.features import FeatureReader
from nnvis_plugins.synthesis.gram import gram_distance
from nnvis_plugins.synthesis.layers import spread_layers
from nnvis_plugins.synthesis.texture import device_normalizer, source_grams, synthesize_texture

IMAGES = Path(__file__).resolve().parent.parent / "examples" / "demo" / "images"


def demo_pixels() -> tuple[list[str], torch.Tensor]:
    """The bundled images as the demo net sees them: names and (40, 3, 64, 64) pixels in [0, 1]."""
    preprocess = Preprocess(DEMO_SPEC["input_size"], DEMO_SPEC["input_size"], DEMO_SPEC["mean"], DEMO_SPEC["std"])
    records = discover_images(IMAGES)
    pixels = [torch.from_numpy(preprocess.display(load_rgb(r.path))).permute(2, 0, 1).float() / 255 for r in records]
    return [r.relpath for r in records], torch.stack(pixels)


def texture(steps: int) -> None:
    """Per image: the Gram-loss drop from white noise, the relative Gram distance left at each layer,
    and which of the 40 images' Grams the texture is nearest to (summed relative distance)."""
    names, pixels = demo_pixels()
    model = load_model("demo")
    normalize = device_normalizer(DEMO_SPEC["mean"], DEMO_SPEC["std"], torch.device("cpu"))
    layers = spread_layers(model)
    with frozen(model):
        grams = source_grams(FeatureReader(model, layers), normalize, pixels)
    drops, own_nearest, margins, seconds = [], 0, [], []
    for index, name in enumerate(names):
        start = time.perf_counter()
        result = synthesize_texture(model, normalize, pixels[index:index + 1], layers, steps=steps)
        seconds.append(time.perf_counter() - start)
        with frozen(model):
            made = source_grams(FeatureReader(model, layers), normalize, result.pixels)
        distance = np.array([sum(gram_distance(made[n][0], grams[n][j]) for n in layers) for j in range(len(names))])
        drops.append(float(result.curve[0, 0] / result.curve[-1, 0]))
        own_nearest += int(np.argmin(distance) == index)
        margins.append(float(np.sort(np.delete(distance, index))[0] / distance[index]))
        print(f"{name:28s} drop {drops[-1]:8.1f}x  own distance {distance[index]:.3f}  "
              f"nearest other {np.delete(distance, index).min():.3f}  {seconds[-1]:.1f} s", flush=True)
    print(f"\nlayers {', '.join(layers)}; L-BFGS, {steps} steps, white-noise start, seed 0")
    print(f"Gram-loss drop: min {min(drops):.0f}x, median {np.median(drops):.0f}x, max {max(drops):.0f}x; "
          f"{sum(d >= 100 for d in drops)}/{len(drops)} images at >= 100x")
    print(f"nearest Gram source is its own: {own_nearest}/{len(names)}; margin (nearest other / own) "
          f"min {min(margins):.2f}, median {np.median(margins):.2f}")
    print(f"seconds per image: median {np.median(seconds):.2f}")


def inversion(steps: int) -> None:
    """For the first image of each class: each layer's relative feature error and pixel correlation."""
    from nnvis_plugins.synthesis.inversion import invert_features

    names, pixels = demo_pixels()
    model = load_model("demo")
    normalize = device_normalizer(DEMO_SPEC["mean"], DEMO_SPEC["std"], torch.device("cpu"))
    layers = spread_layers(model)
    errors, correlations = [], []
    for index in range(0, len(names), 5):
        result = invert_features(model, normalize, pixels[index:index + 1], layers, steps=steps)
        errors.append(result.errors)
        correlations.append(result.correlations)
        print(f"{names[index]:28s} error {np.round(result.errors, 3).tolist()}  "
              f"correlation {np.round(result.correlations, 3).tolist()}", flush=True)
    errors, correlations = np.array(errors), np.array(correlations)
    print(f"\nlayers {', '.join(layers)}; L-BFGS, {steps} steps, tv_weight 0.05, grey start")
    for i, layer in enumerate(layers):
        print(f"{layer:12s} relative feature error max {errors[:, i].max():.3f} median {np.median(errors[:, i]):.3f}; "
              f"pixel correlation min {correlations[:, i].min():.3f} median {np.median(correlations[:, i]):.3f}")


SPEED_MODELS = [("demo", 64, 4, 20), ("resnet18", 224, 2, 4), ("vgg16", 224, 2, 4)]  # name, side, batch, steps
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def speed(repeats: int) -> None:
    """Per model: texture synthesis with Adam, image by image and as one batch (seconds per image),
    and one Adam step per image against a bare forward+backward through the whole model; each
    figure the best of `repeats`, the contenders interleaved (common.best_times)."""
    from common import best_times

    print("model      px  batch  s/image one by one  s/image batched  Adam step  forward+backward  ratio")
    for name, side, batch, steps in SPEED_MODELS:
        model = load_model(name)
        mean, std = (DEMO_SPEC["mean"], DEMO_SPEC["std"]) if name == "demo" else IMAGENET
        normalize = device_normalizer(mean, std, torch.device("cpu"))
        layers = spread_layers(model)
        torch.manual_seed(0)
        sources = torch.rand(batch, 3, side, side)
        inputs = normalize(sources).requires_grad_(True)

        def one_by_one() -> None:
            for i in range(batch):
                synthesize_texture(model, normalize, sources[i:i + 1], layers, steps=steps, optimizer="adam")

        def batched() -> None:
            synthesize_texture(model, normalize, sources, layers, steps=steps, optimizer="adam")

        def single_step() -> None:  # the same setup, one step: the difference is what a step costs
            synthesize_texture(model, normalize, sources, layers, steps=1, optimizer="adam")

        def forward_backward() -> None:
            with frozen(model):
                model(inputs).sum().backward()

        alone, together, one_step, bare = best_times([one_by_one, batched, single_step, forward_backward],
                                                     repeats, warm_up=name == "demo")
        step = (together - one_step) / (steps - 1) / batch  # per image, setup excluded
        print(f"{name:9s} {side:4d} {batch:5d}  {alone / batch:18.3f}  {together / batch:15.3f}  {step:9.4f}  "
              f"{bare / batch:16.4f}  {step / (bare / batch):5.2f}", flush=True)
    print(f"\nAdam, {', '.join(f'{n} {s} steps' for n, _, _, s in SPEED_MODELS)}; random weights but demo's; "
          f"layers as layers=auto picks them; one thread")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["texture", "inversion", "speed"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="speed: best of N")
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"texture": lambda: texture(args.steps), "inversion": lambda: inversion(args.steps),
     "speed": lambda: speed(args.repeats)}[args.what]()


if __name__ == "__main__":
    main()
