"""Time one LoRA A matrix with its dropout, forward and backward, at the Qwen2.5-14B shapes (rank 64; the
hidden size 5120 for q, k, v, o, gate and up, the MLP's 13824 for down): torch's dropout replayed in backward
(ranker/lora_dropout.py) against the mask drawn inside Triton's matmul kernels (ranker/fused_dropout.py).

    PYTHONPATH=. python benchmarks/dropout_bench.py [--tokens 4096] [--p 0.01]

Prints milliseconds per forward + backward (median of 20), each kernel's share, and the tiles the autotuner
chose; the step's figure is the 14B's 48 layers x (6 hidden-size + 1 MLP-size adapters).
"""

from __future__ import annotations

import argparse
import json

import torch
from attention_bench import timed  # benchmarks/, the script's own directory

from arena_assets.ranker import fused_dropout
from arena_assets.ranker.lora_dropout import _DropoutThenLinear

RANK, HIDDEN, MLP, LAYERS = 64, 5120, 13824, 48


def one_width(tokens: int, width: int, p: float) -> dict[str, float]:
    x = torch.randn(tokens, width, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (0.02 * torch.randn(RANK, width, device="cuda", dtype=torch.bfloat16)).requires_grad_()
    grad = torch.randn(tokens, RANK, device="cuda", dtype=torch.bfloat16)

    def torch_replay():
        _DropoutThenLinear.apply(x, w, p, None).backward(grad)

    def fused():
        fused_dropout.dropout_matmul(x, w, p).backward(grad)

    def forward_only():
        with torch.no_grad():
            fused_dropout.DropoutMatmul.forward(_Ctx(), x, w, p, seed)

    seed = torch.zeros(1, dtype=torch.int32, device="cuda")
    results = {"torch_replay": timed(torch_replay), "fused": timed(fused)}
    results["fused_forward"] = timed(forward_only)
    results["bytes_of_x_gb"] = x.numel() * 2 / 1e9
    return results


class _Ctx:
    """Stands in for autograd's context to time the forward kernel alone."""

    def save_for_backward(self, *tensors: torch.Tensor) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--p", type=float, default=0.01)
    args = parser.parse_args()
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}))
    per_step = {"torch_replay": 0.0, "fused": 0.0}
    for width, count in ((HIDDEN, 6), (MLP, 1)):
        figures = one_width(args.tokens, width, args.p)
        for name in per_step:
            per_step[name] += figures[name] * count * LAYERS
        print(f"K={width}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()) + " (ms, GB)")
    for kernel in (fused_dropout._forward_kernel, fused_dropout._grad_input_kernel,
                   fused_dropout._grad_weight_kernel):  # fmt: skip
        chosen = {str(key): str(config) for key, config in kernel.cache.items()}
        print(f"{kernel.fn.__name__}: {chosen}")
    rounded = {k: round(v, 1) for k, v in per_step.items()}
    print(f"per 14B step of 2 x 2048 tokens (ms): {json.dumps(rounded)}")


if __name__ == "__main__":
    main()
