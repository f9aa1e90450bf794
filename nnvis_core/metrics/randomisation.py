"""Randomisation: does the map change when the model or the class does?

A map that survives the randomisation of the layers that make the decision
(Adebayo et al. 2018), or that looks the same whichever class it explains
(Sixt et al. 2020), does not explain that decision. Both metrics report the
similarity of the two maps: lower is better.

The pieces the sanity-check plugin shares (rank, spearman, WEIGHTED,
weighted_layers, reinitialise) live here because the core cannot import a plugin.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from scipy.stats import rankdata
from torch import nn

from nnvis_core.metrics.catalog import Explain, Metric

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.MultiheadAttention)


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks from 1 of the flattened `values`, ties sharing their average rank."""
    return rankdata(np.asarray(values).ravel(), method="average").astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: Pearson's correlation of the ranks; 0 when either map is constant
    (no ranking to compare; scipy and Quantus give NaN there)."""
    ra, rb = rank(a), rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7, flatten: bool = False) -> float:
    """Mean structural similarity (Wang et al. 2004) of two maps.

    SSIM = (2 mu_a mu_b + C1)(2 cov_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2)) in every
    `window`-wide square (uniform weights, sample covariance), averaged over the positions whose window
    lies inside the map; C1 = (0.01 R)^2, C2 = (0.03 R)^2 with R the range of both maps together. 1 for
    identical maps. flatten=True compares the maps as flat vectors with a 1-D window (what Quantus's
    similarity_func receives).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if flatten:
        a, b = a.ravel(), b.ravel()
    span = max(a.max(), b.max()) - min(a.min(), b.min())
    if span == 0:
        return 1.0  # both maps the same constant
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    unbiased = window ** a.ndim / (window ** a.ndim - 1)

    def local_mean(values: np.ndarray) -> np.ndarray:
        return uniform_filter(values, size=window)

    mean_a, mean_b = local_mean(a), local_mean(b)
    var_a = unbiased * (local_mean(a * a) - mean_a * mean_a)
    var_b = unbiased * (local_mean(b * b) - mean_b * mean_b)
    cov = unbiased * (local_mean(a * b) - mean_a * mean_b)
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2))
    inside = window // 2
    return float(index[(slice(inside, -inside or None),) * index.ndim].mean())


SIMILARITIES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "spearman": spearman,
    "ssim": ssim,
    "ssim_flat": lambda a, b: ssim(a, b, flatten=True),  # Quantus: SSIM of the maps as flat vectors
}


def similarity(a: np.ndarray, b: np.ndarray, name: str, absolute: bool = False, normalise: bool = False) -> float:
    """SIMILARITIES[name] of two maps, each first made absolute (`absolute`) and/or divided by its largest
    absolute value (`normalise`, Quantus's normalise_by_max)."""
    if name not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, not {name!r}")
    return SIMILARITIES[name](_prepared(a, absolute, normalise), _prepared(b, absolute, normalise))


