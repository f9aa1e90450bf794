"""Scoring many perturbed copies of one image: chunks of --batch-size against a memory budget.

Perturbation methods (RISE, occlusion, the deletion/insertion curves) score
hundreds of altered copies of an image without gradients. This times
`nnvis_core.toolkit.target_probabilities` on N masked copies, with chunks of the
run's default --batch-size (16) and with chunks sized by the toolkit's memory
budget, side by side in one run, and checks that both give the same numbers.

    python benchmarks/perturbation_chunks.py [--models demo,resnet18] [--copies 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import best_times, load_model

from nnvis_core.toolkit import MEMORY_MB, bytes_per_image, chunk_size, target_probabilities

SIZES = {"demo": 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="demo,resnet18")
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-mb", type=float, default=MEMORY_MB)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.copies} copies, "
          f"best of {args.repeats}, memory budget {args.memory_mb:g} MiB")
    print("| model | batch 16 s | budget s | budget chunk | batch16/budget | max difference |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = load_model(name)
        size = SIZES.get(name, 224)
        generator = torch.Generator().manual_seed(0)
        image = torch.randn(1, 3, size, size, generator=generator)
        masks = (torch.rand(args.copies, 1, size, size, generator=generator) > 0.5).float()
        copies = image * masks
        chunk = chunk_size(bytes_per_image(model, image), args.memory_mb, args.copies)
        results = {}

        def fixed():
            results["fixed"] = target_probabilities(model, copies, 0, batch_size=16)

        def budget():
            results["budget"] = target_probabilities(model, copies, 0, memory_mb=args.memory_mb)

        fixed_s, budget_s = best_times([fixed, budget], args.repeats)
        difference = float(np.abs(results["fixed"] - results["budget"]).max())
        print(f"| {name} | {fixed_s:.3f} | {budget_s:.3f} | {chunk} | {fixed_s / budget_s:.2f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
