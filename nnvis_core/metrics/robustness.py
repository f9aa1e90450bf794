"""Robustness: does the map stay put when the input moves a little?

Each metric adds `samples` seeded noise draws to the input, recomputes the map
of every noisy copy (one `explain` call each, since `explain` takes one input)
and compares it with the map of the clean input. Lower is better for all three.

Whether a noisy copy whose predicted class differs still counts is the
`changed_prediction` choice: "keep" (the papers, and Quantus by default),
"skip" (leave that copy out; a map that follows a new decision is not a
fragile map) or "none" (no score at all when any copy changed class, which is
Quantus's `return_nan_when_prediction_changes=True`). Checking costs one
no-grad forward pass per copy, run in memory-sized chunks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nnvis_core.metrics.catalog import Explain, MapInput, Metric
from nnvis_core.toolkit.scoring import MEMORY_MB, chunk_size, in_chunks, output_and_bytes

KEEP, SKIP, NONE = "keep", "skip", "none"
CHANGED_PREDICTION = (KEEP, SKIP, NONE)
SAMPLES = 10  # noisy copies per image in the catalog: each costs one map recomputation
RADIUS = 0.2  # max-/average sensitivity: half-width of the uniform noise, in the model's input units (Quantus's)
STD = 0.1  # local Lipschitz estimate: standard deviation of the Gaussian noise (Quantus's)


def uniform_noise(shape: tuple[int, ...], samples: int, radius: float, seed: int) -> torch.Tensor:
    """(samples, *shape) float32 noise uniform in [-radius, radius): the L-infinity ball of Yeh et al."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand((samples, *shape), generator=generator) * 2 - 1) * radius


