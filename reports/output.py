"""The output folder's life: check it, stage the report beside it, move it into place at the end.

A run writes into a work folder beside OUT, ``.OUT.nnvis-work/``: the report
being written in ``report/`` and the result cache in ``cache/``. Only a finished
report replaces OUT, by renaming folders, so a run that is interrupted or
crashes leaves whatever was at OUT as it was, and its work folder lets
``--resume`` reuse the results already computed. A finished run removes its
work folder, but keeps the cache when some plugin calls failed: `--resume`
then computes only those again.

OUT may be missing, empty, or an nnvis report (recognised by the ``format``
marker in its report.json). Any other folder is written only with ``force``.
A folder holding nothing but a report is replaced whole, in one rename; a
folder with other files too gets only the report's own entries (index.html,
report.json, assets/) replaced, one rename each, and keeps the rest. That
entry-by-entry move is also used when OUT holds the current directory, so that
a shell sitting in OUT is not left in a deleted folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, TextIO

from nnvis_core.run.cache import count_entries
from nnvis_reports.writer import REPORT_FORMAT

WORK_SUFFIX = ".nnvis-work"


class OutputError(Exception):
    """OUT cannot be written as asked; the message is one line for the user."""


def is_report(folder: Path) -> bool:
    """True when `folder` holds a report.json written by nnvis."""
    try:
        data = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == REPORT_FORMAT


def work_folder(target: Path) -> Path:
    """Where a run writing `target` keeps its partial report and its cache."""
    target = Path(os.path.realpath(target))
    return target.parent / f".{target.name}{WORK_SUFFIX}"


class OutputFolder:
    """OUT and its work folder, for one run: check(), begin(), then commit() or release()."""

    def __init__(self, target: Path, force: bool = False) -> None:
        self.target = Path(os.path.realpath(target))  # a link to a folder: the folder itself
        if self.target.parent == self.target:
            raise OutputError(f"{self.target}: a report cannot replace the filesystem root; name a folder")
        self.force = force
        self.work = work_folder(self.target)
        self.staging = self.work / "report"
        self.cache_dir = self.work / "cache"
        self.previous = self.work / "previous"  # what OUT held, moved aside during commit
        self._lock: TextIO | None = None

    def _replaceable(self) -> bool:
        return not self.target.exists() or is_report(self.target) or not any(self.target.iterdir())

    def check(self) -> None:
        """Raise OutputError when OUT may not be written (before any work is done)."""
        if self.target.exists() and not self.target.is_dir():
            raise OutputError(f"{self.target}: exists and is not a folder")
        if not self.force and not self._replaceable():
            raise OutputError(f"{self.target}: folder exists and is not an nnvis report; use --force to write "
                              f"index.html, report.json and assets/ into it (its other files are kept)")

    def begin(self, resume: bool, log: Callable[[str], None] = lambda line: None) -> Path:
        """Lock the work folder, keep or drop an interrupted run's cache, return an empty staging folder."""
        try:
            self.work.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{self.work}: cannot create the work folder ({error.strerror or error})") from None
        self._lock = _take_lock(self.work / "lock", self.target)
        self._restore_previous()
        leftover = count_entries(self.cache_dir)
        if not resume:
            if leftover:
                log(f"discarding {leftover} results of an interrupted run (--resume reuses them)")
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        elif leftover:
            log(f"resuming: {leftover} results of an interrupted run are reused where inputs and settings match")
        else:
            log("nothing to resume: no interrupted run for this output folder")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir()
        self.cache_dir.mkdir(exist_ok=True)
        return self.staging

    def commit(self, keep_cache: bool = False) -> None:
        """Move the finished report from the staging folder to OUT; remove the work folder (all but the
        cache with `keep_cache`, so that a later --resume reuses it)."""
        cwd = Path.cwd()
        ours = {entry.name for entry in self.staging.iterdir()}
        theirs = {entry.name for entry in self.target.iterdir()} if self.target.is_dir() else set()
        if theirs - ours or cwd == self.target or self.target in cwd.parents:
            self._merge()
        else:
            if self.target.exists():
                os.rename(self.target, self.previous)
            os.rename(self.staging, self.target)
        self.release()
        if keep_cache:
            shutil.rmtree(self.staging, ignore_errors=True)
            shutil.rmtree(self.previous, ignore_errors=True)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def _merge(self) -> None:
        """Replace OUT's entries one by one (old ones first moved aside), report.json last."""
        self.previous.mkdir(exist_ok=True)
        entries = sorted(self.staging.iterdir(), key=lambda p: (p.name == "report.json", p.name))
        for entry in entries:
            existing = self.target / entry.name
            if existing.exists() or existing.is_symlink():
                os.rename(existing, self.previous / entry.name)
        for entry in entries:
            os.rename(entry, self.target / entry.name)

    def _restore_previous(self) -> None:
        """Undo a commit cut short between its renames: OUT gets back what it held."""
        if not self.previous.exists():
            return
        if not self.target.exists():
            os.rename(self.previous, self.target)
            return
        for entry in self.previous.iterdir():
            if not (self.target / entry.name).exists():
                os.rename(entry, self.target / entry.name)
        shutil.rmtree(self.previous, ignore_errors=True)

    def release(self) -> None:
        """Let go of the lock; the work folder stays (for --resume) unless commit removed it."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _take_lock(path: Path, target: Path) -> TextIO:
    """An exclusive lock held as long as the returned file is open; a second run gets OutputError."""
    handle = open(path, "a+", encoding="utf-8")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; runs are not guarded against each other
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise OutputError(f"{target}: another nnvis run (process {holder}) is writing this report") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
