"""The one place that imports torchvision.

torchvision wheels built for CUDA fail to import beside a CPU-only torch: the
compiled ops library does not load, so registering the fake kernels for
`torchvision::nms` fails with "operator torchvision::nms does not exist".
nnvis needs only torchvision's model definitions, weights metadata and
download path, none of which use those ops. When (and only when) the plain
import fails that way, we declare the two op schemas torchvision's Python code
expects and import again. Users with matching builds never reach the workaround.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

# Schemas as torchvision declares them in its C++ sources.
_MISSING_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # kept alive: the op definitions vanish with the Library object
workaround_applied = False


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _define_missing_ops() -> None:
    global _library, workaround_applied
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    for schema in _MISSING_OP_SCHEMAS.values():
        _library.define(schema)
    workaround_applied = True


def import_torchvision() -> ModuleType:
    """Import and return torchvision, applying the CPU-torch workaround if needed."""
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "models"):
        return sys.modules["torchvision"]
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if "torchvision::" not in str(error) or "does not exist" not in str(error):
            raise
    _forget_partial_import()
    _define_missing_ops()
    return importlib.import_module("torchvision")


def torchvision_models() -> ModuleType:
    """torchvision.models, imported through import_torchvision()."""
    import_torchvision()
    return importlib.import_module("torchvision.models")


class _TorchvisionFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """On a plain `import torchvision`, imports it through import_torchvision() (with the
    workaround where the plain import fails) and hands that module to the import statement."""

    busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision" or self.busy:
            return None
        type(self).busy = True
        try:
            import_torchvision()
        finally:
            type(self).busy = False
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return sys.modules["torchvision"]

    def exec_module(self, module) -> None:
        """Already executed by import_torchvision()."""


def install_import_hook() -> None:
    """Make a later plain `import torchvision` work beside a CPU-only torch, as nnvis's own imports
    do (`import nnvis` calls this): the workaround is applied only if that import would fail."""
    if not any(isinstance(finder, _TorchvisionFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFinder())
