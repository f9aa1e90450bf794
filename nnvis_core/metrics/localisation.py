"""Localisation: does the map fall on the object? Each metric compares one map with the object's mask.

No model call: the map and the mask are all they read. Every function takes the map (H, W), signed or
not, and the mask (H, W) bool, and raises ValueError on an empty mask (none of them is defined there).

Ties. The papers rank pixels by relevance and say nothing of equal values, but real maps have many (a
rectified CAM is 0 on most of the image). Where a cut falls inside a group of equal values, nnvis counts
that group by its expected share, as if the tie were broken at random (`ties="average"`): the score
then depends on the map alone, not on the pixels' order in memory. Quantus takes the order numpy's
argsort happens to give (`ties="argsort"`), or any maximum for the pointing game (`ties="any"`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.stats import rankdata

from nnvis_core.metrics.catalog import MapInput, Metric

TOP_K = 1000  # Quantus's default k for the top-k intersection


def _flat(attribution: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The map and the mask as flat float64 and bool vectors, checked to match and the mask non-empty."""
    values, on_object = np.asarray(attribution, np.float64), np.asarray(mask, bool)
    if values.shape != on_object.shape:
        raise ValueError(f"map {values.shape} and mask {on_object.shape} differ in shape")
    if not on_object.any():
        raise ValueError("the mask is empty: no object to localise")
    return values.ravel(), on_object.ravel()


def _hits_in_top(values: np.ndarray, on_object: np.ndarray, k: int, ties: str) -> float:
    """How many of the k highest values lie on the object (a fraction where a tie straddles the cut)."""
    if ties == "argsort":  # Quantus: the first k of numpy's descending argsort, whatever order ties take
        return float(on_object[np.argsort(-values)[:k]].sum())
    if ties != "average":
        raise ValueError(f"ties must be 'average' or 'argsort', not {ties!r}")
    cut = np.partition(values, values.size - k)[values.size - k]  # the k-th highest value
    above, tied = values > cut, values == cut
    places_left = k - int(above.sum())  # taken from the tied group, at random
    return float((above & on_object).sum()) + places_left * (tied & on_object).sum() / tied.sum()


