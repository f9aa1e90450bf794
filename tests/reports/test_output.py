"""The output folder: replaced only by a finished report, foreign folders only with --force, runs repeatable."""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from nnvis_cli.main import cli
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.runner import UsageError
from nnvis_reports import build_report
from nnvis_reports.output import OutputFolder, is_report, work_folder
from nnvis_reports.reader import read_report
from nnvis_reports.writer import ReportWriter

RANDOM_PLUGINS = ["saliency", "smoothgrad"]
RANDOM_PARAMS = {"smoothgrad": {"samples": 3, "faithfulness_steps": 0}}


def file_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_a_report_replaces_an_earlier_report_whole(few_demo_images, tmp_path, registry):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out), registry)
    assert is_report(out)
    (out / "assets" / "stale.png").write_bytes(b"from an earlier run")
    build_report(ReportConfig(few_demo_images, out, seed=3), registry)
    assert not (out / "assets" / "stale.png").exists()
    assert read_report(out)["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]  # no work folder left


def test_a_folder_that_is_not_a_report_needs_force_and_keeps_its_files(few_demo_images, tmp_path, registry):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "report.json").write_text('{"something": "else"}')
    before = file_bytes(out)
    with pytest.raises(UsageError, match="is not an nnvis report; use --force"):
        build_report(ReportConfig(few_demo_images, out), registry)
    assert file_bytes(out) == before and not work_folder(out).exists()

    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"nnvis: error: {out}: folder exists and is not an nnvis report; use --force to write index.html, "
        "report.json and assets/ into it (its other files are kept)"]

    build_report(ReportConfig(few_demo_images, out, force=True), registry)
    assert (out / "notes.txt").read_text() == "my notes"
    assert is_report(out) and (out / "index.html").is_file()
    build_report(ReportConfig(few_demo_images, out), registry)  # now a report: no --force needed
    assert (out / "notes.txt").read_text() == "my notes"  # a report folder's other files stay too
    assert not work_folder(out).exists()


def test_an_empty_folder_is_written_and_a_file_is_refused(few_demo_images, tmp_path, registry):
    empty = tmp_path / "empty"
    empty.mkdir()
    build_report(ReportConfig(few_demo_images, empty), registry)
    assert is_report(empty)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="exists and is not a folder"):
        build_report(ReportConfig(few_demo_images, a_file, force=True), registry)
    assert a_file.read_text() == "x"


def test_a_run_that_fails_half_way_leaves_the_earlier_report(few_demo_images, tmp_path, registry, monkeypatch):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out), registry)
    before = file_bytes(out)
    calls = []

    def fail_on_the_third_image(self, item):
        calls.append(item.record.relpath)
        if len(calls) == 3:
            raise MemoryError("out of memory half-way")
        return original(self, item)

    original = ReportWriter.add_image
    monkeypatch.setattr(ReportWriter, "add_image", fail_on_the_third_image)
    with pytest.raises(MemoryError):
        build_report(ReportConfig(few_demo_images, out, seed=9), registry)
    assert file_bytes(out) == before
    partial = work_folder(out) / "report"
    assert (partial / "assets").is_dir() and not (partial / "report.json").exists()


def test_a_second_run_on_the_same_output_is_refused(few_demo_images, tmp_path, registry):
    out = tmp_path / "out"
    holder = OutputFolder(out)
    holder.begin(resume=False)
    try:
        with pytest.raises(UsageError, match=f"another nnvis run \\(process {os.getpid()}\\) is writing"):
            build_report(ReportConfig(few_demo_images, out), registry)
    finally:
        holder.release()
    build_report(ReportConfig(few_demo_images, out), registry)
    assert is_report(out)


def test_a_commit_cut_short_between_its_renames_is_undone(few_demo_images, tmp_path, registry):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out), registry)
    before = file_bytes(out)
    work_folder(out).mkdir()
    os.rename(out, work_folder(out) / "previous")  # as if killed right after moving OUT aside
    assert not out.exists()
    output = OutputFolder(out)
    output.begin(resume=False)
    output.release()
    assert file_bytes(out) == before


def test_writing_into_the_current_directory_keeps_it_usable(few_demo_images, tmp_path, registry, monkeypatch):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out), registry)
    monkeypatch.chdir(out)
    build_report(ReportConfig(few_demo_images, out, seed=4), registry)
    assert os.getcwd() == str(out) and (out / "index.html").is_file()
    assert read_report(out)["seed"] == 4


def test_an_output_folder_inside_the_image_folder_is_not_read_as_images(few_demo_images, tmp_path, registry):
    out = few_demo_images / "report"
    build_report(ReportConfig(few_demo_images, out), registry)
    build_report(ReportConfig(few_demo_images, out), registry)
    report = read_report(out)
    assert report["input"]["image_count"] == 6
    assert not any(image["path"].startswith("report/") for image in report["images"])


def test_same_inputs_and_seed_give_the_same_report(few_demo_images, tmp_path, registry, snapshot):
    def run(name, seed):
        out = tmp_path / name
        build_report(ReportConfig(few_demo_images, out, plugins=RANDOM_PLUGINS, params=RANDOM_PARAMS, seed=seed),
                     registry)
        return snapshot(out)

    first, second = run("first", 0), run("second", 0)
    assert first == second
    other_seed = run("other", 1)
    assert other_seed["report"]["seed"] == 1
    smoothgrad = [f for f in first["files"] if "smoothgrad" in f and f.endswith(".npy")]
    assert smoothgrad and all(first["files"][f] != other_seed["files"][f] for f in smoothgrad)


def test_a_run_with_no_work_to_resume_says_so(few_demo_images, tmp_path, registry):
    lines = []
    build_report(ReportConfig(few_demo_images, tmp_path / "out", resume=True), registry, log=lines.append)
    assert any("nothing to resume" in line for line in lines)
    shutil.rmtree(tmp_path / "out")
