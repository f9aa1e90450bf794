"""Train the demo net from scratch on freshly generated shapes.

Deterministic for a given seed and thread count; a few minutes on a 2-core
CPU with the defaults.  The same code produced the shipped weights.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from nnvis_core.demo.model import DemoNet, normalize
from nnvis_core.demo.shapes import generate_dataset

# Offset from the training seed for the held-out set; data sets drawn from
# different seeds share no images (the generator is continuous-valued).
HELD_OUT_SEED_OFFSET = 1_000
HELD_OUT_COUNT = 2_000
BATCH_SIZE = 128


def _threads() -> int:
    """All usable cores, capped: this small net gains nothing past ~8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


@torch.no_grad()
def evaluate(model: nn.Module, count: int, seed: int) -> float:
    """Accuracy of `model` on `count` fresh samples drawn with `seed`."""
    images, _, labels = generate_dataset(count, seed)
    model.eval()
    correct = 0
    for start in range(0, count, 256):
        x = normalize(images[start:start + 256])
        pred = model(x).argmax(1).numpy()
        correct += int((pred == labels[start:start + 256]).sum())
    return correct / count


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random mirror per sample and a random quarter turn per batch.

    Every class is closed under mirroring and rotation, so labels stay valid.
    """
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    k = int(torch.randint(4, (1,), generator=gen))
    return torch.rot90(x, k, (2, 3)) if k else x


def train_demo_model(
    output: Path,
    seed: int = 0,
    epochs: int = 10,
    train_size: int = 12_000,
    log: Callable[[str], None] = print,
    held_out_count: int = HELD_OUT_COUNT,
) -> float:
    """Train DemoNet, save its state_dict to `output`, return held-out accuracy.

    The held-out set has `held_out_count` images drawn with
    seed + HELD_OUT_SEED_OFFSET, never with the training seed.
    """
    output = Path(output)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(_threads())
    # Near-zero activations early in training otherwise hit slow denormal math.
    torch.set_flush_denormal(True)
    try:
        started = time.perf_counter()
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        images, _, labels = generate_dataset(train_size, seed)
        x_all = normalize(images)
        y_all = torch.from_numpy(labels)
        log(f"generated {train_size} training images in {time.perf_counter() - started:.1f}s")

        # channels_last is markedly faster for CPU convolutions.
        model = DemoNet().to(memory_format=torch.channels_last)
        steps_per_epoch = (train_size + BATCH_SIZE - 1) // BATCH_SIZE
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=3e-3, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.2
        )
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(train_size, generator=gen)
            total_loss, correct = 0.0, 0
            for start in range(0, train_size, BATCH_SIZE):
                idx = order[start:start + BATCH_SIZE]
                x = _augment(x_all[idx], gen).contiguous(memory_format=torch.channels_last)
                y = y_all[idx]
                logits = model(x)
                loss = loss_fn(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y).sum())
            log(
                f"epoch {epoch + 1}/{epochs}: loss {total_loss / train_size:.4f} "
                f"train acc {correct / train_size:.4f} "
                f"({time.perf_counter() - started:.0f}s)"
            )

        model = model.to(memory_format=torch.contiguous_format)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        output.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, output)
        accuracy = evaluate(model, held_out_count, seed + HELD_OUT_SEED_OFFSET)
        log(
            f"held-out accuracy {accuracy:.4f} on {held_out_count} fresh images; "
            f"saved {output} ({time.perf_counter() - started:.0f}s total)"
        )
        return accuracy
    finally:
        torch.set_num_threads(previous_threads)
        torch.set_flush_denormal(False)


if __name__ == "__main__":
    import argparse

    from nnvis_core.demo.model import WEIGHTS_PATH

    parser = argparse.ArgumentParser(description="Train the nnvis demo model.")
    parser.add_argument("--output", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=12_000)
    args = parser.parse_args()
    train_demo_model(args.output, args.seed, args.epochs, args.train_size)
