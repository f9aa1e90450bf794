"""The report where no folder sits beside it (a notebook): the page, one part of it, or one result's
card, rendered from the report's own templates (nnvis_reports.render) as one self-contained document.

A saved report names its pictures as files beside the page. Here each picture the document shows is
encoded once (WebP, no larger than it is drawn) into one table, `window.nnvisPictures`, that the
page's scripts read (static/pictures.js): a picture shown in the matrix, the folder and an image's
detail is carried once, and the paths of files that do not exist here never reach the page. Links
to files only a saved report has (raw .npy, report.json) are left out (`inline` in the templates).

    inline_document(report, root)                 # the whole page
    inline_document(report, root, "leaderboard")  # one part: leaderboard, folder, matrix, dataset, model
    result_document(entry, plugin, root)          # one result, as its card in the report
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from markupsafe import Markup
from PIL import Image

from nnvis_reports.render import SCRIPTS, STYLES, environment, one_page_context, static

PARTS = ("page", "leaderboard", "folder", "matrix", "dataset", "model")
DRAWN = 192  # pixels: the largest a picture is drawn (report.css, `figure img`)
QUALITY = 80  # WebP quality: a preview; the saved report keeps the lossless PNGs
PICTURE_SUFFIXES = (".png",)
# The stylesheets and scripts each part needs (the page: all of the report's).
PART_STATIC = {
    "page": (STYLES, SCRIPTS),
    "leaderboard": (("report.css",), ("leaderboard.js",)),
    "folder": (("report.css",), ("pictures.js", "confusion.js")),
    "matrix": (STYLES, ("pictures.js", "matrix.js")),
    "dataset": (("report.css",), ("pictures.js", "scatter.js", "dictionary.js")),
    "model": (("report.css",), ("pictures.js", "scatter.js", "dictionary.js")),
    "result": (("report.css",), ("pictures.js", "scatter.js", "dictionary.js")),
    "image": (("report.css",), ("pictures.js", "scatter.js", "dictionary.js")),
}


def webp_uri(path: Path, keep_size: bool = False) -> str:
    """A picture file as a WebP data URI, shrunk to at most DRAWN pixels a side unless `keep_size`
    (sprite sheets, whose coordinates are in their own pixels)."""
    with Image.open(path) as picture:
        picture = picture.convert("RGBA" if "A" in picture.getbands() or picture.mode == "P" else "RGB")
        if not keep_size and max(picture.size) > DRAWN:
            picture.thumbnail((DRAWN, DRAWN), Image.Resampling.BILINEAR)
        encoded = io.BytesIO()
        picture.save(encoded, "WEBP", quality=QUALITY, method=4)
    return "data:image/webp;base64," + base64.b64encode(encoded.getvalue()).decode("ascii")


class PictureTable:
    """The pictures of one document, by key: a path of the report becomes a key
    (a hash of its bytes) when the data is keyed, and a picture is encoded only once something shown uses its key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.keys: dict[str, str] = {}  # report path -> key
        self.paths: dict[str, str] = {}  # key -> report path
        self.used: dict[str, None] = {}  # keys in the order they were used

    def keyed(self, data: Any) -> Any:
        """`data` (report.json's content, or part of it) with each picture path that names a file
        under root replaced by its key."""
        if isinstance(data, dict):
            return {key: self.keyed(value) for key, value in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.keyed(value) for value in data]
        if isinstance(data, str) and data.endswith(PICTURE_SUFFIXES) and (self.root / data).is_file():
            if data not in self.keys:
                # Files of the same bytes (both models' inputs, say) share one key, hence one picture.
                key = "#" + hashlib.sha256((self.root / data).read_bytes()).hexdigest()[:16]
                self.keys[data] = key
                self.paths.setdefault(key, data)
            return self.keys[data]
        return data

    def use(self, data: Any) -> None:
        """Every key in `data` (what a script of the page will ask nnvisPicture for)."""
        if isinstance(data, dict):
            data = list(data.values())
        if isinstance(data, (list, tuple)):
            for value in data:
                self.use(value)
        elif isinstance(data, str) and data in self.paths:
            self.used[data] = None

    def attribute(self, key: str) -> Markup:
        """An <img>'s attribute for the picture `key`: static/pictures.js gives it its src."""
        self.use(key)
        return Markup('data-picture="{}"').format(key)

    def __html__(self) -> str:
        """The table as a script statement; a template writes it after the body, once every picture
        the body shows has been used."""
        table = {key: webp_uri(self.root / self.paths[key], ".sprite" in self.paths[key]) for key in self.used}
        return f"window.nnvisPictures = {json.dumps(table)};\n"

    __str__ = __html__


def inline_document(report: dict, root: Path, part: str = "page", image: int | None = None) -> str:
    """The page (`page`) or one part of it as a self-contained document; `report` is report.json's
    content, its picture paths relative to `root`. The page leaves out each image's detail (the
    bulk of a page): part `image` shows the detail of image number `image` on demand."""
    if part not in (*PARTS, "image"):
        raise ValueError(f"no part {part!r}; the parts are {', '.join(PARTS)}")
    table = PictureTable(root)
    context = one_page_context(table.keyed(report))
    if part == "image":
        context["entry"] = context["report"]["images"][image]
        table.use([view["images"][image] for view in context["views"]])  # dictionary pictures
    if part in ("page", "matrix"):
        table.use(context["matrix"]["rows"])  # matrix.js draws these
    if part in ("page", "dataset", "model"):
        for view in context["views"]:
            table.use([view["dataset"], view["model_results"]])  # scatter sprites, dictionary pictures
    shown = {"page": True, "leaderboard": bool(context["leaderboard_rows"]), "folder": bool(context["folder_images"]),
             "matrix": bool(context["matrix"]["header"]["plugins"]),
             "dataset": any(view["dataset"] for view in context["views"]),
             "model": any(view["model_results"] for view in context["views"]), "image": True}[part]
    template = environment().get_template("index.html.j2" if part == "page" else "part.html.j2")
    styles, scripts = PART_STATIC[part]
    return "".join(template.generate(**context, part=part, shown=shown, inline=True, picture=table.attribute,
                                     pictures=table, css=static(styles), scripts=static(scripts)))


def result_document(entry: dict, plugin: dict, root: Path, report: dict | None = None) -> str:
    """One result (`entry`: a result of report.json, its pictures under `root`) drawn as its card in
    the report, as a self-contained document; `plugin` gives its title and description."""
    table = PictureTable(root)
    report = table.keyed(report or {"images": []})
    template = environment().get_template("part.html.j2")
    return "".join(template.generate(
        part="result", shown=True, result=table.keyed(entry), plugin=plugin, report=report, paging=None,
        scatter_sources={}, image_href=lambda index: f"#img-{index}", inline=True, picture=table.attribute,
        pictures=table, css=static(PART_STATIC["result"][0]), scripts=static(PART_STATIC["result"][1])))
