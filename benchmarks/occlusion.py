"""Time occlusion sensitivity against Captum's Occlusion and against the bare-torch bound.

    python benchmarks/occlusion.py                        # the three suites below
    python benchmarks/occlusion.py --suite convnets --models resnet18 --captum-batches 1
    python benchmarks/occlusion.py --suite transformers   # auto vs batched vs Captum on vit_b_16, swin_t
    python benchmarks/occlusion.py --suite approximate    # approximate vs exact vs Captum on resnet34, resnet50
    python benchmarks/occlusion.py --quick                # a smoke run (demo and resnet18 at 96 px)

Suites: "convnets" (resnet18 and vgg11, 224 px, window 32, stride 8: every contender below);
"transformers" (--transformer-models at window 32, stride 16: ours with engine=auto, ours
batched and Captum, with the engine auto picked and why); "approximate" (--approximate-models
at window 32, stride 16: the approximate engine at each of --thresholds, the exact incremental
engine and Captum's default, with the approximate map's error against the exact one).

Every contender computes the same thing: the target-probability drop for every
position of the occluder (625 positions at 224 px with window 32 and stride 8).

- ours, incremental: `occlusion.attribute(..., engine="incremental")`, batches sized by the
  default memory budget; ours, auto: the same with the default engine="auto" (which decides
  once per model and geometry, on the first image of a run: here the untimed call before);
- ours, batched: the same function on whole occluded images (`engine="batched"`);
- Captum: `Occlusion(softmax(model)).attribute(...)` with `perturbations_per_eval` 1 (its
  default) and the other values of --captum-batches; the best of them is "Captum best";
- bare-torch bound: the same number of whole images through `model(batch)` with no
  occlusion logic at all, at each of --bound-batches, in the model's own layout (NCHW) and
  with channels-last inputs (faster on CPUs); the faster chunk size of each.

The incremental path also prints its theoretical speed-up: multiply-accumulates of the
convolutions and linear layers it runs, against those of whole images. Contenders run
interleaved, best of --repeats, after one warm-up of our own functions (the others take
seconds per run, which hides their start-up cost). Random weights (no download); the
speed does not depend on the weights. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import math
import warnings
from typing import Callable

import torch
from common import best_times, load_model
from torch import nn

from nnvis_plugins import occlusion
from nnvis_plugins.occlusion.incremental import FULL, STATIC
from nnvis_plugins.occlusion.patches import Region
from nnvis_plugins.occlusion.runners import IncrementalRunner
from nnvis_plugins.occlusion.windows import Windows, fill_values


def bare_passes(model: nn.Module, x: torch.Tensor, count: int, chunk: int, channels_last: bool) -> None:
    """`count` whole images through the model, `chunk` at a time, nothing else."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            model(x.expand(n, *x.shape[1:]).contiguous(memory_format=layout))


def multiply_accumulates(runner: IncrementalRunner) -> tuple[float, float]:
    """(incremental, whole-image) multiply-accumulates per position of the convs and linear layers."""
    engine = runner.engine
    incremental = whole = 0.0
    for step in engine.program.steps:
        if step.node.op != "call_module":
            continue
        module = engine.program.model.get_submodule(step.node.target)
        out, kind = engine.base[step.name], engine.plan.kinds[step.name]
        if isinstance(module, nn.Conv2d):
            per_pixel = module.out_channels * module.in_channels // module.groups * math.prod(module.kernel_size)
            full = per_pixel * out.shape[-2] * out.shape[-1]
            part = per_pixel * kind.height * kind.width if isinstance(kind, Region) else full
        elif isinstance(module, nn.Linear):
            full = part = module.in_features * module.out_features
        else:
            continue
        whole += full
        incremental += 0 if kind == STATIC else part if kind != FULL else full
    return incremental, whole


