"""torchvision is imported in one place, with the CPU-torch workaround only when needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_models_usable_and_workaround_only_when_plain_import_fails():
    plain = run_python("import torchvision")
    result = run_python(
        "import torch\n"
        "from nnvis_core import torchvision_compat as tv\n"
        "models = tv.torchvision_models()\n"
        "out = models.resnet18(weights=None)(torch.zeros(1, 3, 64, 64))\n"
        "print(tuple(out.shape), tv.workaround_applied)\n"
    )
    assert result.returncode == 0, result.stderr
    shape, applied = result.stdout.split(")")[0] + ")", result.stdout.split(")")[1].strip()
    assert shape == "(1, 1000)"
    assert applied == str(plain.returncode != 0)
    if plain.returncode != 0:
        assert "torchvision::nms does not exist" in plain.stderr


def test_a_working_torchvision_is_imported_untouched(tmp_path):
    fake = tmp_path / "torchvision"
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("from . import models\n__version__ = 'fake'\n")
    (fake / "models" / "__init__.py").write_text("MARK = 42\n")
    result = run_python(
        "from nnvis_core import torchvision_compat as tv\n"
        "print(tv.torchvision_models().MARK, tv.workaround_applied)\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "False"]


def test_other_import_errors_are_not_hidden(tmp_path):
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('broken for another reason')\n")
    result = run_python("from nnvis_core import torchvision_compat as tv\ntv.import_torchvision()\n", tmp_path)
    assert result.returncode != 0
    assert "broken for another reason" in result.stderr


def test_torchvision_is_imported_only_in_its_compat_module():
    pattern = re.compile(r"^\s*(import torchvision|from torchvision)", re.M)
    offenders = []
    for folder in ("nnvis_core", "plugins", "cli", "reports"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != "torchvision_compat.py" and pattern.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    tv_source = (ROOT / "nnvis_core" / "torchvision_compat.py").read_text(encoding="utf-8")
    assert "torchvision.io" not in tv_source and "torchvision.ops" not in tv_source


def test_a_plain_import_torchvision_after_import_nnvis_works():
    """A notebook's `import nnvis; import torchvision` (nnvis_core.torchvision_compat.install_import_hook)."""
    plain = run_python("import torchvision")
    result = run_python(
        "import sys\n"
        "import nnvis\n"
        "assert 'torchvision' not in sys.modules  # import nnvis itself stays light\n"
        "import torchvision\n"
        "import torchvision.models as models\n"
        "print(type(torchvision.models.resnet18()).__name__, models.resnet18 is torchvision.models.resnet18)\n"
        "from nnvis_core import torchvision_compat as tv\n"
        "print(tv.workaround_applied)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ResNet", "True", str(plain.returncode != 0)]
