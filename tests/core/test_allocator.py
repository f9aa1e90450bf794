"""The allocator policy nnvis report runs with (nnvis_core.allocator)."""

from __future__ import annotations

import ctypes
import sys

import pytest
from click.testing import CliRunner

import nnvis_core.allocator as memory
from nnvis_cli.main import cli


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_policy():
    assert memory.keep_freed_memory() is True


def test_without_glibc_nothing_is_changed(monkeypatch):
    def no_glibc(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    assert memory.keep_freed_memory() is False


def test_nnvis_report_sets_it_before_the_run(few_demo_images, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append("set") or True)
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert calls == ["set"]
