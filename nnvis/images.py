"""Images as a notebook holds them (files, PIL images, tensors) turned into what the core reads:
a folder, or image records in memory."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image as PILImage

from nnvis_core.images import IN_MEMORY_ROOT, ImageRecord
from nnvis_core.run.plan import UsageError


def to_pil(image: Any) -> PILImage.Image:
    """One image as an 8-bit RGB picture: a PIL image; an RGB tensor (3, H, W); a NumPy array
    (H, W, 3) or (H, W). Floats hold values in [0, 1] (before normalization), integers 0 to 255."""
    if isinstance(image, PILImage.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3:
        return _from_array(image.detach().cpu().permute(1, 2, 0).numpy())
    if isinstance(image, torch.Tensor) and image.dim() in (3, 4) and image.shape[-1] == 3 and image.shape[-3] != 3:
        order = "(N, H, W, 3)" if image.dim() == 4 else "(H, W, 3)"
        permute = "0, 3, 1, 2" if image.dim() == 4 else "2, 0, 1"
        raise UsageError(f"images: this tensor of shape {tuple(image.shape)} looks channels-last {order}; give "
                         f"channels first, (3, H, W) or (N, 3, H, W): tensor.permute({permute})")
    raise UsageError(f"images: cannot read a {type(image).__name__} {tuple(getattr(image, 'shape', ()))} as an RGB "
                     f"image (give a folder, image files, PIL images, NumPy arrays (H, W, 3), or RGB tensors "
                     f"(3, H, W) or (N, 3, H, W))")


def _from_array(values: np.ndarray) -> PILImage.Image:
    """An (H, W, 3) or (H, W) array as an RGB picture (floats in [0, 1], integers 0 to 255)."""
    if values.ndim == 3 and values.shape[0] == 3 and values.shape[-1] != 3:
        raise UsageError(f"images: this array of shape {values.shape} looks channels-first (3, H, W); NumPy "
                         f"images go channels-last, (H, W, 3): array.transpose(1, 2, 0)")
    if not (values.ndim == 2 or values.ndim == 3 and values.shape[-1] == 3):
        raise UsageError(f"images: cannot read an array of shape {values.shape} as an RGB image (give (H, W, 3))")
    if values.dtype.kind == "f":
        if values.size and (values.min() < 0 or values.max() > 1):
            raise UsageError("images: a float tensor or array must hold RGB values in [0, 1], before normalization")
        values = np.round(values * 255)
    elif values.dtype.kind in "iu" and values.size and (values.min() < 0 or values.max() > 255):
        raise UsageError("images: an integer array must hold values 0 to 255")
    picture = PILImage.fromarray(np.ascontiguousarray(values).astype(np.uint8))
    return picture.convert("RGB")


def as_images(images: Any) -> Any:
    """A batch (an (N, 3, H, W) tensor, an (N, H, W, 3) array) as a list of images; anything else as it is."""
    if isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
        to_pil(images)  # channels-last: refused with the hint
    if isinstance(images, torch.Tensor) and images.dim() == 4 or isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return images


@contextmanager
def image_source(images: Any) -> Iterator[tuple[Path, tuple[ImageRecord, ...]]]:
    """(folder, records in memory) for `images`: a folder as it is; image files as records named by
    their parent folder and name (the parent gives the true class), under the folder their parents
    share; PIL images, arrays and tensors as records in memory, named image_0000.png..."""
    if isinstance(images, (str, Path)):
        yield Path(images), ()
        return
    images = as_images(images)
    if isinstance(images, (PILImage.Image, torch.Tensor, np.ndarray)):
        images = [images]
    if not isinstance(images, (list, tuple)) or not images:
        raise UsageError("images: give a folder, a list of image files, PIL images or RGB tensors")
    if not all(isinstance(p, (str, Path)) for p in images):
        pictures = [to_pil(image) for image in images]
        yield IN_MEMORY_ROOT, tuple(ImageRecord(i, IN_MEMORY_ROOT / f"image_{i:04d}.png", f"image_{i:04d}.png", None,
                                                image=picture) for i, picture in enumerate(pictures))
        return
    yield file_records([Path(os.path.abspath(p)) for p in images])


def file_records(paths: list[Path]) -> tuple[Path, tuple[ImageRecord, ...]]:
    """Image files as (the folder their parent folders share, records in path order), each named
    PARENT/NAME as a folder walk would name it (a second file of the same name gets -N)."""
    named: dict[str, Path] = {}
    for number, path in enumerate(paths):
        if not path.is_file():
            raise UsageError(f"{path}: no such image file")
        relpath = f"{path.parent.name}/{path.name}"
        if relpath in named:
            relpath = f"{path.parent.name}/{path.stem}-{number}{path.suffix}"
        named[relpath] = path
    root = Path(os.path.commonpath([path.parent.parent for path in paths]))
    ordered = sorted(named.items())
    return root, tuple(ImageRecord(index, path, relpath, relpath.split("/")[0])
                       for index, (relpath, path) in enumerate(ordered))