def gaussian_noise(shape: tuple[int, ...], samples: int, std: float, seed: int) -> torch.Tensor:
    """(samples, *shape) float32 noise, normal with mean 0 and standard deviation `std`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((samples, *shape), generator=generator) * std


@torch.no_grad()
def same_prediction(model: nn.Module, inputs: torch.Tensor, noisy: torch.Tensor,
                    memory_mb: float = MEMORY_MB) -> np.ndarray:
    """(samples,) bool: does each noisy copy (samples, C, H, W) keep the predicted class of `inputs` (1, C, H, W)?

    The copies go through the model in chunks of as many as `memory_mb` holds."""
    output, per_image = output_and_bytes(model, inputs)
    step = chunk_size(per_image, memory_mb, noisy.shape[0])
    predicted = in_chunks(model, lambda start, stop: noisy[start:stop], noisy.shape[0], step,
                          lambda out, *_: out.argmax(dim=1))
    return (predicted == int(output.argmax(dim=1)[0])).cpu().numpy()


def perturbed_maps(model: nn.Module, inputs: torch.Tensor, target: int, explain: Explain, noise: torch.Tensor,
                   changed_prediction: str = KEEP, memory_mb: float = MEMORY_MB) -> list[np.ndarray | None] | None:
    """The map of `inputs + noise[k]` for each draw k, as float64 (H, W).

    A draw that changes the predicted class gives None in its place with
    changed_prediction="skip" (and costs no map); with "none" any such draw
    makes the whole answer None.
    """
    if changed_prediction not in CHANGED_PREDICTION:
        raise ValueError(f"changed_prediction must be one of {', '.join(CHANGED_PREDICTION)}, "
                         f"not {changed_prediction!r}")
    noisy = inputs + torch.as_tensor(noise).to(inputs)
    kept = np.ones(noisy.shape[0], bool)
    if changed_prediction != KEEP:
        kept = same_prediction(model, inputs, noisy, memory_mb)
        if changed_prediction == NONE and not kept.all():
            return None
    return [np.asarray(explain(moved[None], target, model), dtype=np.float64) if keep else None
            for moved, keep in zip(noisy, kept)]


def sensitivities(model: nn.Module, inputs: torch.Tensor, target: int, explain: Explain, attribution: np.ndarray,
                  *, samples: int = SAMPLES, radius: float = RADIUS, seed: int = 0, relative: bool = True,
                  changed_prediction: str = KEEP, noise: torch.Tensor | np.ndarray | None = None,
                  memory_mb: float = MEMORY_MB) -> np.ndarray | None:
    """||e(x + d_k) - e(x)||_2 / ||e(x)||_2 for each draw d_k (NaN for a skipped draw); what max- and
    average sensitivity reduce. None where the ratio is undefined (a zero map with relative=True) or
    changed_prediction="none" found a changed class.

    noise: the draws (samples, C, H, W) to use instead of `samples` seeded uniform draws in [-radius, radius).
    relative=False leaves out the division by ||e(x)||: Yeh et al.'s definition as written (see max_sensitivity).
    """
    attribution = np.asarray(attribution, dtype=np.float64)
    scale = float(np.linalg.norm(attribution)) if relative else 1.0
    if scale == 0.0:
        return None
    if noise is None:
        noise = uniform_noise(tuple(inputs.shape[1:]), samples, radius, seed)
    maps = perturbed_maps(model, inputs, target, explain, torch.as_tensor(noise), changed_prediction, memory_mb)
    if maps is None:
        return None
    return np.array([np.nan if m is None else np.linalg.norm(m - attribution) / scale for m in maps])


def max_sensitivity(model: nn.Module, inputs: torch.Tensor, target: int, explain: Explain, attribution: np.ndarray,
                    **options) -> float | None:
    """Max-sensitivity (Yeh et al., NeurIPS 2019): max_k ||e(x + d_k) - e(x)||_2 / ||e(x)||_2, d_k uniform in
    the L-infinity ball of radius r.

    The worst change of the map over `samples` small random moves of the input,
    relative to the map's size so that methods of any scale compare. Lower is
    better: 0 means no draw moved the map. The paper's definition states the
    maximum of the plain difference ||e(y) - e(x)|| over ||y - x|| <= r; its
    experiments (the authors' code) and Quantus divide by ||e(x)||, as here by
    default (relative=False: the plain difference). Options: see sensitivities.
    None where no draw is left or the map is all zero.
    """
    ratios = sensitivities(model, inputs, target, explain, attribution, **options)
    return _reduce(ratios, np.max)


def avg_sensitivity(model: nn.Module, inputs: torch.Tensor, target: int, explain: Explain, attribution: np.ndarray,
                    **options) -> float | None:
    """Average sensitivity (Yeh et al., NeurIPS 2019): mean_k ||e(x + d_k) - e(x)||_2 / ||e(x)||_2, d_k uniform
    in the L-infinity ball of radius r: the expected (not the worst) relative change of the map. Lower is
    better. Options and None as max_sensitivity."""
    ratios = sensitivities(model, inputs, target, explain, attribution, **options)
    return _reduce(ratios, np.mean)


def local_lipschitz_estimate(model: nn.Module, inputs: torch.Tensor, target: int, explain: Explain,
                             attribution: np.ndarray, *, samples: int = SAMPLES, std: float = STD, seed: int = 0,
                             normalise: bool = False, eps: float = 0.0, changed_prediction: str = KEEP,
                             noise: torch.Tensor | np.ndarray | None = None,
                             memory_mb: float = MEMORY_MB) -> float | None:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max_k ||e(x) - e(x'_k)||_2 / ||x - x'_k||_2,
    x'_k = x + Gaussian noise of standard deviation `std`.

    How much the map moves per unit the input moves, at worst over `samples`
    draws. Lower is better (a stable explanation). The paper searches the
    epsilon-ball around x for the maximum; here, as in Quantus, random Gaussian
    draws stand in for that search. Quantus's steps, off by default:
    normalise=True divides each map by its largest absolute value (Quantus's
    default), eps=1e-10 is added to the denominator. noise: the draws
    (samples, C, H, W) to use instead of seeded ones. None where no draw is left.
    """
    if noise is None:
        noise = gaussian_noise(tuple(inputs.shape[1:]), samples, std, seed)
    noise = torch.as_tensor(noise)
    maps = perturbed_maps(model, inputs, target, explain, noise, changed_prediction, memory_mb)
    if maps is None:
        return None
    clean = _scaled(np.asarray(attribution, dtype=np.float64), normalise)
    ratios = []
    for draw, noisy_map in zip(noise, maps):
        if noisy_map is None:
            ratios.append(np.nan)
            continue
        moved = (inputs + draw.to(inputs)[None]) - inputs  # the step the model saw, after float32 rounding
        distance = float(torch.linalg.vector_norm(moved.double()))
        ratios.append(np.linalg.norm(clean - _scaled(noisy_map, normalise)) / (distance + eps))
    return _reduce(np.array(ratios), np.max)


def _scaled(values: np.ndarray, by_max: bool) -> np.ndarray:
    """`values` divided by their largest absolute value when `by_max` (an all-zero map as it is)."""
    top = np.abs(values).max() if by_max else 0.0
    return values / top if top > 0 else values


def _reduce(ratios: np.ndarray | None, reduce) -> float | None:
    """`reduce` over the draws that were kept; None when none was."""
    if ratios is None or np.isnan(ratios).all():
        return None
    return float(reduce(ratios[~np.isnan(ratios)]))


def _catalog_sensitivities(item: MapInput) -> np.ndarray | None:
    """The draws' ratios for the catalog's max- and average sensitivity: computed once per map."""
    if "sensitivities" not in item.shared:
        item.shared["sensitivities"] = sensitivities(item.model, item.inputs, item.target, item.explain,
                                                     item.attribution, seed=item.seed, memory_mb=item.memory_mb)
    return item.shared["sensitivities"]


def _lipschitz(item: MapInput) -> float | None:
    return local_lipschitz_estimate(item.model, item.inputs, item.target, item.explain, item.attribution,
                                    seed=item.seed, memory_mb=item.memory_mb)


YEH = "Yeh et al. 2019, On the (In)fidelity and Sensitivity of Explanations (NeurIPS)"
METRICS: tuple[Metric, ...] = (
    Metric(name="max_sensitivity", title="Max-sensitivity", category="robustness", better="lower",
           meaning=f"largest relative change of the map over {SAMPLES} small uniform moves of the input",
           cost=f"{SAMPLES} map recomputations (shared with average sensitivity)", paper=YEH,
           compute=lambda item: _reduce(_catalog_sensitivities(item), np.max)),
    Metric(name="avg_sensitivity", title="Average sensitivity", category="robustness", better="lower",
           meaning=f"mean relative change of the map over {SAMPLES} small uniform moves of the input",
           cost=f"{SAMPLES} map recomputations (shared with max-sensitivity)", paper=YEH,
           compute=lambda item: _reduce(_catalog_sensitivities(item), np.mean)),
    Metric(name="local_lipschitz", title="Local Lipschitz estimate", category="robustness", better="lower",
           meaning=f"largest change of the map per unit change of the input over {SAMPLES} Gaussian moves",
           cost=f"{SAMPLES} map recomputations",
           paper="Alvarez-Melis & Jaakkola 2018, On the Robustness of Interpretability Methods (WHI, ICML)",
           compute=_lipschitz),
)
