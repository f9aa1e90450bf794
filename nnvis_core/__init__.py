"""nnvis: see inside PyTorch image classifiers.

The core holds the plugin registry, model and image plumbing, and the plugin
contract. Visualization methods live in plugins; the HTML lives in nnvis_reports.
"""

from nnvis_core.artifacts import (
    Artifact,
    CategoricalMap,
    Chart,
    Gallery,
    Heatmap,
    Image,
    Result,
    Scatter,
    SemanticDictionary,
    Table,
    Text,
)
from nnvis_core.params import Param, ParamError
from nnvis_core.plugin import PLUGIN_API_VERSION, Plugin, Scope, hookimpl

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "CategoricalMap",
    "Chart",
    "Gallery",
    "Heatmap",
    "Image",
    "Result",
    "Scatter",
    "SemanticDictionary",
    "Table",
    "Text",
    "Param",
    "ParamError",
    "PLUGIN_API_VERSION",
    "Plugin",
    "Scope",
    "hookimpl",
    "__version__",
]
