"""Composites: which rule each layer gets, as named presets with per-layer-type overrides.

A composite names three rules: one for convolutions, one for Linear layers, and optionally one
for the first layer, the Conv or Linear layer the input meets first. The presets are Zennit's
(Kohlbrenner et al. 2020, "Towards best practice in explaining neural network decisions with
LRP"), plus a flat variant of epsilon-gamma-box:

=========================  ===========  ============  ===========
composite                  first layer  convolutions  Linear
=========================  ===========  ============  ===========
epsilon-plus               (its type's) z-plus        epsilon
epsilon-plus-flat          flat         z-plus        epsilon
epsilon-gamma-box          z-box        gamma         epsilon
epsilon-gamma-flat         flat         gamma         epsilon
epsilon-alpha2-beta1       (its type's) alpha2-beta1  epsilon
epsilon-alpha2-beta1-flat  flat         alpha2-beta1  epsilon
=========================  ===========  ============  ===========

epsilon-gamma-flat is epsilon-gamma-box with the flat rule where the box was: the name says
there is no box any more. Overrides are ``KEY=RULE`` pairs separated by commas, KEY one of
first, conv, linear: ``rules="conv=gamma,linear=epsilon"``; ``first=none`` gives the first
layer its type's rule. The z-box rule only fits the first layer (its bounds are pixel values).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from nnvis_plugins.lrp.layers import layer_kind
from nnvis_plugins.lrp.rules import RULE_NAMES

LAYER_KEYS = ("first", "conv", "linear")


@dataclass(frozen=True)
class Composite:
    """The rule for convolutions, for Linear layers, and for the first layer (None: its type's rule)."""

    conv: str
    linear: str
    first: str | None = None

    def rule_names(self, ruled: list[tuple[str, nn.Module]]) -> dict[str, str]:
        """Layer name -> rule name, for the Conv and Linear layers in the order the input meets them."""
        names = {name: getattr(self, layer_kind(module)) for name, module in ruled}
        if ruled and self.first is not None:
            names[ruled[0][0]] = self.first
        return names


COMPOSITES: dict[str, Composite] = {
    "epsilon-plus": Composite(conv="z-plus", linear="epsilon"),
    "epsilon-plus-flat": Composite(conv="z-plus", linear="epsilon", first="flat"),
    "epsilon-gamma-box": Composite(conv="gamma", linear="epsilon", first="z-box"),
    "epsilon-gamma-flat": Composite(conv="gamma", linear="epsilon", first="flat"),
    "epsilon-alpha2-beta1": Composite(conv="alpha2-beta1", linear="epsilon"),
    "epsilon-alpha2-beta1-flat": Composite(conv="alpha2-beta1", linear="epsilon", first="flat"),
}


def parse_overrides(text: str) -> dict[str, str | None]:
    """'conv=gamma, first=none' -> {'conv': 'gamma', 'first': None}; ValueError naming what is wrong."""
    overrides: dict[str, str | None] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key, equals, rule = (word.strip() for word in part.partition("="))
        if not equals or key not in LAYER_KEYS:
            raise ValueError(f"LRP rules: {part!r} is not KEY=RULE with KEY one of {', '.join(LAYER_KEYS)}")
        if key == "first" and rule == "none":
            overrides[key] = None
            continue
        if rule not in RULE_NAMES:
            raise ValueError(f"LRP rules: unknown rule {rule!r} in {part!r}; use one of {', '.join(RULE_NAMES)}")
        if rule == "z-box" and key != "first":
            raise ValueError(f"LRP rules: {part!r}: z-box is for the first layer only (first=z-box), its bounds "
                             "are pixel values")
        overrides[key] = rule
    return overrides


def composite(name: str, rules: str = "") -> Composite:
    """The preset `name` with the `rules` overrides applied."""
    if name not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {name!r}: use one of {', '.join(COMPOSITES)}")
    return replace(COMPOSITES[name], **parse_overrides(rules))


def overrides_problem(text: str) -> str | None:
    """The plugin parameter's validator: what is wrong with a `rules` value, or None."""
    try:
        parse_overrides(text)
    except ValueError as error:
        return str(error)
    return None
