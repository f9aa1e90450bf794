"""`--model convnet`: an untrained, seeded ConvNet shaped for the image folder, and its checkpoints.

The untrained model takes its input channels, side and classes from the folder
the report reads (grayscale or colour, the first image's size, the class
subfolders) and its normalization from a sample of those images; `--model
convnet:width=64,depth=2` changes the architecture. A ConvNet trained by
`nnvis demo train --data DIR` is saved as a self-describing checkpoint (its
config, class names and normalization beside the weights, all plain values that
load with weights_only=True), so `--model PATH` needs no `--arch`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnvis_core.images import discover_images, folder_label, load_rgb
from nnvis_core.models.checkpoints import apply_state_dict
from nnvis_core.models.convnet import ConvNet, ConvNetConfig, build_convnet, parse_options
from nnvis_core.models.loaded import LoadedModel, ModelLoadError, ModelOptions, Preprocess
from nnvis_core.models.source import ModelSource

CHECKPOINT_KIND = "nnvis convnet"
SAMPLE = 200  # images read for the folder's normalization statistics


def folder_shape(image_dir: Path) -> tuple[int, int, list[str], tuple[float, ...], tuple[float, ...]]:
    """(channels, side, class names, mean, std) of a labelled folder: 1 channel when every sampled
    image is grayscale, the first image's longer side, the class subfolders in sorted order, and the
    per-channel mean and standard deviation of up to SAMPLE images spread over the folder."""
    records = discover_images(image_dir)
    if not records:
        raise ModelLoadError(f"{image_dir}: no images to shape --model convnet after")
    classes = sorted({label for label in (folder_label(r.relpath) for r in records) if label is not None})
    step = max(1, len(records) // SAMPLE)
    sample = records[::step][:SAMPLE]
    pictures = [load_rgb(r.path) for r in sample]
    side = max(pictures[0].size)
    arrays = [np.asarray(p.resize((side, side)), dtype=np.float64) / 255 for p in pictures]
    gray = all(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]) for a in arrays)
    stacked = np.stack(arrays)
    if gray:
        mean, std = (float(stacked.mean()),) * 3, (float(stacked.std()) or 1.0,) * 3
    else:
        mean = tuple(float(v) for v in stacked.mean(axis=(0, 1, 2)))
        std = tuple(float(v) or 1.0 for v in stacked.std(axis=(0, 1, 2)))
    return (1 if gray else 3), side, classes, mean, std


class ConvNetSource(ModelSource):
    name = "convnet"
    description = ("the dataset-condensation ConvNet (Zhao et al.), untrained and seeded, shaped for the image "
                   "folder; convnet:width=W,depth=D,norm=instance|batch|none,pooling=avg|max")

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        try:
            given = parse_options(target)
        except ValueError as error:
            raise ModelLoadError(f"--model convnet:{target}: {error}") from None
        if options.weights not in (None, "none"):
            raise ModelLoadError("--model convnet is untrained; load a trained ConvNet with --model PATH")
        mean, std, classes = (0.5,) * 3, (0.5,) * 3, []
        if options.image_dir is not None and Path(options.image_dir).is_dir():
            channels, side, classes, mean, std = folder_shape(Path(options.image_dir))
            given = {"channels": channels, "side": side, "classes": max(2, len(classes)), **given}
        try:
            config = ConvNetConfig(**given)
        except ValueError as error:
            raise ModelLoadError(str(error)) from None
        module = build_convnet(config, options.seed)
        names = classes if len(classes) == config.classes else []
        preprocess = Preprocess(config.side, config.side, mean, std)
        return LoadedModel(module, "convnet", "none (untrained, seed %d)" % options.seed, names, preprocess,
                           self.name)


def save_checkpoint(model: ConvNet, path: Path, class_names: list[str], preprocess: Preprocess,
                    notes: dict[str, float | int | str]) -> None:
    """The weights with everything needed to rebuild and feed the model, as plain values."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"kind": CHECKPOINT_KIND, "config": model.config.as_dict(), "class_names": list(class_names),
                "mean": list(preprocess.mean), "std": list(preprocess.std), "notes": dict(notes),
                "state_dict": state}, path)


def is_convnet_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND


def load_checkpoint_model(path: Path, obj: dict) -> LoadedModel:
    try:
        config = ConvNetConfig(**obj["config"])
    except (TypeError, ValueError, KeyError) as error:
        raise ModelLoadError(f"{path}: a ConvNet checkpoint with a bad config ({error})") from None
    module = ConvNet(config)
    apply_state_dict(module, obj.get("state_dict") or {}, str(path), "convnet")
    preprocess = Preprocess(config.side, config.side, tuple(obj["mean"]), tuple(obj["std"]))
    names = [str(n) for n in obj.get("class_names", [])]
    return LoadedModel(module.eval(), path.name, str(path), names if len(names) == config.classes else [],
                       preprocess, "convnet checkpoint")
