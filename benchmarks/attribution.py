"""Time each attribution method against Captum and against the bare-torch lower bound.

    python benchmarks/attribution.py                      # resnet18, one 224-pixel image
    python benchmarks/attribution.py --model demo --size 64 --repeats 5
    python benchmarks/attribution.py --quick              # a smoke run (96 px, few steps)

The bound for a method is the same number of forward+backward passes (gradient
with respect to the input, batched in the same chunks) with no method logic.
For the batched methods (Integrated Gradients, SmoothGrad) the chunk size is
chosen by timing the bound at each candidate size first: on few CPU cores,
bigger batches are not automatically faster. Captum runs at that chunk size and
at its default (everything in one pass); the ratio uses the faster of the two.
Best of --repeats runs after one warm-up, the contenders interleaved. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Callable

import torch
from common import best_times, load_model

from nnvis_core.models.layers import find_layer
from nnvis_core.toolkit import gradient
from nnvis_plugins.attribution import (
    deconvnet,
    gradcam,
    gradient_x_input,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    smoothgrad,
)


def best_time(fn: Callable[[], object], repeats: int) -> float:
    return best_times([fn], repeats)[0]


def bare_passes(model: torch.nn.Module, x: torch.Tensor, target: int, passes: int, chunk: int) -> None:
    """`passes` forward+backward passes through the model, `chunk` at a time, nothing else."""
    done = 0
    while done < passes:
        n = min(chunk, passes - done)
        batch = x.expand(n, *x.shape[1:]).clone().requires_grad_(True)
        torch.autograd.grad(model(batch)[:, target].sum(), batch)
        done += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="demo or a torchvision name (random weights)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps")
    parser.add_argument("--samples", type=int, default=50, help="SmoothGrad samples")
    parser.add_argument("--chunks", default="1,2,5,10,25,50", help="candidate chunk sizes for batched methods")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--quick", action="store_true", help="96 px, 8 steps/samples, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.samples, args.repeats, args.chunks = 96, 8, 8, 1, "1,4,8"
    from captum import attr as ca
    from captum.attr import NoiseTunnel

    warnings.simplefilter("ignore")
    model = load_model(args.model)
    for p in model.parameters():  # as in a report: gradients for the input only
        p.requires_grad_(True)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    target = int(model(x).argmax())
    layer_name = gradcam.default_layer(model)
    layer = find_layer(model, layer_name)
    chunks = [int(c) for c in args.chunks.split(",")]
    print(f"model {args.model} ({layer_name} for Grad-CAM), input 1x3x{args.size}x{args.size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")

    def best_chunk(passes: int) -> tuple[int, float]:
        timed = {c: best_time(lambda c=c: bare_passes(model, x, target, passes, c), args.repeats)
                 for c in chunks if c <= passes}
        chunk = min(timed, key=timed.get)
        return chunk, timed[chunk]

    n_ig, n_sg = args.steps, args.samples
    ig_chunk, _ = best_chunk(n_ig)
    sg_chunk, _ = (ig_chunk, None) if n_sg == n_ig else best_chunk(n_sg)
    ig_bound = lambda: bare_passes(model, x, target, n_ig, ig_chunk)  # noqa: E731
    sg_bound = lambda: bare_passes(model, x, target, n_sg, sg_chunk)  # noqa: E731
    one_bound = lambda: bare_passes(model, x, target, 1, 1)  # noqa: E731
    two_bound = lambda: bare_passes(model, x, target, 2, 1)  # noqa: E731
    noise = smoothgrad.draw_noise(x, n_sg, 0.15)
    stdev = float(0.15 * (x.max() - x.min()))

    cases = {
        "saliency": (1, one_bound, lambda: gradient(model, x, target),
                     [lambda: ca.Saliency(model).attribute(x, target=target, abs=False)]),
        "deconvnet": (1, one_bound, lambda: deconvnet.attribute(model, x, target),
                      [lambda: ca.Deconvolution(model).attribute(x, target=target)]),
        "guided_backprop": (1, one_bound, lambda: guided_backprop.attribute(model, x, target),
                            [lambda: ca.GuidedBackprop(model).attribute(x, target=target)]),
        "gradient_x_input": (1, one_bound, lambda: gradient_x_input.attribute(model, x, target),
                             [lambda: ca.InputXGradient(model).attribute(x, target=target)]),
        "gradcam": (1, one_bound, lambda: gradcam.attribute(model, x, target, layer),
                    [lambda: ca.LayerAttribution.interpolate(ca.LayerGradCam(model, layer).attribute(
                        x, target=target, relu_attributions=True), x.shape[-2:], "bilinear")]),
        "guided_gradcam": (2, two_bound, lambda: guided_gradcam.attribute(model, x, target, layer),
                           [lambda: ca.GuidedGradCam(model, layer).attribute(x, target=target,
                                                                             interpolate_mode="bilinear")]),
        "integrated_gradients": (
            n_ig, ig_bound,
            lambda: integrated_gradients.attribute(model, x, target, steps=n_ig, batch_size=ig_chunk),
            [lambda: ca.IntegratedGradients(model).attribute(x, target=target, n_steps=n_ig,
                                                             internal_batch_size=ig_chunk),
             lambda: ca.IntegratedGradients(model).attribute(x, target=target, n_steps=n_ig)]),
        "smoothgrad": (
            n_sg, sg_bound,
            lambda: smoothgrad.attribute(model, x, target, noise=noise, batch_size=sg_chunk),
            [lambda: NoiseTunnel(ca.Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=n_sg, nt_samples_batch_size=sg_chunk, stdevs=stdev,
                target=target, abs=False),
             lambda: NoiseTunnel(ca.Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=n_sg, stdevs=stdev, target=target, abs=False)]),
    }
    wanted = list(cases) if args.methods == "all" else args.methods.split(",")
    print(f"chunk sizes: integrated_gradients {ig_chunk}, smoothgrad {sg_chunk}")
    header = (f"{'method':22s} {'passes':>6s} {'bound s':>9s} {'nnvis s':>9s} {'captum s':>9s} "
              f"{'nnvis/bound':>12s} {'nnvis/captum':>13s}")
    print(header)
    print("-" * len(header))
    for name in wanted:
        passes, bound_fn, ours, theirs = cases[name]
        bound, ours_s, *captum_all = best_times([bound_fn, ours, *theirs], args.repeats)
        captum_s = min(captum_all)
        print(f"{name:22s} {passes:6d} {bound:9.4f} {ours_s:9.4f} {captum_s:9.4f} {ours_s / bound:12.3f} "
              f"{ours_s / captum_s:13.3f}")
    first, second = best_times([one_bound, one_bound], args.repeats)
    print(f"resolution: the 1-pass bound timed twice side by side gives a ratio of {first / second:.3f}; "
          "ratios that close to 1 are ties")


if __name__ == "__main__":
    main()
