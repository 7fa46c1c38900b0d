"""Time one attention layer of the Qwen2.5-14B shape (40 query heads, 8 key/value heads, head dim 128) on
packed rows, forward and forward + backward: the varlen flash kernel the packed path runs against
FlexAttention on the same layout, and padded SDPA where the rows have one length.

    PYTHONPATH=. python benchmarks/attention_bench.py [--out OUT.json] [--shapes pair_2048,score_real_sorted]

Shapes (swap pairs of a prefix and two continuations, packed with the prefix shared): `pair_2048` (one pair,
a training pass of equal-length rows), `score_2048` (four 2048-token pairs), `score_real_sorted` (WSDM-like
pairs of neighbouring lengths up to 16,384 row tokens, as the scorer groups them), `score_real_sorted_32k`
(the same up to 32,768) and `train_real` (WSDM-like pairs in random order, half of 16,384). Variants:
`varlen` (ranker/packing.py's `packed_attention`: the keys gathered per attention sequence, then PyTorch's
varlen flash kernel), `flex` (`flex_attention` compiled, reading the packed keys in place through a block
mask built from the layout; `ms_block_mask` is that mask's construction, once a pass) and `sdpa` (the padded
pair). Milliseconds are medians of 20; `flex` is checked against `varlen` on each shape.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from arena_assets.ranker.packing import PackedLayout, pack_rows, packed_attention

HEADS, KV_HEADS, HEAD_DIM = 40, 8, 128
SCALE = HEAD_DIM**-0.5


def timed(fn, repeats: int = 20) -> float:
    """Median milliseconds of fn() on the GPU."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def wsdm_like_pairs(row_tokens: int) -> list[tuple[int, int, int]]:
    """Swap pairs of WSDM-like lengths (a 40-300 token prefix, two responses of about 450 tokens)."""
    generator = torch.Generator().manual_seed(1)
    pairs, tokens = [], 0
    while tokens < row_tokens:
        prefix = int(torch.randint(40, 300, (1,), generator=generator))
        responses = sum(int(math.exp(6.1 + 0.6 * torch.randn(1, generator=generator).item())) for _ in "ab")
        rest = min(responses + 30, 4096 - prefix)
        pairs.append((prefix, rest, rest))
        tokens += 2 * (prefix + rest)
    return pairs


