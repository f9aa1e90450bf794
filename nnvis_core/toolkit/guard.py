"""Leave the model exactly as it was found, even when a method fails midway.

One implementation for every family: ``preserved`` restores what a method could
change by mistake, and ``frozen`` is ``preserved`` plus eval mode and frozen
parameters for the block (what an optimization of the *input* wants: no weight
gradients are computed or kept). Plugin families import them from
``nnvis_core.toolkit`` rather than keeping copies of their own.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

# Per-module hook registries of torch.nn.Module (dicts keyed by handle id).
_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks", "_load_state_dict_pre_hooks",
)


def guarded_state(model: nn.Module) -> dict:
    """What ``preserved`` promises to restore, as a value that compares equal when it was restored:
    modes, hooks (by handle id), requires_grad flags, gradients (by identity) and parameter storage
    (data pointer and version). Cheap: nothing is copied.

    Not the testing kit's ``nnvis_core.testing.model_state``, which copies weights and buffers so that a
    plugin that *wrote* to them can be told, in words, what it changed.
    """
    return {
        "training": [(n, m.training) for n, m in model.named_modules()],
        "hooks": [(n, h, tuple(getattr(m, h, {}).keys())) for n, m in model.named_modules() for h in _HOOK_DICTS],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grads": [(n, id(p.grad) if p.grad is not None else None) for n, p in model.named_parameters()],
        "params": [(n, p.data_ptr(), p._version) for n, p in model.named_parameters()],
    }


model_state = guarded_state  # the name this had before; kept for plugin authors who use it


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Restore modes, requires_grad flags and parameter gradients on exit, and
    remove any hook added inside the block, whether the block succeeds or raises.

    Methods remove their own hooks through their own context managers; this is
    the second line of defence a plugin wraps around a whole computation.
    """
    modules = list(model.named_modules())
    training = {name: m.training for name, m in modules}
    hooks = {(name, h): set(getattr(m, h, {}).keys()) for name, m in modules for h in _HOOK_DICTS}
    params = list(model.named_parameters())
    flags = {name: p.requires_grad for name, p in params}
    grads = {name: p.grad for name, p in params}
    try:
        yield model
    finally:
        for name, module in modules:
            module.training = training[name]
            for h in _HOOK_DICTS:
                registry = getattr(module, h, None)
                if registry is None:
                    continue
                for key in set(registry.keys()) - hooks[(name, h)]:
                    del registry[key]
        for name, p in params:
            p.requires_grad_(flags[name])
            p.grad = grads[name]


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``preserved``, with the model in eval mode and every parameter's requires_grad off inside the
    block: for methods that optimize or differentiate the input only, so no weight gradient is
    computed or kept. Everything is restored after, even when the block raises.

    >>> with frozen(model):
    ...     pixels.requires_grad_(True); model(pixels).sum().backward()   # pixels.grad only
    """
    with preserved(model):
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        yield model
