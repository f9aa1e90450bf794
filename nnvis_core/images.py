"""Find images in a folder and decode them to plain RGB, one file at a time.

Discovery only lists paths, so memory stays bounded however large the folder.
Decoding turns every failure into an ``ImageReadError`` with a one-line
reason, so one bad file is reported and the run goes on.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)


def _readable_extensions() -> frozenset[str]:
    """Extensions of formats Pillow can actually decode here.

    Stub plugins (HDF5, GRIB, ...) need external handlers, and MPEG is only
    identified, never decoded (it would load as a black frame), so they are left
    out: a model file ``weights.h5`` next to the images is not an image.
    """
    Image.init()
    ext: set[str] = set()
    for suffix, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get("JPEG" if fmt == "MPO" else fmt, (None,))[0]
        if factory is None or fmt == "MPEG":
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        ext.add(suffix.lower())
    return frozenset(ext)


IMAGE_EXTENSIONS: frozenset[str] = _readable_extensions()


class ImageReadError(Exception):
    """An image file that could not be decoded; ``reason`` is one line for the report."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


IN_MEMORY_ROOT = Path("(in memory)")  # the image folder named for images given in memory (nnvis.run)


@dataclass(frozen=True)
class ImageRecord:
    index: int  # position in the deterministic order
    path: Path  # absolute path (symlinked folders are kept as walked, not resolved)
    relpath: str  # POSIX path relative to the root
    folder: str | None  # immediate parent folder name relative to root, or None
    # An image given in memory (the Python API), read instead of `path`; compared by identity.
    image: Image.Image | None = field(default=None, compare=False, repr=False)

    def read(self) -> Image.Image:
        """The image as load_rgb gives it: from memory when given there, else decoded from `path`."""
        if self.image is not None:
            return self.image.convert("RGB")
        return load_rgb(self.path)


def parallel_mask_tree(root: Path) -> list[Path]:
    """``root/masks`` when it mirrors the class folders beside it (every folder in it is also a class
    folder of ``root``), as `nnvis demo digits` writes it: masks, not a class of images. Else []."""
    masks = root / "masks"
    if not masks.is_dir():
        return []
    inside = {entry.name for entry in os.scandir(masks) if entry.is_dir() and not entry.name.startswith(".")}
    beside = {entry.name for entry in os.scandir(root) if entry.is_dir() and entry.name != "masks"}
    return [masks] if inside and inside <= beside else []


def discover_images(root: Path, skip: Sequence[Path] = ()) -> list[ImageRecord]:
    """List image files under ``root``, sorted by relative POSIX path.

    Symlinked folders are followed, but each real folder is walked once, so a
    link back to a parent cannot loop. Hidden names ('.git', '.DS_Store') and
    files without an image extension are skipped silently, and so are the
    folders in ``skip`` (the report's own output, when it sits inside ``root``)
    and a mask tree beside the class folders of any folder (:func:`parallel_mask_tree`).
    """
    root = Path(os.path.abspath(root))
    if not root.exists():
        raise FileNotFoundError(f"image folder does not exist: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder is not a directory: {root}")
    found: dict[str, Path] = {}
    seen: set[Path] = {Path(folder).resolve() for folder in skip} - {root.resolve()}
    stack: list[tuple[Path, PurePosixPath]] = [(root, PurePosixPath())]
    while stack:
        folder, rel = stack.pop()
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        seen.update(masks.resolve() for masks in parallel_mask_tree(folder))  # DIR/train/masks too
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("skipping unreadable folder %s: %s", folder, exc.strerror or exc)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append((Path(entry.path), rel / entry.name))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                # Regular files and broken links (reported by load_rgb), not FIFOs.
                if entry.is_file() or entry.is_symlink():
                    found.setdefault(str(rel / entry.name), Path(entry.path))
        stack.extend(reversed(subdirs))  # depth-first, alphabetical: first path to a real folder wins
    return [
        ImageRecord(index=i, path=found[r], relpath=r, folder=folder_label(r))
        for i, r in enumerate(sorted(found))
    ]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _bomb_reason(exc: BaseException) -> str:
    pixels = re.search(r"(\d+) pixels", str(exc))
    n = pixels.group(1) if pixels else "?"
    return f"image too large: {n} pixels exceeds the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS}"


