"""Trust metrics for attribution maps, by Quantus's six categories (see catalog)."""

from nnvis_core.metrics.catalog import CATEGORIES, CATEGORY_MEANING, MapInput, Metric, MetricError, choose

__all__ = ["CATEGORIES", "CATEGORY_MEANING", "MapInput", "Metric", "MetricError", "choose"]
