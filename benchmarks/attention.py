"""Attention capture costs at most 10% over a plain forward pass.

    python benchmarks/attention.py                          # vit_b_16, swin_t, vit_ti_16: batch 8 at 224 px
    python benchmarks/attention.py --models vit_b_16 --batch 2 --repeats 5 --grad
    python benchmarks/attention.py --quick                  # a smoke run (batch 1, 1 repeat)
    python benchmarks/attention.py --threads 1 --clock cpu  # where other work shares the CPU (see --clock)

Four forward passes of the same model on the same batch, interleaved, best of
--repeats after one warm-up each (benchmarks/common.py):

  plain     model(x), nothing else. In eval mode without autograd, torchvision's
            ViT (nn.MultiheadAttention) takes its fused C++ fast path.
  no-fast   model(x) with that fast path switched off (torch.backends.mha):
            the Python path the capture forces, attention still a fused kernel.
  mode      model(x) inside a pass-through TorchFunctionMode: the no-fast path
            plus Python dispatch of every torch call.
  capture   model(x) inside captured_attention(model): the mode plus attention
            computed step by step, its weights kept.

capture/plain is the requirement (at most --limit, 1.10); the other ratios say
where it comes from: fast path = no-fast/plain, dispatch = mode/no-fast,
explicit attention = capture/mode (their product is capture/plain). The last
includes keeping the weights: without autograd a plain pass frees its
intermediates at once and reuses their memory, while the recorded weights (ViT-B
at batch 8: 12 x 15 MB) take fresh pages from the system. Swin has no
nn.MultiheadAttention (no fast path; its softmax is only recorded), so its
no-fast equals plain. --grad times the passes with autograd on, as the
transformer plugins run them (no fast path there either); both modes by default.
vit_ti_16 is torchvision's VisionTransformer at ViT-Ti/16 size (12 layers,
3 heads, width 192). Random weights (speed does not depend on them).
--clock cpu times each pass by the process's CPU time (user + system, all its
threads) instead of the wall clock: with --threads 1 it is the work done,
whatever else the machine runs (with more threads it also counts their spinning).
--allocator nnvis (default) first sets the C allocator's policy that `nnvis report`
and its Ray workers run with (nnvis_core.allocator: freed heap kept for the next pass);
--allocator glibc keeps glibc's defaults, under which the ratios vary with the heap's
history (page faults on memory handed back and asked for again), 1.12x to 1.44x here.
Exit status 1 when a capture/plain ratio exceeds --limit. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from common import best_times, load_model
from torch.overrides import TorchFunctionMode

from nnvis_core.allocator import keep_freed_memory
from nnvis_core.toolkit.attention import captured_attention
from nnvis_core.torchvision_compat import torchvision_models


class PassThrough(TorchFunctionMode):
    """A torch-function mode that only calls through, counting the calls it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def best_cpu_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """common.best_times on the process's CPU-time clock: one warm-up each, then interleaved, best of `repeats`."""
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.process_time()
            fn()
            best[i] = min(best[i], time.process_time() - start)
    return best


@contextmanager
def fast_path_off() -> Iterator[None]:
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def build(name: str) -> torch.nn.Module:
    if name == "vit_ti_16":
        torch.manual_seed(0)
        return torchvision_models().VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=3,
                                                      hidden_dim=192, mlp_dim=768).eval()
    return load_model(name)


def forward(model: torch.nn.Module, x: torch.Tensor, grad: bool,
            context: Callable[[], object] | None) -> Callable[[], None]:
    def run() -> None:
        with ExitStack() as stack:
            stack.enter_context(torch.enable_grad() if grad else torch.no_grad())
            if context is not None:
                stack.enter_context(context())
            model(x)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_b_16,swin_t,vit_ti_16",
                        help="torchvision names (random weights) or vit_ti_16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grad", action="store_true", help="autograd on only (default: both without and with)")
    parser.add_argument("--no-grad", dest="no_grad", action="store_true", help="autograd off only")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 is steadier "
                        "on a machine that other work shares")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock, or the process's CPU time (use with --threads 1 on a shared machine)")
    parser.add_argument("--limit", type=float, default=1.10)
    parser.add_argument("--allocator", choices=("nnvis", "glibc"), default="nnvis",
                        help="nnvis: the allocator policy nnvis report runs with; glibc: the C library's defaults")
    parser.add_argument("--quick", action="store_true", help="batch 1, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeats = 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = "glibc defaults" if args.allocator == "glibc" else (
        "nnvis policy" if keep_freed_memory() else "C library defaults (not glibc)")
    timer = best_times if args.clock == "wall" else best_cpu_times
    grads = [True] if args.grad else [False] if args.no_grad else [False, True]
    print(f"input {args.batch}x3x{args.size}x{args.size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, "
          f"best of {args.repeats}, contenders interleaved, {args.clock} clock, allocator: {policy}")
    header = (f"{'model':10s} {'autograd':8s} {'plain s':>8s} {'no-fast s':>9s} {'mode s':>8s} {'capture s':>9s} "
              f"{'capture/plain':>13s} {'fast path':>9s} {'dispatch':>8s} {'explicit':>8s} {'calls':>6s} {'attn':>5s}")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name in args.models.split(","):
        model = build(name)
        x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        counter = PassThrough()
        with torch.no_grad(), counter:
            model(x)
        with torch.no_grad(), captured_attention(model) as attentions:
            model(x)
        for grad in grads:
            contenders = [forward(model, x, grad, None), forward(model, x, grad, fast_path_off),
                          forward(model, x, grad, PassThrough),
                          forward(model, x, grad, lambda model=model: captured_attention(model))]
            plain, no_fast, mode, capture = timer(contenders, args.repeats)
            worst = max(worst, capture / plain)
            print(f"{name:10s} {'on' if grad else 'off':8s} {plain:8.3f} {no_fast:9.3f} {mode:8.3f} {capture:9.3f} "
                  f"{capture / plain:13.3f} {no_fast / plain:9.3f} {mode / no_fast:8.3f} {capture / mode:8.3f} "
                  f"{counter.calls:6d} {len(attentions):5d}")
    print("calls: torch calls per forward pass that the mode dispatches through Python; attn: attentions recorded")
    model = build(args.models.split(",")[0])
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    first, second = timer([forward(model, x, False, None), forward(model, x, False, None)], args.repeats)
    print(f"resolution: plain timed twice side by side gives a ratio of {first / second:.3f}; "
          "ratios that close to 1 are ties")
    if worst > args.limit:
        print(f"capture/plain {worst:.3f} exceeds {args.limit:.2f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
