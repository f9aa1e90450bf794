"""Time each trust metric against Quantus on the same work, and what the default set adds to a run.

    python benchmarks/metrics.py                                  # demo net, 4 images, every metric
    python benchmarks/metrics.py --model resnet50 --size 224 --images 2
    python benchmarks/metrics.py --only irof,road_morf --skip-quantus
    python benchmarks/metrics.py --run 1000 --skip-metrics        # a 1,000-image run, metrics none vs default

Per metric: nnvis's catalog entry (nnvis_core.metrics, the code a report runs) and the Quantus 0.6
class with the same settings (same runs, steps, regions, noise draws per image, baseline), on the same
model, images, masks and maps (gradient saliency; completeness scores gradient x input from the black
image, the kind of map it applies to). Both recompute maps with the same saliency function. Each
side is timed over every image, best of --repeats (the sides interleaved), after one warm-up pass of
the model, and a forward hook counts the model calls and the images they carried. The ratio is
nnvis's time over Quantus's; the issue's target is at most 1.0x. "1,000 images" is seconds per image times 1,000.

--run N: a real run (nnvis_core.runner, no HTML) on N generated demo images with masks, saliency,
Grad-CAM and Integrated Gradients, deletion curves off, once with --metrics none and once with the
default set: the metrics' cost is the difference, against the methods' own (target: at most 2x).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import load_model
from torch import nn

from nnvis_core.metrics.catalog import MapInput
from nnvis_core.metrics.faithfulness import FC_RUNS, FC_SUBSET, FLIP_STEPS, PATCH, REGIONS, ROAD_NOISE, ROAD_PERCENTAGES
from nnvis_core.metrics.localisation import TOP_K
from nnvis_core.metrics.robustness import RADIUS, SAMPLES, STD
from nnvis_core.metrics.suite import BY_NAME, METRICS


@dataclass
class Work:
    """What both sides score: the model, N preprocessed images, their masks, targets, maps and baselines."""

    model: nn.Module
    inputs: torch.Tensor  # (N, 3, H, W)
    masks: np.ndarray  # (N, H, W) bool
    targets: np.ndarray  # (N,)
    maps: np.ndarray  # (N, H, W) saliency
    raw: np.ndarray  # (N, 3, H, W) gradient x input, for completeness
    black: torch.Tensor  # (1, 3, H, W) a black image, preprocessed
    classes: int


def saliency(inputs: torch.Tensor, target: int, model: nn.Module) -> np.ndarray:
    """(H, W) max over channels of |d logit / d input|: the map both sides recompute."""
    x = inputs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[0, target], x)
    return grad.abs().amax(dim=1)[0].double().numpy()


def quantus_saliency(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
    """The same saliency as Quantus's explain_func: (N, 1, H, W)."""
    return np.stack([saliency(torch.as_tensor(np.asarray(x, dtype=np.float32))[None], int(t), model)
                     for x, t in zip(inputs, np.asarray(targets).reshape(-1))])[:, None]


def make_work(name: str, size: int, count: int) -> Work:
    from nnvis_core.demo.shapes import generate_dataset
    from nnvis_core.models.loaded import IMAGENET_MEAN, IMAGENET_STD

    model = load_model(name)
    pixels, masks, _ = generate_dataset(count, seed=3, size=size)
    mean, std = (0.5, 0.5) if name == "demo" else (IMAGENET_MEAN, IMAGENET_STD)
    if name == "demo":
        from nnvis_core.demo.model import normalize

        inputs, black = normalize(pixels), normalize(np.zeros_like(pixels[:1]))
    else:
        mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        inputs = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
        black = (torch.zeros(1, 3, size, size) - mean) / std
    inputs = inputs.contiguous()
    with torch.no_grad():
        logits = model(inputs)
    targets = logits.argmax(dim=1).numpy()
    maps = np.stack([saliency(inputs[i:i + 1], int(targets[i]), model) for i in range(count)])
    raw = []
    for i in range(count):
        x = inputs[i:i + 1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[0, int(targets[i])], x)
        raw.append(((x - black) * grad)[0].detach().double().numpy())
    return Work(model, inputs, masks.astype(bool), targets, maps, np.stack(raw), black, logits.shape[1])


class Calls:
    """Counts the model's forward calls and the images they carried."""

    def __init__(self, model: nn.Module):
        self.calls = self.images = 0
        # a plain function, not a bound method: a deep copy of the model (a randomised copy) keeps counting here
        self.handle = model.register_forward_hook(lambda module, args, output: self._count(module, args, output))

    def _count(self, module, args, output) -> None:
        self.calls += 1
        self.images += int(args[0].shape[0]) if args and isinstance(args[0], torch.Tensor) else 0

    def close(self) -> None:
        self.handle.remove()


def nnvis_side(work: Work, name: str) -> float:
    """Seconds for the catalog's `name` over every image, as a run scores it."""
    metric = BY_NAME[name]
    start = time.perf_counter()
    for i in range(len(work.targets)):
        metric.compute(MapInput(work.model, work.inputs[i:i + 1], int(work.targets[i]), work.maps[i], saliency,
                                mask=work.masks[i], baseline=work.black, raw=work.raw[i],
                                completes_from=work.black, seed=i, classes=work.classes))
    return time.perf_counter() - start