def run_model(name: str, args) -> None:
    model = load_model(name)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = int(model(x).argmax())
    windows = Windows(args.size, args.size, args.window, args.stride)
    fill = fill_values("zero", x, args.window)
    count = windows.count
    with torch.no_grad():
        runner = IncrementalRunner(model, x, windows, fill)
    macs, full_macs = multiply_accumulates(runner)
    print(f"\n{name}: input 1x3x{args.size}x{args.size}, window {args.window}, stride {args.stride}, "
          f"{count} positions; incremental batch {occlusion.method.positions_per_batch(runner, count)}"
          f" at the default {occlusion.method.MEMORY_MB} MiB budget")
    print(f"  conv+linear multiply-accumulates per position: incremental {macs / 1e9:.3f} G, whole image "
          f"{full_macs / 1e9:.3f} G: theoretical speed-up {full_macs / macs:.2f}x")

    def ours(engine: str) -> Callable[[], object]:
        return lambda: occlusion.attribute(model, x, target, window=args.window, stride=args.stride,
                                           occluder="zero", engine=engine)

    from captum.attr import Occlusion

    def captum(per_eval: int) -> Callable[[], object]:
        forward = lambda z: torch.softmax(model(z), dim=1)  # noqa: E731

        def call():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return Occlusion(forward).attribute(
                    x, target=target, sliding_window_shapes=(3, args.window, args.window),
                    strides=(3, args.stride, args.stride), baselines=fill, perturbations_per_eval=per_eval)
        return call

    check = ours("incremental")()  # also the warm-up: oneDNN primitives for the patch shapes
    reference = captum(max(args.captum_batches))()[:, :1]
    print(f"  max |ours - Captum| = {float((check - reference).abs().max()):.2e} "
          f"(largest drop {float(reference.abs().max()):.2e})")

    contenders: dict[str, Callable[[], object]] = {"ours, incremental": ours("incremental"), "ours, auto": ours("auto")}
    if not args.skip_batched:
        contenders["ours, batched"] = ours("batched")
    for per_eval in args.captum_batches:
        contenders[f"Captum, perturbations_per_eval={per_eval}"] = captum(per_eval)
    for layout in (False, True):
        for chunk in args.bound_batches:
            label = f"bound, {'channels-last' if layout else 'NCHW'}, batch {chunk}"
            contenders[label] = lambda c=chunk, cl=layout: bare_passes(model, x, count, c, cl)
    times = dict(zip(contenders, best_times(list(contenders.values()), args.repeats, warm_up=False)))
    for label, seconds in times.items():
        print(f"  {label:45s} {seconds:8.2f} s")
    fast = times["ours, incremental"]
    captum_default = times.get("Captum, perturbations_per_eval=1")
    captum_best = min(v for k, v in times.items() if k.startswith("Captum"))
    bound_nchw = min(v for k, v in times.items() if k.startswith("bound, NCHW"))
    bound_cl = min(v for k, v in times.items() if k.startswith("bound, channels-last"))
    print("  ratios (time of the other / time of ours, incremental):")
    if captum_default is not None:
        print(f"    Captum default (1 per pass)        {captum_default / fast:6.2f}x")
    print(f"    Captum best setting                {captum_best / fast:6.2f}x")
    print(f"    bare-torch bound, NCHW             {bound_nchw / fast:6.2f}x")
    print(f"    bare-torch bound, channels-last    {bound_cl / fast:6.2f}x")
    if "ours, batched" in times:
        print(f"    ours, batched                      {times['ours, batched'] / fast:6.2f}x")
    print(f"    ours, auto                         {times['ours, auto'] / fast:6.2f}x")


def captum_call(model: nn.Module, x: torch.Tensor, target: int, fill: torch.Tensor, window: int, stride: int,
                per_eval: int) -> Callable[[], torch.Tensor]:
    """Captum's Occlusion of softmax(model) with the same window, stride and baseline."""
    from captum.attr import Occlusion

    forward = lambda z: torch.softmax(model(z), dim=1)  # noqa: E731

    def call():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Occlusion(forward).attribute(
                x, target=target, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                baselines=fill, perturbations_per_eval=per_eval)
    return call


def setup(name: str, args, stride: int):
    model = load_model(name)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = int(model(x).argmax())
    return model, x, target, fill_values("zero", x, args.window), Windows(args.size, args.size, args.window, stride)


def run_transformer(name: str, args) -> None:
    """engine=auto against engine=batched and Captum, where incremental inference cannot reuse work."""
    stride = args.transformer_stride
    model, x, target, fill, windows = setup(name, args, stride)
    maps = occlusion.occlusion_maps(model, x, target, window=args.window, stride=stride, occluder="zero", layer=None)
    print(f"\n{name}: input 1x3x{args.size}x{args.size}, window {args.window}, stride {stride}, "
          f"{windows.count} positions")
    print(f"  auto runs: {maps.describe_engine()}")

    def ours(engine: str) -> Callable[[], object]:
        return lambda: occlusion.attribute(model, x, target, window=args.window, stride=stride, occluder="zero",
                                           engine=engine)

    contenders = {"ours, auto": ours("auto"), "ours, batched": ours("batched")}
    for per_eval in args.transformer_captum_batches:
        contenders[f"Captum, perturbations_per_eval={per_eval}"] = captum_call(
            model, x, target, fill, args.window, stride, per_eval)
    times = dict(zip(contenders, best_times(list(contenders.values()), args.repeats, warm_up=False)))
    for label, seconds in times.items():
        print(f"  {label:45s} {seconds:8.2f} s")
    auto = times["ours, auto"]
    print("  ratios (time of the other / time of ours, auto; above 1: auto is faster):")
    for label, seconds in times.items():
        if label != "ours, auto":
            print(f"    {label:43s} {seconds / auto:6.2f}x")


