"""The canonical copy: the model rewritten into layers every LRP rule can read, never the model itself.

LRP rules are stated for ``z = W x + b`` followed by an activation. Real convnets differ in ways
that change nothing in their output but matter to the rules (Zennit calls the rewrite
"canonization"); all of it happens on a copy of the modules in eval mode, which shares only the
weight tensors and never writes to them, so the loaded model is never touched (the plugin's
tests check it with nnvis_core.toolkit.guarded_state and the weights' values):

- BatchNorm right after a Conv or Linear layer is merged into that layer's weight and bias
  (``w' = w g / sqrt(v + e)``, ``b' = (b - m) g / sqrt(v + e) + beta``) and replaced by Identity:
  the rules then see the affine map the network really applies. "Right after" is read from a
  traced forward pass: the BatchNorm's input is the very tensor the layer returned, and no other
  module reads it. Other BatchNorms stay and share relevance in proportion (layers.py).
- The residual sum of torchvision's ResNet blocks (``out += identity``) becomes
  :func:`~nnvis_plugins.lrp.backward.residual_sum`, which splits relevance in proportion to
  the two summands instead of copying it to both (what the gradient of a sum would do).
- Concatenations need no rewrite: the gradient of ``torch.cat`` already hands each part's
  relevance to the tensor it came from. In-place activations need none either: the functional
  watch (functional.py) runs them in place with the pass-through backward.
"""

from __future__ import annotations

import copy as copying
import sys
import types
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from nnvis_core.toolkit import AttributionError
from nnvis_plugins.lrp.backward import residual_sum
from nnvis_plugins.lrp.layers import BATCH_NORMS, is_ruled, own_forward


@dataclass
class Canonical:
    """The rewritten copy, and the modules that ran in its forward pass, each once, in the order they finished."""

    model: nn.Module
    calls: list[tuple[str, nn.Module]]

    def ruled_layers(self) -> list[tuple[str, nn.Module]]:
        """The Conv and Linear layers in the order the input meets them."""
        return [(name, module) for name, module in self.calls if is_ruled(module)]


def canonical_copy(model: nn.Module, inputs: torch.Tensor) -> Canonical:
    """A copy of `model`'s modules in eval mode, canonized for LRP on `inputs`.

    The copy is deep down to the tensors: its parameters and buffers are the model's own, which
    nothing here writes to (a merged layer gets new Parameter objects; a VGG's half a gigabyte of
    weights is not duplicated for every image). Everything else, modules, modes, forwards and
    hooks, belongs to the copy alone.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise AttributionError("LRP: cannot see inside a TorchScript model; load it as an nn.Module "
                               "(--model PATH --arch ... with a state_dict)")
    shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    try:
        canonical = copying.deepcopy(model, memo=shared)
    except Exception as error:  # a model holding something deepcopy refuses (a lock, a generator, ...)
        raise AttributionError(f"LRP: the model cannot be copied, and LRP works on a copy "
                               f"({type(error).__name__}: {error})") from None
    canonical.eval()
    split_residual_sums(canonical)
    calls, merges = _trace(canonical, inputs)
    for layer_name, norm_name in merges:
        merge_batch_norm(canonical.get_submodule(layer_name), canonical.get_submodule(norm_name))
        _replace(canonical, norm_name, nn.Identity())
    merged = {norm for _, norm in merges}
    return Canonical(canonical, [(name, module) for name, module in calls if name not in merged])


def merge_batch_norm(layer: nn.Module, norm: nn.Module) -> None:
    """Fold an eval-mode BatchNorm into the Conv or Linear layer before it (the same arithmetic as Zennit's)."""
    with torch.no_grad():
        variance = norm.running_var
        weight = norm.weight if norm.weight is not None else torch.ones_like(variance)
        shift = norm.bias if norm.bias is not None else torch.zeros_like(variance)
        scale = weight / (variance + norm.eps) ** .5
        bias = layer.bias if layer.bias is not None else torch.zeros(1, dtype=variance.dtype, device=variance.device)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight = nn.Parameter(layer.weight * scale.view(shape), requires_grad=False)
        layer.bias = nn.Parameter((bias - norm.running_mean) * scale + shift, requires_grad=False)


def split_residual_sums(model: nn.Module) -> None:
    """Give torchvision's BasicBlock and Bottleneck a forward whose residual sum splits relevance."""
    resnet = sys.modules.get("torchvision.models.resnet")  # not imported: no module of the model can be a block
    if resnet is None:
        return
    forwards = {resnet.BasicBlock: _basic_block_forward, resnet.Bottleneck: _bottleneck_forward}
    for module in model.modules():
        forward = forwards.get(type(module))  # the exact class: a subclass may compute something else
        if forward is not None:
            module.forward = types.MethodType(forward, module)


def _basic_block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    identity = x if block.downsample is None else block.downsample(x)
    return block.relu(residual_sum(identity, out))


def _bottleneck_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    identity = x if block.downsample is None else block.downsample(x)
    return block.relu(residual_sum(identity, out))


def _trace(model: nn.Module, inputs: torch.Tensor) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, str]]]:
    """Run the model once, recording which modules ran and which (layer, BatchNorm) pairs can merge."""
    calls: dict[str, nn.Module] = {}
    count: Counter[str] = Counter()
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id of a Conv/Linear output -> (layer, the tensor kept alive)
    readers: dict[int, list[str]] = {}  # id of a Conv/Linear output -> the leaf modules that took it as input
    norm_source: dict[str, int] = {}  # a BatchNorm whose input a Conv/Linear produced -> the id of that input

    def producer(value: object) -> tuple[str, torch.Tensor] | None:
        entry = produced.get(id(value))
        return entry if entry is not None and entry[1] is value else None

    def record(name: str, module: nn.Module, args: tuple, output: object) -> None:
        count[name] += 1
        calls.setdefault(name, module)
        if next(module.children(), None) is None or isinstance(module, BATCH_NORMS):  # a norm with parts too
            for value in args:
                if producer(value) is not None:
                    readers.setdefault(id(value), []).append(name)
        if isinstance(module, BATCH_NORMS) and args and producer(args[0]) is not None:
            norm_source[name] = id(args[0])
        if is_ruled(module) and isinstance(output, torch.Tensor):
            produced[id(output)] = (name, output)

    handles = [module.register_forward_hook(lambda m, a, o, name=name: record(name, m, a, o))
               for name, module in model.named_modules()]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    merges = []
    for name, key in norm_source.items():
        layer_name = produced[key][0]
        norm = calls[name]
        if (count[name] == 1 and count[layer_name] == 1 and readers.get(key) == [name] and norm.running_var is not None
                and own_forward(norm) is None and calls[layer_name].weight.shape[0] == norm.num_features):
            merges.append((layer_name, name))
    return list(calls.items()), merges


def _replace(model: nn.Module, name: str, replacement: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, replacement)
