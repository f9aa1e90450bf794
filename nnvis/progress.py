"""nnvis.run's progress: a bar in a terminal, tqdm's widget in Jupyter with ipywidgets, and one line
that updates in place in Jupyter without it (tqdm would warn and print a line per update there)."""

from __future__ import annotations

import sys
from typing import Callable

LABEL = "images x plugins"


def in_jupyter() -> bool:
    """Whether this runs in a Jupyter kernel (its output is a notebook's, not a terminal's)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def progress_bar(total: int, status: Callable[[], str] = lambda: "") -> Callable[[int], None]:
    """An `advance(n)` for the core's run (nnvis_core.runner.run's `progress`); the engine has
    nothing to add here (nnvis.run computes in this process)."""
    if in_jupyter() and not has_widgets():
        return display_line(total)
    if in_jupyter():
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm
    bar = tqdm(total=total, desc=LABEL, leave=False)

    def advance(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return advance


def display_line(total: int) -> Callable[[int], None]:
    """One line of text in the cell's output, updated in place (IPython's display handles)."""
    from IPython.display import display

    done = 0
    handle = display({"text/plain": f"{LABEL}: 0 of {total}"}, raw=True, display_id=True)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        handle.update({"text/plain": f"{LABEL}: {done} of {total}" + (" (done)" if done >= total else "")}, raw=True)

    return advance
