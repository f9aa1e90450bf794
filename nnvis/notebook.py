"""What a notebook shows: the report, or one part of it, in a sandboxed frame; one result's card."""

from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path

import numpy as np

from nnvis_core.contract.artifacts import Result
from nnvis_reports.assets import save_artifact


PARTS = {"leaderboard": 700, "folder": 700, "matrix": 800, "dataset": 900, "model": 900}  # frame heights (px)


class Shown:
    """Something shown inline in a notebook (its HTML is made when asked for)."""

    def __init__(self, make) -> None:
        self._make = make

    def _repr_html_(self) -> str:
        return self._make()


class Leaderboard(list):
    """The leaderboard rows (dicts), shown in a notebook as the report's sortable table."""

    def __init__(self, rows: list[dict], shown: Shown):
        super().__init__(rows)
        self._shown = shown

    def _repr_html_(self) -> str:
        return self._shown._repr_html_()


def framed(page: str, height: int = 900) -> str:
    """A page in a sandboxed frame: scripts run in it, but cannot reach the notebook."""
    return (f'<iframe class="nnvis-report" sandbox="allow-scripts" style="width: 100%; height: {height}px; '
            f'border: 1px solid #ddd" srcdoc="{html.escape(page, quote=True)}"></iframe>')


def page_part(page: str, part: str) -> str:
    """The page with one section of it in the body (its head and scripts kept)."""
    found = re.search(rf'<section id="{part}"[^>]*>.*?</section>', page, re.S)
    head = page[:page.index("<body>") + len("<body>")]
    scripts = re.search(r"<script>(?:(?!<script>).)*</script>\s*<footer>", page, re.S)
    body = found[0] if found else f"<p>This run has no {part} to show.</p>"
    return head + body + (scripts[0].rsplit("<footer>", 1)[0] if scripts else "") + "</body></html>"


INLINED = re.compile(r"(?<![\w/.])(assets/[\w./-]+\.png)")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def inline_files(page: str, root: Path) -> str:
    """`page` with every assets/...png it names (in attributes and in its JSON data) as a data URI."""
    cache: dict[str, str] = {}

    def inline(match: re.Match) -> str:
        path = match[1]
        if path not in cache:
            cache[path] = data_uri(root / path) if (root / path).is_file() else path
        return cache[path]

    return INLINED.sub(inline, page)


def result_html(result: Result, pixels: np.ndarray | None) -> str:
    """A result's pictures (maps over the input, images, categorical maps) inlined, each with its title
    and caption, the other artifacts named, and the metrics; self-contained and escaped."""
    parts = []
    with tempfile.TemporaryDirectory(prefix="nnvis-result-") as temporary:
        root = Path(temporary)
        for number, artifact in enumerate(result.artifacts):
            saved = save_artifact(artifact, root, f"artifact-{number}", pixels, root)
            caption = f"<strong>{html.escape(artifact.title)}</strong>" + (
                f": {html.escape(artifact.caption)}" if artifact.caption else "")
            if saved["kind"] in ("image", "heatmap", "categorical"):
                parts.append(f'<figure style="display: inline-block; margin: 0 8px 8px 0; max-width: 200px">'
                             f'<img src="{data_uri(root / saved["path"])}" width="192" height="192" '
                             f'style="image-rendering: pixelated" alt="{html.escape(artifact.title)}">'
                             f"<figcaption>{caption}</figcaption></figure>")
            else:
                parts.append(f"<p>{caption} ({html.escape(saved['kind'])}: in the saved report)</p>")
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v:.4g}</td></tr>" for k, v in result.metrics.items())
    return "<div class=\"nnvis-result\">" + "".join(parts) + (f"<table>{rows}</table>" if rows else "") + "</div>"
