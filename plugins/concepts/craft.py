"""CRAFT (Fel et al., CVPR 2023, "CRAFT: Concept Recursive Activation FacTorization for Explainability"):
a class's concepts from its own images, how much each matters, and where each is.

1. Crops: square crops of the class's images (unfold with a stride of 0.8 crop), each resized to the
   model's input size; A (crops, channels) is the layer's activations of each crop, averaged over
   positions. The layer must be non-negative (after a ReLU).
2. Concepts: A ~ U W, a non-negative matrix factorization; the rows of W (concepts, channels) are the
   concepts, U says how much of each a crop holds.
3. Importance: each image's activation map, written in the concepts (U per position, non-negative
   least squares onto W), has each concept scaled by a random mask in [0, 1]; the class logit on those
   maps gives each concept's total Sobol index (how much of the logit's variance the concept explains,
   alone or with others), averaged over the images. The design is quasi-Monte Carlo (A, B and, per
   concept, A with that column from B).
4. Maps: U per position of an image is where each concept is.

The total indices are estimated as the paper says, with Jansen's estimator,
S_Ti = sum_k (f(A_k) - f(C_i,k))^2 / (2 N Var f(A)), on a quasi-Monte Carlo design from Halton's
sequence, as the authors' package (craft-xai 0.0.3) does; `kind="sobol"` takes Sobol's sequence.

>>> from nnvis_plugins.concepts import craft
>>> pieces = craft.crops(images, size=32)
>>> u, w = craft.factorize(craft.crop_activations(model, pieces, "features.16", 64), concepts=8)
>>> craft.importance(model, "features.16", images, class_id=3, w=w)       # (8,) total Sobol indices
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.stats import qmc
from sklearn.decomposition import NMF, non_negative_factorization
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from nnvis_core.toolkit import bytes_per_image, chunk_size, forward_until, resolve_layer

DESIGNS = ("halton", "sobol")


def crops(images: torch.Tensor, size: int, stride: int | None = None) -> torch.Tensor:
    """(M, C, size, size): every crop of `size` pixels of each image (N, C, H, W), `stride` apart
    (default 0.8 size, as the authors' package), image by image."""
    stride = stride or max(1, int(size * 0.8))
    channels = images.shape[1]
    patches = nn.functional.unfold(images, kernel_size=size, stride=stride)  # (N, C size^2, per image)
    return patches.transpose(1, 2).reshape(-1, channels, size, size)


def pooled(values: torch.Tensor) -> torch.Tensor:
    """(B, C): a conv layer's maps (B, C, h, w) averaged over positions; vectors as they are."""
    return values.mean(dim=(2, 3)) if values.dim() == 4 else values.flatten(1)


@torch.no_grad()
def crop_activations(model: nn.Module, pieces: torch.Tensor, layer: nn.Module | str, input_size: int,
                     batch_size: int = 64) -> np.ndarray:
    """(M, C) float64 activations of each crop, resized to the model's input size (bilinear), averaged
    over positions. ValueError when the layer has negative values: the factorization needs none."""
    rows = []
    for start in range(0, len(pieces), batch_size):
        batch = nn.functional.interpolate(pieces[start:start + batch_size], size=input_size, mode="bilinear",
                                          align_corners=False)
        rows.append(pooled(forward_until(model, layer, batch)).double().cpu())
    activations = torch.cat(rows).numpy()
    if activations.min() < 0:
        raise ValueError(f"layer {layer}: negative activations ({activations.min():.3g}); CRAFT factorizes "
                         "non-negative ones: choose a layer after a ReLU")
    return activations


def factorize(activations: np.ndarray, concepts: int, seed: int = 0, steps: int = 500
              ) -> tuple[np.ndarray, np.ndarray]:
    """(U (M, r), W (r, C)) with activations ~ U W, both non-negative: scikit-learn's NMF (coordinate
    descent from an NNDSVDa start, deterministic for a seed), as the authors' package uses."""
    reducer = NMF(n_components=concepts, init="nndsvda", random_state=seed, max_iter=steps)
    with warnings.catch_warnings():  # stopped at `steps` short of its tolerance: still a non-negative factorization
        warnings.simplefilter("ignore", ConvergenceWarning)
        u = reducer.fit_transform(activations)
    return u, reducer.components_


def concept_values(activations: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(P, r) the non-negative coefficients of each activation row (P, C) in the concepts W (r, C),
    W held fixed (what scikit-learn's NMF.transform computes)."""
    with warnings.catch_warnings():  # as in factorize
        warnings.simplefilter("ignore", ConvergenceWarning)
        u, _, _ = non_negative_factorization(activations, H=w, n_components=w.shape[0], init="custom",
                                             update_H=False, max_iter=500)
    return u


def design(concepts: int, designs: int, kind: str = "halton") -> np.ndarray:
    """((concepts + 2) designs, concepts) masks in [0, 1]: A, B, then for each concept i A with column i
    from B, from an unscrambled quasi-Monte Carlo sequence of 2 x concepts dimensions."""
    if kind not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {kind!r}")
    sampler = qmc.Halton(2 * concepts, scramble=False) if kind == "halton" else qmc.Sobol(2 * concepts,
                                                                                           scramble=False)
    points = sampler.random(designs).astype(np.float32)
    a, b = points[:, :concepts], points[:, concepts:]
    replaced = np.repeat(a[None], concepts, axis=0)
    for i in range(concepts):
        replaced[i, :, i] = b[:, i]
    return np.concatenate([a, b, replaced.reshape(-1, concepts)])


def total_indices(outputs: np.ndarray, designs: int, concepts: int) -> np.ndarray:
    """(concepts,) total Sobol indices from the outputs of a `design` (same order), by Jansen's estimator:
    half the mean squared change of the output when concept i alone is redrawn, over the variance of
    the outputs of A."""
    outputs = np.asarray(outputs, dtype=np.float64)
    f_a = outputs[:designs]
    f_c = outputs[2 * designs:].reshape(concepts, designs)
    return ((f_a[None] - f_c) ** 2).mean(axis=1) / (2 * f_a.var(ddof=1))


def logits_from_layer(model: nn.Module, layer: nn.Module | str, image: torch.Tensor, replacements: torch.Tensor,
                      memory_mb: float = 128, per_image: int | None = None) -> torch.Tensor:
    """(K, classes) the model's logits with the layer's output on `image` (1, C, H, W) replaced by each of
    `replacements` (K, ...): whole copies of the image, in chunks a memory budget holds. per_image: a
    copy's memory (bytes_per_image), measured here when not given."""
    module = resolve_layer(model, layer)
    step = chunk_size(per_image or bytes_per_image(model, image), memory_mb, len(replacements))
    chunk: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, args, output: chunk["now"].to(output))
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(replacements), step):
                chunk["now"] = replacements[start:start + step]
                out.append(model(image.expand(len(chunk["now"]), *image.shape[1:])))
    finally:
        handle.remove()
    return torch.cat(out)


def importance(model: nn.Module, layer: nn.Module | str, images: torch.Tensor, class_id: int, w: np.ndarray,
               designs: int = 32, kind: str = "halton", memory_mb: float = 128) -> np.ndarray:
    """(r,) each concept's total Sobol index for the class's logit, averaged over `images` (N, C, H, W)."""
    return image_indices(model, layer, images, class_id, w, designs, kind, memory_mb).mean(axis=0)


def image_indices(model: nn.Module, layer: nn.Module | str, images: torch.Tensor, class_id: int, w: np.ndarray,
                  designs: int = 32, kind: str = "halton", memory_mb: float = 128) -> np.ndarray:
    """(N, r) each concept's total Sobol index for the class's logit, image by image: every position of an
    image's layer map is written in the concepts, each concept scaled by the same mask value everywhere,
    and the map rebuilt as (U * mask) W (the authors' reparameterisation)."""
    r = w.shape[0]
    per_image = bytes_per_image(model, images[:1])  # the same for every image: measured once
    masks = design(r, designs, kind)
    basis = torch.from_numpy(w).double()
    indices = []
    for n in range(len(images)):
        image = images[n:n + 1]
        with torch.no_grad():
            maps = forward_until(model, layer, image)  # (1, C, h, w)
        if maps.dim() != 4:
            raise ValueError(f"layer {layer}: CRAFT's importance needs a conv map (B, C, h, w), "
                             f"got {tuple(maps.shape)}")
        h, wd = maps.shape[-2:]
        u = concept_values(maps[0].permute(1, 2, 0).reshape(-1, maps.shape[1]).double().cpu().numpy(), w)
        scaled = torch.from_numpy(u)[None] * torch.from_numpy(masks).double()[:, None, :]  # (K, h w, r)
        rebuilt = (scaled @ basis).reshape(len(masks), h, wd, -1).permute(0, 3, 1, 2).to(maps.dtype)
        logits = logits_from_layer(model, layer, image, rebuilt, memory_mb, per_image)[:, class_id]
        indices.append(total_indices(logits.double().cpu().numpy(), designs, r))
    return np.stack(indices)
