"""What a new shape costs SDPA's kernels: for batches of the 14B attention shape (40 query heads over 8 key
heads, head dim 128, causal, forward only), the CPU time of the first call of a shape, of the second, and the
GPU time a call once the shape repeats; cuDNN's kernel against the flash kernel. `row_attention`
(ranker/packing.py) rounds its widths so that shapes repeat because of the first figure.

    PYTHONPATH=. python benchmarks/sdpa_shape_cost.py OUT.json

(28, 1100) comes back after other shapes: whether cuDNN kept its plan.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [(28, 1100), (28, 1101), (26, 1180), (30, 1024), (28, 1100), (14, 2200), (8, 3900)]


def cost(rows: int, length: int, backend: SDPBackend, calls: int = 48) -> dict:
    """One shape's figures over `calls` calls (a pass's 48 layers)."""
    q = torch.randn(rows, 40, length, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(rows, 8, length, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)

    def attend() -> None:
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    torch.cuda.synchronize()
    cpu_ms = []
    with sdpa_kernel(backend), torch.no_grad():
        for _ in range(calls):
            start = time.perf_counter()
            attend()
            cpu_ms.append(1e3 * (time.perf_counter() - start))
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            attend()
        torch.cuda.synchronize()
    return {"backend": backend.name, "rows": rows, "length": length, "first_call_cpu_ms": round(cpu_ms[0], 2),
            "second_call_cpu_ms": round(cpu_ms[1], 3),
            "ms_per_call_repeat": round(1e3 * (time.perf_counter() - start) / calls, 3)}  # fmt: skip


def main() -> None:
    results = []
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
        for rows, length in SHAPES:
            results.append(cost(rows, length, backend))
            print(json.dumps(results[-1]), flush=True)
    with open(sys.argv[1], "w") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
