"""Plugin results kept on disk under content hashes, so an interrupted run can resume.

A key is a SHA-256 over everything a result depends on: the bytes of the image
(and of its mask), its relative path (it picks the seed and the true class), the
plugin's name, distribution version and parameters, the model's weights and
class names, the preprocessing, the seed, the batch size, the device and the
versions of nnvis and torch. Anything that changes the result changes the key,
so a stale entry is never used: it is simply not found.

An entry is the plugin's Result, not the report's files: arrays in one ``.npz``
(loaded with ``allow_pickle=False``, so an entry can hold no code) with the rest
as JSON inside it. The writer draws a cached Result exactly as a fresh one, so a
resumed report has the same bytes as an uninterrupted one. Entries are written
to a temporary name and renamed, so a run killed mid-write leaves no half entry.
Failed calls are never cached: a resumed run tries them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import nnvis_core
from nnvis_core.contract.artifacts import ARTIFACT_TYPES, Concept, Result
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.images import ImageRecord
from nnvis_core.run.plan import CallOutcome, PluginRun

CACHE_FORMAT = 1
_ARTIFACTS_BY_NAME = {cls.__name__: cls for cls in ARTIFACT_TYPES}


class Uncacheable(Exception):
    """A result holding something the cache cannot store without pickling (it is then recomputed)."""


def file_digest(path: Path | None) -> str:
    """SHA-256 of a file's bytes; 'none' for no file, 'unreadable' when it cannot be read."""
    if path is None:
        return "none"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def model_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        try:
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # exotic dtypes (quantized): fall back to the values
            digest.update(repr(tensor.tolist()).encode())
    return digest.hexdigest()


def run_fingerprint(ctx: RunContext) -> str:
    """What every result of a run depends on besides the image and the plugin."""
    model = ctx.model
    parts = {
        "cache_format": CACHE_FORMAT, "nnvis": nnvis_core.__version__, "torch": torch.__version__,
        "python": sys.version.split()[0], "model": model.name, "source": model.source, "weights": model.weights,
        "architecture": type(model.module).__name__, "weights_digest": model_digest(model.module),
        "class_names": list(model.class_names), "preprocess": model.preprocess.describe(),
        "seed": ctx.seed, "batch_size": ctx.batch_size, "device": str(ctx.device), "metrics": list(ctx.metrics),
        "concepts": folder_digest(ctx.concepts_dir),
    }
    return _hash(parts)


def folder_digest(folder: Path | None) -> str:
    """SHA-256 over every file under `folder` (relative paths and bytes); 'none' for no folder. The concept
    images change what the concept plugins compute, so a changed, added or removed one is a new run."""
    if folder is None:
        return "none"
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}:{file_digest(path)}\n".encode())
    return digest.hexdigest()


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# --- Result <-> (JSON, arrays) ----------------------------------------------------------------


