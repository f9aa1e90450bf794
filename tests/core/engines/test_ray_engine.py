"""The Ray engine (`--engine ray`): the same report as the local engine, nothing lost when a
worker or the driver dies, and a clear error without Ray.

One local Ray instance (two CPUs) serves the in-process tests; the child-process tests start
their own, as `nnvis report --engine ray` does for a user.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_demo
from counter_plugins import nnvis, read_calls
from engine_checks import (
    CHEAP,
    assert_only_the_dead_workers_batches_ran_twice,
    assert_same_numbers,
    assert_same_pictures,
    comparable,
    image_scope_builtins,
    kill_a_worker_mid_run,
    one_thread_report,
)

import nnvis_core.engines.pool  # noqa: F401 - imported before the tests' patches, which it would bind
from nnvis_cli.main import cli
from nnvis_core.run.cache import count_entries
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.output import work_folder

ray = pytest.importorskip("ray")

def test_without_ray_the_engine_is_a_one_line_usage_error(monkeypatch, few_demo_images, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if it were not installed
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out"),
                                      "--engine", "ray", "--plugins", "saliency"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "nnvis: error: --engine ray needs Ray, an optional extra: pip install 'nnvis[ray]'")
    assert not (tmp_path / "out").exists()


def test_an_unreachable_cluster_is_a_one_line_usage_error(few_demo_images, tmp_path):
    assert not ray.is_initialized()  # these two run before the module's Ray instance starts
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out"),
                                      "--engine", "ray", "--address", "127.0.0.1:9", "--plugins", "saliency"])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("nnvis: error: --engine ray: cannot reach Ray at 127.0.0.1:9: "), result.output
    assert not (tmp_path / "out").exists()


def test_workers_spread_over_the_nodes_of_a_cluster(demo_images, tmp_path):
    """Two Ray nodes on this machine (ray.cluster_utils), one CPU each: one worker lands on each,
    and the report is complete. The images stay where the driver reads them; workers get bytes."""
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        images = copy_demo(demo_images, tmp_path / "images", classes=2, per_class=2)
        lines: list[str] = []
        outcome = build_report(ReportConfig(images, tmp_path / "out", plugins=["saliency"], engine="ray",
                                            workers=2, batch_size=1), load_registry(), log=lines.append)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert outcome.exit_code == 0
    assert any(line.startswith("ray: 2 workers for demo on 2 nodes") for line in lines), lines
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [e["results"]["saliency"]["status"] for e in report["by_model"][0]["images"]] == ["ok"] * 4


@pytest.fixture(scope="module")
def ray_instance(counters):
    """A local Ray for this module's in-process runs; its workers see the counter plugins."""
    env, _ = counters
    variables = {name: env[name] for name in ("PYTHONPATH", "NNVIS_TEST_CALLS", "NNVIS_CACHE") if name in env}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {**variables, "NNVIS_TEST_SLEEP": "0.3"}})
    yield
    ray.shutdown()