def quantus_metric(quantus, work: Work, name: str):
    """(metric, call keywords) of the Quantus class doing the work nnvis's catalog entry does."""
    h, w = work.maps.shape[1:]
    quiet = {"disable_warnings": True, "display_progressbar": False, "normalise": False, "abs": False}
    black = float(work.black.mean())  # the removed pixels' value (one number: Quantus's baseline is per value)
    explain = {"explain_func": quantus_saliency}
    made = {
        "faithfulness_correlation": lambda: (quantus.FaithfulnessCorrelation(
            nr_runs=FC_RUNS, subset_size=min(FC_SUBSET, h * w // 2), perturb_baseline=black,
            return_aggregate=False, **quiet), {}),
        "pixel_flipping": lambda: (quantus.PixelFlipping(features_in_step=h * w // FLIP_STEPS,
                                                         perturb_baseline=black, **quiet), {}),
        "region_perturbation": lambda: (quantus.RegionPerturbation(patch_size=PATCH, regions_evaluation=REGIONS,
                                                                   order="morf", perturb_baseline=black, **quiet), {}),
        "road_morf": lambda: (quantus.ROAD(percentages=list(ROAD_PERCENTAGES), noise=ROAD_NOISE, **quiet), {}),
        "irof": lambda: (quantus.IROF(segmentation_method="slic", perturb_baseline="mean", return_aggregate=False,
                                      perturb_func=whole_pixels, **quiet), {"batch_size": 1}),
        "max_sensitivity": lambda: (quantus.MaxSensitivity(nr_samples=SAMPLES, lower_bound=RADIUS,
                                                           return_nan_when_prediction_changes=False, **quiet), explain),
        "avg_sensitivity": lambda: (quantus.AvgSensitivity(nr_samples=SAMPLES, lower_bound=RADIUS,
                                                           return_nan_when_prediction_changes=False, **quiet), explain),
        "local_lipschitz": lambda: (quantus.LocalLipschitzEstimate(nr_samples=SAMPLES, perturb_std=STD, **quiet),
                                    explain),
        "pointing_game": lambda: (quantus.PointingGame(**quiet), {}),
        "relevance_rank_accuracy": lambda: (quantus.RelevanceRankAccuracy(**quiet), {}),
        "relevance_mass_accuracy": lambda: (quantus.RelevanceMassAccuracy(**quiet), {}),
        "top_k_intersection": lambda: (quantus.TopKIntersection(k=TOP_K, **quiet), {}),
        "roc_auc": lambda: (quantus.AUC(**quiet), {}),
        "sparseness": lambda: (quantus.Sparseness(**quiet), {}),
        "complexity": lambda: (quantus.Complexity(**quiet), {}),
        "effective_complexity": lambda: (quantus.EffectiveComplexity(eps=1e-5, **quiet), {}),
        "mprt": lambda: (quantus.MPRT(layer_order="top_down", return_last_correlation=True, skip_layers=True,
                                      disable_warnings=True, display_progressbar=False, abs=True), explain),
        "random_logit": lambda: (quantus.RandomLogit(num_classes=work.classes, **quiet), explain),
        "completeness": lambda: (quantus.Completeness(perturb_baseline=black, **quiet), {}),
        "input_invariance": lambda: (quantus.InputInvariance(input_shift=-1, **quiet), explain),
    }
    return made[name]() if name in made else None


class Gray(nn.Module):
    """The model on one-channel images, repeated over its three channels: what Quantus 0.6's ROAD can take
    (it fails on RGB images with one map per image). Its imputation then works on one channel, not three:
    less work on Quantus's side than on nnvis's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1))


def whole_pixels(arr, mask, **kwargs):
    """Quantus 0.6's IROF passes a (N, 1, H, W) mask for (N, C, H, W) images to its perturbation and fails:
    the mask broadcast over the channels."""
    from quantus.functions.perturb_func import baseline_replacement_by_mask

    return baseline_replacement_by_mask(arr, np.broadcast_to(mask, arr.shape), **kwargs)


def quantus_side(quantus, work: Work, name: str) -> float | None:
    """Seconds for Quantus's version over the same images (one call with the whole batch), or None."""
    model = shiftable(work.model) if name == "input_invariance" else work.model
    a_batch = work.raw if name == "completeness" else work.maps[:, None]
    x_batch = work.inputs
    if name == "road_morf":
        model, x_batch = Gray(work.model), work.inputs.mean(1, keepdim=True)
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # Quantus 0.6 calls np.trapz, gone in NumPy 2.4
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        made = quantus_metric(quantus, work, name)
        if made is None:
            return None
        metric, extra = made
        start = time.perf_counter()
        metric(model=model, x_batch=x_batch.numpy(), y_batch=work.targets, a_batch=a_batch,
               s_batch=work.masks[:, None], device="cpu", **extra)
        return time.perf_counter() - start


def shiftable(model: nn.Module) -> nn.Module:
    """The same function in a form Quantus's InputInvariance can shift: it writes into the bias of the
    model's first named submodule (the demo net flattened, a torchvision net's first conv given a bias)."""
    import copy

    if hasattr(model, "features") and hasattr(model, "pool"):
        return nn.Sequential(*model.features, model.pool, *model.classifier).eval()
    model = copy.deepcopy(model)
    first_name, first = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if first.bias is None:
        first.bias = nn.Parameter(torch.zeros(first.out_channels))
    return model


def compare(work: Work, names: list[str], skip_quantus: bool, repeats: int = 1) -> None:
    quantus = None
    if not skip_quantus:
        from nnvis_core.torchvision_compat import torchvision_models

        torchvision_models()
        import quantus
    count = len(work.targets)
    print("per image: model calls, images they carried, seconds; Quantus likewise")
    print(f"{'metric':26s} {'calls':>9s} {'imgs':>8s} {'nnvis s':>11s} {'Quantus s':>10s} "
          f"{'ratio':>6s} {'Q calls':>6s} {'imgs':>6s} {'1,000 images':>12s}")
    for name in names:
        calls = Calls(work.model)
        ours = theirs = math.inf
        for _ in range(repeats):  # the best of each, the two sides interleaved
            calls.calls = calls.images = 0
            ours = min(ours, nnvis_side(work, name))
            ours_calls, ours_images = calls.calls / count, calls.images / count
            calls.calls = calls.images = 0
            try:
                timed = None if quantus is None or theirs is None else quantus_side(quantus, work, name)
                theirs = None if timed is None else min(theirs, timed)
            except Exception as error:  # noqa: BLE001 - a reference that cannot run this case is reported
                theirs = None
                print(f"  ({name}: Quantus failed: {type(error).__name__}: {str(error).splitlines()[0][:90]})")
            their_calls, their_images = calls.calls / count, calls.images / count
        calls.close()
        ratio = f"{ours / theirs:5.2f}x" if theirs else "     -"
        quantus_time = f"{theirs / count:10.4f}" if theirs else f"{'-':>10s}"
        quantus_calls = f"{their_calls:6.1f} {their_images:6.1f}" if theirs else f"{'-':>13s}"
        print(f"{name:26s} {ours_calls:9.1f} {ours_images:8.1f} {ours / count:11.4f} {quantus_time} {ratio} "
              f"{quantus_calls} {ours / count * 1000:10.0f} s", flush=True)


def run_cost(images: int) -> None:
    """A run on `images` demo images with masks, metrics none and default; per-call seconds summed."""
    from nnvis_core.run.config import ReportConfig
    from nnvis_core.run.registry import load_registry
    from nnvis_core.run.sink import MemorySink
    from nnvis_core.runner import run
    from nnvis_core.testing import write_demo_images

    plugins = ["saliency", "gradcam", "integrated_gradients"]
    params = {name: {"faithfulness_steps": 0} for name in plugins}
    registry = load_registry()
    with tempfile.TemporaryDirectory() as work:
        folder, masks = write_demo_images(Path(work) / "input", images=images)
        totals = {}
        for metrics in ("none", "default"):
            sink = MemorySink()
            start = time.perf_counter()
            run(ReportConfig(folder, Path(work) / metrics, plugins=plugins, params=params, masks=masks,
                             metrics=metrics, quiet=True, device="cpu"), registry, sink)
            wall = time.perf_counter() - start
            seconds = {name: sum(o.seconds for o in sink.outcomes(name).values()) for name in plugins}
            totals[metrics] = (wall, seconds)
    print(f"\n{images} demo images, {', '.join(plugins)} (deletion curves off):")
    print(f"{'method':22s} {'maps s':>8s} {'+ default metrics s':>20s} {'metrics / maps':>15s}")
    for name in plugins:
        alone, scored = totals["none"][1][name], totals["default"][1][name]
        print(f"{name:22s} {alone:8.1f} {scored:20.1f} {(scored - alone) / alone:14.2f}x")
    alone, scored = sum(totals["none"][1].values()), sum(totals["default"][1].values())
    print(f"{'all three':22s} {alone:8.1f} {scored:20.1f} {(scored - alone) / alone:14.2f}x   (target: at most 2x)")
    print(f"wall: {totals['none'][0]:.1f} s without metrics, {totals['default'][0]:.1f} s with the default set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="demo or a torchvision architecture (random weights)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--only", default="", help="comma-separated metric names (default: all)")
    parser.add_argument("--skip-quantus", action="store_true")
    parser.add_argument("--skip-metrics", action="store_true", help="only the --run part")
    parser.add_argument("--run", type=int, default=0, help="also a run of this many demo images")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or [m.name for m in METRICS]
    if not args.skip_metrics:
        work = make_work(args.model, args.size, args.images)
        with torch.no_grad():
            work.model(work.inputs[:1])  # warm-up
        print(f"{args.model} at {args.size} px, {args.images} images, {args.threads} threads, saliency maps")
        compare(work, names, args.skip_quantus, args.repeats)
    if args.run:
        run_cost(args.run)


if __name__ == "__main__":
    main()
