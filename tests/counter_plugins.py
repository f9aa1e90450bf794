"""Plugins that log their calls, installed as a throwaway distribution so that a real
`nnvis report` child process (and its Ray workers) load them: the tests see what was computed,
and where, by reading the log, and time their kills by it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

COUNTERS = '''
"""Plugins that log each call (NNVIS_TEST_CALLS), can be slowed down (NNVIS_TEST_SLEEP seconds) and
made to fail on one image (NNVIS_TEST_FAIL, its relative path)."""
import os
import time

import numpy as np
import torch

from nnvis_core import Heatmap, Plugin, Result, Scatter, Scope, hookimpl


def note(what):
    with open(os.environ["NNVIS_TEST_CALLS"], "a", encoding="utf-8") as log:
        log.write(what + "\\n")


class SlowCounter(Plugin):
    name = "slow_counter"
    title = "Slow counter"
    description = "The input's grey level plus seeded noise; logs each call."
    scope = Scope.IMAGE

    def run_image(self, ctx, item, params):
        note("image " + item.record.relpath)
        time.sleep(float(os.environ.get("NNVIS_TEST_SLEEP", "0")))
        if item.record.relpath == os.environ.get("NNVIS_TEST_FAIL"):
            raise RuntimeError("failing as the test asked")
        noise = torch.rand(16, 16).numpy()  # seeded by the runner per image and plugin
        grey = item.tensor.mean(0).numpy()[:16, :16]
        return Result([Heatmap("grey plus noise", grey + noise, signed=True)], {"noise": float(noise.mean())})


class FolderCounter(Plugin):
    name = "folder_counter"
    title = "Folder counter"
    description = "Mean input against confidence, one point per image; logs each call."
    scope = Scope.DATASET

    def run_dataset(self, ctx, items, params):
        note("dataset")
        items = list(items)
        points = np.array([[float(i.tensor.mean()), float(i.probabilities.max())] for i in items])
        return [Scatter("mean vs confidence", points, labels=[i.record.folder or "" for i in items],
                        image_ids=[i.record.index for i in items])]


@hookimpl
def nnvis_register_plugins(register):
    register(SlowCounter())
    register(FolderCounter())
'''
def read_calls(calls: Path) -> list[str]:
    return calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []


def nnvis(env: dict, *args: str) -> subprocess.Popen:
    """`nnvis report ARGS` in a child that takes SIGINT as Ctrl-C even when the tests run in a
    background job (whose children inherit SIGINT ignored, and Python then keeps it ignored)."""
    return subprocess.Popen([sys.executable, "-m", "nnvis_cli.main", "report", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


