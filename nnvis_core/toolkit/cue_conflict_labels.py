"""The names of cue-conflict images: which class gave the shape and which the texture.

`nnvis cue-conflict` writes them and the `shape_bias` plugin reads them, so the
format lives here, below both. A folder carries its labels two ways: a CSV
(``cue-conflict.csv``: file, shape, texture) and the file names themselves,
``SHAPE-TEXTURE_index.png`` as the command writes them, or ``airplane1-bicycle2.png``
as in the published stimuli of Geirhos et al. (ICLR 2019), where the digits
number the source images.

>>> cue_conflict_name("star", "ring", 3)
'star-ring_3.png'
>>> parse_cue_conflict_name("airplane1-bicycle2.png", ["airplane", "bicycle"])
('airplane', 'bicycle')
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Collection, Iterable

CUE_CONFLICT_CSV = "cue-conflict.csv"
CSV_COLUMNS = ("file", "shape", "texture")
_INDEX_SUFFIX = re.compile(r"_\d+$")
_TRAILING_DIGITS = re.compile(r"\d+$")


class CueConflictError(ValueError):
    """A cue-conflict CSV that cannot be read (one line, naming the file)."""


def cue_conflict_name(shape: str, texture: str, index: int) -> str:
    """The file name of the `index`-th image with `shape`'s shape and `texture`'s texture."""
    return f"{shape}-{texture}_{index}.png"


def parse_cue_conflict_name(file_name: str, classes: Collection[str]) -> tuple[str, str] | None:
    """(shape, texture) for a file name of either convention, or None when it follows neither.

    The name is split at a hyphen whose two sides, without an ``_index`` suffix and
    trailing digits, are both among `classes` (compared case-insensitively; the
    spelling of `classes` is returned): the class list settles names that hold a
    hyphen themselves.
    """
    by_lower = {name.lower(): name for name in classes}
    stem = _INDEX_SUFFIX.sub("", Path(file_name).stem)
    parts = stem.split("-")
    for cut in range(1, len(parts)):
        shape = _TRAILING_DIGITS.sub("", "-".join(parts[:cut])).lower()
        texture = _TRAILING_DIGITS.sub("", "-".join(parts[cut:])).lower()
        if shape in by_lower and texture in by_lower:
            return by_lower[shape], by_lower[texture]
    return None


def write_cue_conflict_csv(path: Path, rows: Iterable[tuple[str, str, str]]) -> None:
    """Write (file, shape, texture) rows, file relative to the CSV's folder."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)


def read_cue_conflict_csv(path: Path) -> dict[str, tuple[str, str]]:
    """{file (POSIX path relative to the CSV's folder): (shape, texture)}."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not set(CSV_COLUMNS) <= set(reader.fieldnames or ()):
                raise CueConflictError(f"{path}: expected the columns {', '.join(CSV_COLUMNS)}, "
                                       f"got {', '.join(reader.fieldnames or ()) or 'none'}")
            return {row["file"].replace("\\", "/"): (row["shape"], row["texture"]) for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CueConflictError(f"{path}: {error}") from error
