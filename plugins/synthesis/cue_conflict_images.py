"""Cue-conflict images (Geirhos et al., ICLR 2019): the shape of one class rendered with the texture of another.

Each image is a style transfer (style.py): a content image from one class keeps
its features at the content layer while taking the Gram matrices of a texture
image from another class. Which images meet is a seeded draw, so a seed gives the
same folder. `nnvis cue-conflict` writes them with their labels
(nnvis_core.toolkit.cue_conflict_labels), which the `shape_bias` plugin reads.

>>> plan = plan_pairs(class_images(shapes_dir), class_images(textures_dir), per_pair=1, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from nnvis_core.images import ImageReadError, discover_images, load_rgb
from nnvis_core.models.loaded import LoadedModel
from nnvis_core.toolkit import CUE_CONFLICT_CSV, cue_conflict_name, write_cue_conflict_csv
from nnvis_plugins.synthesis.layers import middle_layer, parse_layers
from nnvis_plugins.synthesis.style import CONTENT_WEIGHT, STYLE_WEIGHT, transfer_style
from nnvis_plugins.synthesis.texture import Normalize, as_picture, device_normalizer


class CueConflictInputError(ValueError):
    """A folder the command cannot draw from (one line, naming the path)."""


@dataclass(frozen=True)
class Pairing:
    """One image to make: the shape of `shape_source` (class `shape`), the texture of `texture_source`."""

    file: str
    shape: str
    texture: str
    shape_source: Path
    texture_source: Path


def class_images(root: Path) -> dict[str, list[Path]]:
    """{class folder name: its images, sorted} for the class subfolders of `root` (images in deeper
    folders count for their top folder)."""
    root = Path(root)
    if not root.is_dir():
        raise CueConflictInputError(f"{root}: no such folder")
    found: dict[str, list[Path]] = {}
    for record in discover_images(root):
        parts = record.relpath.split("/")
        if len(parts) > 1:
            found.setdefault(parts[0], []).append(record.path)
    if not found:
        raise CueConflictInputError(f"{root}: no class subfolders with images (expected {root}/CLASS/IMAGE.png)")
    return dict(sorted(found.items()))


def plan_pairs(shapes: dict[str, list[Path]], textures: dict[str, list[Path]], per_pair: int,
               seed: int) -> list[Pairing]:
    """`per_pair` images for every shape class and every other texture class, each from a seeded
    draw of one image of each (without repeats while the classes have images left)."""
    if per_pair < 1:
        raise CueConflictInputError(f"per_pair must be at least 1, got {per_pair}")
    generator = np.random.default_rng(seed)
    plan = []
    for shape, shape_files in shapes.items():
        for texture, texture_files in textures.items():
            if texture == shape:
                continue
            shape_picks = _draw(generator, len(shape_files), per_pair)
            texture_picks = _draw(generator, len(texture_files), per_pair)
            for index, (s, t) in enumerate(zip(shape_picks, texture_picks)):
                plan.append(Pairing(cue_conflict_name(shape, texture, index), shape, texture, shape_files[s],
                                    texture_files[t]))
    if not plan:
        raise CueConflictInputError(f"the shape classes ({', '.join(shapes)}) and texture classes "
                                    f"({', '.join(textures)}) give no pair of different classes")
    return plan


def _draw(generator: np.random.Generator, available: int, count: int) -> list[int]:
    rounds = -(-count // available)
    return np.concatenate([generator.permutation(available) for _ in range(rounds)])[:count].tolist()


def square_pixels(path: Path, size: int, device: torch.device) -> torch.Tensor:
    """The image centre-cropped to a square of `size` pixels, (1, 3, size, size) in [0, 1]."""
    try:
        picture = ImageOps.fit(load_rgb(path), (size, size))
    except ImageReadError as error:
        raise CueConflictInputError(str(error)) from error
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)[None].float().div(255).to(device)


def render_pairs(model: torch.nn.Module, normalize: Normalize, plan: Sequence[Pairing], size: int,
                 content_layer: str, style_layers: Sequence[str], steps: int = 100,
                 content_weight: float = CONTENT_WEIGHT, style_weight: float = STYLE_WEIGHT,
                 device: torch.device = torch.device("cpu"),
                 progress: Callable[[int], None] = lambda done: None) -> Iterator[tuple[Pairing, np.ndarray]]:
    """(pairing, (size, size, 3) uint8 picture) for each pairing, by L-BFGS style transfer."""
    for done, pairing in enumerate(plan, start=1):
        content = square_pixels(pairing.shape_source, size, device)
        texture = square_pixels(pairing.texture_source, size, device)
        result = transfer_style(model, normalize, content, texture, content_layer, style_layers, content_weight,
                                style_weight, steps, "lbfgs")
        progress(done)
        yield pairing, as_picture(result.pixels[0])


def write_cue_conflict_folder(shapes_dir: Path, textures_dir: Path, out_dir: Path, model: LoadedModel,
                              size: int | None = None, per_pair: int = 1, seed: int = 0, steps: int = 100,
                              style_weight: float = STYLE_WEIGHT, device: torch.device = torch.device("cpu"),
                              progress: Callable[[int], None] = lambda done: None) -> list[Pairing]:
    """Write the cue-conflict images of SHAPES_DIR x TEXTURES_DIR into `out_dir` with its CSV; returns the plan.

    The folders are checked and the pairs drawn before anything is written. `size`
    defaults to the model's input size; layers are the style_transfer plugin's defaults.
    """
    plan = plan_pairs(class_images(shapes_dir), class_images(textures_dir), per_pair, seed)
    if out_dir.exists() and not out_dir.is_dir():
        raise CueConflictInputError(f"{out_dir}: exists and is not a folder")
    side = size or model.preprocess.side
    module = model.module.to(device)
    normalize = device_normalizer(model.preprocess.mean, model.preprocess.std, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_pairs(module, normalize, plan, side, middle_layer(module), parse_layers(module, "auto"), steps,
                            style_weight=style_weight, device=device, progress=progress)
    for pairing, picture in rendered:
        Image.fromarray(picture).save(out_dir / pairing.file)
    write_cue_conflict_csv(out_dir / CUE_CONFLICT_CSV, [(p.file, p.shape, p.texture) for p in plan])
    return plan
