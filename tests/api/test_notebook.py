"""examples/notebooks/nnvis.ipynb runs headless in a real kernel (nbclient, ipykernel): its outputs
hold the rendered report (leaderboard, matrix, maps inlined) and no error, and stay light: two models,
three methods and 8 images in at most 500 KB of output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
OUTPUT_BUDGET = 500_000  # bytes of output in the executed notebook


def html_of(cell) -> str:
    return "".join(output.get("data", {}).get("text/html", "") for output in cell.outputs)


def text_of(cell) -> str:
    return "".join(output.get("data", {}).get("text/plain", "") + output.get("text", "") for output in cell.outputs)


def output_bytes(notebook) -> int:
    """The size of every cell's outputs as the .ipynb file stores them."""
    return sum(len(json.dumps(cell.outputs, ensure_ascii=False).encode("utf-8"))
               for cell in notebook.cells if cell.cell_type == "code")


def test_the_notebook_runs_and_shows_the_report_lightly(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the notebook's paths, relative to the repository
    notebook = nbformat.read(ROOT / "examples" / "notebooks" / "nnvis.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [output for cell in code for output in cell.outputs if output.output_type == "error"]
    assert errors == []
    report = html_of(code[0])
    assert report.startswith('<iframe class="nnvis-report" sandbox="allow-scripts"')
    for part in ("leaderboard", "matrix-data", "data:image/webp;base64,", "Grad-CAM", "Occlusion sensitivity",
                 "8 of 8 images", "and through &lt;strong&gt;demo-vit"):
        assert part in report, part
    assert "'demo-vit', 'gradcam'" in text_of(code[1]) and "'demo', 'occlusion'" in text_of(code[1])
    assert "Occlusion sensitivity" in html_of(code[2]) and "data:image/webp;base64," in html_of(code[2])
    assert "Brightness" in html_of(code[3])
    assert "torch.Size([64, 64])" in text_of(code[4]) and "'ring'" in text_of(code[4])
    assert (tmp_path / "nnvis-notebook-report" / "index.html").is_file()
    # no output on stderr (a progress bar that fell back to text, a warning) in the main run
    assert not [o for o in code[0].outputs if o.output_type == "stream" and o.name == "stderr"]
    assert output_bytes(notebook) <= OUTPUT_BUDGET, output_bytes(notebook)
