"""Old import paths of modules that moved into the core's rooms, kept working.

Third-party plugins written against the flat layout (`nnvis_core.plugin`,
`nnvis_core.stream`, `nnvis_core.sink`, ...) import the same module objects from
their new homes, so a monkeypatch or isinstance check through either name agrees.
Each old path warns once (DeprecationWarning) with the path to use instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# old import name -> new import name
MOVED_MODULES = {
    "nnvis_core.plugin": "nnvis_core.contract.plugin",
    "nnvis_core.hookspecs": "nnvis_core.contract.hookspecs",
    "nnvis_core.params": "nnvis_core.contract.params",
    "nnvis_core.artifacts": "nnvis_core.contract.artifacts",
    "nnvis_core.context": "nnvis_core.contract.context",
    "nnvis_core.targets": "nnvis_core.contract.targets",
    "nnvis_core.stream": "nnvis_core.contract.stream",
    "nnvis_core.config": "nnvis_core.run.config",
    "nnvis_core.plan": "nnvis_core.run.plan",
    "nnvis_core.sink": "nnvis_core.run.sink",
    "nnvis_core.registry": "nnvis_core.run.registry",
    "nnvis_core.calls": "nnvis_core.run.calls",
    "nnvis_core.cache": "nnvis_core.run.cache",
    "nnvis_core.timeout": "nnvis_core.run.timeout",
    "nnvis_core.engine": "nnvis_core.engines.local",
    "nnvis_core.pool_engine": "nnvis_core.engines.pool",
    "nnvis_core.process_engine": "nnvis_core.engines.processes",
    "nnvis_core.ray_engine": "nnvis_core.engines.ray_actors",
    "nnvis_core.worker": "nnvis_core.engines.worker",
    "nnvis_core.markers": "nnvis_core.hook_marker",
    "nnvis_core.tv": "nnvis_core.torchvision_compat",
    "nnvis_core.memory": "nnvis_core.allocator",
    "nnvis_core.toolkit.cue_conflict": "nnvis_core.toolkit.cue_conflict_labels",
    # the renderer moved into the toolkit, so that every plugin family can draw with it
    **{f"nnvis_plugins.featvis.{name}": f"nnvis_core.toolkit.featvis.{name}"
       for name in ("render", "objectives", "parameterizations", "transforms", "colour", "spectrum")},
}


class _AliasLoader(importlib.abc.Loader):
    """Hands out the module at its new path under the old name."""

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new_name}; import it from there",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was executed under its new name."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old names in a table of moves; every other name passes through."""

    def __init__(self, moves: dict[str, str]) -> None:
        self.moves = moves

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102 - the finder protocol
        new_name = self.moves.get(fullname)
        if new_name is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new_name))


def keep_old_paths(moves: dict[str, str]) -> None:
    """Make `import OLD` give the module at `moves[OLD]`, once per table."""
    if not any(isinstance(f, MovedModuleFinder) and f.moves is moves for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder(moves))
