"""Which class an attribution explains: predicted (default), true, an index or a name."""

from __future__ import annotations

import difflib
from typing import Sequence


class TargetError(ValueError):
    """A target that names no class of the model, or needs a label the image lacks."""


SPECIAL = ("predicted", "true")


def check_target(spec: str, class_names: Sequence[str]) -> None:
    """Fail early (before any image is processed) for a target the model cannot have."""
    if spec in SPECIAL:
        return
    class_index(spec, class_names)


def class_index(spec: str | int, class_names: Sequence[str]) -> int:
    """Index of a class given as an index or a name (case-insensitive)."""
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(class_names):
            raise TargetError(f"target class {index} is out of range: the model has {len(class_names)} classes")
        return index
    lowered = [name.lower() for name in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    near = difflib.get_close_matches(text.lower(), lowered, n=4)
    hint = f"; did you mean {', '.join(class_names[lowered.index(n)] for n in near)}?" if near else ""
    raise TargetError(f"target {text!r} is not a class of this model (use predicted, true, an index or a name){hint}")


def resolve_target(spec: str, predicted: int, true_class: int | None, class_names: Sequence[str]) -> int:
    if spec == "predicted":
        return predicted
    if spec == "true":
        if true_class is None:
            raise TargetError("target 'true' needs a folder label that matches a class name")
        return true_class
    return class_index(spec, class_names)