def sorted_window(row_tokens: int) -> list[tuple[int, int, int]]:
    """A pass of WSDM-like pairs as the scorer groups them: from many pairs sorted by length, a window of
    neighbours up to `row_tokens` row tokens, taken from the middle of the distribution."""
    pool = sorted(wsdm_like_pairs(64 * row_tokens), key=lambda pair: sum(pair) + pair[0])
    window, tokens = [], 0
    for pair in pool[len(pool) // 2 :]:
        if tokens + 2 * (pair[0] + pair[1]) > row_tokens:
            break
        window.append(pair)
        tokens += 2 * (pair[0] + pair[1])
    return window


def shapes() -> dict[str, list[tuple[int, int, int]]]:
    real = wsdm_like_pairs(16384)
    return {
        "score_real_sorted": sorted_window(16384),
        "score_real_sorted_32k": sorted_window(32768),
        "pair_2048": [(480, 2048 - 480, 2048 - 480)],
        "score_2048": [(480, 2048 - 480, 2048 - 480)] * 4,
        "train_real": real[: max(1, len(real) // 2)],
    }


def pair_rows(pairs: list[tuple[int, int, int]], system: int = 24) -> list[list[int]]:
    """Token rows of swap pairs that all begin with the same `system` tokens (the system prompt), then a
    pair's own prefix, shared with its swap, then the rows' own tokens."""
    rows = []
    for n, (prefix, first, second) in enumerate(pairs):
        base = 10_000 * (n + 1)
        head = list(range(system)) + [base + t for t in range(prefix - system)]
        rows.append(head + [base + 5_000 + t for t in range(first)])
        rows.append(head + [base + 7_500 + t for t in range(second)])
    return rows


def flex_block_mask(layout: PackedLayout, total: int):
    """FlexAttention's block mask of a packed layout: a query sees the packed positions its attention
    sequence gathers as keys (`kv_index`), up to itself."""
    from torch.nn.attention.flex_attention import create_block_mask

    device = layout.kv_index.device
    sequences = len(layout.cu_seq_q) - 1
    key_counts = (layout.cu_seq_k[1:] - layout.cu_seq_k[:-1]).long()
    query_counts = (layout.cu_seq_q[1:] - layout.cu_seq_q[:-1]).long()
    owner = torch.repeat_interleave(torch.arange(sequences, device=device), key_counts)
    visible = torch.zeros(sequences, total, dtype=torch.bool, device=device)
    visible[owner, layout.kv_index] = True
    sequence_of = torch.repeat_interleave(torch.arange(sequences, device=device), query_counts)

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & visible[sequence_of[q_idx], kv_idx]

    return create_block_mask(mask_mod, None, None, total, total, device=device)


def measure(pairs: list[tuple[int, int, int]], flex) -> dict:
    rows = pair_rows(pairs)
    tokens, layout = pack_rows(rows, share_pair_prefix=True)
    layout = layout.to("cuda")
    total = len(tokens)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    q = leaf(1, HEADS, total, HEAD_DIM)
    k, v = leaf(1, KV_HEADS, total, HEAD_DIM), leaf(1, KV_HEADS, total, HEAD_DIM)
    result: dict = {"pairs": len(pairs), "packed_tokens": total, "row_tokens": sum(map(len, rows)),
                    "shared_tokens": layout.shared_tokens}  # fmt: skip
    torch.cuda.synchronize()
    start = time.perf_counter()
    block_mask = flex_block_mask(layout, total)
    torch.cuda.synchronize()
    result["ms_block_mask_first"] = 1e3 * (time.perf_counter() - start)
    result["ms_block_mask"] = timed(lambda: flex_block_mask(layout, total), repeats=5)
    result["block_mask_sparsity"] = float(block_mask.sparsity())

    def run_varlen():
        return packed_attention(torch.nn.Module(), q, k, v, layout, scaling=SCALE)[0]  # [1, T, H, D]

    def run_flex():
        out = flex(q, k, v, block_mask=block_mask, scale=SCALE, enable_gqa=True)  # [1, H, T, D]
        return out.transpose(1, 2)

    reference = run_varlen()
    grad = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, (q, k, v), grad)
    start = time.perf_counter()
    out = run_flex()
    torch.cuda.synchronize()
    result["s_flex_first_call"] = time.perf_counter() - start
    result["flex_forward_max_diff"] = (out.float() - reference.float()).abs().max().item()
    got = torch.autograd.grad(out, (q, k, v), grad)
    for name, a, b in zip(("dq", "dk", "dv"), got, expected, strict=True):
        result[f"flex_{name}_relative_error"] = ((a.float() - b.float()).norm() / b.float().norm()).item()

    for name, run in {"varlen": run_varlen, "flex": run_flex}.items():

        def forward(run=run):
            with torch.no_grad():
                run()

        def forward_backward(run=run):
            run().backward(grad)

        result[f"ms_forward_{name}"] = timed(forward)
        result[f"ms_forward_backward_{name}"] = timed(forward_backward)
    if len({len(row) for row in rows}) == 1:  # equal lengths: the padded pair, as the unpacked path runs it
        length = len(rows[0])
        q2 = leaf(len(rows), HEADS, length, HEAD_DIM)
        k2, v2 = leaf(len(rows), KV_HEADS, length, HEAD_DIM), leaf(len(rows), KV_HEADS, length, HEAD_DIM)

        def sdpa():
            with torch.no_grad():
                F.scaled_dot_product_attention(q2, k2, v2, is_causal=True, scale=SCALE, enable_gqa=True)

        result["ms_forward_sdpa"] = timed(sdpa)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--shapes", default=",".join(shapes()))
    args = parser.parse_args()
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    results: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    every = shapes()
    for name in args.shapes.split(","):
        results[name] = figures = measure(every[name], flex)
        print(name, json.dumps(figures), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
