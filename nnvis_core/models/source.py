"""The contract of a model source: what `nnvis_register_model_sources` registers."""

from __future__ import annotations

from typing import Any

from nnvis_core.models.loaded import LoadedModel, ModelOptions


class ModelSource:
    """Loads models whose `--model` value starts with `name:` (or equals `name`)."""

    name: str
    description: str

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        raise NotImplementedError


def check_model_source(source: Any) -> None:
    if not isinstance(source, ModelSource):
        raise ValueError(f"{source!r} is not an instance of nnvis_core.models.ModelSource")
    if not getattr(source, "name", "") or ":" in source.name:
        raise ValueError(f"model source {source!r} needs a name without ':'")
