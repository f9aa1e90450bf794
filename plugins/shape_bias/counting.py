"""Shape bias from decisions on cue-conflict images (Geirhos et al., ICLR 2019).

Each image has a shape class and a texture class; the model's decision follows
the shape, the texture, or neither. The shape bias is the share of shape
decisions among the decisions that follow either cue: shape / (shape + texture).
Images whose two cues are the same class say nothing about the choice and are
left out, as in the paper. Per category, the images are grouped by their shape
class (the paper's per-category figure).

>>> overall, per_category = count_cues([Trial("a.png", "cat", "dog", "cat"), Trial("b.png", "cat", "car", "car")])
>>> overall.shape_bias
0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Trial:
    """One cue-conflict image and the class the model chose for it."""

    file: str
    shape: str
    texture: str
    decision: str

    @property
    def cue(self) -> str:
        """'shape', 'texture' or 'neither': which cue the decision follows."""
        if self.decision == self.shape:
            return "shape"
        return "texture" if self.decision == self.texture else "neither"


@dataclass
class CueCounts:
    shape: int = 0
    texture: int = 0
    neither: int = 0

    def add(self, trial: Trial) -> None:
        setattr(self, trial.cue, getattr(self, trial.cue) + 1)

    @property
    def images(self) -> int:
        return self.shape + self.texture + self.neither

    @property
    def shape_bias(self) -> float | None:
        """shape / (shape + texture), or None when no decision follows either cue."""
        cued = self.shape + self.texture
        return self.shape / cued if cued else None

    @property
    def cue_share(self) -> float | None:
        """The share of decisions that follow one of the two cues (the paper's 'correct' decisions)."""
        return (self.shape + self.texture) / self.images if self.images else None


def conflicting(trials: Iterable[Trial]) -> list[Trial]:
    """The trials whose shape and texture are different classes."""
    return [trial for trial in trials if trial.shape != trial.texture]


def count_cues(trials: Iterable[Trial]) -> tuple[CueCounts, dict[str, CueCounts]]:
    """Counts over the conflicting trials: overall, and per shape class (sorted by name)."""
    overall, per_category = CueCounts(), {}
    for trial in conflicting(trials):
        overall.add(trial)
        per_category.setdefault(trial.shape, CueCounts()).add(trial)
    return overall, dict(sorted(per_category.items()))
