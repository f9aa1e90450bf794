"""Interrupted runs: killed with SIGINT or SIGKILL, OUT is untouched; --resume recomputes only what is missing.

The plugins here live in a throwaway distribution so that a real `nnvis report`
subprocess loads them; each call appends a line to a log, which is how the
tests see what was computed and when to kill.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from counter_plugins import nnvis, read_calls

from nnvis_core import CategoricalMap, Chart, Gallery, Heatmap, Image, Result, Scatter, Table, Text
from nnvis_core.run.cache import ResultCache, decode_result, encode_result, model_digest, run_fingerprint
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.plan import CallOutcome
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.output import work_folder

PLUGINS = ["slow_counter", "saliency", "folder_counter"]
IMAGES = 10


@pytest.fixture(scope="module")
def images(tmp_path_factory, demo_images) -> Path:
    """Ten demo images in class folders."""
    root = tmp_path_factory.mktemp("images")
    for path in sorted(demo_images.rglob("*.png"))[::4][:IMAGES]:
        (root / path.parent.name).mkdir(exist_ok=True)
        shutil.copy(path, root / path.parent.name / path.name)
    return root


@pytest.fixture(scope="module")
def reference(counters, images, tmp_path_factory) -> dict:
    """An uninterrupted run, and a different earlier report (another seed) to be replaced."""
    root = tmp_path_factory.mktemp("reference")
    registry = load_registry()
    build_report(ReportConfig(images, root / "full", plugins=PLUGINS), registry)
    build_report(ReportConfig(images, root / "earlier", plugins=PLUGINS, seed=5), registry)
    return {"full": root / "full", "earlier": root / "earlier"}


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_run_leaves_out_alone_and_resume_recomputes_only_the_rest(
        counters, images, reference, tmp_path, snapshot, signal_number):
    env, calls = counters
    out = tmp_path / "out"
    shutil.copytree(reference["earlier"], out)
    before = file_bytes(out)
    calls.unlink(missing_ok=True)
    args = [str(images), "-o", str(out), "--plugins", ",".join(PLUGINS)]

    run = nnvis({**env, "NNVIS_TEST_SLEEP": "0.5"}, *args)
    deadline = time.monotonic() + 300
    while sum(c.startswith("image ") for c in read_calls(calls)) < 4:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)
    run.send_signal(signal_number)
    _, stderr = run.communicate(timeout=120)
    if signal_number == signal.SIGINT:
        assert run.returncode == 130 and "--resume" in stderr, stderr
        assert "Traceback" not in stderr
    else:
        assert run.returncode == -signal.SIGKILL
    assert file_bytes(out) == before, "an interrupted run changed the report that was there"
    assert work_folder(out).is_dir()

    killed_calls = read_calls(calls)
    finished = {c for c in killed_calls[:-1]}  # the last logged call may have been cut short
    calls.unlink()
    resumed = nnvis(env, *args, "--resume")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert re.search(r"reused \d+ results of an interrupted run", stderr), stderr

    resumed_calls = read_calls(calls)
    all_calls = {f"image {p.relative_to(images).as_posix()}" for p in images.rglob("*.png")} | {"dataset"}
    assert not finished & set(resumed_calls), "a result computed before the kill was computed again"
    assert finished | set(resumed_calls) == all_calls
    assert len(resumed_calls) == len(set(resumed_calls))
    resumed_report, uninterrupted = snapshot(out), snapshot(reference["full"])
    assert resumed_report["report"] == uninterrupted["report"]
    assert resumed_report["files"] == uninterrupted["files"]
    assert resumed_report["html"] == uninterrupted["html"]
    assert not work_folder(out).exists()


def test_without_resume_an_interrupted_runs_results_are_discarded(counters, images, reference, tmp_path, snapshot):
    env, calls = counters
    out = tmp_path / "out"
    calls.unlink(missing_ok=True)
    args = [str(images), "-o", str(out), "--plugins", ",".join(PLUGINS)]
    run = nnvis({**env, "NNVIS_TEST_SLEEP": "0.5"}, *args)
    deadline = time.monotonic() + 300
    while len(read_calls(calls)) < 3:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)
    run.kill()
    run.communicate(timeout=60)
    assert not out.exists()
    calls.unlink()
    again = nnvis(env, *args)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "discarding" in stderr and "reused" not in stderr
    assert len([c for c in read_calls(calls) if c.startswith("image ")]) == IMAGES
    assert snapshot(out) == snapshot(reference["full"])


def test_a_run_with_failed_calls_keeps_its_cache_and_resume_computes_only_those(
        counters, images, reference, tmp_path, snapshot, monkeypatch):
    env, calls = counters
    out = tmp_path / "out"
    calls.unlink(missing_ok=True)
    failing = sorted(images.rglob("*.png"))[3].relative_to(images).as_posix()
    registry = load_registry()
    monkeypatch.setenv("NNVIS_TEST_FAIL", failing)
    first = build_report(ReportConfig(images, out, plugins=PLUGINS), registry)
    assert (first.exit_code, first.failed_calls) == (1, 1)
    assert (out / "report.json").is_file() and work_folder(out).is_dir()
    monkeypatch.delenv("NNVIS_TEST_FAIL")
    calls.unlink()
    again = build_report(ReportConfig(images, out, plugins=PLUGINS, resume=True), registry)
    assert again.exit_code == 0
    assert read_calls(calls) == [f"image {failing}"]
    assert not work_folder(out).exists()
    assert snapshot(out)["report"] == snapshot(reference["full"])["report"]


# --- the cache itself ---------------------------------------------------------------------------


def every_artifact() -> Result:
    rng = np.random.default_rng(0)
    return Result([
        Image("picture", rng.integers(0, 256, (5, 6, 3), dtype=np.uint8), caption="a <caption>"),
        Heatmap("map", rng.normal(size=(4, 4)).astype(np.float32), signed=True, label="units", value_range=(-2.0, 2.0)),
        CategoricalMap("parts", np.array([[0, 1], [1, 2]]), {0: "zero", 1: "one", 2: "two"}, overlay=False),
        Table("rows", ["a", "b"], [[1, "x"], [2.5, None]]),
        Scatter("points", rng.normal(size=(3, 2)), labels=["p", "q", "r"], image_ids=[0, None, 2]),
        Chart("lines", [0, 1, 2], {"s": [0.1, 0.2, 0.3]}, x_label="x", y_label="y", x_ticks=["a", "b", "c"]),
        Gallery("tiles", [None, rng.random((4, 4, 3))], labels=["in", "out"], image_ids=[1, None], columns=2),
        Text("words", "line one\nline two"),
    ], {"score": 0.25})


def test_every_artifact_round_trips_through_the_cache(tmp_path):
    result = every_artifact()
    cache = ResultCache(tmp_path / "cache", "fingerprint")
    assert cache.store("ab" * 32, result, 1.5)
    loaded, seconds = cache.load("ab" * 32)
    assert seconds == 1.5 and loaded.metrics == result.metrics
    for original, copy in zip(result.artifacts, loaded.artifacts, strict=True):
        assert type(copy) is type(original)
        for name, value in vars(original).items():
            got = getattr(copy, name)
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and np.array_equal(got, value)
            elif name == "images":
                assert got[0] is None and np.array_equal(got[1], value[1])
            else:
                assert (list(got) if isinstance(value, tuple) else got) == (
                    list(value) if isinstance(value, tuple) else value), name
    loaded.validate()


def test_results_that_would_need_pickling_are_not_cached(tmp_path):
    class Custom(Heatmap):
        pass

    cache = ResultCache(tmp_path / "cache", "fingerprint")
    assert not cache.store("cd" * 32, Result([Custom("subclass", np.ones((2, 2)))]), 0.1)
    assert not cache.store("ef" * 32, Result([Table("objects", ["a"], [[object()]])]), 0.1)
    assert cache.load("cd" * 32) is None and cache.load("ef" * 32) is None


def test_a_damaged_entry_is_a_miss_and_is_recomputed(tmp_path):
    cache = ResultCache(tmp_path / "cache", "fingerprint")
    key = "12" * 32
    cache.store(key, every_artifact(), 0.1)
    path = next((tmp_path / "cache").rglob("*.npz"))
    path.write_bytes(path.read_bytes()[:100])
    computed = []
    outcome = cache.call(key, lambda: computed.append(1) or CallOutcome(every_artifact(), 0.2))
    assert computed == [1] and outcome.seconds == 0.2
    assert cache.load(key) is not None  # rewritten


def test_failures_are_not_cached(tmp_path):
    cache = ResultCache(tmp_path / "cache", "fingerprint")
    cache.call("34" * 32, lambda: CallOutcome(None, 0.1, "ValueError: no", "Traceback"))
    assert cache.load("34" * 32) is None and cache.stored == 0


def test_keys_change_with_everything_a_result_depends_on(few_demo_images, tmp_path):
    from nnvis_core.contract.stream import stream_items
    from nnvis_core.runner import prepare

    registry = load_registry()

    def keys(images: Path, **settings) -> tuple[str, str]:
        plan = prepare(ReportConfig(images, tmp_path / "out", **settings), registry)
        runs, records, ctx = plan.runs, plan.records, plan.ctx
        cache = ResultCache(tmp_path / "cache", run_fingerprint(ctx))
        item = next(iter(stream_items(records, ctx)))[0]
        return cache.image_key(runs[0], cache.item_digest(item)), run_fingerprint(ctx)

    base = keys(few_demo_images)
    assert keys(few_demo_images) == base  # stable
    assert keys(few_demo_images, seed=1)[0] != base[0]
    assert keys(few_demo_images, params={"saliency": {"target": "true"}})[0] != base[0]
    assert keys(few_demo_images, crop=48)[0] != base[0]
    assert keys(few_demo_images, batch_size=3)[0] != base[0]
    first = sorted(few_demo_images.rglob("*.png"))[0]
    first.write_bytes(first.read_bytes() + b"\0")  # same picture, other bytes
    assert keys(few_demo_images)[0] != base[0]
    from nnvis_core.demo import load_demo_model

    model = load_demo_model()
    assert model_digest(model) == model_digest(load_demo_model())
    with torch.no_grad():
        model.classifier[-1].bias[0] += 1e-3
    assert model_digest(model) != model_digest(load_demo_model())


def test_encode_result_is_plain_json_and_arrays():
    meta, arrays = encode_result(every_artifact(), 0.5)
    json.dumps(meta)  # nothing but JSON
    assert all(isinstance(a, np.ndarray) and not a.dtype.hasobject for a in arrays)
    decoded, seconds = decode_result(meta, {f"a{i}": a for i, a in enumerate(arrays)})
    assert seconds == 0.5 and [type(a) for a in decoded.artifacts] == [type(a) for a in every_artifact().artifacts]


def test_a_dataset_results_per_image_artifacts_round_trip_through_the_cache(tmp_path):
    strip = Gallery("neighbours", [None, None], labels=["a", "b"], image_ids=[2, 5])
    result = Result([Text("summary", "two strips")], {"k": 2.0},
                    image_artifacts={0: [strip], 3: [Text("note", "only one")]})
    cache = ResultCache(tmp_path / "cache", "fingerprint")
    assert cache.store("cd" * 32, result, 0.5)
    loaded, _ = cache.load("cd" * 32)
    assert sorted(loaded.image_artifacts) == [0, 3]
    [copy] = loaded.image_artifacts[0]
    assert isinstance(copy, Gallery) and list(copy.image_ids) == [2, 5] and list(copy.labels) == ["a", "b"]
    assert loaded.image_artifacts[3][0].text == "only one"
    loaded.validate()
