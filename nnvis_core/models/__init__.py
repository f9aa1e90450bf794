"""Loading models from `--model` values, and addressing their layers."""

from nnvis_core.models.layers import LayerNotFound, find_layer, last_conv_layer
from nnvis_core.models.loaded import LoadedModel, ModelLoadError, ModelOptions, Preprocess
from nnvis_core.models.source import ModelSource
from nnvis_core.models.sources import load_model

__all__ = [
    "LayerNotFound",
    "LoadedModel",
    "ModelLoadError",
    "ModelOptions",
    "ModelSource",
    "Preprocess",
    "find_layer",
    "last_conv_layer",
    "load_model",
]
