"""`--model hf:NAME_OR_DIR`: a Hugging Face `transformers` image classifier.

NAME_OR_DIR is a folder written by `save_pretrained` (read without any network
request) or a hub id such as `google/vit-base-patch16-224` (downloaded into the
Hugging Face cache on first use: naming a hub model is asking for its download).
The model comes from `AutoModelForImageClassification`, class names from the
config's `id2label`, and the preprocessing from the image processor's
`preprocessor_config.json`, read as data (nnvis resizes, crops and normalizes
itself). `--weights none` builds a seeded random model of the same config.
Remote code is never run. The forward returns an output object; nnvis reads its
`.logits` (nnvis_core.models.logits).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from nnvis_core.hook_marker import hookimpl
from nnvis_core.models.layers import error_line
from nnvis_core.models.loaded import LoadedModel, ModelLoadError, ModelOptions, Preprocess
from nnvis_core.models.source import ModelSource

PROCESSOR_FILE = "preprocessor_config.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # transformers' defaults too


def import_transformers() -> ModuleType:
    """transformers, imported after nnvis's torchvision import (it imports torchvision itself)."""
    from nnvis_core import torchvision_compat

    torchvision_compat.import_torchvision()
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise ModelLoadError('--model hf:NAME needs transformers, which is not installed: '
                             'pip install "nnvis[hf]"') from None


def preprocess_from(config: dict[str, Any]) -> tuple[Preprocess, list[str]]:
    """nnvis's preprocessing from an image processor's config, and notes on what it cannot copy.

    nnvis resizes the shorter side and crops the centre square. A processor that resizes to
    height x width (ViT's) is read as a resize and crop of that side (the same for square images;
    the note says so); one that resizes the shorter side and centre-crops (ResNet's, ConvNeXt's
    crop_pct) maps exactly."""
    size, crop_size = config.get("size") or {}, config.get("crop_size") or {}
    notes = []
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if "shortest_edge" in size:
        side = int(size["shortest_edge"])
        if config.get("do_center_crop") and crop_size:
            resize, crop = side, _square(crop_size, notes)
        elif "crop_pct" in config and side < 384:  # ConvNeXt: resize side / crop_pct, crop side
            resize, crop = int(side / float(config["crop_pct"])), side
        else:
            resize = crop = side
    elif "height" in size and "width" in size:
        resize = crop = _square(size, notes)
        notes.append(f"the image processor resizes to {size['height']}x{size['width']} whatever the aspect; "
                     "nnvis resizes the shorter side and crops the centre")
    else:
        resize, crop = 256, 224
        notes.append(f"the image processor's size {size!r} is not understood; nnvis uses 256 then 224")
    if config.get("do_normalize", True):
        mean = tuple(float(v) for v in config.get("image_mean") or IMAGENET_MEAN)
        std = tuple(float(v) for v in config.get("image_std") or IMAGENET_STD)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return Preprocess(resize, crop, mean, std), notes


def _square(size: dict[str, Any], notes: list[str]) -> int:
    height, width = int(size["height"]), int(size["width"])
    if height != width:
        notes.append(f"the model reads {height}x{width} images; nnvis crops a {min(height, width)} px square")
    return min(height, width)


def class_names(config: Any) -> list[str]:
    """The config's id2label in class order."""
    labels = getattr(config, "id2label", None) or {}
    count = int(getattr(config, "num_labels", len(labels)))
    return [str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(count)]


def _processor_config(where: str, local: bool) -> dict[str, Any]:
    if local:
        path = Path(where) / PROCESSOR_FILE
        if not path.is_file():
            return {}
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(where, PROCESSOR_FILE))
        except Exception:  # noqa: BLE001 - a model without a processor config: defaults below, noted
            return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: cannot read the image processor's config ({error})") from None


def _cannot_load(target: str, error: Exception, local: bool) -> ModelLoadError:
    text = error_line(error)
    if local:
        return ModelLoadError(f"hf:{target}: not a transformers image classifier folder ({text})")
    from huggingface_hub import constants

    return ModelLoadError(f"hf:{target}: not found locally or on the hub, or the hub cannot be reached and the "
                          f"model is not in the Hugging Face cache ({constants.HF_HUB_CACHE}): {text}")


def load_hf(target: str, options: ModelOptions) -> LoadedModel:
    transformers = import_transformers()
    folder = Path(target).expanduser()
    local = folder.is_dir()
    where = str(folder) if local else target
    weights = (options.weights or "DEFAULT").strip()
    if weights.lower() not in ("default", "none"):
        raise ModelLoadError(f"--weights {weights!r} with hf:: use DEFAULT (the model's own) or none (random)")
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars: the run has its own
    try:
        if weights.lower() == "none":
            config = transformers.AutoConfig.from_pretrained(where, local_files_only=local)
            torch.manual_seed(options.seed)
            model = transformers.AutoModelForImageClassification.from_config(config)
        else:
            model = transformers.AutoModelForImageClassification.from_pretrained(where, local_files_only=local)
    except ValueError as error:  # a config of a model that is no image classifier
        raise _cannot_load(target, error, True) from None
    except OSError as error:
        raise _cannot_load(target, error, local) from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    preprocess, notes = preprocess_from(_processor_config(where, local))
    if not (folder / PROCESSOR_FILE).is_file() and local:
        notes.append(f"no {PROCESSOR_FILE} beside the model: nnvis uses 256 then 224 with ImageNet's mean and std")
    label = "random" if weights.lower() == "none" else where
    return LoadedModel(model.eval(), f"hf:{target}", label, class_names(model.config), preprocess, "transformers",
                       notes)


class HfSource(ModelSource):
    name = "hf"
    description = ('Hugging Face transformers image classifiers: a save_pretrained folder or a hub id '
                   '(downloads); --weights DEFAULT|none (pip install "nnvis[hf]")')

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        if not target:
            raise ModelLoadError("--model hf:NAME needs a folder or a hub id, e.g. hf:google/vit-base-patch16-224")
        return load_hf(target, options)


@hookimpl
def nnvis_register_model_sources(register) -> None:
    register(HfSource())