def _encode(value: Any, arrays: list[np.ndarray]) -> Any:
    """JSON-able form of an artifact field; arrays go to `arrays`. Every JSON object is a marker."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise Uncacheable("an object array")
        arrays.append(value)
        return {"$array": len(arrays) - 1}
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if type(value) is Concept:  # the rows of a ConceptAtlas
        return {"$concept": {f.name: _encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}}
    raise Uncacheable(f"a {type(value).__name__}")


def _decode(value: Any, arrays: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if "$array" in value:
            return arrays[f"a{value['$array']}"]
        if "$concept" in value:
            return Concept(**{name: _decode(v, arrays) for name, v in value["$concept"].items()})
        return {_decode(k, arrays): _decode(v, arrays) for k, v in value["$dict"]}
    return value


def encode_result(result: Result, seconds: float) -> tuple[dict, list[np.ndarray]]:
    """(meta, arrays) for a Result; raises Uncacheable for artifacts of other types or odd fields."""
    arrays: list[np.ndarray] = []

    def encode_artifacts(artifacts: list) -> list[dict]:
        encoded = []
        for artifact in artifacts:
            if type(artifact) not in ARTIFACT_TYPES:
                raise Uncacheable(f"artifact type {type(artifact).__name__}")
            fields = {f.name: _encode(getattr(artifact, f.name), arrays)
                      for f in dataclasses.fields(artifact) if f.init}
            encoded.append({"type": type(artifact).__name__, "fields": fields})
        return encoded

    metrics = {str(k): float(v) for k, v in result.metrics.items()}
    per_image = [[int(index), encode_artifacts(list(artifacts))]
                 for index, artifacts in sorted(result.image_artifacts.items())]
    return {"format": CACHE_FORMAT, "seconds": seconds, "artifacts": encode_artifacts(result.artifacts),
            "metrics": metrics, "image_artifacts": per_image}, arrays


def decode_result(meta: dict, arrays: Any) -> tuple[Result, float]:
    def decode_artifacts(encoded: list[dict]) -> list:
        return [_ARTIFACTS_BY_NAME[a["type"]](**{name: _decode(value, arrays) for name, value in a["fields"].items()})
                for a in encoded]

    per_image = {index: decode_artifacts(encoded) for index, encoded in meta.get("image_artifacts", [])}
    return Result(decode_artifacts(meta["artifacts"]), dict(meta["metrics"]), image_artifacts=per_image), \
        float(meta["seconds"])


# --- the cache --------------------------------------------------------------------------------


class ResultCache:
    """A folder of cached plugin results for one run's settings (see the module docstring)."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.hits = 0
        self.stored = 0
        self._item_digests: dict[str, str] = {}  # relpath -> digest: a short string per image

    def item_digest(self, item: ImageItem, masks_dir: Path | None = None) -> str:
        """Digest of one image as a plugin sees it: path, image bytes, mask bytes."""
        return self.record_digest(item.record, masks_dir)

    def record_digest(self, record: ImageRecord, masks_dir: Path | None = None) -> str:
        """item_digest before the image is decoded (the Ray engine's driver asks before shipping it)."""
        mask = masks_dir / record.relpath if masks_dir is not None else None
        mask = mask if mask is not None and mask.is_file() else None
        digest = _hash([record.relpath, file_digest(record.path), file_digest(mask)])
        self._item_digests[record.relpath] = digest
        return digest

    def image_key(self, run: PluginRun, item_digest: str) -> str:
        return _hash([self.fingerprint, "image", *_plugin_identity(run), item_digest])

    def global_key(self, run: PluginRun) -> str:
        """Key of a dataset- or model-scope result; a dataset result depends on every image seen."""
        images = sorted(self._item_digests.items()) if run.plugin.scope.value == "dataset" else []
        return _hash([self.fingerprint, run.plugin.scope.value, *_plugin_identity(run), images])

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def load(self, key: str) -> tuple[Result, float] | None:
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as archive:
                meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
                if meta.get("format") != CACHE_FORMAT:
                    return None
                arrays = {name: archive[name] for name in archive.files if name != "meta"}
            return decode_result(meta, arrays)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a damaged entry is a miss, recomputed and rewritten
            path.unlink(missing_ok=True)
            return None

    def store(self, key: str, result: Result, seconds: float) -> bool:
        """Write an entry atomically; False (and nothing written) when it cannot be stored."""
        try:
            meta, arrays = encode_result(result, seconds)
        except Uncacheable:
            return False
        path = self._path(key)
        buffer = io.BytesIO()
        named = {f"a{i}": array for i, array in enumerate(arrays)}
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8), **named)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
            with os.fdopen(handle, "wb") as out:
                out.write(buffer.getbuffer())
            os.replace(temporary, path)
        except OSError:
            return False
        self.stored += 1
        return True

    def call(self, key: str, compute: Callable[[], CallOutcome]) -> CallOutcome:
        """A cached outcome when there is one, else compute() and keep a successful result."""
        hit = self.load(key)
        if hit is not None:
            self.hits += 1
            return CallOutcome(*hit)
        outcome = compute()
        if outcome.ok:
            assert outcome.result is not None
            self.store(key, outcome.result, outcome.seconds)
        return outcome


class NoCache:
    """The cache interface with nothing behind it: every call is computed."""

    hits = stored = 0

    def item_digest(self, item: ImageItem, masks_dir: Path | None = None) -> str:
        return ""

    def record_digest(self, record: ImageRecord, masks_dir: Path | None = None) -> str:
        return ""

    def load(self, key: str) -> tuple[Result, float] | None:
        return None

    def store(self, key: str, result: Result, seconds: float) -> bool:
        return False

    def image_key(self, run: PluginRun, item_digest: str) -> str:
        return ""

    def global_key(self, run: PluginRun) -> str:
        return ""

    def call(self, key: str, compute: Callable[[], CallOutcome]) -> CallOutcome:
        return compute()


def _plugin_identity(run: PluginRun) -> list:
    plugin = run.plugin
    return [plugin.name, type(plugin).__module__, type(plugin).__qualname__, run.origin,
            getattr(plugin, "api_version", None), sorted((k, repr(v)) for k, v in run.params.items())]


def count_entries(folder: Path) -> int:
    """How many results a cache folder holds (for messages)."""
    return sum(1 for _ in Path(folder).glob("*/*.npz")) if Path(folder).is_dir() else 0