def run_approximate(name: str, args) -> None:
    """The approximate engine at each threshold against the exact incremental engine and Captum's default."""
    stride = args.approximate_stride
    model, x, target, fill, windows = setup(name, args, stride)
    print(f"\n{name}: input 1x3x{args.size}x{args.size}, window {args.window}, stride {stride}, "
          f"{windows.count} positions")
    kwargs = {"window": args.window, "stride": stride, "occluder": "zero", "layer": None}
    exact = occlusion.occlusion_maps(model, x, target, engine="incremental", **kwargs)  # also the warm-up
    exact_map = exact.drop_map()
    print(f"  exact incremental: {exact.describe_engine()}; largest drop {exact.drop.max():.2e}")
    contenders: dict[str, Callable[[], object]] = {
        "ours, exact incremental": lambda: occlusion.occlusion_maps(model, x, target, engine="incremental",
                                                                    **kwargs)}
    for threshold in args.thresholds:
        approximate = occlusion.occlusion_maps(model, x, target, engine="approximate", threshold=threshold,
                                               **kwargs)
        error = approximate.drop_map() - exact_map
        print(f"  approximate, threshold {threshold:g}: {approximate.work:.0%} of a whole image's work per "
              f"position; drop map against the exact one: max abs error {abs(error).max():.2e}, relative L2 "
              f"error {(error ** 2).sum() ** 0.5 / (exact_map ** 2).sum() ** 0.5:.1%}; per position: same top "
              f"class at {(approximate.top_class == exact.top_class).mean():.0%}; its own report: "
              f"{approximate.deviation.describe(windows.count)}")
        contenders[f"ours, approximate, threshold {threshold:g}"] = (
            lambda t=threshold: occlusion.occlusion_maps(model, x, target, engine="approximate", threshold=t,
                                                         **kwargs))
    contenders["Captum, perturbations_per_eval=1"] = captum_call(model, x, target, fill, args.window, stride, 1)
    times = dict(zip(contenders, best_times(list(contenders.values()), args.repeats, warm_up=False)))
    for label, seconds in times.items():
        print(f"  {label:45s} {seconds:8.2f} s")
    print("  speed-up of the approximate engine (time of the other / its time; its own exact check included):")
    for threshold in args.thresholds:
        mine = times[f"ours, approximate, threshold {threshold:g}"]
        print(f"    threshold {threshold:g}: over exact incremental {times['ours, exact incremental'] / mine:6.2f}x, "
              f"over Captum default {times['Captum, perturbations_per_eval=1'] / mine:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="convnets,transformers,approximate",
                        help="any of convnets, transformers, approximate")
    parser.add_argument("--models", default="resnet18,vgg11", help="torchvision names (random weights) or demo")
    parser.add_argument("--transformer-models", default="vit_b_16,swin_t")
    parser.add_argument("--transformer-stride", type=int, default=16)
    parser.add_argument("--transformer-captum-batches", default="1,8")
    parser.add_argument("--approximate-models", default="resnet34,resnet50")
    parser.add_argument("--approximate-stride", type=int, default=16)
    parser.add_argument("--thresholds", default="0.4,0.6", help="of the approximate engine")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--captum-batches", default="1,8,16,64", help="perturbations_per_eval values for Captum")
    parser.add_argument("--bound-batches", default="4,8,16,64",
                        help="chunk sizes of the bare-torch bound (on few cores, small chunks can be fastest)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-batched", action="store_true", help="do not time our whole-image engine")
    parser.add_argument("--quick", action="store_true", help="demo and resnet18 at 96 px, window 16, stride 8")
    args = parser.parse_args()
    if args.quick:
        args.models, args.size, args.window, args.stride = "demo,resnet18", 96, 16, 8
        args.captum_batches, args.bound_batches = "1,16", "16"
        args.transformer_models, args.approximate_models, args.suite = "swin_t", "resnet18", "convnets,approximate"
    args.captum_batches = [int(v) for v in args.captum_batches.split(",")]
    args.bound_batches = [int(v) for v in args.bound_batches.split(",")]
    args.transformer_captum_batches = [int(v) for v in args.transformer_captum_batches.split(",")]
    args.thresholds = [float(v) for v in args.thresholds.split(",")]
    suites = args.suite.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    if "convnets" in suites:
        for name in args.models.split(","):
            run_model(name, args)
    if "transformers" in suites:
        for name in args.transformer_models.split(","):
            run_transformer(name, args)
    if "approximate" in suites:
        for name in args.approximate_models.split(","):
            run_approximate(name, args)


if __name__ == "__main__":
    main()
