"""A model ready for nnvis: the module, its class names and its preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image as PILImage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LARGE_RESIZE_PIXELS = 4_000_000  # above this, resize only the region the crop keeps


class ModelLoadError(Exception):
    """A model that cannot be loaded; the message is one line meant for the user."""


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalize.

    Implemented with Pillow and numpy so that the picture shown in the report is
    exactly the pixels the model saw (before normalization).
    """

    resize: int | None
    crop: int | None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    @property
    def side(self) -> int:
        """The side of the square input the model is given: its crop, else its resize, else 224 (a
        model whose preprocessing fixes neither is probed and drawn at ImageNet's usual size)."""
        return int(self.crop or self.resize or 224)

    def display(self, image: PILImage.Image) -> np.ndarray:
        """The RGB uint8 (H, W, 3) array the model sees, before normalization."""
        if self.resize:
            w, h = image.size
            scale = self.resize / min(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            if self.crop and size[0] * size[1] > LARGE_RESIZE_PIXELS:
                image = self._resize_crop_region(image, size)
            else:
                image = image.resize(size, PILImage.BILINEAR, reducing_gap=None)
        if self.crop:
            w, h = image.size
            cw, ch = min(self.crop, w), min(self.crop, h)
            left, top = (w - cw) // 2, (h - ch) // 2
            image = image.crop((left, top, left + cw, top + ch))
            if image.size != (self.crop, self.crop):  # smaller than the crop: stretch
                image = image.resize((self.crop, self.crop), PILImage.BILINEAR)
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()

    def _resize_crop_region(self, image: PILImage.Image, size: tuple[int, int]) -> PILImage.Image:
        """Resize only the part the centre crop keeps: a 20000x8 strip would otherwise grow
        to 160000x64 (or a 10 megapixel one, to gigabytes) before being cropped."""
        assert self.crop is not None
        w, h = image.size
        cw, ch = min(self.crop, size[0]), min(self.crop, size[1])
        left, top = (size[0] - cw) // 2, (size[1] - ch) // 2
        sx, sy = size[0] / w, size[1] / h
        box = (left / sx, top / sy, (left + cw) / sx, (top + ch) / sy)
        return image.resize((cw, ch), PILImage.BILINEAR, box=box, reducing_gap=None)

    def normalize(self, pixels: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> normalized float tensor (3, H, W)."""
        x = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (x - mean) / std

    def denormalize(self, tensor: torch.Tensor) -> np.ndarray:
        """Normalized (3, H, W) tensor -> (H, W, 3) uint8, the inverse of normalize."""
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
        x = (tensor.detach() * std + mean).clamp(0, 1)
        return (x.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def describe(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class ModelOptions:
    """What the command line says about the model, beyond `--model` itself."""

    weights: str | None = None
    arch: str | None = None
    trust_checkpoint: bool = False
    labels: Path | None = None
    seed: int = 0
    output: str | None = None  # the part of the forward's output that holds the class scores (--output)
    image_dir: Path | None = None  # the folder the report reads (`--model convnet` is shaped after it)


@dataclass
class LoadedModel:
    module: torch.nn.Module
    name: str
    weights: str
    class_names: list[str]
    preprocess: Preprocess
    source: str
    notes: list[str] = field(default_factory=list)

    def with_preprocess(self, **overrides) -> "LoadedModel":
        """A copy whose preprocessing has the given fields replaced (None = keep)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        return replace(self, preprocess=replace(self.preprocess, **given))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "weights": self.weights,
            "architecture": type(self.module).__name__,
            "num_classes": len(self.class_names),
            "parameters": sum(p.numel() for p in self.module.parameters()),
            "preprocess": self.preprocess.describe(),
        }


def read_labels(path: Path) -> list[str]:
    """Class names from a text file (one per line) or a JSON list."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelLoadError(f"{path}: cannot read labels file ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ModelLoadError(f"{path}: labels file is not UTF-8 text "
                             f"(one class name per line, or a JSON list)") from None
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelLoadError(f"{path}: labels file is not valid JSON ({error.msg})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ModelLoadError(f"{path}: labels JSON must be a list of strings")
        return names
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ModelLoadError(f"{path}: labels file is empty")
    return names
