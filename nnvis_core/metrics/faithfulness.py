"""Faithfulness: does the model's score move as the map says it should when pixels are removed.

Each metric removes pixels (replaces them by a baseline, a mean or an imputation) in an order, or in
random subsets, the map sets, and reads the target's score on the altered images. All altered images
of one map go through the model without gradients, in chunks sized by a memory budget (never one by
one); the unaltered image's pass, which every metric needs, also measures what one image costs.

The score read is the target's softmax probability ("probability"), its logit ("logit"), or whether
the model still predicts it ("correct", 1 or 0), as each paper and Quantus read it. A map that is a
positive multiple of another scores the same on every metric here (ranks and correlations only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import nn

from nnvis_core.metrics.catalog import MapInput, Metric
from nnvis_core.toolkit.scoring import MEMORY_MB, chunk_size, in_chunks, output_and_bytes

SCORES = ("probability", "logit", "correct")
FC_RUNS, FC_SUBSET = 100, 224  # Quantus's defaults: 100 random subsets of 224 features
FLIP_STEPS = 32
PATCH, REGIONS = 8, 100
ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ROAD_NOISE = 0.01
# Noisy linear imputation: a removed pixel is the weighted mean of its 8 neighbours (Rong et al. 2022).
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
              (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))

Fill = torch.Tensor | float
Build = Callable[[int, int], torch.Tensor]  # build(start, stop) -> altered images start:stop, (k, C, H, W)


# --- reading the model -------------------------------------------------------------------------------------------

def _pick(output: torch.Tensor, target: int, score: str) -> torch.Tensor:
    """(N,) the target's score in a batch of outputs (N, classes)."""
    output = output.float()
    if score == "probability":
        return torch.softmax(output, dim=1)[:, target]
    if score == "logit":
        return output[:, target]
    if score == "correct":
        return (output.argmax(dim=1) == target).float()
    raise ValueError(f"score must be one of {', '.join(SCORES)}, not {score!r}")


class _Probe:
    """The target's score on one image (1, C, H, W) and on altered copies of it, in memory-sized chunks."""

    def __init__(self, model: nn.Module, image: torch.Tensor, target: int, score: str = "probability",
                 memory_mb: float = MEMORY_MB):
        self.model, self.image, self.target = model, image.detach()[:1], target
        self.score, self.memory_mb = score, memory_mb
        output, self.bytes_per_image = output_and_bytes(model, self.image)
        self.original = float(_pick(output, target, score)[0])

    def scores(self, build: Build, count: int) -> np.ndarray:
        """(count,) float64 scores of the `count` altered images; each chunk is built only when it runs."""
        if count == 0:
            return np.zeros(0)
        step = chunk_size(self.bytes_per_image, self.memory_mb, count)
        return in_chunks(self.model, build, count, step,
                         lambda output, *_: _pick(output, self.target, self.score)).double().cpu().numpy()


def _fill_like(fill: Fill, image: torch.Tensor) -> torch.Tensor:
    """The replacement values as a (1, C, H, W) tensor (a number, or anything broadcasting to the image)."""
    if isinstance(fill, torch.Tensor):
        return fill.detach().to(image).expand_as(image)
    return torch.full_like(image, float(fill))


def _replaced(image: torch.Tensor, fill: torch.Tensor, removed: np.ndarray) -> torch.Tensor:
    """(k, C, H, W): the image with the pixels of each removed mask (k, 1 or C, H, W) set to `fill`."""
    return torch.where(torch.from_numpy(removed).to(image.device), fill, image)


def _map(attribution, image: torch.Tensor) -> np.ndarray:
    """The (H, W) map as float64, checked against the image."""
    attribution = np.asarray(attribution, dtype=np.float64)
    if attribution.shape != tuple(image.shape[-2:]):
        raise ValueError(f"a map of shape {attribution.shape} for an image of {tuple(image.shape[-2:])} pixels")
    return attribution


def _units(attribution: np.ndarray, channels: int, per_channel: bool) -> np.ndarray:
    """The flat relevance of each removable unit: a pixel, or (per_channel) each channel value of a pixel,
    which carries its pixel's relevance (the map broadcast over the channels, as Quantus does)."""
    flat = attribution.ravel()
    return np.tile(flat, channels) if per_channel else flat


