"""The C allocator's policy for an nnvis process: keep freed memory for the next forward pass.

glibc's malloc hands the top of its heap back to the system whenever more than a
threshold is free, and that threshold follows the largest block freed so far. A
forward pass of a large model frees hundreds of megabytes at its end and asks for
them again in the next pass, where they come back as fresh zeroed pages, one page
fault each. How often that happens depends on the heap's history, so the same
pass varies by 10-40%: attention capture on vit_b_16 (twelve 15 MB weight tensors
kept per pass) measured 1.12x to 1.44x a plain pass with glibc's defaults and
1.02x to 1.03x with the policy below, whose plain passes are as fast as before
(`benchmarks/attention.py --allocator`).

`nnvis report` and the Ray workers set it at start; `import nnvis` leaves the
user's process as it is.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_FREE = 1 << 30  # bytes of freed heap kept before any is returned to the system
LARGEST_FROM_HEAP = 32 << 20  # blocks from here up are mapped and unmapped on their own (glibc's maximum)


def keep_freed_memory() -> bool:
    """Ask glibc to keep up to KEEP_FREE bytes of freed heap and to serve blocks under
    LARGEST_FROM_HEAP from its heap. False where the C library is not glibc (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, or no C library by that name
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST_FROM_HEAP)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE))
