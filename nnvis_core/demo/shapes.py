"""Procedural shape images with ground-truth masks for the demo model.

Every sample is one shape (the class) drawn with a random colour, size,
position, rotation and fill on a random textured background.  The object
colour is drawn independently of the class and kept far from the background
palette, so only the outline tells the classes apart, and the mask says
exactly where the evidence is, which lets a report check whether a
visualization points at the object.  All randomness comes from the numpy
Generator passed in, so the same seed always yields the same arrays.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES: list[str] = [
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "arrow",
]

# Shapes are drawn at this multiple of the output size, then box-filtered down:
# cheap anti-aliasing that also gives a sub-pixel accurate mask.
_SUPERSAMPLE = 4
# Minimum RGB distance between the object colour and every background colour.
_MIN_CONTRAST = 110.0

_Polygon = list[tuple[float, float]]


def _star(points: int, inner: float) -> _Polygon:
    out = []
    for k in range(2 * points):
        radius = 1.0 if k % 2 == 0 else inner
        angle = math.pi * k / points - math.pi / 2
        out.append((radius * math.cos(angle), radius * math.sin(angle)))
    return out


def _unit_polygon(name: str, rng: np.random.Generator) -> _Polygon:
    """Outline in unit coordinates (shape fits in the unit disc)."""
    if name == "square":
        s = 0.72
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if name == "triangle":
        return [
            (math.cos(a), math.sin(a))
            for a in (-math.pi / 2, -math.pi / 2 + 2 * math.pi / 3, -math.pi / 2 + 4 * math.pi / 3)
        ]
    if name == "star":
        return _star(5, float(rng.uniform(0.38, 0.5)))
    if name == "cross":
        w = float(rng.uniform(0.24, 0.34))
        return [
            (-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
            (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w),
        ]
    if name == "arrow":
        shaft = float(rng.uniform(0.18, 0.26))
        head = float(rng.uniform(0.55, 0.7))
        neck = float(rng.uniform(0.0, 0.25))
        return [
            (-1, -shaft), (neck, -shaft), (neck, -head), (1, 0),
            (neck, head), (neck, shaft), (-1, shaft),
        ]
    raise ValueError(f"not a polygon shape: {name}")


def _transform(points: _Polygon, cx: float, cy: float, radius: float, angle: float,
               stretch: float) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    out = []
    for x, y in points:
        x, y = x * stretch, y / stretch
        out.append((cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)))
    return out


def _shape_alpha(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] (HxW float32) of one random shape."""
    big = size * _SUPERSAMPLE
    radius = float(rng.uniform(0.2, 0.4)) * big
    margin = radius + _SUPERSAMPLE
    cx = float(rng.uniform(margin, big - margin))
    cy = float(rng.uniform(margin, big - margin))
    angle = float(rng.uniform(0, 2 * math.pi))
    stretch = float(rng.uniform(0.92, 1.08))
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)

    def disc(x: float, y: float, r: float, fill: int) -> None:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    if name == "circle":
        disc(cx, cy, 0.85 * radius, 255)
    elif name == "ring":
        disc(cx, cy, 0.95 * radius, 255)
        disc(cx, cy, float(rng.uniform(0.45, 0.62)) * radius, 0)
    elif name == "crescent":
        disc(cx, cy, 0.92 * radius, 255)
        shift = float(rng.uniform(0.35, 0.5)) * radius
        disc(cx + shift * math.cos(angle), cy + shift * math.sin(angle), 0.8 * radius, 0)
    else:
        draw.polygon(_transform(_unit_polygon(name, rng), cx, cy, radius, angle, stretch), fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _coords(size: int, angle: float) -> np.ndarray:
    """Pixel coordinates projected on the direction `angle` (HxW)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx * math.cos(angle) + yy * math.sin(angle)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A textured HxWx3 float background and the colours it is made of."""
    c0 = rng.uniform(0, 255, 3)
    c1 = np.clip(c0 + rng.normal(0, 55, 3), 0, 255)
    kind = int(rng.integers(5))
    if kind == 0:  # linear gradient
        t = _coords(size, float(rng.uniform(0, 2 * math.pi)))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 1:  # smooth value noise
        cells = int(rng.integers(3, 9))
        low = Image.fromarray((rng.uniform(0, 1, (cells, cells)) * 255).astype(np.uint8))
        t = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    elif kind == 2:  # stripes, soft or hard
        period = float(rng.uniform(4, 16))
        t = np.sin(_coords(size, float(rng.uniform(0, math.pi))) * 2 * math.pi / period) * 0.5 + 0.5
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == 3:  # rotated checkerboard
        cell = float(rng.uniform(4, 12))
        a = float(rng.uniform(0, math.pi / 2))
        u = np.floor(_coords(size, a) / cell)
        v = np.floor(_coords(size, a + math.pi / 2) / cell)
        t = ((u + v) % 2).astype(np.float32)
    else:  # flat colour with coarse grain
        t = np.zeros((size, size), np.float32)
        c1 = c0
    img = c0 + t[..., None] * (c1 - c0)
    img = img + rng.normal(0, float(rng.uniform(0, 14)), (size, size, 1))
    return img, [c0, c1]


def _object_colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """A random colour far from all of `avoid` (best of a few tries)."""
    best, best_dist = None, -1.0
    for _ in range(64):
        colour = rng.uniform(0, 255, 3)
        dist = min(float(np.linalg.norm(colour - c)) for c in avoid)
        if dist >= _MIN_CONTRAST:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def _clutter(img: np.ndarray, rng: np.random.Generator, size: int) -> None:
    """Draw a few thin random lines, so that edges alone do not mean 'object'."""
    count = int(rng.integers(0, 4))
    if count == 0:
        return
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(count):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        draw.line([x0, y0, x1, y1], fill=255, width=1)
    alpha = np.asarray(layer, dtype=np.float32)[..., None] / 255 * 0.7
    img *= 1 - alpha
    img += alpha * rng.uniform(0, 255, 3)


def draw_sample(rng: np.random.Generator, size: int = 64,
                class_index: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """One (image uint8 HxWx3, mask bool HxW, class index) sample.

    The class is random unless `class_index` is given.
    """
    if class_index is None:
        class_index = int(rng.integers(len(CLASS_NAMES)))
    if not 0 <= class_index < len(CLASS_NAMES):
        raise ValueError(f"class_index {class_index} out of range 0..{len(CLASS_NAMES) - 1}")
    img, palette = _background(rng, size)
    if rng.random() < 0.35:
        _clutter(img, rng, size)
    alpha = _shape_alpha(CLASS_NAMES[class_index], rng, size)
    fg = _object_colour(rng, palette)
    if rng.random() < 0.4:  # two-tone gradient fill
        fg2 = _object_colour(rng, palette)
        t = _coords(size, float(rng.uniform(0, 2 * math.pi)))
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[..., None]
        fill = fg + t * (fg2 - fg)
    else:
        fill = np.broadcast_to(fg, img.shape)
    a = alpha[..., None]
    img = img * (1 - a) + fill * a
    img = img + rng.normal(0, float(rng.uniform(0, 6)), img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return image, alpha >= 0.5, class_index


def balanced_labels(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` class indices, each class as often as the others (to one), in an order `rng` shuffles."""
    labels = np.arange(count, dtype=np.int64) % len(CLASS_NAMES)
    rng.shuffle(labels)
    return labels


def generate_dataset(count: int, seed: int,
                     size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` samples with balanced classes in shuffled order.

    Returns images (NxHxWx3 uint8), masks (NxHxW bool) and labels (N int64).
    """
    rng = np.random.default_rng(seed)
    labels = balanced_labels(count, rng)
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), bool)
    for i, label in enumerate(labels):
        images[i], masks[i], _ = draw_sample(rng, size, int(label))
    return images, masks, labels
