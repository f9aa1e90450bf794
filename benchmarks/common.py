"""What the benchmark scripts share: interleaved best-of-N timing and the models they time.

Run the scripts from the repository root (`python benchmarks/NAME.py`); Python puts
this folder on the path, so they import this module by its plain name.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from nnvis_core.torchvision_compat import torchvision_models


def best_times(fns: list[Callable[[], object]], repeats: int, warm_up: bool = True) -> list[float]:
    """Best time of each function; the runs are interleaved so that drift in the machine's
    load affects every contender alike. warm_up: one untimed run each first (allocator,
    oneDNN primitive caches); skip it for contenders that take seconds per run."""
    if warm_up:
        for fn in fns:
            fn()
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def load_model(name: str) -> torch.nn.Module:
    """'demo' (the shipped weights, or a fresh DemoNet without them) or a torchvision
    architecture with random weights (speed does not depend on the weights; no download)."""
    torch.manual_seed(0)
    if name == "demo":
        from nnvis_core.demo import DemoNet, load_demo_model

        try:
            return load_demo_model()
        except FileNotFoundError:
            return DemoNet().eval()
    return getattr(torchvision_models(), name)(weights=None).eval()


def nnvis() -> list[str]:
    """The `nnvis` script of this interpreter's environment (the one the benchmark runs in)."""
    return [str(Path(sys.executable).parent / "nnvis")]


def make_images(root: Path, per_class: int, seed: int) -> Path:
    """`nnvis demo images` into root/images: 64 px shapes, `per_class` of each of the 8 classes."""
    subprocess.run([*nnvis(), "demo", "images", str(root), "--per-class", str(per_class), "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL)
    return root / "images"
