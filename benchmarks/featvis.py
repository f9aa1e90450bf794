"""Feature-visualization speed: optimization steps per second, nnvis against torch-lucent.

    pip install -c constraints.txt -r benchmarks/requirements-featvis.txt
    pip install --no-deps torch-lucent==0.1.8
    python benchmarks/featvis.py                       # resnet18 (random weights), 128 px, 64 steps
    python benchmarks/featvis.py --layer layer4 --channel 7 --repeats 5
    python benchmarks/featvis.py --quick               # a smoke run (64 px, 8 steps, 1 repeat)

Same model, objective, parameterization and image size on both sides: a
randomly initialised torchvision resnet18, the mean of one channel of a layer,
a Fourier parameterization with decorrelated colour, Adam at lr 0.05, the
standard robustness transforms (pad 12, jitter 8, scale 0.9-1.1, rotate
-10..10 degrees, jitter 4 at 128 px) and the model fed at the nominal size
(lucent's `fixed_image_size`; by default it would upsample to 224).

Contenders, each timed as a whole run of --steps steps (best of --repeats after
one warm-up, interleaved so that load on the machine hits all alike):

- lucent: `render_vis` as its documentation uses it (the model's weights keep
  requires_grad, so every step also computes weight gradients);
- lucent, frozen model: the same with requires_grad switched off, lucent's best case;
- nnvis: `render.optimize`, which freezes the weights and ends each forward
  pass at the objective's layer;
- nnvis, full forward: the same without ending the pass early.

lucent hooks every module and never removes its hooks, so each of its runs gets
a fresh copy of the model (copied outside the timing). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import copy
from typing import Callable

import numpy as np
import torch
from common import best_times

from nnvis_core.models.loaded import IMAGENET_MEAN, IMAGENET_STD
from nnvis_core.toolkit.featvis import objectives
from nnvis_core.toolkit.featvis.parameterizations import fourier_image
from nnvis_core.toolkit.featvis.render import evaluate, optimize
from nnvis_core.toolkit.featvis.transforms import standard_transforms
from nnvis_core.torchvision_compat import import_torchvision, torchvision_models


def timed_runs(runs: dict[str, Callable[[], np.ndarray]], repeats: int) -> tuple[dict[str, float], dict]:
    """Best time of each run, and what each run returned last."""
    outputs = {}

    def keeping(name: str, run: Callable[[], np.ndarray]) -> Callable[[], None]:
        return lambda: outputs.__setitem__(name, run())

    times = best_times([keeping(name, run) for name, run in runs.items()], repeats)
    return dict(zip(runs, times)), outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="a torchvision classifier (random weights)")
    parser.add_argument("--layer", default="layer3", help="layer of the channel objective (named_modules name)")
    parser.add_argument("--channel", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 px, 8 steps, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.repeats = 64, 8, 1

    import_torchvision()  # lucent imports torchvision: go through the CPU-build workaround first
    try:
        from lucent.optvis import objectives as lucent_objectives
        from lucent.optvis import param as lucent_param
        from lucent.optvis import render as lucent_render
        from lucent.optvis import transform as lucent_transform
    except ImportError as error:
        raise SystemExit(f"torch-lucent is not installed ({error}); see the top of {__file__}") from None

    torch.manual_seed(0)
    model = getattr(torchvision_models(), args.model)(weights=None).eval()
    device = torch.device("cpu")
    lucent_layer = args.layer.replace(".", "_")
    print(f"model {args.model} (random weights), channel {args.channel} of {args.layer}, {args.size} px, "
          f"{args.steps} steps, Fourier + decorrelated colour + standard transforms, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")

    def nnvis_run(stop_early: bool) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            generator = torch.Generator().manual_seed(0)
            image = fourier_image(1, args.size, device=device, decorrelate=True, generator=generator)
            return optimize(model, objectives.channel(args.layer, args.channel), image,
                            transform=standard_transforms(args.size), steps=args.steps, lr=args.lr,
                            mean=IMAGENET_MEAN, std=IMAGENET_STD, generator=generator,
                            stop_early=stop_early).images
        return run

    fresh: dict[str, torch.nn.Module] = {}

    def lucent_run(frozen: bool) -> Callable[[], np.ndarray]:
        key = "frozen" if frozen else "plain"

        def prepare() -> None:
            copy_ = copy.deepcopy(model).eval()
            for p in copy_.parameters():
                p.requires_grad_(not frozen)
            fresh[key] = copy_

        def run() -> np.ndarray:
            torch.manual_seed(0)
            np.random.seed(0)
            [images] = lucent_render.render_vis(
                fresh[key], lucent_objectives.channel(lucent_layer, args.channel),
                lambda: lucent_param.image(args.size, fft=True, decorrelate=True),
                optimizer=lambda params: torch.optim.Adam(params, lr=args.lr),
                transforms=list(lucent_transform.standard_transforms), thresholds=(args.steps,),
                show_image=False, progress=False, fixed_image_size=args.size)
            prepare()
            return images

        prepare()
        return run

    runs = {
        "lucent": lucent_run(frozen=False),
        "lucent, frozen model": lucent_run(frozen=True),
        "nnvis": nnvis_run(stop_early=True),
        "nnvis, full forward": nnvis_run(stop_early=False),
    }
    times, images = timed_runs(runs, args.repeats)
    # All optimized the same objective: how far each got (the channel's mean on the final image).
    reached = {name: float(evaluate(model, objectives.channel(args.layer, args.channel), images[name],
                                    mean=IMAGENET_MEAN, std=IMAGENET_STD)[0]) for name in runs}
    header = f"{'contender':22s} {'seconds':>8s} {'steps/s':>8s} {'vs lucent':>10s} {'objective reached':>18s}"
    print(header)
    print("-" * len(header))
    for name, seconds in times.items():
        print(f"{name:22s} {seconds:8.3f} {args.steps / seconds:8.1f} {times['lucent'] / seconds:9.2f}x "
              f"{reached[name]:18.3f}")
    print(f"nnvis is {times['lucent'] / times['nnvis']:.2f}x as fast as lucent "
          f"({times['lucent, frozen model'] / times['nnvis']:.2f}x lucent with a frozen model; "
          f"{times['lucent'] / times['nnvis, full forward']:.2f}x without ending the pass early)")


if __name__ == "__main__":
    main()
