"""The local engine with `--jobs N`: the same report from worker processes, which do the decoding,
the plugin calls and the picture encoding, while this process only writes files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_demo
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

import nnvis_core.engines.pool  # noqa: F401 - imported before the patches below, which it would bind
from nnvis_cli.main import cli
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report


def test_worker_processes_write_the_report_this_process_writes(demo_images, tmp_path, monkeypatch):
    images = copy_demo(demo_images, tmp_path / "images", classes=2, per_class=2)
    plugins = [*image_scope_builtins(images, tmp_path / "unused"), "tsne", "channel_maximization",
               "class_maximization"]
    params = {**CHEAP, "channel_maximization": {"layers": "features.5", "per_layer": "3", "steps": "4",
                                                "size": "32", "cache": "false"},
              "class_maximization": {"classes": "top:3", "steps": "4", "size": "32"}}
    registry = load_registry()
    # each of two processes on two cores runs one torch thread: the same rounding
    alone = one_thread_report(ReportConfig(images, tmp_path / "alone", plugins=plugins, params=params, batch_size=2),
                              registry)

    def not_here(*args, **kwargs):
        raise AssertionError("this process computed what the worker processes should have")

    with monkeypatch.context() as patch:  # spawned workers do not inherit these patches
        patch.setattr("nnvis_core.contract.stream.stream_items", not_here)
        patch.setattr("nnvis_core.engines.pool.stream_items", not_here)
        patch.setattr("nnvis_reports.assets.heatmap_pictures", not_here)
        patch.setattr("nnvis_plugins.featvis.channel_maximization.render", not_here)
        patch.setattr("nnvis_plugins.featvis.class_maximization.render", not_here)
        pooled = build_report(ReportConfig(images, tmp_path / "jobs", plugins=plugins, params=params, jobs=2,
                                           batch_size=2), registry)
    assert alone.exit_code == pooled.exit_code
    expected, got = comparable(tmp_path / "alone"), comparable(tmp_path / "jobs")
    ran = {name for image in got["by_model"][0]["images"] for name in image["results"]}
    assert len(ran) >= 10, ran
    assert got["by_model"][0]["model_results"]["channel_maximization"]["status"] == "ok"
    assert got["by_model"][0]["dataset"]["class_maximization"]["status"] == "ok"
    assert_same_numbers(expected, got)
    files = {name: sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*") if p.is_file())
             for name in ("alone", "jobs")}
    assert files["jobs"] == files["alone"]
    for path in sorted((tmp_path / "alone").rglob("*.npy")):
        twin = tmp_path / "jobs" / path.relative_to(tmp_path / "alone")
        np.testing.assert_allclose(np.load(twin), np.load(path), rtol=1e-3, atol=1e-5, err_msg=str(path))
    engines = [json.loads((tmp_path / name / "report.json").read_text())["engine"] for name in ("alone", "jobs")]
    assert engines == [{"name": "local", "workers": None}, {"name": "local", "workers": 2}]


def test_diverse_and_plain_channel_pictures_are_rendered_by_the_worker_processes(demo_images, tmp_path, monkeypatch):
    images = copy_demo(demo_images, tmp_path / "images", classes=1, per_class=1)
    params = {"channel_maximization": {"layers": "features.5", "per_layer": "2", "steps": "4", "size": "32",
                                       "diversity": "0.3", "facets": "2", "show_plain": "true", "cache": "false"}}
    registry = load_registry()
    alone = one_thread_report(ReportConfig(images, tmp_path / "alone", plugins=["channel_maximization"],
                                           params=params, batch_size=2), registry)

    def not_here(*args, **kwargs):
        raise AssertionError("this process rendered what the worker processes should have")

    with monkeypatch.context() as patch:
        patch.setattr("nnvis_plugins.featvis.channel_maximization.render", not_here)
        pooled = build_report(ReportConfig(images, tmp_path / "jobs", plugins=["channel_maximization"], params=params,
                                           jobs=2, batch_size=2), registry)
    assert alone.exit_code == pooled.exit_code == 0
    expected, got = comparable(tmp_path / "alone"), comparable(tmp_path / "jobs")
    result = got["by_model"][0]["model_results"]["channel_maximization"]
    assert result["status"] == "ok"
    assert [len(a["tiles"]) for a in result["artifacts"]] == [4, 2]  # 2 channels x 2 facets, then plain
    assert_same_numbers(expected, got)
    assert assert_same_pictures(tmp_path / "alone", tmp_path / "jobs", "channel_maximization-*.png") == 6


def test_a_main_script_read_from_standard_input_is_a_one_line_usage_error(few_demo_images, tmp_path, monkeypatch):
    import types

    from nnvis_core.run.plan import UsageError

    piped = types.ModuleType("__main__")
    piped.__file__ = "<stdin>"  # what `python - <<EOF` leaves: spawned workers cannot run it again
    monkeypatch.setitem(sys.modules, "__main__", piped)
    with pytest.raises(UsageError, match=r"^--jobs: .*<stdin> is not a file.*use --jobs 1$"):
        build_report(ReportConfig(few_demo_images, tmp_path / "out", plugins=["saliency"], jobs=2), load_registry())
    assert not (tmp_path / "out").exists()


def test_jobs_with_the_ray_engine_is_a_one_line_usage_error(few_demo_images, tmp_path):
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out"),
                                      "--engine", "ray", "--jobs", "2", "--plugins", "saliency"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "nnvis: error: --jobs is for the local engine; with --engine ray, --workers sets the pool")


def spawned_workers() -> set[int]:
    """This process's worker processes (multiprocessing's spawn children, not its resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and b"spawn_main" in command:
                found.add(int(entry.name))
    return found


def test_a_killed_worker_process_is_started_again_and_costs_only_its_batches(counters, demo_images, tmp_path,
                                                                            monkeypatch):
    _, calls = counters
    monkeypatch.setenv("NNVIS_TEST_SLEEP", "0.3")  # the spawned workers inherit it
    images = copy_demo(demo_images, tmp_path / "images", classes=4, per_class=3)
    calls.unlink(missing_ok=True)
    config = ReportConfig(images, tmp_path / "out", plugins=["slow_counter", "saliency"], jobs=2, batch_size=2)
    lines = kill_a_worker_mid_run(config, calls, spawned_workers)
    assert_only_the_dead_workers_batches_ran_twice(config, calls, lines)


def test_the_concept_plugins_write_on_worker_processes_what_they_write_here(demo_images, tmp_path):
    """Their passes over the folder run on the workers (map_batches); the few images they show or train
    on (random sets, a class's crops) are decoded here, which the test above forbids, hence this one."""
    images = copy_demo(demo_images, tmp_path / "images", classes=2, per_class=3)
    plugins = ["tcav", "craft", "concept_dictionary"]
    params = {"tcav": {"random_sets": 2, "set_size": 2, "min_images": 1},
              "craft": {"concepts": 2, "designs": 4, "min_images": 1}, "concept_dictionary": {"atoms": 8, "steps": 20}}
    registry = load_registry()
    alone = one_thread_report(ReportConfig(images, tmp_path / "alone", plugins=plugins, params=params, batch_size=2,
                                           concepts=demo_images), registry)
    pooled = build_report(ReportConfig(images, tmp_path / "jobs", plugins=plugins, params=params, jobs=2,
                                       batch_size=2, concepts=demo_images), registry)
    assert alone.exit_code == pooled.exit_code == 0
    got = comparable(tmp_path / "jobs")
    assert all(got["by_model"][0]["dataset"][name]["status"] == "ok" for name in plugins)
    assert_same_numbers(comparable(tmp_path / "alone"), got)
