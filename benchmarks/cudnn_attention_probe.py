"""Could cuDNN's ragged attention replace the varlen flash kernel for packed rows? A probe on the GPU.

    PYTHONPATH=. python benchmarks/cudnn_attention_probe.py OUT.json

The packed path (ranker/packing.py) runs PyTorch's varlen flash kernel on keys gathered per attention
sequence: a swap's queries read its prefix's keys and its own, causal from the end of the keys. torch 2.11
reaches cuDNN's ragged attention through `aten._cudnn_attention_forward/_backward` with cumulative
offsets, grouped-query heads native, but with the causal diagonal aligned top-left only. So this splits each
layer's attention in two cuDNN calls, merged by their log-sum-exp: every packed segment causal on itself (no
gather), and each swap's queries against its prefix's keys, unmasked; backward runs both with the merged
output and log-sum-exp. It checks the output and the gradients against the varlen path and times one
attention layer of the 14B shape (40 query heads, 8 key heads, head dim 128), forward and forward+backward,
median of 20, on a scoring pass of 2048-token pairs, training passes at 2048 and 4096, and WSDM-like rows.

On torch 2.11 + cuDNN 9.19 (benchmarks/RESULTS.md, 2026-11-29, fourteenth session) the forward was right
but took 47-75 ms a call (a new cuDNN graph each time) and the backward's gradients were wrong: not used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from attention_bench import timed, wsdm_like_pairs
from torch.nn.attention.varlen import varlen_attn

HEADS, KV_HEADS, HEAD_DIM = 40, 8, 128
SCALE = HEAD_DIM**-0.5


def layout(pairs: list[tuple[int, int, int]]) -> dict:
    """Index tensors for swap pairs (prefix, first continuation, swap's continuation), packed as
    [prefix, first, swap] each: varlen's (queries in order, keys gathered), cuDNN's own segments, and the
    swap-against-prefix call's."""
    own, cu_q, cu_k, kv_index = [0], [0], [0], []
    swap, prefix, cross_q, cross_k = [], [], [0], [0]
    start = 0
    for p, first, second in pairs:
        own += [own[-1] + p + first, own[-1] + p + first + second]
        cu_q += [cu_q[-1] + p + first, cu_q[-1] + p + first + second]
        cu_k += [cu_k[-1] + p + first, cu_k[-1] + p + first + p + second]
        swap_start = start + p + first
        kv_index += [*range(start, swap_start), *range(start, start + p)]
        kv_index += range(swap_start, swap_start + second)
        swap += range(swap_start, swap_start + second)
        prefix += range(start, start + p)
        cross_q.append(cross_q[-1] + second)
        cross_k.append(cross_k[-1] + p)
        start += p + first + second

    def ints(values: list[int], dtype: torch.dtype = torch.int32) -> torch.Tensor:
        return torch.tensor(values, device="cuda", dtype=dtype)

    longest = max(max(p + first, second) for p, first, second in pairs)
    return {
        "total": start, "own": ints(own), "own_max": longest, "cu_q": ints(cu_q), "cu_k": ints(cu_k),
        "kv_index": ints(kv_index, torch.long), "max_q": longest,
        "max_k": max(p + max(first, second) for p, first, second in pairs),
        "swap": ints(swap, torch.long), "prefix": ints(prefix, torch.long), "cross_q": ints(cross_q),
        "cross_k": ints(cross_k), "cross_max_q": max(s for *_, s in pairs),
        "cross_max_k": max(p for p, *_ in pairs),
    }  # fmt: skip


def varlen_path(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, at: dict) -> torch.Tensor:
    """What ranker/packing.py runs on a GPU: keys gathered per sequence, causal from the end of the keys."""
    keys, values = k.index_select(0, at["kv_index"]), v.index_select(0, at["kv_index"])
    return varlen_attn(q, keys, values, at["cu_q"], at["cu_k"], at["max_q"], at["max_k"], scale=SCALE,
                       window_size=(-1, 0))  # fmt: skip


def cudnn_forward(q, k, v, cu_q, cu_k, max_q, max_k, causal: bool) -> tuple[torch.Tensor, ...]:
    """Output [T, H, D], log-sum-exp [T, H, 1] and the dropout seed and offset the backward takes."""
    result = torch.ops.aten._cudnn_attention_forward(
        q, k, v, None, cu_q, cu_k, max_q, max_k, True, 0.0, causal, False, scale=SCALE
    )
    return result[0], result[1], result[6], result[7]


def cudnn_backward(grad, q, k, v, out, lse, seed, offset, cu_q, cu_k, max_q, max_k, causal: bool):
    # None reaches the op as an undefined bias; an empty tensor is taken for a bias and refused.
    return torch.ops.aten._cudnn_attention_backward(
        grad, q, k, v, out, lse, seed, offset, None, cu_q, cu_k, max_q, max_k, 0.0, causal, scale=SCALE
    )


class SplitCudnnAttention(torch.autograd.Function):
    """Own segments causal plus swap queries against prefix keys, merged by log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, at):
        own_out, own_lse, seed, offset = cudnn_forward(
            q, k, v, at["own"], at["own"], at["own_max"], at["own_max"], True
        )
        swap, prefix = at["swap"], at["prefix"]
        cross_out, cross_lse, cross_seed, cross_offset = cudnn_forward(
            q.index_select(0, swap), k.index_select(0, prefix), v.index_select(0, prefix), at["cross_q"],
            at["cross_k"], at["cross_max_q"], at["cross_max_k"], False)  # fmt: skip
        own_lse_at_swap = own_lse.index_select(0, swap)
        lse_at_swap = torch.logaddexp(own_lse_at_swap, cross_lse)
        merged = own_out.index_select(0, swap).float() * torch.exp(own_lse_at_swap - lse_at_swap)
        merged = merged + cross_out.float() * torch.exp(cross_lse - lse_at_swap)
        out = own_out.index_copy(0, swap, merged.to(own_out.dtype))
        lse = own_lse.index_copy(0, swap, lse_at_swap)
        ctx.save_for_backward(q, k, v, out, lse, seed, offset, cross_seed, cross_offset)
        ctx.at = at
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse, seed, offset, cross_seed, cross_offset = ctx.saved_tensors
        at, grad = ctx.at, grad.contiguous()
        dq, dk, dv = cudnn_backward(
            grad, q, k, v, out, lse, seed, offset, at["own"], at["own"], at["own_max"], at["own_max"], True
        )
        swap, prefix = at["swap"], at["prefix"]
        cross = cudnn_backward(
            grad.index_select(0, swap), q.index_select(0, swap), k.index_select(0, prefix),
            v.index_select(0, prefix), out.index_select(0, swap), lse.index_select(0, swap), cross_seed,
            cross_offset, at["cross_q"], at["cross_k"], at["cross_max_q"], at["cross_max_k"], False,
        )  # fmt: skip
        dq = dq.index_add(0, swap, cross[0])
        dk, dv = dk.index_add(0, prefix, cross[1]), dv.index_add(0, prefix, cross[2])
        return dq, dk, dv, None


def split_path(q, k, v, at):
    return SplitCudnnAttention.apply(q, k, v, at)


def own_segments_only(q, k, v, at):
    """The cuDNN call without the cross part: its speed alone."""
    return cudnn_forward(q, k, v, at["own"], at["own"], at["own_max"], at["own_max"], True)[0]


def probe(pairs: list[tuple[int, int, int]]) -> dict:
    at = layout(pairs)
    q = torch.randn(at["total"], HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(at["total"], KV_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16,
                        requires_grad=True) for _ in "kv")  # fmt: skip
    result: dict = {"pairs": len(pairs), "packed_tokens": at["total"],
                    "row_tokens": sum(2 * p + first + second for p, first, second in pairs)}  # fmt: skip
    reference = varlen_path(q, k, v, at)
    grad = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, (q, k, v), grad)
    try:
        out = split_path(q, k, v, at)
        result["forward_max_diff"] = (out.float() - reference.float()).abs().max().item()
        result["reference_max"] = reference.float().abs().max().item()
        got = torch.autograd.grad(out, (q, k, v), grad)
        for name, a, b in zip(("dq", "dk", "dv"), got, expected, strict=True):
            result[f"{name}_relative_error"] = ((a.float() - b.float()).norm() / b.float().norm()).item()
    except RuntimeError as error:  # what the release refuses is the finding
        result["split_error"] = str(error)[:600]
        return result

    def forward(path):
        def run():
            with torch.no_grad():
                path(q, k, v, at)

        return run

    def forward_backward(path):
        return lambda: path(q, k, v, at).backward(grad)

    result["ms_forward_varlen"] = timed(forward(varlen_path))
    result["ms_forward_cudnn_split"] = timed(forward(split_path))
    result["ms_forward_cudnn_own_segments"] = timed(forward(own_segments_only))
    result["ms_forward_backward_varlen"] = timed(forward_backward(varlen_path))
    result["ms_forward_backward_cudnn_split"] = timed(forward_backward(split_path))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    results: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                     "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    real = wsdm_like_pairs(16384)
    shapes = {
        "score_2048": [(480, 2048 - 480, 2048 - 480)] * 4,  # a scoring pass: 16,384 row tokens
        "train_2048": [(480, 2048 - 480, 2048 - 480)],
        "train_4096": [(960, 4096 - 960, 4096 - 960)],
        "score_real": real,
        "train_real": real[: max(1, len(real) // 2)],
    }
    for name, pairs in shapes.items():
        results[name] = probe(pairs)
        print(name, json.dumps(results[name]), flush=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
