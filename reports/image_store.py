"""A report's image entries on disk, so that the memory of a run does not grow with its folder.

Each image's entry (its predictions, and every plugin's metrics, captions and
curves: about 3 KB of JSON with one method, 10 KB as Python objects) is needed
twice at the end of a run, for report.json and for the page, and never while
the other images are computed. An ImageStore keeps the entries as JSON lines
in an anonymous temporary file beside the report and only their positions in
memory (16 bytes an image), so 100,000 images cost about 1.6 MB of memory
instead of about 1 GB. It reads as a sequence of dicts: each access decodes the
entry afresh, so change one by assigning it back (`store[i] = entry`).
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO


class ImageStore(Sequence):
    """Image entries by index, as JSON lines in a temporary file (removed when closed or collected)."""

    def __init__(self, entries: Iterable[dict] = (), folder: Path | None = None) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=folder)
        self._starts = array("q")
        self._sizes = array("q")
        for entry in entries:
            self.append(entry)

    def _write(self, entry: dict) -> tuple[int, int]:
        line = json.dumps(entry, ensure_ascii=False, allow_nan=True).encode("utf-8")
        start = self._file.seek(0, os.SEEK_END)
        self._file.write(line)
        return start, len(line)

    def append(self, entry: dict) -> None:
        start, size = self._write(entry)
        self._starts.append(start)
        self._sizes.append(size)

    def __setitem__(self, index: int, entry: dict) -> None:
        """Replace entry `index` (written anew at the end of the file; the old line is left unused)."""
        index = range(len(self))[index]
        self._starts[index], self._sizes[index] = self._write(entry)

    def raw(self, index: int) -> bytes:
        """Entry `index` as its JSON text (UTF-8), for writing report.json without decoding it."""
        self._file.seek(self._starts[index])
        return self._file.read(self._sizes[index])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return json.loads(self.raw(range(len(self))[index]))

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[dict]:
        for index in range(len(self)):
            yield self[index]

    def close(self) -> None:
        self._file.close()


def images_json(images: Sequence[dict]) -> Iterator[str]:
    """A JSON array of `images` in pieces, one entry a line: a store's entries go out as they are
    stored, without being decoded."""
    yield "["
    for index in range(len(images)):
        text = images.raw(index).decode("utf-8") if isinstance(images, ImageStore) else json.dumps(
            images[index], ensure_ascii=False)
        yield ("\n" if index == 0 else ",\n") + text
    yield "\n]"
