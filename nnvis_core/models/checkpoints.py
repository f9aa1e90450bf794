"""Reading weights files safely: weights_only=True unless the user trusts the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nnvis_core.models.loaded import ModelLoadError


def load_checkpoint(path: Path, trusted: bool) -> Any:
    """torch.load with weights_only=True; pickled objects only when the user trusts the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several types here
        message = str(error)
    if trusted:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001
            raise ModelLoadError(f"{path}: cannot load checkpoint ({first_line(error)})") from None
    found = next((line.strip() for line in message.splitlines() if "Unsupported global" in line), "")
    if found:
        name = found.split("GLOBAL", 1)[-1].split()[0] if "GLOBAL" in found else "?"
        raise ModelLoadError(
            f"{path}: holds pickled Python objects ({name}), not plain weights; loading it could run "
            f"arbitrary code. Pass --trust-checkpoint only if you trust where it came from"
        )
    detail = next((line.strip() for line in message.splitlines() if "Unsupported" in line), "")
    raise ModelLoadError(
        f"{path}: not a PyTorch weights file that loads safely ({detail or message.splitlines()[0][:120]})"
    )


def unwrap_state_dict(path: Path, obj: Any) -> dict:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: expected a state_dict of tensors, found {type(obj).__name__}")
    return obj


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def apply_state_dict(module: torch.nn.Module, state: dict, what: str, arch: str) -> None:
    """load_state_dict with a one-line error for a checkpoint of another architecture."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3])[:300]
        raise ModelLoadError(f"{what} does not match architecture {arch}: {detail}") from None


def num_classes_of(state: dict) -> int | None:
    """Output size read off the last 2-D weight (the final linear layer)."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
    return int(matrices[-1].shape[0]) if matrices else None
