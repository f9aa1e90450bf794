"""Plugins with a batched entry (Plugin.run_batch, nnvis_core.run.batches): the engines feed them
batches, and each image's outcome stays what it would be alone: its result, its cache entry, its
error, its time limit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_demo, registry_with, without_timings

from nnvis_core import Heatmap, Plugin, Result, Scope
from nnvis_core.contract.plugin import runs_batches
from nnvis_core.run.config import ReportConfig
from nnvis_reports import build_report


class Noisy(Plugin):
    """The input's grey level plus noise drawn per image; notes the size of every batch it gets.
    NNVIS test knobs as class attributes: `fail` (an image that raises), `bad` (one that returns
    nonsense), `stall` (seconds a batch of more than one image busy-waits), `stretched` (one whose
    map has another aspect ratio than the image), `leak` (a batch of more than one image leaves a
    forward hook on the model)."""

    name = "noisy_batches"
    title = "Noisy batches"
    description = "Grey plus per-image noise, batched."
    scope = Scope.IMAGE
    batches: list[int] = []
    fail: str | None = None
    bad: str | None = None
    stall: float = 0.0
    stretched: str | None = None
    leak: bool = False

    def run_image(self, ctx, item, params):
        return self.run_batch(ctx, [item], params)[0]

    def run_batch(self, ctx, items, params):
        type(self).batches.append(len(items))
        if len(items) > 1 and self.stall:
            end = time.perf_counter() + self.stall
            while time.perf_counter() < end:  # Python bytecode: the time limit can stop it
                pass
        if len(items) > 1 and self.leak:
            ctx.module.register_forward_hook(lambda module, inputs, output: None)
        results = []
        for item in items:
            if item.record.relpath == self.fail:
                raise RuntimeError("failing as the test asked")
            generator = torch.Generator().manual_seed(ctx.seed_for(item, self.name))
            noise = torch.rand(8, 8, generator=generator).numpy()
            grey = item.tensor.mean(0).numpy()[:8, :8]
            if item.record.relpath == self.stretched:
                grey, noise = np.tile(grey, (1, 2)), np.tile(noise, (1, 2))
            heatmap = Heatmap("grey plus noise", grey + noise, signed=True)
            results.append("nonsense" if item.record.relpath == self.bad else
                           Result([heatmap], {"noise": float(noise.mean())}))
        return results


class OneAtATime(Plugin):
    name = "one_at_a_time"
    title = "One at a time"
    description = "No batched entry."
    scope = Scope.IMAGE

    def run_image(self, ctx, item, params):
        return [Heatmap("grey", item.tensor.mean(0).numpy())]


@pytest.fixture
def noisy():
    Noisy.batches, Noisy.fail, Noisy.bad, Noisy.stall, Noisy.stretched, Noisy.leak = [], None, None, 0.0, None, False
    yield Noisy
    Noisy.batches, Noisy.fail, Noisy.bad, Noisy.stall, Noisy.stretched, Noisy.leak = [], None, None, 0.0, None, False


@pytest.fixture
def images(tmp_path, demo_images) -> Path:
    return copy_demo(demo_images, tmp_path / "images", classes=3, per_class=2)  # 6 images


def report(images: Path, out: Path, batch_size: int, **options) -> dict:
    registry = registry_with(Noisy(), OneAtATime())
    config = ReportConfig(images, out, plugins=["noisy_batches", "one_at_a_time"], batch_size=batch_size, **options)
    build_report(config, registry)
    return without_timings(json.loads((out / "report.json").read_text(encoding="utf-8")))


def results(report_json: dict) -> dict[str, dict]:
    return {image["path"]: image["results"]["noisy_batches"] for image in report_json["by_model"][0]["images"]}


def test_the_core_knows_which_plugins_batch() -> None:
    assert runs_batches(Noisy()) and not runs_batches(OneAtATime())


def test_batches_give_the_report_one_image_at_a_time_gives(noisy, images, tmp_path) -> None:
    alone = report(images, tmp_path / "alone", batch_size=1)
    assert noisy.batches == [1] * 6
    noisy.batches.clear()
    together = report(images, tmp_path / "together", batch_size=4)
    assert noisy.batches == [4, 2]
    alone.pop("config", None), together.pop("config", None)
    assert together == alone
    assert all(result["status"] == "ok" for result in results(together).values())


def test_one_failing_image_fails_alone(noisy, images, tmp_path) -> None:
    clean = results(report(images, tmp_path / "clean", batch_size=6))
    noisy.fail = sorted(clean)[2]
    noisy.batches.clear()
    failed = results(report(images, tmp_path / "failed", batch_size=6))
    assert noisy.batches == [6, 1, 1, 1, 1, 1, 1]  # the batch raised: each image tried alone
    assert failed[noisy.fail]["status"] == "error" and "failing as the test asked" in failed[noisy.fail]["error"]
    assert {path: result for path, result in failed.items() if path != noisy.fail} == \
           {path: result for path, result in clean.items() if path != noisy.fail}


def test_a_bad_result_is_its_images_error_only(noisy, images, tmp_path) -> None:
    clean = results(report(images, tmp_path / "clean", batch_size=6))
    noisy.bad = sorted(clean)[4]
    noisy.batches.clear()
    got = results(report(images, tmp_path / "bad", batch_size=6))
    assert noisy.batches == [6]  # checked item by item: no need to compute the others again
    assert got[noisy.bad]["status"] == "error" and "bad output" in got[noisy.bad]["error"]
    assert sum(result["status"] == "ok" for result in got.values()) == 5


def test_a_batch_past_its_time_limit_gives_way_to_calls_with_their_own_limit(noisy, images, tmp_path) -> None:
    clean = results(report(images, tmp_path / "clean", batch_size=3))
    noisy.stall, noisy.batches = 60.0, []
    start = time.perf_counter()
    got = results(report(images, tmp_path / "slow", batch_size=3, plugin_timeout=1.0))
    assert time.perf_counter() - start < 40  # each batch stopped at 3 x 1 s, not after 60 s
    assert noisy.batches == [3, 1, 1, 1, 3, 1, 1, 1]
    assert got == clean


def test_resume_computes_only_the_missing_images_and_caches_each_on_its_own(noisy, images, tmp_path) -> None:
    reference = results(report(images, tmp_path / "reference", batch_size=6))
    out = tmp_path / "out"
    noisy.fail = sorted(reference)[1]
    report(images, out, batch_size=6)
    noisy.fail, noisy.batches = None, []
    resumed = results(report(images, out, batch_size=6, resume=True))
    assert noisy.batches == [1]  # five results came from the cache, image by image
    assert resumed == reference


def test_noise_is_per_image(noisy, images, tmp_path) -> None:
    noise = [result["metrics"]["noise"] for result in results(report(images, tmp_path / "r", batch_size=6)).values()]
    assert len(set(np.round(noise, 6))) == 6


def test_a_batch_is_checked_as_each_call_is(noisy, images, tmp_path) -> None:
    """The run's checks of one call (nnvis_core.contract.conformance) hold for a batch too: a map of
    another aspect ratio is its image's error, and a batch that leaves a hook is undone and retried
    one image at a time, each of which is then refused for the hook it leaves."""
    clean = results(report(images, tmp_path / "clean", batch_size=6))
    noisy.stretched = sorted(clean)[1]
    stretched = results(report(images, tmp_path / "stretched", batch_size=6))
    assert stretched[noisy.stretched]["status"] == "error" and "aspect ratio" in stretched[noisy.stretched]["error"]
    assert {path: r for path, r in stretched.items() if path != noisy.stretched} == \
           {path: r for path, r in clean.items() if path != noisy.stretched}
    noisy.stretched, noisy.leak = None, True
    noisy.batches.clear()
    leaked = results(report(images, tmp_path / "leaked", batch_size=6))
    assert noisy.batches == [6, 1, 1, 1, 1, 1, 1]  # a batch of one leaks nothing here: each image is fine
    assert leaked == clean
