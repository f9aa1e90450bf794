"""The `zoo:` model source: `--model zoo:NAME` loads NAME from a folder registry.

A registry is a folder (the NNVIS_ZOO environment variable, by default
~/.nnvis-zoo) with one folder per model:

    NAME/model.json    {"architecture": "demo" or "torchvision:NAME",
                        "resize": 64, "crop": 64, "mean": [...], "std": [...]}
    NAME/weights.pt    a state_dict, loaded with weights_only=True (no code runs)
    NAME/labels.txt    class names, one per line

A company would point this at its own store; nothing in nnvis changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from nnvis_core import hookimpl
from nnvis_core.models import LoadedModel, ModelLoadError, ModelOptions, ModelSource, Preprocess


def zoo_root() -> Path:
    return Path(os.environ.get("NNVIS_ZOO", "~/.nnvis-zoo")).expanduser()


def build_architecture(architecture: str, classes: int) -> torch.nn.Module:
    if architecture == "demo":
        from nnvis_core.demo import DemoNet

        return DemoNet(classes)
    if architecture.startswith("torchvision:"):
        from nnvis_core.torchvision_compat import torchvision_models

        return torchvision_models().get_model(architecture.split(":", 1)[1], weights=None, num_classes=classes)
    raise ModelLoadError(f"zoo: unknown architecture {architecture!r} (use demo or torchvision:NAME)")


class ZooSource(ModelSource):
    name = "zoo"
    description = "models from a folder registry ($NNVIS_ZOO/NAME: model.json, weights.pt, labels.txt)"

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        root = zoo_root()
        folder = root / target
        if not target or not (folder / "model.json").is_file():
            available = sorted(p.name for p in root.glob("*") if (p / "model.json").is_file())
            raise ModelLoadError(f"zoo: no model {target!r} in {root} (available: {', '.join(available) or 'none'})")
        try:
            spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
            labels = [line.strip() for line in (folder / "labels.txt").read_text(encoding="utf-8").splitlines()
                      if line.strip()]
            state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError) as error:
            raise ModelLoadError(f"zoo: cannot read model {target!r} from {folder}: {error}") from None
        module = build_architecture(spec["architecture"], len(labels))
        try:
            module.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise ModelLoadError(f"zoo: weights of {target!r} do not fit {spec['architecture']}: {first}") from None
        preprocess = Preprocess(spec.get("resize"), spec.get("crop"), tuple(spec["mean"]), tuple(spec["std"]))
        return LoadedModel(module, target, str(folder / "weights.pt"), labels, preprocess, "zoo")


@hookimpl
def nnvis_register_model_sources(register):
    register(ZooSource())
