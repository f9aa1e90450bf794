"""A large folder's report in pieces, so that index.html stays small at 100,000 images.

A document holds at most PAGE_SIZE images' detail and about PAGE_BYTES of it: with one
method that is 500 images, with every built-in (about 95 KB of detail an image: curves,
tables, galleries) about 40. Up to that many readable images, everything is in index.html.
Beyond that:

- each image's full detail goes to a page of that many images, ``pages/images-NNNN.html``
  (image i is on page i // size), which opens on its own from file://;
- the matrix's rows go to script chunks, ``assets/matrix/rows-NNNN.js``, that the index
  loads with <script src>, the first alone and then the rest together, run in order (a page
  opened from file:// may not fetch JSON, but it may run scripts from its own folder);
  filters, sorts and the file-name search then work across every image;
- the first screen shows the first FOLDER_LIMIT thumbnails; the matrix lists them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

PAGE_SIZE = 500  # a page of 500 images' detail is about 0.7 MB with one method
# Chromium took 7 s to load a 47 MB page of 500 images with every built-in (148 ms a MB):
# a page of 4 MiB loads in well under a second.
PAGE_BYTES = 4 * 2**20
FOLDER_LIMIT = 240
CHUNK_CALL = "nnvisMatrixRows"  # the function each chunk calls (static/matrix.js defines it)


@dataclass(frozen=True)
class Paging:
    """How a report is split: None of this applies to a report of at most PAGE_SIZE images."""

    image_count: int  # entries in report["images"], readable or not
    size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return (self.image_count + self.size - 1) // self.size

    def page_of(self, index: int) -> int:
        return index // self.size

    def page_path(self, page: int) -> str:
        return f"pages/images-{page:04d}.html"

    def image_href(self, index: int) -> str:
        """Where image `index`'s detail is, relative to the report folder."""
        return f"{self.page_path(self.page_of(index))}#img-{index}"

    def indices(self, page: int) -> range:
        return range(page * self.size, min((page + 1) * self.size, self.image_count))


def paging_for(images: list[dict], size: int = PAGE_SIZE, detail_bytes: float = 0.0) -> Paging | None:
    """A Paging when the report has more readable images than fit one page, else None. A page
    holds at most `size` images and, at `detail_bytes` of detail an image, about PAGE_BYTES."""
    if detail_bytes > 0:
        size = max(1, min(size, int(PAGE_BYTES // detail_bytes)))
    readable = sum(1 for image in images if image["status"] == "ok")
    return Paging(len(images), size) if readable > size else None


def write_row_chunks(rows: Iterable[dict], folder: Path, size: int = PAGE_SIZE) -> Iterator[str]:
    """Write the matrix rows as scripts of `size` rows each; yield each one's path relative to the
    report folder. json.dumps escapes every non-ASCII character, so a chunk is plain ASCII
    whatever the file names hold. The rows are a string given to JSON.parse, not an object
    literal: Chromium parses JSON faster than script (100,000 rows: 2.1 s against 2.8 s with
    the chunks requested together)."""
    folder.mkdir(parents=True, exist_ok=True)
    chunk: list[dict] = []
    number = 0

    def flush() -> str:
        path = folder / f"rows-{number:04d}.js"
        rows = json.dumps(json.dumps(chunk, allow_nan=False))  # a JSON text as a string literal
        path.write_text(f"{CHUNK_CALL}({number}, JSON.parse({rows}));\n", encoding="ascii")
        chunk.clear()
        return f"assets/matrix/{path.name}"

    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield flush()
            number += 1
    if chunk:
        yield flush()
