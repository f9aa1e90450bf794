"""What a trust metric is, the six categories Quantus groups them in, and choosing them by name.

Every metric scores one map of one image (the map as the card shows it) and
returns a float, or None where it does not apply (a localisation metric on an
image without a mask, completeness for a method with no baseline). The core
computes the chosen metrics for every attribution plugin, built-in or not, so
a metric module knows nothing of plugins: what it may need of the method is
in MapInput (`explain`, which recomputes the method's map for another input,
class or model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

CATEGORIES = ("faithfulness", "robustness", "localisation", "complexity", "randomisation", "axiomatic")
CATEGORY_MEANING = {
    "faithfulness": "does the model's score move as the map says it should when pixels are removed",
    "robustness": "does the map stay put when the input moves a little and the prediction does not",
    "localisation": "does the map fall on the object (needs --masks)",
    "complexity": "how few pixels carry the map: concise maps are easier to read",
    "randomisation": "does the map change when the model or the class does",
    "axiomatic": "does the map keep a property the method promises (completeness, invariance)",
}


# explain(inputs (1, C, H, W), target, model) -> the method's map (H, W) for that input, class and model,
# as the card would show it: what robustness, randomisation and axiomatic metrics recompute.
Explain = Callable[[torch.Tensor, int, nn.Module], np.ndarray]


@dataclass
class MapInput:
    """One map of one image and what a metric may need to score it."""

    model: nn.Module
    inputs: torch.Tensor  # (1, C, H, W), preprocessed as the model expects
    target: int
    attribution: np.ndarray  # (H, W) float64, the map as shown (signed or not)
    explain: Explain
    mask: np.ndarray | None = None  # (H, W) bool, the object, when --masks gave one
    baseline: torch.Tensor | None = None  # (1, C, H, W): a black image, preprocessed (what removed pixels become)
    raw: np.ndarray | None = None  # (C, H, W) the attribution before reduction, for a method that promises completeness
    # What that method's total is measured from: a (1, C, H, W) baseline input (its total should be
    # f(x) - f(baseline)), "score" (the total should be f(x) itself: LRP's conservation), or None (no promise).
    completes_from: torch.Tensor | str | None = None
    seed: int = 0
    batch_size: int = 16
    memory_mb: float = 128.0
    classes: int | None = None  # how many classes the model has, when the run knows (saves counting them)
    # What one metric computed that another of the same map reuses (max- and average sensitivity reduce
    # the same draws), so that choosing both costs the recomputations once.
    shared: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Metric:
    name: str  # the key in report.json and the leaderboard
    title: str  # the column's label
    category: str  # one of CATEGORIES
    better: str  # "higher" or "lower"
    meaning: str  # one line for the column's explanation
    cost: str  # model calls per image, in words
    paper: str
    compute: Callable[[MapInput], float | None] = field(repr=False)
    needs_mask: bool = False
    cheap: bool = False  # in the default set: no more model calls than the map itself

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"metric {self.name}: category {self.category!r} is not one of {', '.join(CATEGORIES)}")
        if self.better not in ("higher", "lower"):
            raise ValueError(f"metric {self.name}: better must be higher or lower, not {self.better!r}")


class MetricError(ValueError):
    """A --metrics choice that names no metric, category or preset."""


def choose(spec: str, metrics: Sequence[Metric]) -> list[Metric]:
    """The metrics a --metrics value names: comma-separated metric names, category names, `default`
    (the cheap ones), `all`, or `none`; in catalog order, each once."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    by_name = {metric.name: metric for metric in metrics}
    chosen: set[str] = set()
    for name in names:
        if name == "none":
            continue
        if name == "all":
            chosen |= set(by_name)
        elif name == "default":
            chosen |= {m.name for m in metrics if m.cheap}
        elif name in CATEGORIES:
            chosen |= {m.name for m in metrics if m.category == name}
        elif name in by_name:
            chosen.add(name)
        else:
            raise MetricError(f"--metrics: {name!r} is not a metric, a category ({', '.join(CATEGORIES)}), "
                              f"default, all or none; metrics: {', '.join(by_name)}")
    return [metric for metric in metrics if metric.name in chosen]
