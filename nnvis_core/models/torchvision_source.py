"""`--model torchvision:NAME` with `--weights DEFAULT|NAME|none|PATH`.

Pretrained weights come through torchvision's own URLs and torch.hub's cache
(`$TORCH_HOME/hub/checkpoints`). A cached file is used without touching the
network; a download is tried only when the user asked for pretrained weights
and none are cached, and failing that gives one line naming the cache path and
the `--weights PATH` alternative.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch

from nnvis_core import torchvision_compat as tv
from nnvis_core.models.checkpoints import apply_state_dict, load_checkpoint, num_classes_of, unwrap_state_dict
from nnvis_core.models.loaded import LoadedModel, ModelLoadError, ModelOptions, Preprocess


def classification_model_names() -> list[str]:
    models = tv.torchvision_models()
    return sorted(models.list_models(module=models))


def build_architecture(name: str, num_classes: int | None = None) -> torch.nn.Module:
    """A randomly initialised torchvision classifier by name."""
    names = classification_model_names()
    if name not in names:
        near = difflib.get_close_matches(name, names, n=4)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ModelLoadError(f"torchvision has no classification model {name!r}{hint}")
    kwargs: dict[str, Any] = {"weights": None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name.startswith(("inception", "googlenet")):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    return tv.torchvision_models().get_model(name, **kwargs)


def weights_enum(name: str):
    return tv.torchvision_models().get_model_weights(name)


def cache_path(url: str) -> Path:
    """Where torch.hub keeps (or would keep) the file behind `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_state_dict(url: str) -> dict:
    """Load weights from the hub cache, downloading them only when absent."""
    cached = cache_path(url)
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True)
    except (URLError, OSError, ConnectionError) as error:
        reason = getattr(error, "reason", None) or error
        raise ModelLoadError(
            f"cannot download weights from {url} ({reason}); no cached copy at {cached}. "
            f"Copy the file there, or pass --weights PATH to a local weights file"
        ) from None


def preprocess_from(weights) -> Preprocess:
    """Resize, crop and normalization read off the weights' own transforms."""
    transforms = weights.transforms()

    def first(value):
        return value[0] if isinstance(value, (list, tuple)) else value

    return Preprocess(
        resize=first(getattr(transforms, "resize_size", None)),
        crop=first(getattr(transforms, "crop_size", None)),
        mean=tuple(getattr(transforms, "mean", (0.485, 0.456, 0.406))),
        std=tuple(getattr(transforms, "std", (0.229, 0.224, 0.225))),
    )


def _choose_weights(name: str, spec: str):
    enum = weights_enum(name)
    if spec.upper() == "DEFAULT":
        return enum.DEFAULT
    member = spec.split(".")[-1]
    try:
        return enum[member]
    except KeyError:
        allowed = ", ".join(["DEFAULT", "none", *enum.__members__, "PATH"])
        raise ModelLoadError(f"--weights {spec!r} is not a weights name of {name}: use one of {allowed}") from None


def load_torchvision(name: str, options: ModelOptions) -> LoadedModel:
    spec = options.weights or "DEFAULT"
    if name not in classification_model_names():
        build_architecture(name)  # raises the error with near matches
    default = weights_enum(name).DEFAULT
    categories = list(default.meta.get("categories") or [])
    if spec.lower() == "none":
        torch.manual_seed(options.seed)
        module = build_architecture(name)
        return LoadedModel(module, f"torchvision:{name}", "none (random init)", categories,
                           preprocess_from(default), "torchvision")
    path = Path(spec).expanduser()
    if path.is_file():
        state = unwrap_state_dict(path, load_checkpoint(path, trusted=False))
        classes = num_classes_of(state)
        module = build_architecture(name, classes)
        apply_state_dict(module, state, str(path), f"torchvision:{name}")
        names = categories if classes == len(categories) else [f"class {i}" for i in range(classes or 0)]
        return LoadedModel(module, f"torchvision:{name}", str(path), names, preprocess_from(default), "torchvision")
    if os.sep in spec or spec.endswith((".pt", ".pth")):
        raise ModelLoadError(f"{spec}: weights file not found")
    weights = _choose_weights(name, spec)
    module = build_architecture(name)
    apply_state_dict(module, fetch_state_dict(weights.url), weights.url, f"torchvision:{name}")
    return LoadedModel(module, f"torchvision:{name}", str(weights), list(weights.meta["categories"]),
                       preprocess_from(weights), "torchvision")
