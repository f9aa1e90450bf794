"""Axiomatic: does the map keep a property its method promises?

Completeness (Sundararajan et al. 2017) holds for methods whose attributions
are meant to add up to the change of the score from a baseline (Integrated
Gradients, gradient x input, LRP's conservation); input invariance (Kindermans
et al. 2017) asks that a constant shift of the input, which the model absorbs
exactly, leave the map alone. Both measure how far a map is from the property:
0 is the property held, lower is better.

Input invariance rather than Nguyen & Martinez's non-sensitivity: it costs one
map recomputation where non-sensitivity needs one forward pass per input value
(C x H x W: 12,288 at 64 px, 150,528 at 224 px), and its answer separates
methods as the paper shows (the gradient keeps it; gradient x input and
Integrated Gradients with a fixed black baseline do not).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from nnvis_core.metrics.catalog import Explain, MapInput, Metric
from nnvis_core.toolkit.targets import target_scores

SHIFT = -1.0  # input invariance: the constant added to every input value, in the model's input units (Quantus's)
MODEL_SHIFTS = ("input", "first_layer_bias")


@torch.no_grad()
def completeness(model: nn.Module, inputs: torch.Tensor, target: int, raw: np.ndarray, baseline: torch.Tensor,
                 *, relative: bool = False) -> float | None:
    """Completeness (Sundararajan et al., ICML 2017): |sum_i a_i - (f_t(x) - f_t(x'))|.

    How far the attribution's total (`raw`, every channel and pixel) is from
    the change of the target's logit between the input x and the baseline x'.
    Lower is better; 0 is the axiom held. The paper suggests the total be
    within 5% of the change: relative=True divides by |f_t(x) - f_t(x')| (None
    when that is 0). One forward pass of the two images. baseline None: the
    total should be f_t(x) itself (LRP's conservation, Bach et al. 2015).
    """
    given = inputs if baseline is None else torch.cat([inputs, baseline.to(inputs)])
    scores = target_scores(model(given), target).double()
    change = float(scores[0] - (scores[1] if baseline is not None else 0.0))
    error = abs(float(np.asarray(raw, dtype=np.float64).sum()) - change)
    if relative:
        return error / abs(change) if change != 0 else None
    return error


@contextmanager
def shifted_network(model: nn.Module, shift: float, input_shape: tuple[int, ...],
                    how: str = "input") -> Iterator[nn.Module]:
    """A network f2 with f2(x + shift) = f1(x), for the length of the block; `model` is as it was afterwards.

    how="input": `model` itself, with a hook that subtracts the shift from its input: exact
    everywhere. how="first_layer_bias": Quantus's construction, a deep copy whose first conv or linear
    layer gets the bias b - W m (Kindermans et al.'s), computed as 2b - the smallest value of each output
    channel of that layer on an input of `shift` everywhere; with zero padding that smallest value can be
    a border's, and no bias can absorb the shift at the borders, so f2 only approximates f1 there.
    """
    if how not in MODEL_SHIFTS:
        raise ValueError(f"how must be one of {', '.join(MODEL_SHIFTS)}, not {how!r}")
    if how == "first_layer_bias":
        yield _bias_shifted_copy(model, shift, input_shape)
        return
    handle = model.register_forward_pre_hook(lambda module, args: (args[0] - shift, *args[1:]))
    try:
        yield model
    finally:
        handle.remove()


def _bias_shifted_copy(model: nn.Module, shift: float, input_shape: tuple[int, ...]) -> nn.Module:
    work = copy.deepcopy(model)
    first = next((m for m in work.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))), None)
    if first is None or first.bias is None:
        raise ValueError(f"{type(model).__name__}: its first conv or linear layer has no bias to absorb the shift")
    with torch.no_grad():
        weight = first.weight
        response = first(torch.full(input_shape, shift, dtype=weight.dtype, device=weight.device))[0]
        lowest = response.reshape(response.shape[0], -1).amin(dim=1)
        first.bias.copy_(2 * first.bias - lowest)
    return work


def input_invariance(model: nn.Module, inputs: torch.Tensor, target: int, explain: Explain,
                     attribution: np.ndarray, *, shift: float = SHIFT, how: str = "input",
                     shifted_inputs: torch.Tensor | None = None) -> float | None:
    """Input invariance (Kindermans et al. 2017): ||e(x + m; f2) - e(x; f1)||_2 / ||e(x; f1)||_2, where
    f2(x + m) = f1(x) for the constant shift m.

    The shift changes nothing the model computes, so a map that changes
    reflects the method, not the model. Lower is better; 0 is invariant. The
    paper's f2 moves the shift into the first layer's bias; how="input" (the
    default) subtracts it before the first layer instead, which is exact also
    where a convolution's zero padding meets the border (see shifted_network;
    how="first_layer_bias" is Quantus's). shifted_inputs: the shifted input to
    explain instead of inputs + shift (Quantus leaves the first value unshifted).
    One map recomputation. None for an all-zero map.
    """
    attribution = np.asarray(attribution, dtype=np.float64)
    size = float(np.linalg.norm(attribution))
    if size == 0.0:
        return None
    with shifted_network(model, shift, tuple(inputs.shape), how) as shifted:
        moved = inputs + shift if shifted_inputs is None else shifted_inputs.to(inputs)
        shifted_map = np.asarray(explain(moved, target, shifted), dtype=np.float64)
    return float(np.linalg.norm(shifted_map - attribution) / size)


def _completeness(item: MapInput) -> float | None:
    """Only for a method that promises completeness (MapInput.completes_from), measured from its own baseline."""
    if item.raw is None or item.completes_from is None:
        return None
    baseline = None if isinstance(item.completes_from, str) else item.completes_from
    return completeness(item.model, item.inputs, item.target, item.raw, baseline)


METRICS: tuple[Metric, ...] = (
    Metric(name="completeness", title="Completeness gap", category="axiomatic", better="lower",
           meaning="how far the attribution's sum is from the logit's change from the method's baseline (IG, "
                   "gradient x input, LRP)",
           cost="1 forward pass of the input and its baseline",
           paper="Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks (ICML)",
           compute=_completeness, cheap=True),
    Metric(name="input_invariance", title="Input invariance", category="axiomatic", better="lower",
           meaning="relative change of the map when a constant input shift is absorbed by the model",
           cost="1 map recomputation",
           paper="Kindermans et al. 2017, The (Un)reliability of Saliency Methods (NeurIPS workshop; 2019 book)",
           compute=lambda item: input_invariance(item.model, item.inputs, item.target, item.explain,
                                                 item.attribution)),
)
