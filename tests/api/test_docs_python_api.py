"""Every example of docs/python-api.md runs, in order, from the repository root."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_example_of_the_python_api_page_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    examples = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(examples) >= 4
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the page's paths, relative to the repository
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, example in enumerate(examples):
        exec(compile(example, f"python-api.md example {number + 1}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "<nnvis.Run: 40 images through demo" in printed
    assert "(64, 64)" in printed and "'gradcam'" in printed and "ring" in printed
    assert (tmp_path / "nnvis-python-report" / "index.html").is_file()
    shutil.rmtree(tmp_path / "nnvis-python-report")
