"""Reading a page in the browser tests once it has stopped moving."""

from __future__ import annotations


def settled_top(page, selector: str, timeout_ms: int = 5000, still_samples: int = 3) -> float:
    """Where the element's top sits once scrolling and layout stop moving it: on a busy machine
    the jump to an anchor can land a frame after the click that asked for it has returned, and a
    stalled frame can make two reads agree mid-move, so the top must hold for `still_samples`
    reads in a row, 100 ms apart."""
    script = f"document.querySelector({selector!r}).getBoundingClientRect().top"
    top, still = page.evaluate(script), 0
    for _ in range(timeout_ms // 100):
        page.wait_for_timeout(100)
        now = page.evaluate(script)
        still = still + 1 if now == top else 0
        if still >= still_samples:
            return now
        top = now
    return top


def settled_layout(page, timeout_ms: int = 5000, still_samples: int = 3) -> float:
    """The document's height once it stops changing: scripts that draw charts or fill grids after the
    load event can still be growing the page on a busy machine, and a jump to an anchor taken before
    they finish lands where the anchor used to be."""
    script = "document.documentElement.scrollHeight"
    height, still = page.evaluate(script), 0
    for _ in range(timeout_ms // 100):
        page.wait_for_timeout(100)
        now = page.evaluate(script)
        still = still + 1 if now == height else 0
        if still >= still_samples:
            return now
        height = now
    return height
