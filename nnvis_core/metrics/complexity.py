"""Complexity: how few pixels carry the map. A concise map is easier to read.

No model call: each metric reads the map's absolute values |a| (H, W) alone, so they say nothing of
whether the map is right, only of how spread it is (a map on one pixel is as concise as it gets).
"""

from __future__ import annotations

import numpy as np

from nnvis_core.metrics.catalog import MapInput, Metric

EFFECTIVE_EPSILON = 1e-5  # Quantus's threshold, on |a| / max |a|


def _magnitudes(attribution: np.ndarray) -> np.ndarray:
    """|a| as a flat float64 vector."""
    return np.abs(np.asarray(attribution, np.float64)).ravel()


def _scaled(magnitudes: np.ndarray, scale: float | None) -> np.ndarray:
    """|a| / scale, with scale the map's own max |a| unless given (Quantus: the whole batch's)."""
    scale = magnitudes.max() if scale is None else scale
    return magnitudes / scale if scale > 0 else magnitudes


def sparseness(attribution: np.ndarray, offset: float = 0.0, scale: float | None = None) -> float:
    """The Gini index of |a| (Chalasani et al., "Concise explanations of neural networks using
    adversarial training", ICML 2020; the index as in Hurley & Rickard 2009):
    G = sum_i (2i - n - 1) v_(i) / (n sum_i v_i), with v_(1) <= ... <= v_(n) the sorted |a|.
    0 when every pixel carries the same relevance, (n - 1) / n when one pixel carries it all: higher is
    better (more concise). NaN for an all-zero map.

    offset, scale: Quantus adds offset=1e-7 to |a| / scale (scale: the largest |a| of the batch it is
    given; default here the map's own), as the authors' code does, to avoid dividing by zero. The Gini
    index does not change with scale, so scale matters only through the offset.
    """
    values = np.sort(_magnitudes(attribution))
    if offset:
        values = _scaled(values, scale) + offset
    total = values.sum()
    if total == 0:
        return float("nan")
    n = values.size
    weights = 2 * np.arange(1, n + 1) - n - 1
    return float((weights * values).sum() / (n * total))


def complexity(attribution: np.ndarray, log_epsilon: float = 0.0) -> float:
    """The entropy of the map's share of relevance per pixel (Bhatt et al., "Evaluating and aggregating
    feature-based model explanations", IJCAI 2020): H = -sum_i P_i ln P_i, P_i = |a_i| / sum_j |a_j|,
    with 0 ln 0 = 0. 0 when one pixel carries everything, ln n when all carry the same: lower is better
    (fewer pixels explain the decision). NaN for an all-zero map.

    log_epsilon: Quantus takes ln(P_i + 1e-12), which lowers H by about n * 1e-12.
    """
    magnitudes = _magnitudes(attribution)
    total = magnitudes.sum()
    if total == 0:
        return float("nan")
    shares = magnitudes / total
    if log_epsilon:
        return float(-(shares * np.log(shares + log_epsilon)).sum())
    shares = shares[shares > 0]
    return float(-(shares * np.log(shares)).sum())


def effective_complexity(attribution: np.ndarray, eps: float = EFFECTIVE_EPSILON, scale: float | None = None) -> float:
    """The number of pixels whose relevance matters, |a_i| / max_j |a_j| > eps (Nguyen & Martinez,
    "On quantitative aspects of model interpretability", arXiv 2007.07584, 2020). Lower is better (a
    simpler explanation). Counted on the map scaled to a maximum of 1, so that eps means the same for
    every method whatever the units of its map; 0 for an all-zero map.

    scale: divide by this instead of the map's max |a|. Quantus divides by the largest |a| of the batch
    it is given (its normalise=True default), so an image's count depends on the images beside it.
    """
    return float((_scaled(_magnitudes(attribution), scale) > eps).sum())


def _of_map(score):
    """compute(MapInput) for a score of the map alone: None for an all-zero map, which explains nothing
    (it would otherwise win effective complexity with 0 pixels)."""
    def compute(given: MapInput) -> float | None:
        if not np.any(given.attribution):
            return None
        value = score(given.attribution)
        return None if np.isnan(value) else float(value)
    return compute


METRICS: tuple[Metric, ...] = (
    Metric(name="sparseness", title="Sparseness", category="complexity", better="higher",
           meaning="Gini index of |map|: 1 when one pixel carries it all, 0 when all carry the same",
           cost="none (map only)",
           paper="Chalasani et al., Concise explanations of neural networks using adversarial training, ICML 2020",
           compute=_of_map(sparseness), cheap=True),
    Metric(name="complexity", title="Complexity", category="complexity", better="lower",
           meaning="entropy of each pixel's share of |map|: 0 when one pixel carries it all",
           cost="none (map only)",
           paper="Bhatt et al., Evaluating and aggregating feature-based model explanations, IJCAI 2020",
           compute=_of_map(complexity), cheap=True),
    Metric(name="effective_complexity", title="Effective complexity", category="complexity", better="lower",
           meaning=f"number of pixels with |map| above {EFFECTIVE_EPSILON:g} of its maximum",
           cost="none (map only)",
           paper="Nguyen & Martinez, On quantitative aspects of model interpretability, arXiv 2020",
           compute=_of_map(effective_complexity), cheap=True),
)
