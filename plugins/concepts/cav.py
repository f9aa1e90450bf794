"""Concept activation vectors and TCAV scores (Kim et al., ICML 2018, "Interpretability Beyond Feature
Attribution: Quantitative Testing with Concept Activation Vectors").

A concept activation vector (CAV) v_C is the normal of a linear classifier that separates a layer's
activations of the concept's images from those of random images, pointing toward the concept. The
conceptual sensitivity of class k to C on image x is the directional derivative

    S_C,k(x) = grad_{f_l(x)} h_k(f_l(x)) . v_C

(h_k: the class's logit as a function of the layer's output f_l), and the TCAV score of C for k is the
share of k's images with S > 0. One CAV can come out of any random set by chance, so the paper trains
CAVs against several random sets and calls C significant for k when their scores differ from those of
random-against-random CAVs: a two-sided t-test, Bonferroni-corrected over the tests made.

>>> from nnvis_plugins.concepts import cav
>>> acts = cav.activations(model, images, "layer3")              # (N, D)
>>> v = cav.train_cav(acts[:20], acts[20:])                       # unit vector, toward the first set
>>> cav.tcav_score(cav.layer_gradients(model, class_images, "layer3", 7), v)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from nnvis_core.toolkit import forward_until, resolve_layer

L2 = 0.01  # the classifier's L2 penalty (sklearn SGDClassifier's default alpha, which the paper's code used)


@torch.no_grad()
def activations(model: nn.Module, inputs: torch.Tensor, layer: nn.Module | str, batch_size: int = 32) -> torch.Tensor:
    """(N, D) the layer's output for each image, flattened (convolution maps, tokens or channels-last
    alike: a CAV is a direction in the whole output, as in the paper and Captum), float64 on the CPU."""
    chunks = [forward_until(model, layer, inputs[start:start + batch_size]).flatten(1).double().cpu()
              for start in range(0, len(inputs), batch_size)]
    return torch.cat(chunks)


def layer_gradients(model: nn.Module, inputs: torch.Tensor, layer: nn.Module | str, target: int,
                    batch_size: int = 32) -> torch.Tensor:
    """(N, D) d logit_target / d (layer output) for each image, flattened, float64 on the CPU."""
    module = resolve_layer(model, layer)
    held: dict[str, torch.Tensor] = {}

    def keep(module, args, output):
        output.retain_grad()
        held["output"] = output

    chunks = []
    handle = module.register_forward_hook(keep)
    try:
        for start in range(0, len(inputs), batch_size):
            logits = model(inputs[start:start + batch_size])
            (gradient,) = torch.autograd.grad(logits[:, target].sum(), held.pop("output"))
            chunks.append(gradient.flatten(1).double().cpu())
    finally:
        handle.remove()
    return torch.cat(chunks)


@dataclass(frozen=True)
class CAV:
    vector: torch.Tensor  # (D,) unit length, pointing toward the concept
    accuracy: float  # of the classifier on the activations it was trained on


def train_cav(concept: torch.Tensor, random: torch.Tensor, l2: float = L2, steps: int = 200) -> CAV:
    """The CAV separating `concept` (N1, D) from `random` (N2, D) activations: L2-regularised logistic
    regression (loss mean + l2 / 2 ||w||^2), fitted by full-batch L-BFGS in float64, so the same sets give
    the same CAV on every machine (the paper's SGD does not). Features are centred and scaled by the
    pooled standard deviation for the fit; the vector is mapped back to the layer's own coordinates."""
    x = torch.cat([concept, random]).double()
    y = torch.cat([torch.ones(len(concept)), torch.zeros(len(random))]).double()
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-12)
    z = (x - mean) / scale
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 / 2 * (w * w).sum()
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        accuracy = float((((z @ w + b) > 0).double() == y).double().mean())
        direction = w / scale  # the same hyperplane in the layer's coordinates: w . (x - mean) / scale
        norm = direction.norm()
    if norm == 0:
        raise ValueError("the concept's activations cannot be told from the random ones at this layer")
    return CAV((direction / norm).detach(), accuracy)


def sensitivities(gradients: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """(N,) S_C,k(x) for each image: its layer gradient (N, D) along the CAV (D,)."""
    return gradients @ vector.to(gradients)


def tcav_score(gradients: torch.Tensor, cav: CAV | torch.Tensor) -> float:
    """The share of images (rows of `gradients`) whose class logit grows along the CAV."""
    vector = cav.vector if isinstance(cav, CAV) else cav
    return float((sensitivities(gradients, vector) > 0).double().mean())


@dataclass(frozen=True)
class Significance:
    p_value: float
    significant: bool  # p below alpha / tests (Bonferroni)
    threshold: float  # alpha / tests


def significance(concept_scores: np.ndarray, random_scores: np.ndarray, tests: int = 1,
                 alpha: float = 0.05) -> Significance:
    """Two-sided t-test of a concept's TCAV scores, one per random set, against random-against-random
    scores (Student's, with pooled variance, as the paper's code and Captum's tutorial run it);
    Bonferroni over `tests` tests. Two constant lists give p = 1 when equal, 0 when not."""
    concept_scores, random_scores = np.asarray(concept_scores, float), np.asarray(random_scores, float)
    if len(concept_scores) < 2 or len(random_scores) < 2:
        raise ValueError("the t-test needs at least two random sets")
    with warnings.catch_warnings():  # near-constant lists: scipy warns of precision, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.ttest_ind(concept_scores, random_scores).pvalue)
    if np.isnan(p_value):  # both constant: equal (p = 1) or not (p = 0)
        p_value = 1.0 if concept_scores[0] == random_scores[0] else 0.0
    threshold = alpha / max(1, tests)
    return Significance(p_value, p_value < threshold, threshold)
