"""Which modules LRP gives a rule by their type, and the modules it refuses by their type.

Every module that runs in the forward pass is one of:

- a layer a rule applies to: Conv1d/2d/3d ("conv") and Linear ("linear");
- a pooling that shares relevance in proportion to its inputs: average pooling, adaptive or not
  (functional.py gives its function form the same rule), and a BatchNorm that could not be
  merged into the layer before it (an affine map per channel);
- a module whose ordinary backward already is the LRP rule: max pooling (the winner takes the
  relevance), Flatten, Unflatten, Identity, Dropout (the copy is in eval mode), nnvis's Grayscale;
- an activation relevance passes through unchanged (ReLU, ReLU6, LeakyReLU, ELU, GELU, SiLU,
  Hardswish, Mish, Softplus: nnvis_core.toolkit.ACTIVATIONS);
- any other module, container or leaf, with parameters or not (a Permute, a DropPath, timm's GELU or
  LayerScale): its forward is judged call by call by the watch in functional.py, where parameters
  are constants and every call on what the input carries gets its rule or a one-line refusal (a
  GroupNorm's F.group_norm, a gate's sigmoid, a sum of two branches).

Refused here, naming the layer: a subclass of a known type that computes something else in its own
forward (its type's rule would misdescribe it), and a BatchNorm without running statistics.
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


def is_ruled(module: nn.Module) -> bool:
    """A layer the composite chooses a rule for (conv or linear)."""
    return isinstance(module, CONVOLUTIONS + DENSE)


def layer_kind(module: nn.Module) -> str:
    """'conv' or 'linear': the key of the `rules=` override that applies to the layer."""
    return "conv" if isinstance(module, CONVOLUTIONS) else "linear"


def needs_proportional_rule(module: nn.Module) -> bool:
    """Average pooling and (unmerged) BatchNorm: each input gets its share of the output."""
    return isinstance(module, AVERAGE_POOLINGS + BATCH_NORMS)


KNOWN_TYPES = CONVOLUTIONS + DENSE + AVERAGE_POOLINGS + BATCH_NORMS + GRADIENT_IS_THE_RULE + PASSING_ACTIVATIONS


def own_forward(module: nn.Module) -> str | None:
    """The known class a module derives from while computing something else in its own forward (timm's
    BatchNormAct2d: a BatchNorm, then an activation; a padded 'same' conv), or None. Its rule would
    be the class's, applied to what the class does not compute."""
    base = next((cls for cls in KNOWN_TYPES if isinstance(module, cls)), None)
    return None if base is None or type(module).forward is base.forward else base.__name__


def refusal(name: str, module: nn.Module, method: str = "LRP") -> str | None:
    """Why `method` cannot go through this module as it ran, or None when it can. Only a known type whose
    rule would misdescribe it is refused here; every other module is judged by the calls its forward makes."""
    base = own_forward(module)
    if base is not None:
        return (f"{method}: no rule for layer {name} ({type_name(module)}, a {base} with a forward of its "
                f"own: the {base} rule would not describe what it computes)")
    if isinstance(module, BATCH_NORMS) and module.running_var is None:
        return f"{method}: no rule for layer {name} (BatchNorm without running statistics normalizes each batch " \
               "by its own statistics, which is not an affine map)"
    return None


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
