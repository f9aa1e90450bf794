"""report dict -> index.html, through the Jinja2 templates in this package (autoescape on)."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Iterator

import jinja2
from markupsafe import Markup

from nnvis_core.images import IN_MEMORY_ROOT
from nnvis_reports.atlas import BAR_WIDTH, atlas_anchors, atlas_groups, concept_rows
from nnvis_reports.bars import bar_geometry
from nnvis_reports.colormaps import DIVERGING, SEQUENTIAL, category_colour, css_gradient
from nnvis_reports.confusion import confusion
from nnvis_reports.curves import curve_plot, mean_curves
from nnvis_reports.leaderboard import (
    ALL_COLUMNS,
    GROUP_MEANING,
    GROUPS,
    best,
    category_ranks,
    columns_for,
    metric_groups,
)
from nnvis_reports.matrix import matrix_columns, matrix_header, matrix_rows
from nnvis_reports.paging import FOLDER_LIMIT, PAGE_SIZE, Paging, paging_for, write_row_chunks
from nnvis_reports.reader import model_label, model_view, upgrade


def _scatter_points(entry: dict, size: int = 400, margin: int = 12) -> list[dict]:
    """Points scaled into a size x size SVG box, with a colour per label."""
    points = entry.get("points") or []
    if not points:
        return []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys)) or 1.0
    scale = (size - 2 * margin) / span
    labels = entry.get("labels") or [""] * len(points)
    palette = {label: "#%02x%02x%02x" % category_colour(i) for i, label in enumerate(dict.fromkeys(labels))}
    ids = entry.get("image_ids") or [None] * len(points)
    return [{"x": margin + (x - min(xs)) * scale, "y": margin + (y - min(ys)) * scale,
             "label": label, "color": palette[label], "image_id": image_id}
            for x, y, label, image_id in zip(xs, ys, labels, ids)]


def _scatter_view(entry: dict, report: dict, page_size: int | None = None) -> dict:
    """What the interactive scatter script needs, as plain data (embedded with |tojson).

    Points are scaled into [0, 1] keeping their aspect; names come from the report
    images the points link to; colours are fixed per class name so that the
    predicted and true colourings agree.
    """
    points = entry.get("points") or []
    n = len(points)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    low_x, low_y = (min(xs), min(ys)) if n else (0.0, 0.0)
    span = (max(max(xs) - low_x, max(ys) - low_y) if n else 0.0) or 1.0
    ids = entry.get("image_ids") or [None] * n
    images = report["images"]  # read one at a time: they may be on disk (nnvis_reports.image_store)
    names, said, known = [], [], []
    for i in ids:
        image = images[i] if i is not None and 0 <= i < len(images) else None
        names.append(image["path"] if image else "")
        # What the model said about each linked image, for the hover text (colours follow `labels`).
        said.append(image["predictions"][0]["name"] if image and image.get("predictions") else None)
        known.append(image["true_class"]["name"] if image and image.get("true_class") else None)
    predicted = entry.get("labels") or [""] * n
    truth = entry.get("true_labels") or None
    palette = {label: "#%02x%02x%02x" % category_colour(i)
               for i, label in enumerate(dict.fromkeys([*predicted, *(truth or [])]))}
    return {"x": [round((x - low_x) / span, 5) for x in xs], "y": [round((y - low_y) / span, 5) for y in ys],
            "ids": ids, "names": names, "predicted": predicted, "truth": truth, "palette": palette,
            "image_predicted": said, "image_truth": known, "page_size": page_size,
            "sprite": entry.get("sprite")}


def _chart_lines(entry: dict, width: int = 400, height: int = 240, margin: int = 36) -> dict:
    """Series as SVG polylines in a width x height box, with axis limits and tick positions."""
    xs = entry["x"]
    values = [v for series in entry["series"].values() for v in series]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5, high + 0.5
    x_low, x_high = min(xs), max(xs)
    x_span = (x_high - x_low) or 1.0

    def px(x: float) -> float:
        return margin + (x - x_low) / x_span * (width - 2 * margin)

    def py(y: float) -> float:
        return height - margin - (y - low) / (high - low) * (height - 2 * margin)

    lines = []
    for i, (name, series) in enumerate(entry["series"].items()):
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, series))
        lines.append({"name": name, "points": points, "color": "#%02x%02x%02x" % category_colour(i)})
    ticks = [{"x": px(x), "label": label} for x, label in zip(xs, entry.get("x_ticks") or [f"{x:g}" for x in xs])]
    return {"lines": lines, "ticks": ticks, "low": low, "high": high, "width": width, "height": height,
            "margin": margin, "y_low": py(low), "y_high": py(high)}


def wrong_prediction(image: dict) -> bool:
    """Whether the model's top class differs from the image's known class (False when unknown)."""
    truth, predictions = image.get("true_class"), image.get("predictions")
    return bool(truth and predictions and predictions[0]["index"] != truth["index"])


def top_class(image: dict) -> str | None:
    """The name of the model's top class for one image entry (None when it has no predictions)."""
    return image["predictions"][0]["name"] if image.get("predictions") else None


