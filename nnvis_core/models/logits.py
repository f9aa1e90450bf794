"""The class scores in what a model's forward returns, whatever its shape.

nnvis reads a classifier's output as a (batch, classes) tensor. Many models
return something else: Hugging Face models an object with `.logits`, custom
code a dict, a tuple (logits, features) or a named tuple. `logits_of` finds the
scores in the common shapes; `select_output` makes a loaded model return them,
with a forward hook on the model itself, so that every plugin and every layer
name sees the model as it is, only its output adapted.

    logits_of({"logits": x, "features": f})        # x
    logits_of(x, key="1")                          # refused: a tensor has no key 1
    select_output(model, model(x), "aux")          # model(x) now returns its output's "aux"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class OutputError(ValueError):
    """A model output in which nnvis finds no class scores (one line for the user)."""


def logits_of(output: Any, key: str | None = None) -> torch.Tensor:
    """The class-score tensor in `output`: `key` when given (a dict key, an attribute, or a position
    in a tuple), else the tensor itself, a `logits` key or attribute, or a tuple's first tensor."""
    if key is not None:
        return _tensor(_pick(output, key), f"output {key!r}")
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if "logits" in output:
            return _tensor(output["logits"], "output 'logits'")
        raise OutputError(f"the model returns a dict with keys {_names(output)}: choose the class scores "
                          "with --model-output KEY (model_output= in Python)")
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)):
        first = next((value for value in output if isinstance(value, torch.Tensor)), None)
        if first is not None:
            return first
    raise OutputError(f"the model returns a {type(output).__name__}, with no tensor of class scores nnvis can "
                      "find: choose it with --model-output KEY (model_output= in Python), or return a tensor")


def _pick(output: Any, key: str) -> Any:
    if isinstance(output, Mapping):
        if key in output:
            return output[key]
        raise OutputError(f"--model-output {key!r}: the model's output has no key {key!r} (keys: {_names(output)})")
    fields = getattr(output, "_fields", None)  # a named tuple: by name first
    if fields is not None and key in fields:
        return getattr(output, key)
    if isinstance(output, (tuple, list)):
        if key.isdigit() and int(key) < len(output):
            return output[int(key)]
        named = f", fields {', '.join(fields)}" if fields else ""
        raise OutputError(f"--model-output {key!r}: the model returns a {type(output).__name__} of {len(output)} "
                          f"values (positions 0 to {len(output) - 1}{named})")
    if not isinstance(output, torch.Tensor) and hasattr(output, key):
        return getattr(output, key)
    raise OutputError(f"--model-output {key!r}: the model returns a {type(output).__name__}, which has no {key!r}")


def _tensor(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise OutputError(f"{what} of the model is a {type(value).__name__}, not a tensor of class scores")
    return value


def _names(mapping: Mapping) -> str:
    return ", ".join(map(str, list(mapping)[:8])) + (", ..." if len(mapping) > 8 else "")


class SelectOutput:
    """The forward hook that replaces a model's output by its class scores (picklable, for workers)."""

    def __init__(self, key: str | None) -> None:
        self.key = key

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
        return logits_of(output, self.key)


def select_output(module: nn.Module, output: Any, key: str | None = None) -> str | None:
    """Make `module` return its class scores, when `output` (what one forward pass returned) shows
    that it returns something else, or `key` names a part of it. Returns a note for the report saying
    which part is read, or None when the model already returns a tensor and no key is given.

    Raises OutputError when the output holds no class scores, or the model cannot take a hook."""
    if key is None and isinstance(output, torch.Tensor):
        if output.ndim != 2:
            raise OutputError(f"the model returns a tensor of shape {tuple(output.shape)}, not (batch, classes) "
                              "class scores: is it a feature encoder without a classifier head?")
        return None
    scores = logits_of(output, key)
    if scores.ndim != 2:
        raise OutputError(f"the model's class scores ({'output ' + repr(key) if key else 'chosen output'}) have "
                          f"shape {tuple(scores.shape)}, not (batch, classes)")
    if isinstance(module, torch.jit.ScriptModule):
        raise OutputError(f"the TorchScript model returns a {type(output).__name__}: nnvis needs a model that "
                          "returns its class scores as a tensor")
    module.register_forward_hook(SelectOutput(key))
    what = f"output {key!r}" if key is not None else _described(output)
    return (f"the model's forward returns {type(output).__name__}, not a tensor; nnvis reads its {what} "
            "as the class scores")


def _described(output: Any) -> str:
    if isinstance(output, Mapping):
        return "'logits'"
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return "`.logits`"
    return "first tensor"


def remove_output_selection(module: nn.Module) -> None:
    """Take select_output's hook off `module` (a model given in memory goes back as it came)."""
    for key, hook in list(module._forward_hooks.items()):
        if isinstance(hook, SelectOutput):
            del module._forward_hooks[key]
