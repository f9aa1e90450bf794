"""Images as a notebook holds them (files, PIL images, tensors) turned into what the core reads:
a folder, or image records in memory."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import Image as PILImage

from nnvis_core.images import ImageRecord
from nnvis_core.run.plan import UsageError

IN_MEMORY_ROOT = Path("(in memory)")  # the image folder named for images given as PIL images or tensors


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
    """(folder, records in memory) for `images`: a folder as it is; image files as a temporary
    folder of links to them under their parent folder's name (which gives the true class),
    removed afterwards; PIL images and tensors as records in memory, named image_0000.png..."""
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
    with tempfile.TemporaryDirectory(prefix="nnvis-images-") as temporary:
        root = Path(temporary)
        for number, path in enumerate(Path(p).resolve() for p in images):
            if not path.is_file():
                raise UsageError(f"{path}: no such image file")
            target = root / path.parent.name / path.name
            if target.exists() or target.is_symlink():
                target = target.with_name(f"{path.stem}-{number}{path.suffix}")
            target.parent.mkdir(exist_ok=True)
            target.symlink_to(path)
        yield root, ()
