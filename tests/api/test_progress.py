"""nnvis.run's progress (nnvis.progress): in Jupyter without ipywidgets, one line updated in place,
never tqdm's warning and a line per update."""

from __future__ import annotations

import warnings

import pytest

from nnvis import progress

pytest.importorskip("IPython")


def test_in_jupyter_without_widgets_one_line_updates_in_place(monkeypatch):
    shown, updates = [], []

    class Handle:
        def update(self, data, raw=False):
            updates.append(data["text/plain"])

    def display(data, raw=False, display_id=False):
        shown.append(data["text/plain"])
        return Handle()

    import IPython.display

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(progress, "in_jupyter", lambda: True)
    monkeypatch.setattr(progress, "has_widgets", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's TqdmWarning would raise here
        advance = progress.progress_bar(3)
        for _ in range(3):
            advance(1)
    assert shown == ["images x plugins: 0 of 3"]
    assert updates == ["images x plugins: 1 of 3", "images x plugins: 2 of 3", "images x plugins: 3 of 3 (done)"]


def test_outside_jupyter_is_not_taken_for_it():
    assert progress.in_jupyter() is False
