"""Layers are addressed by the names `model.named_modules()` gives."""

from __future__ import annotations

import difflib

import torch


# Words a `layer` parameter may hold instead of a module name, resolved by the plugins:
# auto (the plugin's own default), last_conv, and penultimate (the input of the last
# Linear layer, for feature-space views). The run checks every other value up front.
PENULTIMATE = "penultimate"
LAYER_KEYWORDS = ("auto", "last_conv", PENULTIMATE)


class LayerNotFound(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def find_layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called `name`, or LayerNotFound listing near matches."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; layers are: {', '.join(names[:12])}..."
    raise LayerNotFound(f"no layer named {name!r} in {type(model).__name__}{hint}")


def last_conv_layer(model: torch.nn.Module) -> str:
    """Name of the last Conv2d in definition order: the usual Grad-CAM layer."""
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer")
    return convs[-1]