def near_object(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """The pixels on the object or closer than `tolerance` pixels (Euclidean) to one of its pixels."""
    on_object = np.asarray(mask, bool)
    if tolerance <= 0:
        return on_object
    return on_object | (distance_transform_edt(~on_object) < tolerance)


def pointing_game(attribution: np.ndarray, mask: np.ndarray, tolerance: float = 0.0, ties: str = "average") -> float:
    """1 if the map's maximum lies on the object, else 0 (Zhang et al., "Top-down neural attention by
    excitation backprop", ECCV 2016 / IJCV 2018); averaged over images it is the pointing accuracy
    hits / (hits + misses). Higher is better.

    tolerance: a hit also when the maximum is closer than `tolerance` pixels to the object, as the paper
    and TorchRay count it (15 px there, on ~224 px images); 0 (Quantus) asks for the object itself.
    ties: with several maxima, "average" scores the share of them that hit (the expected score of a
    maximum drawn at random); "any" (Quantus) scores 1 if any of them hits.
    """
    values, _ = _flat(attribution, mask)
    targets = near_object(mask, tolerance).ravel()
    maxima = values == values.max()
    if ties == "any":
        return float((maxima & targets).any())
    if ties != "average":
        raise ValueError(f"ties must be 'average' or 'any', not {ties!r}")
    return float((maxima & targets).sum() / maxima.sum())


def relevance_rank_accuracy(attribution: np.ndarray, mask: np.ndarray, ties: str = "average") -> float:
    """|P_K ∩ GT| / |GT|, with K = |GT| and P_K the K pixels of highest relevance (Arras et al.,
    "CLEVR-XAI", Information Fusion 2022): the share of the object a top-K cut of the map recovers.
    1 when the object's pixels are exactly the map's highest. Higher is better.

    ties: "average" (nnvis) or "argsort" (Quantus); see the module's docstring.
    """
    values, on_object = _flat(attribution, mask)
    size = int(on_object.sum())
    return _hits_in_top(values, on_object, size, ties) / size


def relevance_mass_accuracy(attribution: np.ndarray, mask: np.ndarray, positive_only: bool = True) -> float:
    """R_within / R_total: the share of the map's positive relevance that lies on the object (Arras et
    al., "CLEVR-XAI", Information Fusion 2022). 1 when no positive relevance falls off the object.
    Higher is better. NaN for a map with no positive relevance.

    positive_only: the paper sums positive relevance only; False (Quantus) sums the signed values, so a
    signed map's score can leave [0, 1].
    """
    values, on_object = _flat(attribution, mask)
    if positive_only:
        values = np.clip(values, 0.0, None)
    total = values.sum()
    return float(values[on_object].sum() / total) if total != 0 else float("nan")


def top_k_intersection(attribution: np.ndarray, mask: np.ndarray, k: int = TOP_K, concept_influence: bool = False,
                       ties: str = "average") -> float:
    """|P_k ∩ GT| / k: the share of the map's k highest pixels that lie on the object (Theiner et al.,
    "Interpretable semantic photo geolocation", WACV 2022 / arXiv 2104.14995). Higher is better.

    concept_influence: multiply by N / |GT| (N pixels), which scores the overlap against that of a
    random pick of k pixels (1 = chance), so that large and small objects compare.
    ties: "average" (nnvis) or "argsort" (Quantus); see the module's docstring.
    """
    values, on_object = _flat(attribution, mask)
    if not 1 <= k <= values.size:
        raise ValueError(f"k must be between 1 and the map's {values.size} pixels, not {k}")
    score = _hits_in_top(values, on_object, k, ties) / k
    return score * values.size / on_object.sum() if concept_influence else score


def roc_auc(attribution: np.ndarray, mask: np.ndarray) -> float:
    """The area under the ROC curve of the map's values as a score for "this pixel is on the object"
    (Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 2006): the chance that a
    random object pixel has more relevance than a random background pixel, ties counting half,
    AUC = (sum of the object pixels' ranks - P(P+1)/2) / (P * Q) with P object and Q background pixels.
    1 when every object pixel outranks the background, 0.5 for chance. Higher is better. NaN when the
    mask covers the whole image (no background).
    """
    values, on_object = _flat(attribution, mask)
    positives, negatives = int(on_object.sum()), int((~on_object).sum())
    if negatives == 0:
        return float("nan")
    ranks = rankdata(values)  # ascending, ties given their mean rank
    return float((ranks[on_object].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _on_mask(score):
    """compute(MapInput) for a score of (map, mask): None without a mask, an empty one, or a NaN score."""
    def compute(given: MapInput) -> float | None:
        if given.mask is None or not np.asarray(given.mask).any():
            return None
        value = score(given.attribution, given.mask)
        return None if np.isnan(value) else float(value)
    return compute


def _top_k_default(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Quantus's k = 1000 where the image has more pixels; NaN (no score) where it has not."""
    return top_k_intersection(attribution, mask, TOP_K) if np.size(attribution) > TOP_K else float("nan")


PAPER_POINTING = "Zhang et al., Top-down neural attention by excitation backprop, ECCV 2016 / IJCV 2018"
PAPER_CLEVR_XAI = "Arras et al., CLEVR-XAI: a benchmark dataset for the ground truth evaluation, Inf. Fusion 2022"

METRICS: tuple[Metric, ...] = (
    Metric(name="pointing_game", title="Pointing game", category="localisation", better="higher",
           meaning="1 if the map's maximum lies on the object, else 0",
           cost="none (map and mask only)", paper=PAPER_POINTING,
           compute=_on_mask(pointing_game), needs_mask=True, cheap=True),
    Metric(name="relevance_rank_accuracy", title="Relevance rank accuracy", category="localisation",
           better="higher", meaning="share of the object among the map's |object| highest pixels",
           cost="none (map and mask only)", paper=PAPER_CLEVR_XAI,
           compute=_on_mask(relevance_rank_accuracy), needs_mask=True, cheap=True),
    Metric(name="relevance_mass_accuracy", title="Relevance mass accuracy", category="localisation",
           better="higher", meaning="share of the map's positive relevance that lies on the object",
           cost="none (map and mask only)", paper=PAPER_CLEVR_XAI,
           compute=_on_mask(relevance_mass_accuracy), needs_mask=True, cheap=True),
    Metric(name="top_k_intersection", title="Top-k intersection", category="localisation", better="higher",
           meaning=f"share of the map's {TOP_K} highest pixels that lie on the object",
           cost="none (map and mask only)",
           paper="Theiner et al., Interpretable semantic photo geolocation, WACV 2022",
           compute=_on_mask(_top_k_default), needs_mask=True, cheap=True),
    Metric(name="roc_auc", title="ROC AUC", category="localisation", better="higher",
           meaning="chance that an object pixel outranks a background pixel in the map (0.5: chance)",
           cost="none (map and mask only)", paper="Fawcett, An introduction to ROC analysis, PRL 2006",
           compute=_on_mask(roc_auc), needs_mask=True, cheap=True),
)