def disagreements(views: list[dict]) -> set[int]:
    """The indices of the readable images whose top class (by name) is not the same for every model."""
    return {image["index"] for image in views[0]["images"] if image["status"] == "ok"
            and len({top_class(view["images"][image["index"]]) for view in views}) > 1}


def wrong_anywhere(index: int, views: list[dict]) -> bool:
    """Whether some model's top class for image `index` differs from its known class."""
    return any(wrong_prediction(view["images"][index]) for view in views)


def file_picture(path: str) -> Markup:
    """An <img>'s src attribute for a picture saved beside the page (nnvis_reports.inline draws
    the same tag from its table of pictures instead)."""
    return Markup('src="{}"').format(path)


def _compact_dumps(value, **kwargs) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, **kwargs)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("nnvis_reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        sequential_gradient=css_gradient(SEQUENTIAL),
        diverging_gradient=css_gradient(DIVERGING),
        scatter_points=_scatter_points,
        scatter_view=_scatter_view,
        chart_lines=_chart_lines,
        bar_geometry=bar_geometry,
        atlas_anchors=atlas_anchors,
        concept_rows=concept_rows,
        concept_bar_width=BAR_WIDTH,
        atlas_css=_static(("concepts.css",)),
        wrong_prediction=wrong_prediction,
        wrong_anywhere=wrong_anywhere,
        leaderboard_groups=GROUPS,
        leaderboard_group_meaning=GROUP_MEANING,
        confusion=confusion,
        mean_curves=mean_curves,
        curve_plot=curve_plot,
        picture=file_picture,
        inline=False,  # a page shown inline (nnvis_reports.inline): no files beside it
        in_memory_root=str(IN_MEMORY_ROOT),
    )
    env.filters["compact_json"] = lambda value: jinja2.utils.htmlsafe_json_dumps(value, dumps=_compact_dumps)
    env.filters["pct"] = lambda p: f"{100 * p:.1f}%"
    env.filters["num"] = lambda v: f"{v:.4g}" if isinstance(v, float) else v
    env.filters["metric_groups"] = metric_groups
    return env


# Our own scripts, inlined like the stylesheet (the page loads nothing from elsewhere but its own
# folder's files: pictures, and the matrix's row chunks in a paged report).
SCRIPTS = ("pictures.js", "scatter.js", "dictionary.js", "leaderboard.js", "matrix.js", "confusion.js")
PAGE_SCRIPTS = ("pictures.js", "dictionary.js", "detail.js")
STYLES = ("report.css", "matrix.css")


def _static(names: tuple[str, ...]) -> str:
    from importlib import resources

    static = resources.files("nnvis_reports").joinpath("static")
    return "\n".join(static.joinpath(name).read_text(encoding="utf-8") for name in names)


def write_html(report: dict, path, page_size: int | None = None) -> None:
    """Render index.html (from report.json's content, either schema version) straight to a file,
    chunk by chunk: a page for thousands of images is never held whole in memory. With more
    readable images than `page_size`, each image's detail goes to pages/ and the matrix rows
    to assets/matrix/ beside it (nnvis_reports.paging)."""
    path = Path(path)
    report = upgrade(report)
    views = [model_view(report, k) for k in range(len(report["by_model"]))]
    labels = [model_label(report, k) for k in range(len(views))]
    inline = {**_context(report, views, labels, None), "scatter_sources": {}}  # as if on one page
    paging = paging_for(views[0]["images"], page_size or PAGE_SIZE, detail_bytes(inline, views[0]["images"]))
    header, rows = _matrix(views, labels)
    if paging is not None:
        rows = ({**row, "href": paging.image_href(row["index"])} for row in rows)
    if paging is None:
        matrix = {"header": header, "rows": rows, "chunks": []}
    else:
        matrix = {"header": header, "rows": [], "chunks": list(write_row_chunks(rows, path.parent / "assets" / "matrix",
                                                                                page_size or PAGE_SIZE))}
    context = {**inline, **_paged(paging), **_folder(views, paging)}
    context["scatter_sources"] = _write_scatter_data(views, paging, path.parent) if paging else {}
    template = _environment().get_template("index.html.j2")
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(template.generate(**context, matrix=matrix, css=_static(STYLES), scripts=_static(SCRIPTS),
                                         pictures=""))
    if paging is not None:
        _write_pages(paging, context, path.parent / "pages")


def _matrix(views: list[dict], labels: list[str]) -> tuple[dict, Iterator[dict]]:
    """The matrix's header (its columns) and its rows, one per readable image (a generator)."""
    columns = matrix_columns(views, labels)
    header = matrix_header(columns, labels, {c.key: c.better for c in ALL_COLUMNS})
    header["maps"] = [any(cell_draws_map(image["results"].get(c["plugin"]["name"]))
                          for image in views[c["model"]]["images"]) for c in columns]
    return header, matrix_rows(views, columns)


