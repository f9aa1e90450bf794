"""Which modules LRP knows, and the one-line refusal for the others.

Every module that runs in the forward pass is one of:

- a layer a rule applies to: Conv1d/2d/3d ("conv") and Linear ("linear");
- a pooling that shares relevance in proportion to its inputs: average pooling, adaptive or not
  (functional.py gives its function form the same rule), and a BatchNorm that could not be
  merged into the layer before it (an affine map per channel);
- a module whose ordinary backward already is the LRP rule: max pooling (the winner takes the
  relevance), Flatten, Unflatten, Identity, Dropout (the copy is in eval mode), nnvis's Grayscale;
- an activation relevance passes through unchanged (ReLU, ReLU6, LeakyReLU, ELU, GELU, SiLU,
  Hardswish, Mish, Softplus: nnvis_core.toolkit.ACTIVATIONS);
- a container with no parameters of its own (its forward may compute, and the functional
  watch in functional.py refuses the sums, products and non-linearities it has no rule for).

Anything else, a module type with parameters or a non-linearity LRP has no rule for, is refused,
naming the layer: a rule silently replaced by the gradient would give a map that is not LRP.
"""

from __future__ import annotations

from torch import nn

from nnvis_core.models.convnet import Grayscale
from nnvis_core.toolkit import ACTIVATIONS, AttributionError

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
DENSE = (nn.Linear,)
AVERAGE_POOLINGS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
GRADIENT_IS_THE_RULE = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                        nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                        nn.Flatten, nn.Unflatten, nn.Identity,
                        nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, Grayscale)
PASSING_ACTIVATIONS = ACTIVATIONS

KNOWN = ("Conv1d/2d/3d, Linear, BatchNorm, average and max pooling, the activations "
         f"{', '.join(cls.__name__ for cls in ACTIVATIONS)}, Flatten, Dropout and torchvision's ResNet blocks")


def is_ruled(module: nn.Module) -> bool:
    """A layer the composite chooses a rule for (conv or linear)."""
    return isinstance(module, CONVOLUTIONS + DENSE)


def layer_kind(module: nn.Module) -> str:
    """'conv' or 'linear': the key of the `rules=` override that applies to the layer."""
    return "conv" if isinstance(module, CONVOLUTIONS) else "linear"


def needs_proportional_rule(module: nn.Module) -> bool:
    """Average pooling and (unmerged) BatchNorm: each input gets its share of the output."""
    return isinstance(module, AVERAGE_POOLINGS + BATCH_NORMS)


def _has_own_parameters(module: nn.Module) -> bool:
    return any(p is not None for p in module._parameters.values())


KNOWN_TYPES = CONVOLUTIONS + DENSE + AVERAGE_POOLINGS + BATCH_NORMS + GRADIENT_IS_THE_RULE + PASSING_ACTIVATIONS


def _known(module: nn.Module) -> bool:
    return isinstance(module, KNOWN_TYPES)


def own_forward(module: nn.Module) -> str | None:
    """The known class a module derives from while computing something else in its own forward (timm's
    BatchNormAct2d: a BatchNorm, then an activation; a padded 'same' conv), or None. Its rule would
    be the class's, applied to what the class does not compute."""
    base = next((cls for cls in KNOWN_TYPES if isinstance(module, cls)), None)
    return None if base is None or type(module).forward is base.forward else base.__name__


def refusal(name: str, module: nn.Module, method: str = "LRP", known: str = KNOWN) -> str | None:
    """Why `method` cannot go through this module as it ran, or None when it can; `known` ends the message."""
    leaf = next(module.children(), None) is None
    base = own_forward(module)
    if base is not None:
        return (f"{method}: no rule for layer {name} ({type_name(module)}, a {base} with a forward of its "
                f"own: the {base} rule would not describe what it computes)")
    if _known(module):
        if isinstance(module, BATCH_NORMS) and module.running_var is None:
            return f"{method}: no rule for layer {name} (BatchNorm without running statistics normalizes each batch " \
                   "by its own statistics, which is not an affine map)"
        return None
    if not leaf and not _has_own_parameters(module):
        return None
    what = "parameters" if _has_own_parameters(module) else "a non-linearity"
    return (f"{method}: no rule for layer {name or '<model>'} ({type_name(module)}, {what} {method} has no rule "
            f"for); {method} knows {known}")


def type_name(module: nn.Module) -> str:
    """The module's class; with its module path when torch has a known class of that name (timm has a
    GELU of its own), so the message does not refuse a GELU while saying it knows GELU."""
    cls = type(module)
    namesake = cls.__name__ in {known.__name__ for known in KNOWN_TYPES} and not cls.__module__.startswith("torch.")
    return f"{cls.__module__}.{cls.__qualname__}" if namesake else cls.__name__


def check_supported(calls: list[tuple[str, nn.Module]]) -> None:
    """Raise AttributionError naming the first module that ran and has no rule."""
    for name, module in calls:
        reason = refusal(name, module)
        if reason is not None:
            raise AttributionError(reason)