def _ranks(values: np.ndarray, descending: bool = True, quantus_sort: bool = False) -> np.ndarray:
    """Rank of every value (0 first removed); ties keep index order, unless quantus_sort (numpy's default,
    unstable sort, as Quantus ranks)."""
    keys = -values if descending else values
    order = np.argsort(keys) if quantus_sort else np.argsort(keys, kind="stable")
    ranks = np.empty(order.size, dtype=np.int64)
    ranks[order] = np.arange(order.size)
    return ranks


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


# --- faithfulness correlation ------------------------------------------------------------------------------------

def random_subsets(features: int, subset_size: int, runs: int = FC_RUNS, seed: int = 0) -> np.ndarray:
    """(runs, subset_size) feature indices, each row drawn without replacement from a seeded generator."""
    if not 0 < subset_size <= features:
        raise ValueError(f"subset_size {subset_size} must be between 1 and the {features} features")
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(features, subset_size, replace=False) for _ in range(runs)])


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN when either side is constant."""
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def faithfulness_correlation(model: nn.Module, image: torch.Tensor, target: int, attribution: np.ndarray,
                             baseline: Fill = 0.0, runs: int = FC_RUNS, subset_size: int = FC_SUBSET, seed: int = 0,
                             subsets: np.ndarray | None = None, per_channel: bool = False, score: str = "logit",
                             memory_mb: float = MEMORY_MB) -> float:
    """Faithfulness correlation (Bhatt et al., "Evaluating and aggregating feature-based model
    explanations", IJCAI 2020):

        mu_F = corr_S ( sum_{i in S} a_i ,  f(x) - f(x with x_S = baseline_S) )

    Pearson's r over `runs` random subsets S of `subset_size` pixels, f the target's logit. In [-1, 1];
    higher is better: the more relevance a subset holds, the more its removal costs. NaN when every
    subset holds the same relevance or costs the same. Cost: runs + 1 model calls.

    subsets: (runs, subset_size) indices to use instead of seeded draws (random_subsets(..., seed)).
    per_channel: Quantus draws channel values (indices in C * H * W, channel-major), not whole pixels;
    each carries its pixel's relevance.
    """
    probe = _Probe(model, image, target, score, memory_mb)
    channels, height, width = probe.image.shape[1:]
    units = _units(_map(attribution, probe.image), channels, per_channel)
    if subsets is None:
        subsets = random_subsets(units.size, subset_size, runs, seed)
    subsets = np.asarray(subsets)
    fill = _fill_like(baseline, probe.image)
    shape = (channels if per_channel else 1, height, width)

    def build(start: int, stop: int) -> torch.Tensor:
        removed = np.zeros((stop - start, units.size), dtype=bool)
        np.put_along_axis(removed, subsets[start:stop], True, axis=1)
        return _replaced(probe.image, fill, removed.reshape(-1, *shape))

    drops = probe.original - probe.scores(build, len(subsets))
    return _pearson(units[subsets].sum(axis=1), drops)


# --- pixel flipping ----------------------------------------------------------------------------------------------

def pixel_flipping_curve(model: nn.Module, image: torch.Tensor, target: int, attribution: np.ndarray,
                         baseline: Fill = 0.0, steps: int = FLIP_STEPS, per_step: int | None = None,
                         per_channel: bool = False, score: str = "probability",
                         memory_mb: float = MEMORY_MB) -> tuple[np.ndarray, np.ndarray]:
    """The pixel-flipping curve (Bach et al., "On pixel-wise explanations for non-linear classifier
    decisions by layer-wise relevance propagation", PLoS ONE 2015): (fractions, scores), both (n + 1,),
    scores[k] the target's probability once the fractions[k] most relevant pixels are replaced by the
    baseline; scores[0] is the image's own, fractions run from 0 to 1.

    Each step flips per_step pixels (default ceil(H W / steps)); the paper flips one per step.
    per_channel: as Quantus, flip channel values instead (per_step of them a step), each carrying its
    pixel's relevance and ranked by numpy's default sort, so a step may flip some channels of a pixel.
    """
    probe = _Probe(model, image, target, score, memory_mb)
    channels, height, width = probe.image.shape[1:]
    units = _units(_map(attribution, probe.image), channels, per_channel)
    per_step = per_step or math.ceil(units.size / steps)
    counts = np.minimum(np.arange(math.ceil(units.size / per_step) + 1) * per_step, units.size)
    ranks = _ranks(units, quantus_sort=per_channel)
    fill = _fill_like(baseline, probe.image)
    shape = (channels if per_channel else 1, height, width)

    def build(start: int, stop: int) -> torch.Tensor:
        removed = ranks[None] < counts[start + 1:stop + 1, None]
        return _replaced(probe.image, fill, removed.reshape(-1, *shape))

    scores = np.concatenate([[probe.original], probe.scores(build, counts.size - 1)])
    return counts / units.size, scores


def pixel_flipping(model: nn.Module, image: torch.Tensor, target: int, attribution: np.ndarray,
                   baseline: Fill = 0.0, steps: int = FLIP_STEPS, score: str = "probability",
                   memory_mb: float = MEMORY_MB) -> float:
    """Area under the pixel-flipping curve, over the fraction of pixels flipped (0 to 1, trapezoids):
    AUC = sum_k (s_k + s_{k+1}) / 2 * (r_{k+1} - r_k), s the target's probability, r the fraction flipped.
    In [0, 1]; lower is better (the score falls as soon as the pixels the map ranks first are gone).
    Cost: ceil(H W / per_step) + 1 model calls (steps + 1 by default)."""
    fractions, scores = pixel_flipping_curve(model, image, target, attribution, baseline, steps, score=score,
                                             memory_mb=memory_mb)
    return _trapezoid(scores, fractions)


# --- region perturbation -----------------------------------------------------------------------------------------

def patch_grid(height: int, width: int, patch: int) -> np.ndarray:
    """(H, W) index of the patch x patch square each pixel falls in, squares numbered row by row. Where a
    side is not a multiple of `patch` the grid is centred (the edge squares are cut), as Quantus pads."""
    def blocks(size: int) -> np.ndarray:
        before = (-size % patch) // 2
        return (np.arange(size) + before) // patch

    rows, cols = blocks(height), blocks(width)
    return rows[:, None] * (cols[-1] + 1) + cols[None, :]


def region_perturbation_curve(model: nn.Module, image: torch.Tensor, target: int, attribution: np.ndarray,
                              baseline: Fill = 0.0, patch: int = PATCH, regions: int = REGIONS, order: str = "morf",
                              score: str = "probability", memory_mb: float = MEMORY_MB) -> np.ndarray:
    """Region perturbation (Samek et al., "Evaluating the visualization of what a deep neural network has
    learned", IEEE TNNLS 2017): (L + 1,) the target's probability f(x^k) after the k first patches are
    replaced by the baseline, k = 0..L, L = min(regions, number of patches). The patches tile the image
    (patch_grid) and are ranked by their summed relevance: most relevant first ("morf") or least ("lerf")."""
    probe = _Probe(model, image, target, score, memory_mb)
    grid = patch_grid(*probe.image.shape[-2:], patch)
    sums = np.bincount(grid.ravel(), weights=_map(attribution, probe.image).ravel())
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be morf or lerf, not {order!r}")
    position = _ranks(sums, descending=order == "morf")[grid]  # (H, W): when each pixel's patch goes
    steps = min(regions, sums.size)
    fill = _fill_like(baseline, probe.image)

    def build(start: int, stop: int) -> torch.Tensor:
        removed = position[None] < np.arange(start + 1, stop + 1)[:, None, None]
        return _replaced(probe.image, fill, removed[:, None])

    return np.concatenate([[probe.original], probe.scores(build, steps)])


def region_perturbation(model: nn.Module, image: torch.Tensor, target: int, attribution: np.ndarray,
                        baseline: Fill = 0.0, patch: int = PATCH, regions: int = REGIONS, score: str = "probability",
                        memory_mb: float = MEMORY_MB) -> float:
    """AOPC, the area over the MoRF perturbation curve (Samek et al. 2017):
    AOPC = 1 / (L + 1) * sum_{k=0..L} (f(x^0) - f(x^k)), f the target's probability.
    Higher is better (removing the patches the map ranks first costs the most). Cost: L + 1 model calls."""
    curve = region_perturbation_curve(model, image, target, attribution, baseline, patch, regions, "morf", score,
                                      memory_mb)
    return float(np.mean(curve[0] - curve))


# --- ROAD --------------------------------------------------------------------------------------------------------

def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray, noise: float = ROAD_NOISE, rng=None) -> np.ndarray:
    """The image (C, H, W) with its removed pixels (H, W bool) imputed (Rong et al. 2022): each removed
    pixel equals the weighted mean of its in-image neighbours (1/6 side, 1/12 corner, weights renormalised
    at the border), solved jointly per channel as one sparse linear system, plus noise * N(0, 1).

    rng: anything with standard_normal(shape) (default: numpy's default generator, seed 0). One draw of
    (C, number removed) values, channel by channel, the pixels in raster order within, as the authors' code
    (and pytorch-grad-cam) lays the noise out."""
    channels, height, width = image.shape
    rows, cols = np.nonzero(removed)
    count = rows.size
    result = np.array(image, dtype=np.float64)
    if count == 0:
        return result
    unknown = np.full((height, width), -1, dtype=np.int64)
    unknown[rows, cols] = np.arange(count)
    equations, variables, weights = [np.arange(count)], [np.arange(count)], [np.zeros(count)]
    right = np.zeros((count, channels))
    for d_row, d_col, weight in NEIGHBOURS:
        r, c = rows + d_row, cols + d_col
        inside = np.flatnonzero((r >= 0) & (r < height) & (c >= 0) & (c < width))
        weights[0][inside] -= weight  # the diagonal: minus the weight of the neighbours that exist
        neighbour = unknown[r[inside], c[inside]]
        known = neighbour < 0
        right[inside[known]] -= weight * result[:, r[inside[known]], c[inside[known]]].T
        equations.append(inside[~known])
        variables.append(neighbour[~known])
        weights.append(np.full(int((~known).sum()), weight))
    system = coo_matrix((np.concatenate(weights), (np.concatenate(equations), np.concatenate(variables))),
                        shape=(count, count)).tocsc()
    solved = np.asarray(spsolve(system, right)).reshape(count, channels).T  # (C, count)
    if noise:
        rng = np.random.default_rng(0) if rng is None else rng
        solved = solved + noise * np.asarray(rng.standard_normal((channels, count))).reshape(channels, count)
    result[:, rows, cols] = solved
    return result


def road_removals(attribution: np.ndarray, percentages: Sequence[float] = ROAD_PERCENTAGES,
                  order: str = "morf") -> np.ndarray:
    """(P, H, W) bool: for each percentage p, the int(H W p / 100) most ("morf") or least ("lerf")
    relevant pixels; ties keep raster order."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be morf or lerf, not {order!r}")
    attribution = np.asarray(attribution, dtype=np.float64)
    ranks = _ranks(attribution.ravel(), descending=order == "morf").reshape(attribution.shape)
    counts = [int(attribution.size * p / 100) for p in percentages]
    return np.stack([ranks < count for count in counts])


def road_scores(model: nn.Module, image: torch.Tensor, target: int, removals: np.ndarray, noise: float = ROAD_NOISE,
                seed: int = 0, rng=None, score: str = "correct", memory_mb: float = MEMORY_MB) -> np.ndarray:
    """(P,) the target's score on the image with each removal (P, H, W) imputed (noisy_linear_imputation,
    noise drawn in order from rng, default numpy's generator seeded with `seed`)."""
    probe = _Probe(model, image, target, score, memory_mb)
    pixels = probe.image[0].cpu().double().numpy()
    rng = np.random.default_rng(seed) if rng is None else rng

    def build(start: int, stop: int) -> torch.Tensor:
        imputed = [noisy_linear_imputation(pixels, removed, noise, rng) for removed in removals[start:stop]]
        return torch.from_numpy(np.stack(imputed)).to(probe.image)

    return probe.scores(build, len(removals))


def road(model: nn.Module, image: torch.Tensor, target: int, attribution: np.ndarray, order: str = "morf",
         percentages: Sequence[float] = ROAD_PERCENTAGES, noise: float = ROAD_NOISE, seed: int = 0,
         score: str = "correct", memory_mb: float = MEMORY_MB) -> float:
    """ROAD, remove and debias (Rong et al., "A consistent and efficient evaluation strategy for
    attribution methods", ICML 2022): the mean over the percentages p of whether the model still
    predicts the target once p % of the pixels, most (MoRF) or least (LeRF) relevant first, are removed
    and filled by noisy linear imputation. Per image, the paper's accuracy is 1 or 0; the mean over images
    of this score is the paper's mean accuracy along the curve. MoRF: lower is better; LeRF: higher is
    better. Cost: one sparse solve and one model call per percentage, plus one."""
    removals = road_removals(_map(attribution, image), percentages, order)
    return float(road_scores(model, image, target, removals, noise, seed, score=score, memory_mb=memory_mb).mean())


# --- IROF --------------------------------------------------------------------------------------------------------

def superpixels(image: torch.Tensor) -> np.ndarray:
    """(H, W) SLIC segment labels of an image (1, C, H, W) as the model sees it, with scikit-image's
    defaults (about 100 segments), labels from 0 (as Quantus segments)."""
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise RuntimeError("IROF's superpixels need scikit-image: pip install 'nnvis[metrics]'") from None

    pixels = image.detach()[0].cpu().numpy().transpose(1, 2, 0).astype(np.float64)
    return slic(pixels, start_label=0)


def irof_curve(model: nn.Module, image: torch.Tensor, target: int, attribution: np.ndarray, fill: Fill | None = None,
               segments: np.ndarray | None = None, score: str = "probability",
               memory_mb: float = MEMORY_MB) -> np.ndarray:
    """(S + 1,) the IROF curve (Rieger & Hansen, "IROF: a low resource evaluation metric for explanation
    methods", ICLR 2020 workshop): f(x^k) / f(x) after the k superpixels of highest mean relevance are
    replaced by `fill`, k = 0..S, f the target's probability.

    segments: (H, W) labels (default superpixels(image)); fill: default the image's mean per channel."""
    probe = _Probe(model, image, target, score, memory_mb)
    segments = superpixels(probe.image) if segments is None else np.asarray(segments)
    labels, segment_of = np.unique(segments, return_inverse=True)
    segment_of = segment_of.reshape(segments.shape)
    relevance = _map(attribution, probe.image).ravel()
    means = np.bincount(segment_of.ravel(), weights=relevance) / np.bincount(segment_of.ravel())
    position = _ranks(means)[segment_of]  # (H, W): when each pixel's segment goes
    fill = probe.image.mean(dim=(2, 3), keepdim=True) if fill is None else fill
    fill = _fill_like(fill, probe.image)

    def build(start: int, stop: int) -> torch.Tensor:
        removed = position[None] < np.arange(start + 1, stop + 1)[:, None, None]
        return _replaced(probe.image, fill, removed[:, None])

    scores = np.concatenate([[probe.original], probe.scores(build, labels.size)])
    return scores / probe.original if probe.original != 0 else np.full(scores.size, np.nan)


def irof(model: nn.Module, image: torch.Tensor, target: int, attribution: np.ndarray, fill: Fill | None = None,
         segments: np.ndarray | None = None, normalise: bool = True, score: str = "probability",
         memory_mb: float = MEMORY_MB) -> float:
    """IROF, the area over the IROF curve c_k (Rieger & Hansen 2020), over the fraction of superpixels
    removed: AOC = 1 - sum_k (c_k + c_{k+1}) / 2 * 1 / S, k = 0..S-1, with c_0 = 1. Higher is better (the
    class fades as soon as the superpixels the map ranks first go). Cost: S + 1 model calls (S ~ 100).

    normalise=False gives Quantus's unnormalised area, S - sum_{k=1..S-1} (c_k + c_{k+1}) / 2 (unit steps,
    the curve starting at the first removal)."""
    curve = irof_curve(model, image, target, attribution, fill, segments, score, memory_mb)
    steps = curve.size - 1
    if not normalise:
        return float(steps - _trapezoid(curve[1:], np.arange(steps)))
    return 1.0 - _trapezoid(curve, np.arange(steps + 1) / steps)


# --- the catalog -------------------------------------------------------------------------------------------------

def _baseline(given: MapInput) -> torch.Tensor:
    """The removed pixels' value: the run's black image, or zeros (the mean, for a normalised input)."""
    return given.baseline if given.baseline is not None else torch.zeros_like(given.inputs)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _faithfulness_correlation(given: MapInput) -> float | None:
    pixels = int(np.size(given.attribution))
    return _finite(faithfulness_correlation(given.model, given.inputs, given.target, given.attribution,
                                            _baseline(given), subset_size=min(FC_SUBSET, pixels // 2),
                                            seed=given.seed, memory_mb=given.memory_mb))


def _pixel_flipping(given: MapInput) -> float | None:
    return _finite(pixel_flipping(given.model, given.inputs, given.target, given.attribution, _baseline(given),
                                  memory_mb=given.memory_mb))


def _region_perturbation(given: MapInput) -> float | None:
    return _finite(region_perturbation(given.model, given.inputs, given.target, given.attribution, _baseline(given),
                                       memory_mb=given.memory_mb))


def _road(order: str):
    def compute(given: MapInput) -> float | None:
        return _finite(road(given.model, given.inputs, given.target, given.attribution, order, seed=given.seed,
                            memory_mb=given.memory_mb))
    return compute


def _irof(given: MapInput) -> float | None:
    return _finite(irof(given.model, given.inputs, given.target, given.attribution, memory_mb=given.memory_mb))


PAPER_BHATT = "Bhatt et al., Evaluating and aggregating feature-based model explanations, IJCAI 2020"
PAPER_BACH = "Bach et al., On pixel-wise explanations for non-linear classifier decisions by LRP, PLoS ONE 2015"
PAPER_SAMEK = "Samek et al., Evaluating the visualization of what a deep neural network has learned, TNNLS 2017"
PAPER_ROAD = "Rong et al., A consistent and efficient evaluation strategy for attribution methods, ICML 2022"
PAPER_IROF = "Rieger & Hansen, IROF: a low resource evaluation metric for explanation methods, ICLR-W 2020"
ROAD_STEPS = ", ".join(f"{p}" for p in ROAD_PERCENTAGES)

METRICS: tuple[Metric, ...] = (
    Metric(name="faithfulness_correlation", title="Faithfulness corr.", category="faithfulness", better="higher",
           meaning=f"Pearson r, over {FC_RUNS} random sets of {FC_SUBSET} pixels, between the map's sum on the set "
                   "and the logit lost when the set is blacked out",
           cost=f"{FC_RUNS + 1} model calls", paper=PAPER_BHATT, compute=_faithfulness_correlation),
    Metric(name="pixel_flipping", title="Pixel flipping", category="faithfulness", better="lower",
           meaning=f"area under the class probability as the most relevant pixels are blacked out, "
                   f"1/{FLIP_STEPS} of them a step (x: share flipped, 0 to 1)",
           cost=f"{FLIP_STEPS + 1} model calls", paper=PAPER_BACH, compute=_pixel_flipping),
    Metric(name="region_perturbation", title="Region perturbation", category="faithfulness", better="higher",
           meaning=f"AOPC: mean probability lost as the {PATCH}x{PATCH} patches of most relevance are blacked out, "
                   f"up to {REGIONS} of them",
           cost=f"up to {REGIONS + 1} model calls (one per patch)", paper=PAPER_SAMEK,
           compute=_region_perturbation),
    Metric(name="road_morf", title="ROAD MoRF", category="faithfulness", better="lower",
           meaning=f"share of removal levels ({ROAD_STEPS} %, most relevant pixels first, filled by noisy linear "
                   "imputation) at which the model still predicts the class",
           cost=f"{len(ROAD_PERCENTAGES) + 1} model calls and {len(ROAD_PERCENTAGES)} sparse solves",
           paper=PAPER_ROAD, compute=_road("morf")),
    Metric(name="road_lerf", title="ROAD LeRF", category="faithfulness", better="higher",
           meaning=f"share of removal levels ({ROAD_STEPS} %, least relevant pixels first, filled by noisy linear "
                   "imputation) at which the model still predicts the class",
           cost=f"{len(ROAD_PERCENTAGES) + 1} model calls and {len(ROAD_PERCENTAGES)} sparse solves",
           paper=PAPER_ROAD, compute=_road("lerf")),
    Metric(name="irof", title="IROF", category="faithfulness", better="higher",
           meaning="area over the class probability (relative to the image's) as SLIC superpixels are replaced by "
                   "the image's mean colour, highest mean relevance first",
           cost="one model call per superpixel (about 100), plus one", paper=PAPER_IROF, compute=_irof),
)
