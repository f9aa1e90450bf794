"""Float32 as written, and the same picture twice, on a GPU.

By default cuDNN runs float32 convolutions with TF32 products (a 10-bit mantissa)
and may choose algorithms whose sums change order from call to call. An attribution
map is a measurement: Integrated Gradients' completeness gap, a sanity check's rank
correlations and the contract's repeat-call check all assume float32 arithmetic that
repeats. A run therefore asks for full float32 and deterministic cuDNN algorithms,
and puts the caller's settings back afterwards. On a CPU these flags change nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def exact_float32() -> Iterator[None]:
    """Within the block: no TF32 in convolutions or matrix products, deterministic cuDNN
    algorithms, no cuDNN autotuning (which may pick a different algorithm per run)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark)
    cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = False, False, True, False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved
