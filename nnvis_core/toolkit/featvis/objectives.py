"""What an optimized image should do to the network: scores to maximise, one per image of a batch.

An objective reads the captured activations (a mapping from layer name to that
layer's output, plus ``"logits"`` for the model output and ``"image"`` for the
picture in [0, 1] before transforms) and returns a score of shape (N,). Scores
combine like numbers, so a regularized objective reads like its formula::

    goal = channel("features.11", 5) - 0.05 * total_variation()
    goal = class_logit(3) + 0.5 * channel("features.16", 7)

Unit arguments (channels, classes) take one index for the whole batch or a
sequence with one index per image, which is how one optimization run renders
many units at once: ``channel("features.11", [0, 1, 2, 3])`` on a batch of 4.

Definitions follow Olah, Mordvintsev & Schubert (2017), "Feature Visualization":
neuron ``layer[x, y, z]``, channel ``mean layer[:, :, z]``, layer (DeepDream)
``mean layer**2``, class logit ``pre_softmax[k]``, class probability
``softmax[k]``, and diversity, the negative Gram-matrix similarity between the
images of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

Activations = Mapping[str, torch.Tensor]
Units = int | Sequence[int]

LOGITS = "logits"  # the model output
IMAGE = "image"  # the parameterized image in [0, 1], before transforms


class ObjectiveError(ValueError):
    """An objective that cannot be evaluated on what the network produced."""


@dataclass(frozen=True)
class Objective:
    """A score per image, to be maximised; `layers` names the activations it reads."""

    score: Callable[[Activations], torch.Tensor]
    layers: frozenset[str]
    description: str

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self.score(activations)

    def __add__(self, other: "Objective | float") -> "Objective":
        if not isinstance(other, Objective):
            constant = float(other)
            return Objective(lambda a: self(a) + constant, self.layers, f"{self.description} + {constant:g}")
        return Objective(lambda a: self(a) + other(a), self.layers | other.layers,
                         f"{self.description} + {other.description}")

    __radd__ = __add__

    def __mul__(self, weight: float) -> "Objective":
        weight = float(weight)
        return Objective(lambda a: weight * self(a), self.layers, f"{weight:g} * ({self.description})")

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> "Objective":
        return self * (1.0 / float(divisor))

    def __neg__(self) -> "Objective":
        return Objective(lambda a: -self(a), self.layers, f"-({self.description})")

    def __sub__(self, other: "Objective | float") -> "Objective":
        return self + (-other)

    def __rsub__(self, other: float) -> "Objective":
        return (-self) + other


def unit_index(units: Units, batch: int, device: torch.device) -> torch.Tensor:
    """(batch,) long tensor of units: one index repeated, or one per image."""
    if isinstance(units, int):
        return torch.full((batch,), units, dtype=torch.long, device=device)
    if len(units) != batch:
        raise ObjectiveError(f"{len(units)} units given for a batch of {batch} images; give one per image or one int")
    return torch.as_tensor(list(units), dtype=torch.long, device=device)


def read(activations: Activations, layer: str) -> torch.Tensor:
    try:
        return activations[layer]
    except KeyError:
        raise ObjectiveError(f"no activation captured for layer {layer!r}") from None


def _check_channels(name: str, index: torch.Tensor, channels: int) -> None:
    if int(index.min()) < 0 or int(index.max()) >= channels:
        raise ObjectiveError(f"{name} has {channels} channels; asked for {index.tolist()}")


def _select_channel(layer: str, output: torch.Tensor, units: Units) -> torch.Tensor:
    """The chosen channel of each image: (N, H, W) for conv outputs, (N,) for flat ones."""
    if output.dim() not in (2, 4):
        raise ObjectiveError(f"layer {layer!r} outputs shape {tuple(output.shape)}; expected (N, C) or (N, C, H, W)")
    index = unit_index(units, output.shape[0], output.device)
    _check_channels(f"layer {layer!r}", index, output.shape[1])
    rows = torch.arange(output.shape[0], device=output.device)
    return output[rows, index]


def neuron(layer: str, unit: Units, x: int | None = None, y: int | None = None) -> Objective:
    """One neuron, ``layer[x, y, z]``: channel `unit` at column x, row y (default: the centre)."""

    def score(activations: Activations) -> torch.Tensor:
        selected = _select_channel(layer, read(activations, layer), unit)
        if selected.dim() == 1:
            return selected
        height, width = selected.shape[1:]
        row = height // 2 if y is None else y
        column = width // 2 if x is None else x
        if not (0 <= row < height and 0 <= column < width):
            raise ObjectiveError(f"neuron ({column}, {row}) is outside layer {layer!r} of size {width}x{height}")
        return selected[:, row, column]

    where = "centre" if x is None and y is None else f"x={x}, y={y}"
    return Objective(score, frozenset({layer}), f"neuron {layer}[{unit}] at {where}")


def channel(layer: str, unit: Units) -> Objective:
    """One channel, ``mean layer[:, :, z]``: the spatial mean of feature map `unit`."""

    def score(activations: Activations) -> torch.Tensor:
        selected = _select_channel(layer, read(activations, layer), unit)
        return selected if selected.dim() == 1 else selected.mean(dim=(1, 2))

    return Objective(score, frozenset({layer}), f"channel {layer}[{unit}]")


def direction(layer: str, vectors: torch.Tensor, cosine_power: float = 1.0) -> Objective:
    """A direction in a layer's activation space (a concept, a dictionary atom), one (D,) vector for
    every image or one per image ((N, D)): the mean over positions of ``dot(a, v/|v|) * cos(a, v)^n``.

    The dot product alone is raised most by making every activation larger; weighing it by the
    cosine (Olah et al. 2017, "Feature Visualization", on directions) asks for activations that
    point the vector's way. The cosine counts from 0.01, so a position pointing away still has a
    gradient."""
    vectors = torch.as_tensor(vectors, dtype=torch.float32)
    if vectors.dim() not in (1, 2):
        raise ObjectiveError(f"direction: vectors of shape {tuple(vectors.shape)}; expected (D,) or (N, D)")

    def score(activations: Activations) -> torch.Tensor:
        output = read(activations, layer)
        if output.dim() not in (2, 4):
            raise ObjectiveError(f"layer {layer!r} outputs shape {tuple(output.shape)}; "
                                 "expected (N, C) or (N, C, H, W)")
        flat = output if output.dim() == 2 else output.flatten(2).transpose(1, 2)  # (N, positions, C) or (N, C)
        wanted = vectors.to(output.device, output.dtype)
        wanted = wanted.expand(output.shape[0], -1) if wanted.dim() == 1 else wanted
        if wanted.shape != (output.shape[0], output.shape[1]):
            raise ObjectiveError(f"layer {layer!r} has {output.shape[1]} channels for {output.shape[0]} images; "
                                 f"direction vectors of shape {tuple(vectors.shape)}")
        unit = wanted / wanted.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if flat.dim() == 3:
            unit = unit[:, None]
        dot = (flat * unit).sum(-1)
        cosine = dot / flat.norm(dim=-1).clamp_min(1e-12)
        weighed = dot * cosine.clamp_min(0.01) ** cosine_power
        return weighed if weighed.dim() == 1 else weighed.mean(dim=1)

    return Objective(score, frozenset({layer}), f"direction in {layer} (dot x cos^{cosine_power:g})")


def layer_activation(layer: str) -> Objective:
    """A whole layer, DeepDream style: the mean of its squared activations."""

    def score(activations: Activations) -> torch.Tensor:
        output = read(activations, layer)
        return output.pow(2).flatten(1).mean(dim=1)

    return Objective(score, frozenset({layer}), f"layer {layer} (mean square)")


def class_logit(unit: Units) -> Objective:
    """The pre-softmax score of class `unit`."""

    def score(activations: Activations) -> torch.Tensor:
        return _select_channel(LOGITS, _logits(activations), unit)

    return Objective(score, frozenset({LOGITS}), f"logit[{unit}]")


def class_probability(unit: Units) -> Objective:
    """The softmax probability of class `unit` (rises also when the other classes fall)."""

    def score(activations: Activations) -> torch.Tensor:
        return _select_channel(LOGITS, torch.softmax(_logits(activations), dim=1), unit)

    return Objective(score, frozenset({LOGITS}), f"probability[{unit}]")


def _logits(activations: Activations) -> torch.Tensor:
    output = read(activations, LOGITS)
    if output.dim() != 2:
        raise ObjectiveError(f"the model outputs shape {tuple(output.shape)}; class objectives need (N, classes)")
    return output


def gram_matrices(output: torch.Tensor) -> torch.Tensor:
    """(N, C, C) channel co-activations of a (N, C, H, W) output, averaged over positions."""
    flat = output.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[2]


def diversity(layer: str, group_size: int | None = None) -> Objective:
    """How unlike each other the images of a batch are at `layer`.

    Each image scores minus the mean cosine similarity of its Gram matrix to
    those of the other images in its group (consecutive runs of `group_size`
    images; the whole batch by default), so that adding it pushes the facets of
    one unit apart without tying different units' images together.
    """

    def score(activations: Activations) -> torch.Tensor:
        output = read(activations, layer)
        if output.dim() != 4:
            raise ObjectiveError(f"diversity needs a (N, C, H, W) layer; {layer!r} gives {tuple(output.shape)}")
        batch = output.shape[0]
        size = group_size or batch
        if batch % size:
            raise ObjectiveError(f"a batch of {batch} images does not split into groups of {size}")
        grams = torch.nn.functional.normalize(gram_matrices(output).flatten(1), dim=1)
        similarity = grams @ grams.T
        group = torch.arange(batch, device=output.device) // size
        others = (group[:, None] == group[None, :]) & ~torch.eye(batch, dtype=torch.bool, device=output.device)
        if size == 1:
            return torch.zeros(batch, device=output.device, dtype=output.dtype)
        return -(similarity * others).sum(dim=1) / (size - 1)

    return Objective(score, frozenset({layer}), f"diversity at {layer}")


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels of the image (a penalty: subtract it)."""

    def score(activations: Activations) -> torch.Tensor:
        image = read(activations, IMAGE)
        across = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(dim=1)
        down = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(dim=1)
        return across + down

    return Objective(score, frozenset({IMAGE}), "total variation")


def l1(centre: float = 0.5) -> Objective:
    """Mean absolute distance of the pixels from `centre` (a penalty: subtract it)."""

    def score(activations: Activations) -> torch.Tensor:
        return (read(activations, IMAGE) - centre).abs().flatten(1).mean(dim=1)

    return Objective(score, frozenset({IMAGE}), f"L1 from {centre:g}")


def l2(centre: float = 0.5) -> Objective:
    """Mean squared distance of the pixels from `centre` (a penalty: subtract it)."""

    def score(activations: Activations) -> torch.Tensor:
        return (read(activations, IMAGE) - centre).pow(2).flatten(1).mean(dim=1)

    return Objective(score, frozenset({IMAGE}), f"L2 from {centre:g}")
