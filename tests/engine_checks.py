"""What the engine tests share: the built-ins to run cheaply, report.json compared across engines, and a
worker killed mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from counter_plugins import read_calls
from PIL import Image

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.runner import prepare_all
from nnvis_reports import build_report

# Every built-in that computes per image (where the engines differ) and applies to the demo net,
# with the optimizing ones cut short; t-SNE as a dataset-scope plugin beside them.
RENDERED = re.compile(r"\d+ rendered now, \d+ reused")
CHEAP = {"semantic_dictionary": {"steps": 8}, "texture_synthesis": {"steps": 4},
         "feature_inversion": {"steps": 4}, "smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 8},
         "tsne": {"perplexity": 1.0}, "scorecam": {"channels": 8}}
for _name, _entry in load_registry().plugins.items():  # 8-step deletion and insertion curves, not 32
    if any(p.name == "faithfulness_steps" for p in _entry.item.params):
        CHEAP.setdefault(_name, {})["faithfulness_steps"] = 8


def image_scope_builtins(images: Path, out: Path) -> list[str]:
    """The built-ins that compute per image and apply to the demo net, as `--plugins all` picks them."""
    registry = load_registry()
    [plan] = prepare_all(ReportConfig(images, out, plugins=["all"]), registry)
    return sorted(run.plugin.name for run in plan.image_runs
                  if registry.plugins[run.plugin.name].origin.distribution == "nnvis")


def comparable(out: Path) -> dict:
    """report.json without timings and the engine's own fields."""
    from conftest import without_timings

    report = without_timings(json.loads((out / "report.json").read_text(encoding="utf-8")))
    report.pop("engine")
    return report


def assert_same_numbers(a, b, where: str = "") -> None:
    """Equal structure and text; numbers equal up to float rounding."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_numbers(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-4), where
    elif isinstance(a, str) and isinstance(b, str):
        # how many feature visualizations a process drew itself and how many it found in the
        # on-disk cache depends on which process saw which image first: provenance, not result
        assert RENDERED.sub("", a) == RENDERED.sub("", b), where
    else:
        assert a == b, where


def one_thread_report(config: ReportConfig, registry):
    """build_report at one torch thread, as a one-CPU worker computes: the optimizing plugins
    (L-BFGS, Adam) amplify the last-bit differences another thread count makes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_report(config, registry)
    finally:
        torch.set_num_threads(threads)


def assert_same_pictures(expected: Path, got: Path, pattern: str = "*.png", tolerance: int = 2) -> int:
    """Every picture under `expected` matching `pattern` has a twin under `got` that differs by at most
    `tolerance` grey levels (float rounding across processes); how many there were."""
    pictures = sorted(expected.rglob(pattern))
    for path in pictures:
        twin = np.asarray(Image.open(got / path.relative_to(expected)), dtype=np.int16)
        assert np.abs(twin - np.asarray(Image.open(path), dtype=np.int16)).max() <= tolerance, path
    return len(pictures)


def kill_a_worker_mid_run(config: ReportConfig, calls: Path, workers: Callable[[], set[int]]) -> list[str]:
    """Write config's report in a thread and SIGKILL one of `workers()` (the pool's two worker
    processes) once two images were computed (the counter plugins' call log); the run's log."""
    lines: list[str] = []
    outcome = {}
    run = threading.Thread(target=lambda: outcome.setdefault(
        "run", build_report(config, load_registry(), log=lines.append)))
    run.start()
    deadline = time.monotonic() + 120
    while sum(line.startswith("image ") for line in read_calls(calls)) < 2:
        assert run.is_alive() and time.monotonic() < deadline, "the run never got going"
        time.sleep(0.02)
    victims = sorted(workers())
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    run.join(timeout=180)
    assert not run.is_alive() and outcome["run"].exit_code == 0
    return lines


def assert_only_the_dead_workers_batches_ran_twice(config: ReportConfig, calls: Path, lines: list[str]) -> None:
    """A complete report after a worker was killed: every image ok, the restart logged, and no image
    computed twice but those of the dead worker's batches in flight (two per worker)."""
    images = config.image_dir
    entries = json.loads((config.out_dir / "report.json").read_text())["by_model"][0]["images"]
    assert len(entries) == sum(1 for _ in images.rglob("*.png"))
    assert all(e["status"] == "ok" and e["results"]["slow_counter"]["status"] == "ok" for e in entries)
    assert any("was restarted" in line for line in lines), lines
    computed = Counter(line for line in read_calls(calls) if line.startswith("image "))
    assert set(computed) == {f"image {p.relative_to(images).as_posix()}" for p in images.rglob("*.png")}
    twice = [call for call, count in computed.items() if count > 1]
    assert len(twice) <= 2 * config.batch_size, twice
    assert all(count <= 2 for count in computed.values())
