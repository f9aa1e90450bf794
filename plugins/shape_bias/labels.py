"""Which class gave each image its shape and which its texture: from the folder's CSV, else the file names."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Sequence

from nnvis_core.images import ImageRecord
from nnvis_core.toolkit import CUE_CONFLICT_CSV, parse_cue_conflict_name, read_cue_conflict_csv

CONVENTIONS = "SHAPE-TEXTURE_index.png (nnvis cue-conflict) or shape1-texture2.png (Geirhos et al.)"


class FolderRefusal(ValueError):
    """A folder the plugin cannot measure: the one-line reason is shown on its card."""


def folder_root(record: ImageRecord) -> Path:
    """The folder the report was run on (where a cue-conflict CSV would sit)."""
    return record.path.parents[len(PurePosixPath(record.relpath).parts) - 1]


def _preview(names: Sequence[str], count: int = 6) -> str:
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def cue_labels(records: Sequence[ImageRecord], classes: Sequence[str]) -> dict[int, tuple[str, str]]:
    """{record index: (shape, texture)} with names spelled as in `classes`, for the records that have them.

    Raises FolderRefusal when no record has labels, or when the labels name classes
    that are not among `classes`.
    """
    if not records:
        raise FolderRefusal("no readable images")
    csv_path = folder_root(records[0]) / CUE_CONFLICT_CSV
    if csv_path.is_file():
        return _from_csv(records, classes, csv_path)
    found = {r.index: cues for r in records if (cues := parse_cue_conflict_name(r.path.name, classes))}
    if found:
        return found
    loose = sorted({side for r in records if "-" in r.path.stem for side in _hyphen_sides(r.path.name) if side})
    if loose:
        raise FolderRefusal(f"the file names name classes the model does not have: {_preview(loose)} "
                            f"(its classes: {_preview(list(classes))})")
    raise FolderRefusal(f"no file name follows a cue-conflict convention, {CONVENTIONS}, and there is no "
                        f"{CUE_CONFLICT_CSV}; make such images with nnvis cue-conflict")


def _hyphen_sides(file_name: str) -> list[str]:
    """Both sides of the first hyphen, without index and digits: the classes a name claims."""
    stem = re.sub(r"_\d+$", "", Path(file_name).stem)
    shape, _, texture = stem.partition("-")
    return [re.sub(r"\d+$", "", shape), re.sub(r"\d+$", "", texture)]


def _from_csv(records: Sequence[ImageRecord], classes: Sequence[str], csv_path: Path) -> dict[int, tuple[str, str]]:
    by_lower = {name.lower(): name for name in classes}
    rows = read_cue_conflict_csv(csv_path)
    unknown = sorted({name for cues in rows.values() for name in cues if name.lower() not in by_lower})
    if unknown:
        raise FolderRefusal(f"{csv_path.name} names classes the model does not have: {_preview(unknown)} "
                            f"(its classes: {_preview(list(classes))})")
    found = {r.index: tuple(by_lower[name.lower()] for name in rows[r.relpath])
             for r in records if r.relpath in rows}
    if not found:
        raise FolderRefusal(f"{csv_path.name} lists none of the images of the folder")
    return found  # type: ignore[return-value]