def _prepared(values: np.ndarray, absolute: bool, normalise: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    top = np.abs(values).max()
    if normalise and top > 0:
        values = values / top
    return np.abs(values) if absolute else values


def weighted_layers(model: nn.Module) -> list[str]:
    """Conv, linear and attention layers in definition order (randomised last to first).

    nn.MultiheadAttention keeps its query/key/value projection in its own
    parameters, not in a Linear: without it a torchvision ViT's attention
    would stay trained at every level.
    """
    return [name for name, m in model.named_modules() if isinstance(m, WEIGHTED) and name]


def resettable_layers(model: nn.Module) -> list[str]:
    """Every submodule with reset_parameters, in definition order: Quantus's layers (normalisation layers
    included, which reset to weight 1, bias 0 and fresh running statistics)."""
    return [name for name, m in model.named_modules() if hasattr(m, "reset_parameters") and name]


LAYER_CHOICES = {"weighted": weighted_layers, "resettable": resettable_layers}


def reinitialise(module: nn.Module) -> None:
    """Draw the module's parameters afresh with PyTorch's default initialisation."""
    if isinstance(module, nn.MultiheadAttention):
        module._reset_parameters()  # the in-projection; its out_proj is a Linear of its own level
    elif hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:  # pragma: no cover - every conv/linear has it
        for p in module.parameters(recurse=False):
            nn.init.normal_(p, std=0.01)


def randomised_copy(model: nn.Module, *, layers: str = "weighted", seed: int = 0,
                    seed_each_layer: bool = False) -> nn.Module:
    """A deep copy of `model` whose layers are all re-initialised, one after another from the top
    (the classifier) down: the last step of Adebayo et al.'s cascade. The model itself is not touched.

    layers: "weighted" (conv, linear, attention, as the sanity check) or "resettable" (Quantus).
    The draws come from torch's generator seeded with `seed` once, in cascade order;
    seed_each_layer=True seeds it with seed + 1 before every layer instead (Quantus's draws).
    Torch's random state is restored afterwards.
    """
    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers must be one of {', '.join(LAYER_CHOICES)}, not {layers!r}")
    work = copy.deepcopy(model)
    modules = dict(work.named_modules())
    names = LAYER_CHOICES[layers](work)[::-1]
    if not names:
        raise ValueError(f"{type(model).__name__} has no layer to randomise")
    with torch.random.fork_rng(devices=_cuda_devices(work)):
        torch.manual_seed(seed)
        for name in names:
            if seed_each_layer:
                torch.manual_seed(seed + 1)
            reinitialise(modules[name])
    return work


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def model_parameter_randomisation(model: nn.Module, inputs: torch.Tensor, target: int, explain: Explain,
                                  attribution: np.ndarray, *, similarity_name: str = "spearman",
                                  absolute: bool = True, normalise: bool = False, layers: str = "weighted",
                                  seed: int = 0, seed_each_layer: bool = False) -> float:
    """Model parameter randomisation test (Adebayo et al., NeurIPS 2018), its last level:
    sim(e(x; trained), e(x; every layer re-initialised from the top down)).

    Low similarity (Spearman rank correlation of the absolute maps by default,
    as the paper's main figures and nnvis's sanity check) means the map depends
    on the weights that make the decision: lower is better. A map that stays
    the same is one the model's training does not explain. One map
    recomputation on a randomised deep copy; the model is not touched.
    similarity_name: spearman (the paper and Quantus's default), ssim, ssim_flat;
    absolute=False compares signed maps (the paper reports both); normalise divides
    each map by its largest absolute value (Quantus's default; no effect on Spearman).
    layers, seed, seed_each_layer: see randomised_copy.
    """
    randomised = randomised_copy(model, layers=layers, seed=seed, seed_each_layer=seed_each_layer)
    random_map = explain(inputs, target, randomised)
    return similarity(attribution, random_map, similarity_name, absolute, normalise)


@torch.no_grad()
def random_other_class(model: nn.Module, inputs: torch.Tensor, target: int, seed: int = 0,
                       classes: int | None = None) -> int | None:
    """A class other than `target`, uniformly at random from `seed`: the same draw Quantus's RandomLogit
    makes for one image (numpy's legacy generator, index into the classes without the target).
    classes: how many the model has (a forward pass counts them when not given). None for a model with
    a single output."""
    classes = classes if classes is not None else model(inputs).shape[1]
    if classes < 2:
        return None
    index = int(np.random.RandomState(seed).randint(0, classes - 1))
    return index if index < target else index + 1


def random_logit(model: nn.Module, inputs: torch.Tensor, target: int, explain: Explain, attribution: np.ndarray,
                 *, similarity_name: str = "ssim", absolute: bool = False, normalise: bool = False, seed: int = 0,
                 other: int | None = None, classes: int | None = None) -> float | None:
    """Random logit test (Sixt et al., ICML 2020): sim(e(x; target), e(x; c)) for a random class c != target.

    A map that looks the same whichever class it is asked to explain is not
    about the class: lower similarity is better. SSIM by default, as the paper
    and Quantus. One map recomputation (and one forward pass to count the
    classes, unless `classes` gives their number). other: the class to use instead of the seeded draw. normalise:
    each map divided by its largest absolute value (Quantus's default);
    similarity_name="ssim_flat" compares flattened maps (what Quantus does).
    None for a model with a single output.
    """
    if other is None:
        other = random_other_class(model, inputs, target, seed, classes)
    if other is None:
        return None
    other_map = explain(inputs, other, model)
    return similarity(attribution, other_map, similarity_name, absolute, normalise)


METRICS: tuple[Metric, ...] = (
    Metric(name="mprt", title="Model randomisation", category="randomisation", better="lower",
           meaning="rank correlation of |map| with the map of the model with every layer re-initialised",
           cost="1 map recomputation on a randomised copy of the model",
           paper="Adebayo et al. 2018, Sanity Checks for Saliency Maps (NeurIPS)",
           compute=lambda item: model_parameter_randomisation(item.model, item.inputs, item.target, item.explain,
                                                              item.attribution, seed=item.seed)),
    Metric(name="random_logit", title="Random logit", category="randomisation", better="lower",
           meaning="structural similarity (SSIM) of the map with the map of a random other class",
           cost="1 map recomputation",
           paper="Sixt et al. 2020, When Explanations Lie: Why Many Modified BP Attributions Fail (ICML)",
           compute=lambda item: random_logit(item.model, item.inputs, item.target, item.explain,
                                             item.attribution, seed=item.seed, classes=item.classes)),
)
