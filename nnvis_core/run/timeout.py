"""Stop a plugin call that runs past its time limit.

The call runs in a worker thread while the caller waits up to the limit. When
the limit passes, the caller raises `StopPluginCall` inside the worker (through
CPython's `PyThreadState_SetAsyncExc`), which unwinds the plugin's own stack:
its `finally` blocks and context managers run, so hooks it put on the model are
removed as they would be after any other exception.

Why a thread and not a subprocess. A subprocess could be killed outright, but
with torch it costs more than it saves: forking a process that has started
torch's OpenMP pools or CUDA can deadlock or fail in the child, and a spawned
child must import torch again and receive its own copy of the model and image
for every call (seconds per call, and twice the memory, on the GPU too). Plugins
created in-process (tests, notebooks) could not be rebuilt in a child at all,
and every artifact would have to be pickled back. A thread shares the model,
costs a fraction of a millisecond, and keeps tracebacks intact.

The price: the stop is delivered when the worker next runs Python bytecode.
A loop of Python or torch calls stops within one operation; a call blocked in C
(a lock, `time.sleep`, one enormous kernel) is stopped only when that C call
returns. Until then it is abandoned as a daemon thread (it dies with the
process) and `CallTimeout.stopped` is False, so that the caller can stop
calling that plugin.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import traceback
from typing import Callable, TypeVar

T = TypeVar("T")

# How long a stopped worker gets to unwind (run its finally blocks) before it is abandoned.
STOP_GRACE_SECONDS = 1.0


class StopPluginCall(BaseException):
    """Raised inside a runaway worker. A BaseException, so that a plugin's
    `except Exception:` does not swallow it."""


class CallTimeout(Exception):
    """A call ran past its time limit.

    stopped: the worker thread has ended (False: it is blocked outside Python and was abandoned).
    stack: where the call was when the limit passed, formatted like a traceback.
    """

    def __init__(self, seconds: float, stopped: bool, stack: str):
        self.seconds, self.stopped, self.stack = seconds, stopped, stack
        outcome = "stopped" if stopped else "could not be stopped yet (blocked outside Python) and was abandoned"
        super().__init__(f"ran past the time limit of {seconds:g} s; {outcome}")


def call_with_time_limit(function: Callable[[], T], seconds: float | None) -> T:
    """function(), or CallTimeout when it takes longer than `seconds` (None: no limit, no thread).

    Exceptions raised by `function` reach the caller unchanged, with their traceback.
    """
    if seconds is None:
        return function()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            outcome["error"] = error

    worker = threading.Thread(target=work, name="nnvis-plugin-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        stack = _stack_of(worker)
        raise CallTimeout(seconds, _stop(worker), stack)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _stack_of(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    lines = traceback.format_stack(frame) if frame is not None else []
    return "Stack of the plugin call when it ran past the time limit:\n" + "".join(lines)


def _stop(thread: threading.Thread) -> bool:
    """Raise StopPluginCall in `thread`, give it time to unwind; True when it ended.

    The exception is raised a second time only if the first was swallowed, after a
    full grace period, so that it does not interrupt the plugin's cleanup.
    """
    for _ in range(2):
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(StopPluginCall))
        thread.join(STOP_GRACE_SECONDS)
        if not thread.is_alive():
            return True
    return False  # the stop stays pending: the worker unwinds as soon as it returns to Python
