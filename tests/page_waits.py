"""Reading a page in the browser tests once it has stopped moving."""

from __future__ import annotations


def settled_top(page, selector: str, timeout_ms: int = 3000) -> float:
    """Where the element's top sits once scrolling and layout stop moving it: on a busy machine
    the jump to an anchor can land a frame after the click that asked for it has returned."""
    script = f"document.querySelector({selector!r}).getBoundingClientRect().top"
    top = page.evaluate(script)
    for _ in range(timeout_ms // 100):
        page.wait_for_timeout(100)
        now = page.evaluate(script)
        if now == top:
            return now
        top = now
    return top
