"""Images as a notebook holds them (files, PIL images, tensors) turned into what the core reads:
a folder, or image records in memory."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import Image as PILImage

from nnvis_core.images import IN_MEMORY_ROOT, ImageRecord
from nnvis_core.run.plan import UsageError


def to_pil(image: Any) -> PILImage.Image:
    """A PIL image, or an RGB tensor (3, H, W) with values in [0, 1] (or uint8), as an 8-bit RGB image."""
    if isinstance(image, PILImage.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3:
        values = image.detach().cpu()
        if values.is_floating_point():
            if values.min() < 0 or values.max() > 1:
                raise UsageError("images: a float tensor must hold RGB values in [0, 1], before normalization")
            values = (values * 255).round()
        return PILImage.fromarray(values.to(torch.uint8).permute(1, 2, 0).numpy())
    raise UsageError(f"images: cannot read a {type(image).__name__} {getattr(image, 'shape', '')} as an RGB "
                     f"image (give a folder, image files, PIL images, or RGB tensors (3, H, W) or (N, 3, H, W))")


@contextmanager
def image_source(images: Any) -> Iterator[tuple[Path, tuple[ImageRecord, ...]]]:
    """(folder, records in memory) for `images`: a folder as it is; image files as records named by
    their parent folder and name (the parent gives the true class), under the folder their parents
    share; PIL images, arrays and tensors as records in memory, named image_0000.png..."""
    if isinstance(images, (str, Path)):
        yield Path(images), ()
        return
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        images = list(images)
    if isinstance(images, (PILImage.Image, torch.Tensor)):
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
