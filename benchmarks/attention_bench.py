"""Time one attention layer of the Qwen2.5-14B shape (40 query heads, 8 key/value heads, head dim 128),
forward and forward + backward, on packed rows: the two packed kernels against each other, and against
padded SDPA where the rows have one length.

    PYTHONPATH=. python benchmarks/attention_bench.py [--out OUT.json] [--shapes pair_2048,score_real]

Shapes (swap pairs of a prefix and two continuations, packed with the prefix shared): `pair_2048` and
`pair_4096` (one pair, a training pass of equal-length rows), `score_2048` (four 2048-token pairs, a scoring
pass), `score_real` (WSDM-like pairs up to 16,384 row tokens, in random order, as a pass would hold them
unsorted), `train_real` (half of them) and `score_real_sorted` (neighbours in length, as the scorer groups
them). Variants: `varlen` (ranker/packing.py's `packed_attention`: the
varlen flash kernel on keys gathered per sequence), `rows` (`packed_row_attention`: each sequence gathered
into a whole row of one padded batch for SDPA's causal kernel) and, for equal-length pairs, `sdpa` (the
padded pair as the unpacked path runs it). Milliseconds are medians of 20; `rows` is checked against
`varlen` (output and gradients) on each shape.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from arena_assets.ranker.packing import pack_rows, packed_attention, packed_row_attention

HEADS, KV_HEADS, HEAD_DIM = 40, 8, 128
SCALE = HEAD_DIM**-0.5


def timed(fn, repeats: int = 20) -> float:
    """Median milliseconds of fn() (forward and backward) on the GPU."""
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
        "pair_2048": [(480, 2048 - 480, 2048 - 480)],
        "pair_4096": [(960, 4096 - 960, 4096 - 960)],
        "score_2048": [(480, 2048 - 480, 2048 - 480)] * 4,
        "score_real": real,
        "train_real": real[: max(1, len(real) // 2)],
    }


def pair_rows(pairs: list[tuple[int, int, int]]) -> list[list[int]]:
    """Token rows of swap pairs: distinct tokens per pair, so only a pair's own prefix is shared."""
    rows = []
    for n, (prefix, first, second) in enumerate(pairs):
        base = 10_000 * n
        rows.append([base + t for t in range(prefix + first)])
        rows.append([base + t for t in range(prefix)] + [base + 5_000 + t for t in range(second)])
    return rows


def measure(pairs: list[tuple[int, int, int]]) -> dict:
    rows = pair_rows(pairs)
    tokens, layout = pack_rows(rows, share_pair_prefix=True)
    layout = layout.to("cuda")
    total = len(tokens)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    q = leaf(1, HEADS, total, HEAD_DIM)
    k, v = leaf(1, KV_HEADS, total, HEAD_DIM), leaf(1, KV_HEADS, total, HEAD_DIM)
    kernels = {"varlen": packed_attention, "rows": packed_row_attention}
    result: dict = {"pairs": len(pairs), "packed_tokens": total, "row_tokens": sum(map(len, rows)),
                    "padded_row_positions": (len(layout.cu_seq_q) - 1) * layout.max_k}  # fmt: skip

    reference, _ = packed_attention(torch.nn.Module(), q, k, v, layout, scaling=SCALE)
    grad = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, (q, k, v), grad)
    out, _ = packed_row_attention(torch.nn.Module(), q, k, v, layout, scaling=SCALE)
    result["rows_forward_max_diff"] = (out.float() - reference.float()).abs().max().item()
    got = torch.autograd.grad(out, (q, k, v), grad)
    for name, a, b in zip(("dq", "dk", "dv"), got, expected, strict=True):
        result[f"rows_{name}_relative_error"] = ((a.float() - b.float()).norm() / b.float().norm()).item()

    for name, kernel in kernels.items():

        def forward(kernel=kernel):
            with torch.no_grad():
                kernel(torch.nn.Module(), q, k, v, layout, scaling=SCALE)

        def forward_backward(kernel=kernel):
            kernel(torch.nn.Module(), q, k, v, layout, scaling=SCALE)[0].backward(grad)

        result[f"ms_forward_{name}"] = timed(forward)
        result[f"ms_forward_backward_{name}"] = timed(forward_backward)
    if len({len(row) for row in rows}) == 1:  # equal lengths: the padded pair, as the unpacked path runs it
        length = len(rows[0])
        q2 = leaf(len(rows), HEADS, length, HEAD_DIM)
        k2, v2 = leaf(len(rows), KV_HEADS, length, HEAD_DIM), leaf(len(rows), KV_HEADS, length, HEAD_DIM)

        def sdpa():
            with torch.no_grad():
                F.scaled_dot_product_attention(q2, k2, v2, is_causal=True, scale=SCALE, enable_gqa=True)

        def sdpa_backward():
            out = F.scaled_dot_product_attention(q2, k2, v2, is_causal=True, scale=SCALE, enable_gqa=True)
            out.sum().backward()

        result["ms_forward_sdpa"] = timed(sdpa)
        result["ms_forward_backward_sdpa"] = timed(sdpa_backward)
    return result


def profile(pairs: list[tuple[int, int, int]], out: Path | None) -> None:
    """Each packed kernel's forward, then forward + backward, under torch.profiler: the GPU kernels' times."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    tokens, layout = pack_rows(pair_rows(pairs), share_pair_prefix=True)
    layout = layout.to("cuda")
    leaf = lambda heads: torch.randn(1, heads, len(tokens), HEAD_DIM, device="cuda",  # noqa: E731
                                     dtype=torch.bfloat16, requires_grad=True)  # fmt: skip
    q, k, v = leaf(HEADS), leaf(KV_HEADS), leaf(KV_HEADS)
    for kernel in (packed_attention, packed_row_attention):
        for backward in (False, True):

            def run(kernel=kernel, backward=backward) -> None:
                with torch.set_grad_enabled(backward):
                    out = kernel(torch.nn.Module(), q, k, v, layout, scaling=SCALE)[0]
                    if backward:
                        out.sum().backward()

            run(), run()  # warm up
            torch.cuda.synchronize()
            with profiler(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    run()
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
            title = f"{kernel.__name__}, {'forward + backward' if backward else 'forward'}, 5 calls"
            print(f"== {title}\n{table}", flush=True)
            if out is not None:
                with out.open("a") as file:
                    file.write(f"== {title}\n{table}\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--shapes", default=",".join(shapes()))
    parser.add_argument("--profile", help="a shape whose kernels to profile instead of timing the shapes")
    parser.add_argument("--profile-out", type=Path, help="where to append the profile tables")
    args = parser.parse_args()
    if args.profile:
        profile(shapes()[args.profile], args.profile_out)
        return
    results: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                     "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    every = shapes()
    for name in args.shapes.split(","):
        results[name] = measure(every[name])
        figures = results[name]
        timings = "  ".join(f"{key.removeprefix('ms_')} {value:.2f}" for key, value in figures.items()
                            if key.startswith("ms_"))  # fmt: skip
        print(f"{name}: {timings}  rows max diff {figures['rows_forward_max_diff']:.4f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
