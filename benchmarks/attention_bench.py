"""Time one attention layer of the Qwen2.5-14B shape (40 query heads, 8 key/value heads, head dim 128),
forward and backward, for a swap pair of two rows: padded SDPA against the packed path's kernels.

    PYTHONPATH=. python benchmarks/attention_bench.py [--lengths 2048,4096] [--prefix 0.23]

Variants: `sdpa` (the two rows as a [2, L] batch, causal, grouped-query heads; what the padded path runs on
equal-length rows), `packed` (ranker/packing.py's `packed_attention` on the pair packed with its shared
prefix), and the packed path's parts: `varlen_repeat` (the varlen kernel on key heads spread to 40),
`varlen_gqa` (the kernel given the 8 key heads, where the release takes them) and `gather` (the key gather
alone). Prints milliseconds per forward + backward, median of 20, and the TFLOP/s of the two rows' causal
attention as computed unpacked.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from arena_assets.ranker.packing import pack_rows, packed_attention

HEADS, KV_HEADS, HEAD_DIM = 40, 8, 128


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


def variants(length: int, prefix_share: float) -> dict[str, float]:
    prefix = int(prefix_share * length)
    row = list(range(length))
    swap = row[:prefix] + [t + length for t in row[prefix:]]
    tokens, layout = pack_rows([row, swap], share_pair_prefix=True)
    layout = layout.to("cuda")
    total = len(tokens)

    def tensors(shape_q, shape_kv):
        q = torch.randn(*shape_q, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(*shape_kv, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "kv")
        return q, k, v

    q2, k2, v2 = tensors((2, HEADS, length, HEAD_DIM), (2, KV_HEADS, length, HEAD_DIM))
    qp, kp, vp = tensors((1, HEADS, total, HEAD_DIM), (1, KV_HEADS, total, HEAD_DIM))
    scale = HEAD_DIM**-0.5

    def sdpa():
        out = F.scaled_dot_product_attention(q2, k2, v2, is_causal=True, scale=scale, enable_gqa=True)
        out.sum().backward()

    def packed():
        out, _ = packed_attention(torch.nn.Module(), qp, kp, vp, layout, scaling=scale)
        out.sum().backward()

    from torch.nn.attention.varlen import varlen_attn

    qv = qp[0].transpose(0, 1).detach().contiguous().requires_grad_()
    kv_rows = [t[0].transpose(0, 1).index_select(0, layout.kv_index).detach() for t in (kp, vp)]
    k_rep, v_rep = (t.repeat_interleave(HEADS // KV_HEADS, dim=1).requires_grad_() for t in kv_rows)
    k_gqa, v_gqa = (t.clone().requires_grad_() for t in kv_rows)

    def varlen(k, v):
        def run():
            out = varlen_attn(qv, k, v, layout.cu_seq_q, layout.cu_seq_k, layout.max_q, layout.max_k,
                              scale=scale, window_size=(-1, 0))  # fmt: skip
            out.sum().backward()

        return run

    def gather():
        k = kp[0].transpose(0, 1).index_select(0, layout.kv_index)
        k.float().sum().backward()

    results = {"sdpa": timed(sdpa), "packed": timed(packed), "varlen_repeat": timed(varlen(k_rep, v_rep))}
    try:
        results["varlen_gqa"] = timed(varlen(k_gqa, v_gqa))
    except RuntimeError as error:  # a release that checks the head counts refuses fewer key heads
        print(f"varlen_gqa at {length}: {str(error)[:200]}")
    results["gather"] = timed(gather)
    # Causal attention FLOPs, forward (2 matmuls) and backward (5), over both rows as computed unpacked.
    flops = 7 * 2 * 2 * (length * length / 2) * HEADS * HEAD_DIM
    return {name: {"ms": ms, "tflops_unpacked_equivalent": flops / ms / 1e9} for name, ms in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default="2048,4096")
    parser.add_argument("--prefix", type=float, default=0.23, help="share of a row the swap shares")
    args = parser.parse_args()
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}))
    for length in (int(n) for n in args.lengths.split(",")):
        for name, figures in variants(length, args.prefix).items():
            rate = figures["tflops_unpacked_equivalent"]
            print(f"L={length} {name:<14} {figures['ms']:8.2f} ms  {rate:7.1f} TFLOP/s")


if __name__ == "__main__":
    main()
