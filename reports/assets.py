"""Artifacts to files: PNGs for the page, .npy for the raw values, JSON for the rest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from nnvis_core.contract.artifacts import (
    Artifact,
    BarChart,
    CategoricalMap,
    Chart,
    ConceptAtlas,
    Gallery,
    Heatmap,
    Image,
    Scatter,
    SemanticDictionary,
    Table,
    Text,
)
from nnvis_reports.colormaps import DIVERGING_TABLE, SEQUENTIAL_TABLE, category_colour

OVERLAY_ALPHA = 0.6  # weight of the colour map over a grey version of the input
SPRITE_TILE = 32  # thumbnail side in a scatter's sprite sheet, in pixels
SPRITE_SHEET = 4096  # thumbnails per sheet: 64 x 64 of them, 2048 px square
THUMBNAIL_PX = (24, 96)  # smallest and largest drawn size of a semantic dictionary thumbnail


PNG_LEVEL = 1  # zlib level: 1.5x (64 px) to 2.5x (224 px) faster than Pillow's 6, within 1.5% of its size


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encoding is most of a small image's rendering cost: see benchmarks/png_levels.py for the level."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", optimize=False,
                                                                            compress_level=PNG_LEVEL)
    return buffer.getvalue()


def save_png(pixels: np.ndarray, path: Path, encoded: bytes | None = None) -> None:
    """Write `pixels` as a PNG at `path`, or `encoded`, the same picture encoded elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(pixels) if encoded is None else encoded)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    p = np.asarray(pixels)
    if p.dtype == np.uint8:
        return p
    return (np.clip(p.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)


def resize_map(values: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize a 2-D array to (H, W) = size, bilinear for values, nearest for categories."""
    if values.shape == size:
        return values
    mode = PILImage.NEAREST if nearest else PILImage.BILINEAR
    image = PILImage.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize((size[1], size[0]), mode), dtype=np.float64)


def heatmap_range(heatmap: Heatmap) -> tuple[float, float]:
    if heatmap.value_range is not None:
        return float(heatmap.value_range[0]), float(heatmap.value_range[1])
    values = np.asarray(heatmap.values, dtype=np.float64)
    if heatmap.signed:
        limit = float(np.abs(values).max()) or 1.0
        return -limit, limit
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low, low + 1.0)


def colourize(values: np.ndarray, low: float, high: float, signed: bool) -> np.ndarray:
    scaled = np.clip((values - low) / (high - low), 0, 1)
    table = DIVERGING_TABLE if signed else SEQUENTIAL_TABLE
    return table[(scaled * 255).round().astype(np.int64)]


def blend(base: np.ndarray, colour: np.ndarray) -> np.ndarray:
    grey = base.astype(np.float64).mean(axis=2, keepdims=True)
    return ((1 - OVERLAY_ALPHA) * grey + OVERLAY_ALPHA * colour).round().astype(np.uint8)


def heatmap_pictures(artifact: Heatmap, base: np.ndarray | None) -> dict[str, bytes]:
    """A heat map's colour picture and, over `base`, its overlay: PNG bytes by file suffix."""
    values = np.asarray(artifact.values, dtype=np.float64)
    low, high = heatmap_range(artifact)
    pictures = {".map.png": png_bytes(colourize(values, low, high, artifact.signed))}
    if artifact.overlay and base is not None:
        resized = resize_map(values, base.shape[:2])
        pictures[".overlay.png"] = png_bytes(blend(base, colourize(resized, low, high, artifact.signed)))
    return pictures


def encode_artifact(artifact: Artifact, base: np.ndarray | None) -> dict[str, bytes] | None:
    """The PNGs of an image-scope artifact, by file suffix, for the kinds every image has (heat maps,
    pictures); None for the others, which save_artifact encodes itself."""
    if isinstance(artifact, Heatmap):
        return heatmap_pictures(artifact, base)
    if isinstance(artifact, Image):
        return {".png": png_bytes(to_uint8(artifact.pixels))}
    return None


class PictureEncoder:
    """The report's picture encoding, run where an image's plugins ran (nnvis_core.run.sink.PictureEncoder):
    on a Ray worker, so that the driver only writes the files. The bytes are those save_artifact
    would write."""

    def encode_item(self, item) -> dict[str, bytes]:
        return {"input.png": png_bytes(item.pixels)}

    def encode_result(self, item, outcome) -> tuple[dict[str, bytes] | None, ...]:
        return tuple(encode_artifact(artifact, item.pixels) for artifact in outcome.result.artifacts)


def save_artifact(artifact: Artifact, folder: Path, stem: str, base: np.ndarray | None, root: Path,
                  pictures: dict[str, bytes] | None = None) -> dict:
    """Write an artifact's files under `folder` and return its report.json entry.

    Paths in the entry are relative to the report root, POSIX style. `pictures`: the
    artifact's PNGs already encoded (encode_artifact, run elsewhere), by file suffix.
    """
    entry: dict = {"kind": artifact.kind, "title": artifact.title, "caption": artifact.caption}

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    if isinstance(artifact, Image):
        path = folder / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((pictures or encode_artifact(artifact, base))[".png"])
        entry["path"] = rel(path)
    elif isinstance(artifact, Heatmap):
        low, high = heatmap_range(artifact)
        raw = folder / f"{stem}.npy"
        np.save(raw, np.asarray(artifact.values, dtype=np.float32))
        written = pictures or heatmap_pictures(artifact, base)
        for suffix, data in written.items():
            (folder / f"{stem}{suffix}").write_bytes(data)
        plain = folder / f"{stem}.map.png"
        entry.update(raw=rel(raw), map_path=rel(plain), range=[low, high], signed=artifact.signed,
                     label=artifact.label, path=rel(plain))
        if ".overlay.png" in written:
            entry["path"] = rel(folder / f"{stem}.overlay.png")
    elif isinstance(artifact, CategoricalMap):
        categories = np.asarray(artifact.categories)
        order = sorted(artifact.legend)
        colours = {value: category_colour(i) for i, value in enumerate(order)}
        rgb = np.zeros(categories.shape + (3,), dtype=np.uint8)
        for value, colour in colours.items():
            rgb[categories == value] = colour
        raw = folder / f"{stem}.npy"
        np.save(raw, categories)
        if artifact.overlay and base is not None:
            h, w = base.shape[:2]
            rgb = np.asarray(PILImage.fromarray(rgb).resize((w, h), PILImage.NEAREST))
            rgb = blend(base, rgb)
        path = folder / f"{stem}.png"
        save_png(rgb, path)
        present = set(np.unique(categories).tolist())
        entry.update(path=rel(path), raw=rel(raw), legend=[
            {"value": int(v), "label": str(artifact.legend[v]), "color": "#%02x%02x%02x" % colours[v]}
            for v in order if v in present
        ])
    elif isinstance(artifact, Table):
        entry.update(columns=[str(c) for c in artifact.columns], rows=[[_cell(c) for c in r] for r in artifact.rows])
    elif isinstance(artifact, Scatter):
        raw = folder / f"{stem}.npy"
        points = np.asarray(artifact.points, dtype=np.float64)
        np.save(raw, points.astype(np.float32))
        entry.update(raw=rel(raw), points=points.round(5).tolist(), labels=[str(x) for x in artifact.labels],
                     image_ids=[None if i is None else int(i) for i in artifact.image_ids])
        if artifact.true_labels:
            entry["true_labels"] = [str(x) for x in artifact.true_labels]
        if artifact.features is not None:
            features = folder / f"{stem}.features.npy"
            np.save(features, np.asarray(artifact.features, dtype=np.float32))
            entry["features"] = rel(features)
    elif isinstance(artifact, Chart):
        entry.update(x=[float(v) for v in artifact.x], x_label=artifact.x_label, y_label=artifact.y_label,
                     x_ticks=[str(t) for t in artifact.x_ticks],
                     series={str(k): [float(v) for v in values] for k, values in artifact.series.items()})
    elif isinstance(artifact, BarChart):
        entry.update(labels=[str(label) for label in artifact.labels], x_label=str(artifact.x_label),
                     y_label=str(artifact.y_label),
                     series={str(k): [float(v) for v in values] for k, values in artifact.series.items()})
    elif isinstance(artifact, Gallery):
        labels = list(artifact.labels) or [""] * len(artifact.images)
        ids = list(artifact.image_ids) or [None] * len(artifact.images)
        tiles = []
        for number, (pixels, label, image_id) in enumerate(zip(artifact.images, labels, ids)):
            path = None
            if pixels is not None:
                tile = folder / f"{stem}-{number:03d}.png"
                save_png(to_uint8(pixels), tile)
                path = rel(tile)
            tiles.append({"path": path, "label": str(label), "image_id": image_id})
        entry.update(tiles=tiles, columns=int(artifact.columns), tile_size=int(artifact.tile_size))
    elif isinstance(artifact, SemanticDictionary):
        entry.update(_save_dictionary(artifact, folder, stem, rel))
    elif isinstance(artifact, ConceptAtlas):
        entry.update(_save_concepts(artifact, folder, stem, rel))
    elif isinstance(artifact, Text):
        entry["text"] = artifact.text
    return entry


def save_sprites(inputs: list[Path | None], first: Path, tile: int = SPRITE_TILE,
                 per_sheet: int | None = None) -> dict:
    """PNG sheets of `tile`-pixel thumbnails of each input (blank where None): point i is cell
    i % per_sheet, row-major with `columns` cells a row, of sheet i // per_sheet.

    A few files instead of thousands keep a scatter of a large folder quick to open, and
    sheets of bounded size (2048 px square by default) stay within what a browser decodes
    at once. The first sheet is `first`, the others `first` with -1, -2... before .png.
    Each is built from the input PNGs already on disk, one at a time.
    """
    per_sheet = max(1, min(per_sheet or SPRITE_SHEET, len(inputs)))
    columns = max(1, int(np.ceil(np.sqrt(per_sheet))))
    sheets = []
    for number, start in enumerate(range(0, max(len(inputs), 1), per_sheet)):
        part = inputs[start:start + per_sheet]
        rows = max(1, int(np.ceil(len(part) / columns)))
        sheet = np.full((rows * tile, columns * tile, 3), 255, dtype=np.uint8)
        for cell, source in enumerate(part):
            if source is None:
                continue
            with PILImage.open(source) as picture:
                thumb = np.asarray(picture.convert("RGB").resize((tile, tile), PILImage.BILINEAR))
            row, column = divmod(cell, columns)
            sheet[row * tile:(row + 1) * tile, column * tile:(column + 1) * tile] = thumb
        path = first if number == 0 else first.with_name(first.name.replace(".png", f"-{number}.png"))
        save_png(sheet, path)
        sheets.append(path)
    return {"sheets": sheets, "tile": tile, "columns": columns, "per_sheet": per_sheet}


def _save_dictionary(artifact: SemanticDictionary, folder: Path, stem: str, rel) -> dict:
    """The picture, one PNG per unit, raw arrays, and per grid cell its units with a drawn size.

    Cells list only units with a positive activation; sizes scale linearly with
    the activation up to the strongest one in the whole dictionary.
    """
    image = folder / f"{stem}.png"
    save_png(to_uint8(artifact.image), image)
    units = np.asarray(artifact.units).astype(np.int64)
    activations = np.asarray(artifact.activations, dtype=np.float64)
    np.save(folder / f"{stem}.units.npy", units)
    np.save(folder / f"{stem}.activations.npy", activations.astype(np.float32))
    pending = sorted({int(u) for u in artifact.pending})
    used = sorted(set(units[activations > 0].tolist()) - set(pending))
    thumbnails = {}
    for unit in used:
        path = folder / f"{stem}-unit{unit}.png"
        save_png(to_uint8(artifact.thumbnails[unit]), path)
        thumbnails[str(unit)] = rel(path)
    strongest = float(activations.max()) if activations.size and activations.max() > 0 else 1.0
    low, high = THUMBNAIL_PX
    cells = [[{"unit": int(u), "activation": round(float(a), 6), "size": int(round(low + (high - low) * a / strongest))}
              for u, a in zip(us, acts) if a > 0]
             for us, acts in zip(units.reshape(-1, units.shape[2]), activations.reshape(-1, units.shape[2]))]
    totals = [sum(c["activation"] for c in cell) for cell in cells]
    return {"path": rel(image), "grid": [int(units.shape[0]), int(units.shape[1])], "cells": cells,
            "thumbnails": thumbnails, "pending": pending, "unit_label": artifact.unit_label,
            "selected": int(np.argmax(totals)) if totals else 0,
            "raw": rel(folder / f"{stem}.activations.npy"), "raw_units": rel(folder / f"{stem}.units.npy")}


def _cell(value):
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _number(value) -> float | None:
    return None if value is None else float(value)


def _save_concepts(artifact: ConceptAtlas, folder: Path, stem: str, rel) -> dict:
    """One PNG per crop; per concept its figures, as report.json keeps them."""
    concepts = []
    for number, concept in enumerate(artifact.concepts):
        ids = list(concept.image_ids) or [None] * len(concept.crops)
        crops = []
        for place, (pixels, image_id) in enumerate(zip(concept.crops, ids)):
            path = folder / f"{stem}-c{number:02d}-{place:02d}.png"
            save_png(to_uint8(pixels), path)
            crops.append({"path": rel(path), "image_id": None if image_id is None else int(image_id)})
        picture = None
        if concept.picture is not None:
            path = folder / f"{stem}-c{number:02d}-picture.png"
            save_png(to_uint8(concept.picture), path)
            picture = rel(path)
        concepts.append({"label": str(concept.label), "crops": crops, "picture": picture,
                         "value": _number(concept.value),
                         "low": _number(concept.low), "high": _number(concept.high), "share": _number(concept.share),
                         "significant": None if concept.significant is None else bool(concept.significant),
                         "chance": None if concept.chance is None else [float(v) for v in concept.chance]})
    return {"group": str(artifact.group), "concepts": concepts, "value_label": str(artifact.value_label),
            "share_label": str(artifact.share_label)}
