"""Many images through the model without gradients, in chunks sized by memory, not by --batch-size.

Perturbation methods (occlusion, RISE, the deletion/insertion curves) score
hundreds or thousands of altered copies of one image. The run's ``--batch-size``
is chosen for the gradient methods and is far too small for them; the chunk
here is as many images as a memory budget holds, by an estimate of what one
image's no-grad forward pass keeps alive.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from nnvis_core.toolkit.targets import Target, chunk_target, target_scores

MEMORY_MB = 128  # MiB: the default budget for one chunk's activations


def chunk_size(bytes_per_item: int, memory_mb: float = MEMORY_MB, limit: int | None = None) -> int:
    """How many items of `bytes_per_item` a budget of `memory_mb` holds: at least 1, at most `limit`."""
    size = max(1, int(memory_mb * 2**20 // max(1, bytes_per_item)))
    return size if limit is None else max(1, min(size, limit))


@contextmanager
def leaf_output_sizes(model: nn.Module) -> Iterator[list[int]]:
    """The element counts of every leaf module's output in the forward passes inside the block."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, a, out: sizes.append(out.numel())
                                     if isinstance(out, torch.Tensor) else None)
             for m in model.modules() if not list(m.children())]
    try:
        yield sizes
    finally:
        for hook in hooks:
            hook.remove()


def inference_bytes(sizes: list[int], image: torch.Tensor) -> int:
    """Memory one image's no-grad forward pass needs, from its leaf output sizes.

    No-grad inference keeps a few activations alive at a time and the largest
    dominates, so: three times the largest output of any leaf module, plus the input.
    """
    one = image[:1].numel()
    return image.element_size() * (3 * max(sizes, default=one) + one)


@torch.no_grad()
def bytes_per_image(model: nn.Module, image: torch.Tensor) -> int:
    """:func:`inference_bytes` measured by one forward pass of `image` (1, C, H, W)."""
    with leaf_output_sizes(model) as sizes:
        model(image[:1])
    return inference_bytes(sizes, image)


@torch.no_grad()
def output_and_bytes(model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The model's output on `image` (1, C, H, W) and :func:`inference_bytes`, from one forward pass:
    a method that needs the unaltered image's score anyway measures its chunks for free."""
    with leaf_output_sizes(model) as sizes:
        output = model(image[:1])
    return output, inference_bytes(sizes, image)


@torch.no_grad()
def in_chunks(model: nn.Module, build: Callable[[int, int], torch.Tensor], count: int, step: int,
              read: Callable[[torch.Tensor, int, int], torch.Tensor]) -> torch.Tensor:
    """read(model(build(start, stop)), start, stop) for each chunk of `step` of `count` inputs, concatenated.

    `build` makes a chunk's inputs only when it runs, so thousands of altered copies of an image never
    sit in memory at once."""
    return torch.cat([read(model(build(start, min(start + step, count))), start, min(start + step, count))
                      for start in range(0, count, step)])


@torch.no_grad()
def target_probabilities(model: nn.Module, images: torch.Tensor, target: Target, *,
                         memory_mb: float = MEMORY_MB, batch_size: int | None = None) -> np.ndarray:
    """Softmax probability of `target` for every image of `images` (N, C, H, W), as float64 (N,).

    Chunks hold `batch_size` images when given, else as many as `memory_mb`
    holds (see :func:`bytes_per_image`). `target` is a class for all images, one
    class per image, or a callable on the probabilities (see nnvis_core.toolkit.targets).

    >>> masked = image * masks            # (4000, 3, 224, 224), e.g. RISE
    >>> scores = target_probabilities(ctx.module, masked, target)
    """
    count = images.shape[0]
    if count == 0:
        return np.zeros(0)
    step = batch_size or chunk_size(bytes_per_image(model, images[:1]), memory_mb, count)

    def read(output: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return target_scores(torch.softmax(output.float(), dim=1), chunk_target(target, start, stop)).cpu()

    return in_chunks(model, lambda start, stop: images[start:stop], count, step, read).numpy().astype(np.float64)
