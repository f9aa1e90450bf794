"""Every trust metric nnvis computes, in catalog order, and scoring one map with a chosen few."""

from __future__ import annotations

from collections.abc import Sequence

from nnvis_core.metrics import axiomatic, complexity, faithfulness, localisation, randomisation, robustness
from nnvis_core.metrics.catalog import MapInput, Metric, choose

METRICS: tuple[Metric, ...] = (*faithfulness.METRICS, *robustness.METRICS, *localisation.METRICS,
                               *complexity.METRICS, *randomisation.METRICS, *axiomatic.METRICS)
BY_NAME = {metric.name: metric for metric in METRICS}
DEFAULT = "default"


def chosen_names(spec: str) -> tuple[str, ...]:
    """The metric names a --metrics value picks (MetricError for a name that is none)."""
    return tuple(metric.name for metric in choose(spec, METRICS))


def score(names: Sequence[str], given: MapInput) -> tuple[dict[str, float], dict[str, str]]:
    """({metric: value}, {metric: why it failed}) for one map; a metric that does not apply (None) is
    left out of both, and one that fails costs only its own value."""
    values: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name in names:
        metric = BY_NAME[name]
        if metric.needs_mask and given.mask is None:
            continue
        try:
            value = metric.compute(given)
        except Exception as error:  # noqa: BLE001 - a metric that fails does not take the map down
            failures[name] = f"{type(error).__name__}: {error}".splitlines()[0]
            continue
        if value is not None:
            values[name] = float(value)
    return values, failures


def score_map(names: Sequence[str], **fields) -> tuple[dict[str, float], dict[str, str]]:
    """score() on a MapInput made of `fields`: what a run hands the toolkit as RunContext.score_map."""
    return score(names, MapInput(**fields))
