"""Time one decoder layer's frozen projections at the Qwen2.5-14B shapes, the way training runs them, to
predict what grouping siblings would buy before building it: q, k and v read one input, and so do gate and
up, so each group could be one GEMM in the forward and one in the input gradient (dy_q @ Wq + dy_k @ Wk +
dy_v @ Wv = [dy_q dy_k dy_v] @ [Wq; Wk; Wv]), with no sums of [tokens, 5120] gradients after it.

    PYTHONPATH=. python benchmarks/projection_bench.py [--tokens 4096]

Each figure: milliseconds (median of 20), for one layer; the last line scales them to the 48 layers of a
14B step. Input gradients are timed in bf16 and in e4m3 (ranker/fp8.py's `fp8_forward: false`: each dy
quantized per token, W per input channel, row-wise scales), and e4m3's GEMMs also with one scale per tensor.
"""

from __future__ import annotations

import argparse
import json

import torch
from attention_bench import timed  # benchmarks/, the script's own directory

from arena_assets.ranker.fp8 import quantize_rows, quantize_rows_torch, scaled_matmul

HIDDEN, KV, MLP, LAYERS = 5120, 1024, 13824, 48
GROUPS = {"qkv": (HIDDEN, [HIDDEN, KV, KV]), "gate_up": (HIDDEN, [MLP, MLP])}


def weights(width: int, outs: list[int]) -> list[torch.Tensor]:
    return [0.02 * torch.randn(out, width, device="cuda", dtype=torch.bfloat16) for out in outs]


def transposed_e4m3(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W [out, in] quantized per input channel, as Fp8Linear's backward copy: ([in, out], [1, in])."""
    values, scale = quantize_rows_torch(weight.t().contiguous())
    return values, scale.t().contiguous()


def one_group(tokens: int, width: int, outs: list[int]) -> dict[str, float]:
    x = torch.randn(tokens, width, device="cuda", dtype=torch.bfloat16)
    separate = weights(width, outs)
    joint = torch.cat(separate)
    grads = [torch.randn(tokens, out, device="cuda", dtype=torch.bfloat16) for out in outs]
    joint_grad = torch.cat(grads, dim=1)
    separate_t = [transposed_e4m3(w) for w in separate]
    joint_t = transposed_e4m3(joint)

    def fp8_input_gradient(dy: torch.Tensor, w_t: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        values, scale = quantize_rows(dy)
        return scaled_matmul(values, scale, w_t[0], w_t[1], torch.bfloat16)

    results = {
        "forward_separate": timed(lambda: [x @ w.t() for w in separate]),
        "forward_grouped": timed(lambda: (x @ joint.t()).split(outs, dim=1)),
        "grad_bf16_separate": timed(lambda: sum(g @ w for g, w in zip(grads, separate, strict=True))),
        "grad_bf16_grouped": timed(lambda: joint_grad @ joint),
        "grad_fp8_separate": timed(
            lambda: sum(fp8_input_gradient(g, w) for g, w in zip(grads, separate_t, strict=True))),
        "grad_fp8_grouped": timed(lambda: fp8_input_gradient(joint_grad, joint_t)),
        # The split's backward: the members' gradients joined into one [tokens, sum(outs)] tensor.
        "join_gradients": timed(lambda: torch.cat(grads, dim=1)),
    }
    values, scale = quantize_rows(joint_grad)
    results["quantize_grouped"] = timed(lambda: quantize_rows(joint_grad))
    results["grad_fp8_grouped_gemm_rowwise"] = timed(
        lambda: scaled_matmul(values, scale, joint_t[0], joint_t[1], torch.bfloat16))
    one = torch.ones((), device="cuda")
    results["grad_fp8_grouped_gemm_tensorwise"] = timed(
        lambda: torch._scaled_mm(values, joint_t[0].t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=4096)
    args = parser.parse_args()
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}))
    per_step: dict[str, float] = {}
    for name, (width, outs) in GROUPS.items():
        figures = one_group(args.tokens, width, outs)
        print(f"{name}: " + json.dumps({k: round(v, 3) for k, v in figures.items()}))
        for key, value in figures.items():
            per_step[key] = per_step.get(key, 0.0) + value * LAYERS
    print(f"per 14B step of {args.tokens} tokens, both groups (ms): "
          + json.dumps({k: round(v, 1) for k, v in per_step.items()}))


if __name__ == "__main__":
    main()
