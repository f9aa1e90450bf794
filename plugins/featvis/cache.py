"""Channel visualizations on disk, reused across images and runs.

A semantic dictionary needs the visualization of every channel that is among
the strongest at some position of some image: the same few dozen pictures,
over and over. They depend only on the model's weights, the layer, the
channel, the objective and the optimization settings, so they are computed
once and kept under ``$NNVIS_CACHE`` (default ``$XDG_CACHE_HOME/nnvis`` or
``~/.cache/nnvis``) in ``featvis/<model fingerprint>/<key>.npy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import weakref
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
from torch import nn

CACHE_ENV = "NNVIS_CACHE"
FORMAT = 1  # bump when what a key means changes

_fingerprints: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def default_cache_dir() -> Path:
    """$NNVIS_CACHE, else $XDG_CACHE_HOME/nnvis, else ~/.cache/nnvis."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nnvis"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the architecture's class name and every tensor of the state_dict (names, shapes, bytes).

    Remembered per module while its parameters and buffers are unchanged (their
    version counters and storage), so hashing a large model happens once per run.
    """
    state = model.state_dict()
    versions = tuple((name, t.data_ptr(), t._version) for name, t in state.items())
    known = _fingerprints.get(model)
    if known is not None and known[0] == versions:
        return known[1]
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in state.items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    _fingerprints[model] = (versions, digest.hexdigest())
    return digest.hexdigest()


class VisualizationCache:
    """uint8 pictures keyed by (layer, unit, description of how they were made) for one model."""

    def __init__(self, root: Path, model_key: str):
        self.folder = Path(root) / "featvis" / model_key[:24]

    @staticmethod
    def key(layer: str, unit: int, recipe: Mapping) -> str:
        text = json.dumps({"format": FORMAT, "layer": layer, "unit": int(unit), "recipe": dict(recipe)},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path(self, layer: str, unit: int, recipe: Mapping) -> Path:
        return self.folder / f"{self.key(layer, unit, recipe)}.npy"

    def load(self, layer: str, unit: int, recipe: Mapping) -> np.ndarray | None:
        """The stored picture, or None when absent or unreadable (a damaged file is a miss)."""
        path = self.path(layer, unit, recipe)
        try:
            picture = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return picture if picture.dtype == np.uint8 and picture.ndim == 3 else None

    def save(self, layer: str, unit: int, recipe: Mapping, picture: np.ndarray) -> None:
        """Write atomically (temporary file, then rename), so a reader never sees half a file."""
        path = self.path(layer, unit, recipe)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.save(stream, np.ascontiguousarray(picture, dtype=np.uint8), allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def cached_units(cache: VisualizationCache | None, layer: str, units: Iterable[int], recipe: Mapping,
                 make: Callable[[list[int]], np.ndarray], batch: int, limit: int | None = None,
                 make_all: Callable[[list[list[int]]], Iterable[np.ndarray]] | None = None
                 ) -> dict[int, np.ndarray]:
    """{unit: uint8 picture}: from the cache where present, else made `batch` units at a time and stored.

    `make(units)` returns (len(units), H, W, 3) float images in [0, 1]; `make_all(chunks)`, when given,
    makes every chunk instead, answers in order (elsewhere, say: RunContext.map_tasks). With a `limit`,
    at most that many units are made, the first ones in `units` order; the others are left out.
    """
    wanted = list(dict.fromkeys(int(u) for u in units))
    found: dict[int, np.ndarray] = {}
    for unit in wanted:
        picture = cache.load(layer, unit, recipe) if cache is not None else None
        if picture is not None:
            found[unit] = picture
    missing = [unit for unit in wanted if unit not in found][:limit]
    chunks = [missing[start:start + max(1, batch)] for start in range(0, len(missing), max(1, batch))]
    for chunk, images in zip(chunks, (make_all or (lambda parts: map(make, parts)))(chunks)):
        for unit, picture in zip(chunk, to_uint8(images)):
            found[unit] = picture
            if cache is not None:
                cache.save(layer, unit, recipe, picture)
    return {unit: found[unit] for unit in wanted if unit in found}
