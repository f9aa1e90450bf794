"""nnvis: see inside PyTorch image classifiers.

The core holds the plugin contract (`contract/`), the run's parts (`run/`), where
image-scope calls run (`engines/`), model and image plumbing and the method toolkit.
Visualization methods live in plugins; the HTML lives in nnvis_reports. Modules that
moved into these rooms keep their old import paths (nnvis_core.moved).
"""

from nnvis_core.contract.artifacts import (
    Artifact,
    BarChart,
    CategoricalMap,
    Chart,
    Concept,
    ConceptAtlas,
    Gallery,
    Heatmap,
    Image,
    Result,
    Scatter,
    SemanticDictionary,
    Table,
    Text,
)
from nnvis_core.contract.params import Param, ParamError
from nnvis_core.contract.plugin import PLUGIN_API_VERSION, Plugin, Scope, hookimpl
from nnvis_core.moved import MOVED_MODULES, keep_old_paths

keep_old_paths(MOVED_MODULES)

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "BarChart",
    "CategoricalMap",
    "Chart",
    "Concept",
    "ConceptAtlas",
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
