"""Row-wise e4m3 quantization in one Triton kernel (ranker/fp8.py's `quantize_rows` on a GPU).

torch's operations take five passes over the input and an fp32 copy of it (abs, max, convert, multiply,
cast); this kernel reads each row twice from cache-friendly blocks (its largest magnitude, then the
quantized values) and writes e4m3 and one scale per row. The numbers are those of the torch operations: the
same fp32 reciprocal and products, rounded to the nearest e4m3 and clamped to its range.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from arena_assets.ranker.fp8 import E4M3, E4M3_MAX, MIN_AMAX

_BLOCK = 1024


@triton.jit
def _quantize_rows(x, q, scales, K, largest, inverse_largest, smallest_amax, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    amax = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, K, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        values = tl.load(x + row * K + cols, mask=cols < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(values))
    peak = tl.maximum(tl.max(amax, axis=0), smallest_amax)
    # A correctly rounded reciprocal (Triton's `/` may approximate) and products, as quantize_rows_torch.
    tl.store(scales + row, peak * inverse_largest)
    inverse = tl.math.div_rn(1.0, peak) * largest
    for start in range(0, K, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        values = tl.load(x + row * K + cols, mask=cols < K, other=0.0).to(tl.float32)
        scaled = tl.minimum(tl.maximum(values * inverse, -largest), largest)
        tl.store(q + row * K + cols, scaled.to(q.dtype.element_ty), mask=cols < K)


def quantize_rows_kernel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (on a GPU) -> (e4m3 [M, K], fp32 scales [M, 1])."""
    x = x.contiguous()
    rows, width = x.shape
    q = torch.empty(rows, width, dtype=E4M3, device=x.device)
    scales = torch.empty(rows, 1, dtype=torch.float32, device=x.device)
    _quantize_rows[(rows,)](x, q, scales, width, E4M3_MAX, 1.0 / E4M3_MAX, MIN_AMAX, BLOCK=_BLOCK)
    return q, scales
