"""Which engine `engine="auto"` runs, decided from the traced graph before any position runs.

The incremental engine pays for its bookkeeping (a crop and a paste per patched layer,
a Python step per graph node) and gains only the work it skips. What it skips follows
from its plan: the unoccluded pass counts each node's floating-point operations (matrix
products and convolutions), a node computed on a rectangle costs its share of the whole
map's, a whole-map node all of it. When one position would still cost more than
AUTO_WORK of a whole image, there is too little to reuse and `auto` runs whole occluded
images instead.

That is the case of transformers: a ViT patches only its patch embedding, and from the
first self-attention on every token depends on every patch, so each position redoes
more than 99% of the work of a whole image. Swin's windowed attention, ConvNeXt's
channels-last LayerNorm and squeeze-and-excitation blocks likewise end the reuse
right after the stem.
"""

from __future__ import annotations

from nnvis_plugins.occlusion.incremental import FULL, IncrementalEngine
from nnvis_plugins.occlusion.program import Step, Unsupported

AUTO_WORK = 0.8  # the most of a whole image's work per position at which `auto` runs incrementally


class NoReuse(Unsupported):
    """The incremental plan redoes nearly all the work of a whole image (the message says where it stops)."""


def reuse_ends(engine: IncrementalEngine) -> str:
    """Where the plan stops reusing work: the first node with arithmetic that runs on whole maps
    for every position, named by its module, with a word on why when it is attention."""
    for step in engine.program.steps:
        if engine.plan.kinds.get(step.name) == FULL and engine.flops.get(step.name, 0.0) > 0:
            return _describe(step)
    return "nowhere"


def _describe(step: Step) -> str:
    stack = step.node.meta.get("nn_module_stack") or {}
    if stack:
        path, kind = list(stack.values())[-1]
        kind = getattr(kind, "__name__", str(kind))
    else:
        path, kind = step.name, getattr(step.node.target, "__name__", str(step.node.target))
    function = getattr(step.node.target, "__name__", str(step.node.target))
    if "attention" in kind.lower() or "attention" in function.lower():
        return f"{path} ({kind}: attention mixes tokens from all over the map)"
    return f"{path} ({kind})"


def check_reuse(engine: IncrementalEngine, limit: float = AUTO_WORK) -> float:
    """The plan's work per position as a share of a whole image's; NoReuse above `limit`."""
    work = engine.work()
    if work > limit:
        raise NoReuse(f"it would redo {work:.0%} of a whole image's work per position: every position runs "
                      f"whole maps from {reuse_ends(engine)} on")
    return work