def one_page_context(report: dict) -> dict:
    """Everything index.html.j2 is rendered with for a report on one page, its matrix rows inline
    (a report shown in a notebook: nnvis_reports.inline)."""
    report = upgrade(report)
    views = [model_view(report, k) for k in range(len(report["by_model"]))]
    labels = [model_label(report, k) for k in range(len(views))]
    header, rows = _matrix(views, labels)
    return {**_context(report, views, labels, None), **_folder(views, None), "scatter_sources": {},
            "matrix": {"header": header, "rows": list(rows), "chunks": []}}


def environment() -> jinja2.Environment:
    """The report's templates (for nnvis_reports.inline)."""
    return _environment()


def static(names: tuple[str, ...]) -> str:
    """The report's own stylesheets or scripts, joined (for nnvis_reports.inline)."""
    return _static(names)


def _context(report: dict, views: list[dict], labels: list[str], paging: Paging | None) -> dict:
    """What every template of the report is rendered with."""
    view_plugins = [{p["name"]: p for p in view["plugins"]} for view in views]
    view_atlases = [atlas_groups(view, plugins) for view, plugins in zip(views, view_plugins)]  # nav and section
    rows = report.get("leaderboard") or []
    return {"report": views[0], "views": views, "multi": len(views) > 1, "plugins": view_plugins[0],
            "view_plugins": view_plugins, "view_atlases": view_atlases, "disagreeing": disagreements(views),
            "labels": labels,
            "leaderboard_rows": rows, "leaderboard_best": best(rows), "leaderboard_columns": columns_for(rows),
            "leaderboard_ranks": category_ranks(rows), **_paged(paging)}


def _paged(paging: Paging | None) -> dict:
    """The part of the context that depends on how the report is split into pages."""
    return {"paging": paging, "image_href": paging.image_href if paging else (lambda index: f"#img-{index}"),
            "folder_limit": FOLDER_LIMIT if paging else None}


def _folder(views: list[dict], paging: Paging | None) -> dict:
    """The folder at a glance: the readable images its grid shows (a paged report: the first
    FOLDER_LIMIT) and how many there are, in one pass over the images."""
    readable = (image for image in views[0]["images"] if image["status"] == "ok")
    shown = list(islice(readable, FOLDER_LIMIT)) if paging else list(readable)
    return {"folder_images": shown, "readable_count": len(shown) + sum(1 for _ in readable)}


def detail_bytes(context: dict, images: list[dict], sample: int = 32) -> float:
    """The mean size in bytes of a readable image's detail section, over `sample` of them spread
    through the folder: what decides how many images a page can hold (nnvis_reports.paging)."""
    template = _environment().get_template("image_section.html.j2")
    readable = [index for index, image in enumerate(images) if image["status"] == "ok"]
    entries = [images[index] for index in readable[::max(1, len(readable) // sample)][:sample]]
    sizes = [len("".join(template.generate(**context, entry=entry)).encode("utf-8")) for entry in entries]
    return sum(sizes) / len(sizes) if sizes else 0.0


def _write_pages(paging: Paging, context: dict, folder: Path) -> None:
    """Each page of `paging.size` images' full detail, as its own document."""
    folder.mkdir(parents=True, exist_ok=True)
    template = _environment().get_template("page.html.j2")
    css, scripts = _static(STYLES), _static(PAGE_SCRIPTS)
    images = context["report"]["images"]
    for page in range(paging.pages):
        entries = [images[i] for i in paging.indices(page) if images[i]["status"] == "ok"]
        with open(folder / Path(paging.page_path(page)).name, "w", encoding="utf-8") as out:
            out.writelines(template.generate(**context, page=page, entries=entries, css=css, scripts=scripts,
                                             pictures=""))


def _write_scatter_data(views: list[dict], paging: Paging, root: Path) -> dict[str, str]:
    """In a paged report, each scatter's points go to a script beside the page, as the matrix rows
    do (thousands of names would swell the index); returns {the scatter's raw path: the script}."""
    sources = {}
    for k, view in enumerate(views):
        for section in (view["dataset"], view["model_results"]):
            for name, result in section.items():
                for number, artifact in enumerate(result.get("artifacts") or []):
                    if artifact["kind"] != "scatter":
                        continue
                    src = f"assets/scatter/{k}-{name}-{number}.js"
                    (root / "assets" / "scatter").mkdir(parents=True, exist_ok=True)
                    data = json.dumps(_scatter_view(artifact, view, paging.size), allow_nan=False)
                    (root / src).write_text(f"nnvisScatterData({json.dumps(src)}, {data});\n", encoding="ascii")
                    sources[artifact["raw"]] = src
    return sources


def cell_draws_map(result: dict | None) -> bool:
    """Whether a result's first picture is a heatmap (the matrix shows such plugins' columns)."""
    return bool(result and result.get("artifacts") and result["artifacts"][0]["kind"] == "heatmap")
