"""Modules that moved into the core's rooms keep their old import paths (nnvis_core.moved)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from nnvis_core.moved import MOVED_MODULES


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_an_old_path_gives_the_same_module_with_a_warning(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_the_documented_old_imports_work_in_a_fresh_process():
    code = (
        "from nnvis_core.plugin import Plugin, Scope\n"
        "from nnvis_core.stream import ImageStream\n"
        "import nnvis_core.sink as sink\n"
        "from nnvis_plugins.saliency import saliency_map\n"
        "import nnvis_core.contract.plugin as new\n"
        "import nnvis_core.run.sink as new_sink\n"
        "assert Plugin is new.Plugin and sink is new_sink\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_name_that_never_existed_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("nnvis_core.no_such_module")