def test_ray_writes_the_report_the_local_engine_writes(ray_instance, demo_images, tmp_path, monkeypatch):
    images = copy_demo(demo_images, tmp_path / "images", classes=2, per_class=2)
    plugins = [*image_scope_builtins(images, tmp_path / "unused"), "tsne"]
    registry = load_registry()
    # Ray gives a one-CPU worker one torch thread, so the local run uses one thread too.
    local = one_thread_report(ReportConfig(images, tmp_path / "local", plugins=plugins, params=CHEAP), registry)
    def not_here(*args, **kwargs):
        raise AssertionError("the driver decoded images: the workers should have")

    def not_encoded_here(*args, **kwargs):
        raise AssertionError("the driver encoded a heat map's pictures: the workers should have")

    with monkeypatch.context() as patch:  # t-SNE's feature pass too runs on the workers
        patch.setattr("nnvis_core.contract.stream.stream_items", not_here)
        patch.setattr("nnvis_core.engines.pool.stream_items", not_here)
        patch.setattr("nnvis_reports.assets.heatmap_pictures", not_encoded_here)
        on_ray = build_report(ReportConfig(images, tmp_path / "ray", plugins=plugins, params=CHEAP, engine="ray",
                                           workers=2), registry)
    assert local.exit_code == on_ray.exit_code
    expected, got = comparable(tmp_path / "local"), comparable(tmp_path / "ray")
    ran = {name for image in got["by_model"][0]["images"] for name in image["results"]}
    assert len(ran) >= 10, ran  # the plugins that apply to a convnet all ran
    assert_same_numbers(expected, got)
    files = {name: sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*") if p.is_file())
             for name in ("local", "ray")}
    assert files["ray"] == files["local"]  # the pictures the workers encoded, under the names the driver's would have
    maps = sorted((tmp_path / "local").rglob("*.npy"))
    assert maps
    for path in maps:
        twin = tmp_path / "ray" / path.relative_to(tmp_path / "local")
        np.testing.assert_allclose(np.load(twin), np.load(path), rtol=1e-3, atol=1e-5, err_msg=str(path))
    engines = [json.loads((tmp_path / name / "report.json").read_text())["engine"] for name in ("local", "ray")]
    assert engines == [{"name": "local", "workers": None}, {"name": "ray", "workers": 2}]


