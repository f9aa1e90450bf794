"""Which output score a method explains: a class index, one per input, or a callable.

A target is what Captum users pass: an ``int`` for every input, a sequence or
tensor with one class per input, or a callable mapping the model output
``(N, classes)`` to one score per input ``(N,)``. These helpers pick the scores
and keep a target aligned with its inputs when a batch is repeated, chunked or
subset. Resolving a user's words (``predicted``, ``true``, a class name) to an
index is :func:`nnvis_core.contract.targets.resolve_target`.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

Target = Union[int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


class AttributionError(ValueError):
    """A method cannot run on this model or with these arguments (one-line message)."""


def _is_callable(target: Target) -> bool:
    return callable(target) and not isinstance(target, torch.Tensor)


def target_scores(output: torch.Tensor, target: Target) -> torch.Tensor:
    """(N,) scores picked from the model output (N, classes) by `target`."""
    if _is_callable(target):
        scores = target(output)
        if scores.shape != output.shape[:1]:
            raise AttributionError(f"a target callable must return one score per input, got {tuple(scores.shape)}")
        return scores
    index = torch.as_tensor(target, device=output.device).long().reshape(-1)
    if index.numel() == 1:
        index = index.expand(output.shape[0])
    if index.numel() != output.shape[0]:
        raise AttributionError(f"{index.numel()} targets for {output.shape[0]} inputs")
    return output.gather(1, index[:, None])[:, 0]


def repeat_target(target: Target, times: int, batch: int) -> Target:
    """The target for a batch where each of `batch` inputs is repeated `times` times (input-major)."""
    if _is_callable(target):
        return target
    index = torch.as_tensor(target).long().reshape(-1)
    if index.numel() == 1:
        return int(index)
    if index.numel() != batch:
        raise AttributionError(f"{index.numel()} targets for {batch} inputs")
    return index.repeat_interleave(times)


def check_target_count(target: Target, batch: int) -> None:
    """Raise AttributionError unless `target` gives one class per input (or one for all)."""
    if _is_callable(target):
        return
    count = torch.as_tensor(target).reshape(-1).numel()
    if count not in (1, batch):
        raise AttributionError(f"{count} targets for {batch} inputs")


def select_target(target: Target, which: torch.Tensor | Sequence[int]) -> Target:
    """The target for a batch made of inputs `which` (indices into the original batch).

    target: one class for all inputs, or one per input of the original batch (a list or a tensor);
    which: the indices, as a tensor or a plain list.
    """
    if _is_callable(target):
        return target
    index = torch.as_tensor(target).long().reshape(-1)
    if index.numel() == 1:
        return int(index)
    device = which.device if isinstance(which, torch.Tensor) else index.device  # the selection's device, as before
    index, which = index.to(device), torch.as_tensor(which, dtype=torch.long, device=device).reshape(-1)
    if which.numel() and int(which.max()) >= index.numel():
        raise AttributionError(f"{index.numel()} targets, but input {int(which.max())} is selected")
    return index[which]


def chunk_target(target: Target, start: int, stop: int) -> Target:
    """The target for inputs start:stop of a batch."""
    if _is_callable(target):
        return target
    index = torch.as_tensor(target).long().reshape(-1)
    return int(index) if index.numel() == 1 else index[start:stop]