def _stretch(a: np.ndarray) -> np.ndarray:
    """Map an array's own min..max onto 0..255 (a flat image becomes black)."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)


def _wide_to_l(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit int (I) and float (F) grayscale down to 8-bit L.

    I;16*: the bit depth is known, so 0..65535 maps to 0..255.
    I: bit depth is unknown; values within 0..255 are kept, within 0..65535
       are treated as 16-bit, anything else (negative, larger) is stretched.
    F: values within 0..1 are the usual float convention (x255), within 0..255
       are kept, otherwise stretched; NaN/inf become 0.
    """
    a = np.asarray(im).astype(np.float64)
    if not im.mode.startswith("I;16"):
        a = np.where(np.isfinite(a), a, 0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and 255 < hi <= 65535):
        a = a / 257.0
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif lo < 0 or hi > 255:
        a = _stretch(a)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency on white.

    The classifier never saw an alpha channel; Pillow's plain convert would keep
    whatever colour hides under alpha 0 (often black), while white is what a
    viewer shows and what product-style photos are usually shot against.
    """
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return _wide_to_l(im).convert("RGB")
    if im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def check_image_file(path: Path) -> None:
    """The checks before decoding: the file exists, is a regular file, and is not empty."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found (or a broken symbolic link)") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot access file ({exc.strerror or _one_line(exc)})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")


def read_image_bytes(path: Path) -> bytes:
    """A file's bytes for decoding elsewhere (load_rgb's `data`), with load_rgb's messages."""
    path = Path(path)
    check_image_file(path)
    try:
        return path.read_bytes()
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or _one_line(exc)})") from exc


def load_rgb(path: Path, min_side: int = 8, data: bytes | None = None) -> Image.Image:
    """Decode one image (first frame) to an EXIF-upright, fully loaded RGB copy.

    With `data`, the file's bytes as read elsewhere (a worker of the Ray engine gets
    them from the driver); `path` then only names the image in messages.
    Raises ImageReadError with a one-line reason for anything that goes wrong.
    """
    path = Path(path)
    if data is None:
        check_image_file(path)
    elif not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        # Local, not a change to Image.MAX_IMAGE_PIXELS: a bomb-sized image is an
        # error here rather than a warning nobody reads. (catch_warnings is not
        # thread-safe; call load_rgb from one thread or processes.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as src:
                try:
                    src.load()  # decode now so truncated files fail here, not later
                except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                    raise
                except Exception as exc:
                    raise ImageReadError(path, f"truncated or corrupt image data ({_one_line(exc)})") from exc
                upright = ImageOps.exif_transpose(src)  # a new, file-independent image
        w, h = upright.size
        if min(w, h) < min_side:
            raise ImageReadError(path, f"image is too small ({w}x{h} pixels); minimum side is {min_side}")
        return _to_rgb(upright)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, _bomb_reason(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image Pillow can read (cannot identify image file)") from exc
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied") from exc
    except Exception as exc:  # never let a Pillow surprise stop the run
        raise ImageReadError(path, _one_line(exc)) from exc


def folder_label(relpath: str) -> str | None:
    """Immediate parent folder of ``relpath``; None for files directly in the root."""
    parent = PurePosixPath(relpath).parent
    return None if parent == PurePosixPath(".") else parent.name


def _norm(name: str) -> str:
    return " ".join(name.casefold().replace("_", " ").replace("-", " ").split())


@lru_cache(maxsize=8)
def _label_table(class_names: tuple[str, ...]) -> dict[str, int | None]:
    """Normalised name -> index; None marks names shared by several classes."""
    table: dict[str, int | None] = {}
    for i, name in enumerate(class_names):
        key = _norm(name)
        table[key] = None if key in table else i
    return table


def match_label(folder: str | None, class_names: Sequence[str]) -> int | None:
    """Class index whose name matches ``folder`` (case, '_', '-', ' ' ignored).

    Returns None when nothing matches, and also when the name is ambiguous
    (ImageNet has two 'crane' classes): guessing would make accuracy wrong.
    """
    if not folder:
        return None
    return _label_table(tuple(class_names)).get(_norm(folder))