def test_top_units_scans_the_folder_on_the_workers(ray_instance, demo_images, tmp_path, monkeypatch):
    """Its pass over every image runs on the workers; the driver decodes only the examples it shows."""
    images = copy_demo(demo_images, tmp_path / "images", classes=4, per_class=3)
    params = {"top_units": {"examples": 2, "channels": "top:2"}}
    plugins = ["saliency", "top_units"]  # with an image-scope plugin the images go to the workers
    registry = load_registry()
    local = build_report(ReportConfig(images, tmp_path / "local", plugins=plugins, params=params), registry)
    import nnvis_core.contract.stream as stream

    decoded: list[str] = []
    driver_stream_items = stream.stream_items

    def counting(records, *args, **kwargs):
        records = list(records)
        decoded.extend(record.relpath for record in records)
        return driver_stream_items(records, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr("nnvis_core.contract.stream.stream_items", counting)
        on_ray = build_report(ReportConfig(images, tmp_path / "ray", plugins=plugins, params=params,
                                           engine="ray", workers=2), registry)
    assert local.exit_code == on_ray.exit_code == 0
    assert_same_numbers(comparable(tmp_path / "local"), comparable(tmp_path / "ray"))
    assert comparable(tmp_path / "ray")["by_model"][0]["dataset"]["top_units"]["status"] == "ok"
    # at most 2 layers x 2 channels x 2 examples of the 12 images
    assert 0 < len(set(decoded)) <= 8, decoded


def test_channel_pictures_of_a_model_scope_plugin_are_rendered_on_the_workers(ray_instance, demo_images, tmp_path,
                                                                              monkeypatch):
    images = copy_demo(demo_images, tmp_path / "images", classes=2, per_class=1)
    params = {"channel_maximization": {"layers": "features.5,features.9", "per_layer": "3", "steps": "4",
                                       "size": "32", "cache": "false"}}
    registry = load_registry()
    local = one_thread_report(ReportConfig(images, tmp_path / "local", plugins=["channel_maximization"],
                                           params=params, batch_size=2), registry)

    def not_here(*args, **kwargs):
        raise AssertionError("the driver rendered channel pictures: the workers should have")

    with monkeypatch.context() as patch:
        patch.setattr("nnvis_plugins.featvis.channel_maximization.render", not_here)
        on_ray = build_report(ReportConfig(images, tmp_path / "ray", plugins=["channel_maximization"], params=params,
                                           batch_size=2, engine="ray", workers=2), registry)
    assert local.exit_code == on_ray.exit_code == 0
    expected, got = comparable(tmp_path / "local"), comparable(tmp_path / "ray")
    assert got["by_model"][0]["model_results"]["channel_maximization"]["status"] == "ok"
    assert_same_numbers(expected, got)
    # 2 layers x 3 channels, rendered in batches of 2 on two workers
    assert assert_same_pictures(tmp_path / "local", tmp_path / "ray") >= 6


def processes(matching) -> set[int]:
    """The pids of this machine's processes whose command line `matching(cmdline)` accepts."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if matching(command):
                found.add(int(entry.name))
    return found


def worker_pids() -> set[int]:
    """The image workers' processes (Ray titles them ray::ImageWorker...)."""
    return processes(lambda command: command.startswith(b"ray::ImageWorker"))


def ray_pids() -> set[int]:
    """Every process of a Ray instance: workers, agents, raylet, GCS."""
    return processes(lambda command: command.startswith(b"ray::") or b"/ray/" in command)


def test_a_killed_worker_costs_only_its_batch(ray_instance, counters, demo_images, tmp_path):
    _, calls = counters
    images = copy_demo(demo_images, tmp_path / "images", classes=4, per_class=3)
    calls.unlink(missing_ok=True)
    config = ReportConfig(images, tmp_path / "out", plugins=["slow_counter", "saliency"], engine="ray", workers=2,
                          batch_size=2)
    lines = kill_a_worker_mid_run(config, calls, worker_pids)
    assert_only_the_dead_workers_batches_ran_twice(config, calls, lines)


@pytest.mark.parametrize("first, then", [("ray", "local"), ("local", "ray")])
def test_a_driver_killed_on_one_engine_is_resumed_on_the_other(counters, demo_images, tmp_path, snapshot,
                                                               first, then):
    env, calls = counters
    images = copy_demo(demo_images, tmp_path / "images", classes=4, per_class=2)
    out = tmp_path / "out"
    calls.unlink(missing_ok=True)
    args = [str(images), "-o", str(out), "--plugins", "slow_counter,saliency", "--batch-size", "1"]
    ray_args = ["--engine", "ray", "--workers", "2"]
    earlier = ray_pids()
    killed = nnvis({**env, "NNVIS_TEST_SLEEP": "0.4"}, *args, *(ray_args if first == "ray" else []))
    deadline = time.monotonic() + 120
    cache = work_folder(out) / "cache"
    # killed once at least one answer is stored: on a loaded machine three calls may start before any returns
    while sum(c.startswith("image ") for c in read_calls(calls)) < 3 or count_entries(cache) < 1:
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)
    killed.kill()
    killed.communicate(timeout=60)
    assert work_folder(out).is_dir() and not (out / "report.json").exists()
    time.sleep(1)  # let a dying Ray's workers finish the call they were in
    for orphan in ray_pids() - earlier:  # a SIGKILLed driver's Ray leaves agents behind (`ray stop` would)
        os.kill(orphan, signal.SIGKILL)
    before = read_calls(calls)
    calls.unlink()

    resumed = nnvis(env, *args, "--resume", *(ray_args if then == "ray" else []))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "reused" in stderr, stderr
    after = read_calls(calls)
    every = {f"image {p.relative_to(images).as_posix()}" for p in images.rglob("*.png")}
    assert set(before) | set(after) == every
    assert len(after) == len(set(after)) and len(after) < len(every)
    # a Ray driver loses only the answers in flight when it died: at most two batches per worker
    limit = 4 if first == "ray" else 1
    assert len(set(before) & set(after)) <= limit, sorted(set(before) & set(after))

    reference = tmp_path / "reference"
    build_report(ReportConfig(images, reference, plugins=["slow_counter", "saliency"], batch_size=1), load_registry())
    got, expected = snapshot(out), snapshot(reference)
    for report in (got["report"], expected["report"]):
        report.pop("engine")
    assert_same_numbers(expected["report"], got["report"])
