"""examples/notebooks/nnvis.ipynb runs headless in a real kernel (nbclient, ipykernel), and its
outputs hold the rendered report (leaderboard, matrix, maps inlined) and no error."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]


def html_of(cell) -> str:
    return "".join(output.get("data", {}).get("text/html", "") for output in cell.outputs)


def text_of(cell) -> str:
    return "".join(output.get("data", {}).get("text/plain", "") + output.get("text", "") for output in cell.outputs)


def test_the_notebook_runs_and_shows_the_report(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the notebook's paths, relative to the repository
    notebook = nbformat.read(ROOT / "examples" / "notebooks" / "nnvis.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [output for cell in code for output in cell.outputs if output.output_type == "error"]
    assert errors == []
    report = html_of(code[0])
    assert report.startswith('<iframe class="nnvis-report" sandbox="allow-scripts"')
    for part in ("leaderboard", "matrix-data", "data:image/png;base64,", "Grad-CAM", "Occlusion sensitivity"):
        assert part in report, part
    assert "gradcam" in text_of(code[1]) and "occlusion" in text_of(code[1])
    assert "ResNet" in html_of(code[2]) and "data:image/png;base64," in html_of(code[2])
    assert "Brightness" in html_of(code[3])
    assert "torch.Size([64, 64])" in text_of(code[4]) and "'ring'" in text_of(code[4])
    assert (tmp_path / "nnvis-notebook-report" / "index.html").is_file()
