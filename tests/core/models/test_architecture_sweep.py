"""The architecture sweep (tests/architecture_sweep.py) against docs/architectures.md.

Every image-scope method on every torchvision classifier and a dozen timm
families either gives finite, non-constant maps of the input's size or refuses
in one line; the page says which, and fails here the moment it stops being true.
The layer layer=auto reads is on the page too, and is never the first conv, a module
after the global pooling, a single token or a zero branch.
"""

from __future__ import annotations

import re

import architecture_sweep as sweep
import pytest

ARCHITECTURES = sweep.architectures()


def page_lines() -> list[str]:
    assert sweep.PAGE.is_file(), "docs/architectures.md is missing: python tests/architecture_sweep.py --write"
    return sweep.PAGE.read_text().splitlines()


def test_the_page_lists_exactly_the_architectures_swept():
    listed = [m.group(1) for m in (re.match(r"^\| `([^`]+)` \|", line) for line in page_lines()) if m]
    assert listed == ARCHITECTURES


def marks(name: str) -> list:
    return ([pytest.mark.slow] if name in sweep.SLOW else []) + ([] if name in sweep.IN_CI else [pytest.mark.sweep])


@pytest.mark.parametrize("name", [pytest.param(n, marks=marks(n)) for n in ARCHITECTURES])
def test_every_method_gives_maps_or_refuses_as_the_page_says(name):
    size, outcomes, auto, wrong = sweep.sweep(name)
    failed = {plugin: o.reason for plugin, o in outcomes.items() if o.status == "failed"}
    assert not failed, f"{name}: {failed}"
    assert wrong is None, f"{name}: layer=auto reads {auto}: {wrong}"
    if sweep.needs_explaining(outcomes):
        assert name in sweep.WHY_REFUSED, f"{name}: a method refused, and the page does not say why that is right"
    lines = page_lines()
    assert sweep.row(name, size, outcomes, auto) in lines, f"{name}: the page's row is out of date"
    listed = [line for line in lines if line.startswith(f"- `{name}` ")]
    assert listed == sweep.reasons(name, outcomes), f"{name}: the page's refusals are out of date"


def test_every_timm_family_is_swept():
    """One model of every family (module) timm offers, so that a family added to timm shows up here."""
    families = sweep.timm_families()
    swept = {name[len("timm:"):] for name in ARCHITECTURES if name.startswith("timm:")}
    missing = sorted(family for family, names in families.items() if not swept & set(names))
    assert not missing, f"timm families not swept: {missing} (add the smallest to TIMM_FAMILIES: --families)"
    assert set(sweep.TIMM_FAMILIES) <= set(families)
