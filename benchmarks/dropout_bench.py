"""Time lora_A with its dropout at the Qwen2.5-14B shapes (rank 64; the hidden size 5120 for q, k, v, o, gate
and up, the MLP's 13824 for down), each figure a CUDA graph's replay, so that the launches' CPU cost stays
out and the GPU's own time shows:

- one adapter's forward + backward with the mask drawn inside Triton's matmul kernels
  (ranker/fused_dropout.py); torch's dropout replayed in backward (ranker/lora_dropout.py) reads the RNG
  state, which a graph cannot capture, and is left out;
- each kernel (the forward; the backward, both gradients) as the trainer calls it (the autotuner's
  choice), beside cuBLAS's products without the mask and a copy: the share of the memory bound reached;
- with --sweep, every tile shape and split of a wider space, to choose the kernels' tiles from.

    PYTHONPATH=. python benchmarks/dropout_bench.py [--tokens 4096] [--p 0.01] [--sweep] [--out FILE]

Figures are milliseconds (the mean of a graph's replays); "per step" is the 14B's 48 layers x (6 hidden-size
+ 1 MLP-size adapters) at 2 x 2048 tokens. The code under test is whichever `arena_assets` comes first on
PYTHONPATH, so one call can time two trees that share the kernels' host functions (`_forward`, `_backward`:
from 241531d; before it, the grad-input and grad-weight kernels had functions of their own).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from triton.testing import do_bench_cudagraph

from arena_assets.ranker import fused_dropout

RANK, HIDDEN, MLP, LAYERS = 64, 5120, 13824, 48
DEVICE, DTYPE = "cuda", torch.bfloat16
WIDTHS = {HIDDEN: 6, MLP: 1}  # width -> adapters of that width in a layer
WARPS_STAGES = ((4, 3), (8, 3))
# kernel -> (BLOCK_M, BLOCK_K, the backward's rows per split).
SWEEP = {
    "forward": ((16, 32, 64), (64, 128, 256), (None,)),
    "backward": ((16, 32, 64, 128), (64, 128, 256), (256, 512, 1024)),
}
# A tile too large for an SM's shared memory or registers: the sweep lists it and goes on.
TILE_ERRORS = (triton.runtime.errors.OutOfResources, triton.compiler.errors.CompilationError)


def graphed_ms(fn: Callable[[], object], rep: int = 20) -> float:
    fn()  # the autotuner times its tiles here, outside the graph
    torch.cuda.synchronize()
    return do_bench_cudagraph(fn, rep=rep)


class Shapes:
    """One adapter's tensors at `width`: x, lora_A's weight, the gradient of its output, and the frozen
    layer's input gradient the backward kernel adds to."""

    def __init__(self, tokens: int, width: int, p: float) -> None:
        self.tokens, self.width, self.p = tokens, width, p
        self.x = torch.randn(tokens, width, device=DEVICE, dtype=DTYPE)
        self.w = 0.02 * torch.randn(RANK, width, device=DEVICE, dtype=DTYPE)
        self.grad = torch.randn(tokens, RANK, device=DEVICE, dtype=DTYPE)
        self.into = torch.randn(tokens, width, device=DEVICE, dtype=DTYPE)
        self.seed = torch.full((1,), 1234, dtype=torch.int32, device=DEVICE)
        self.scale = 1.0 / (1.0 - p)

    def bytes_moved(self) -> dict[str, int]:
        """What each kernel must read and write at least, in bytes."""
        x, w, g = (t.numel() * 2 for t in (self.x, self.w, self.grad))
        return {"forward": x + w + g, "backward": 3 * x + w + 2 * g}

    def adapter(self) -> dict[str, float]:
        x = self.x.clone().requires_grad_()
        w = self.w.clone().requires_grad_()

        def fused() -> None:
            fused_dropout.dropout_matmul(x, w, self.p).backward(self.grad)

        return {"adapter_fused": graphed_ms(fused)}

    def kernels(self) -> dict[str, float]:
        """The two kernels as the trainer calls them, cuBLAS's products without the mask, and a copy."""
        s, copy = self, torch.empty_like(self.x)

        def backward() -> object:
            return fused_dropout._backward(
                s.grad, s.x, s.w, s.p, s.seed, grad_input=True, grad_weight=True, into=s.into
            )

        return {
            "forward": graphed_ms(lambda: fused_dropout._forward(s.x, s.w, s.p, s.seed)),
            "backward": graphed_ms(backward),
            "cublas_forward": graphed_ms(lambda: s.x @ s.w.T),
            "cublas_backward": graphed_ms(lambda: (torch.addmm(s.into, s.grad, s.w), s.grad.T @ s.x)),
            "copy_x": graphed_ms(lambda: copy.copy_(s.x)),
        }

    # The sweep: each kernel's jitted function called with a tile of its own, past the autotuner.
    def forward_with(self, meta: dict, _: None) -> Callable[[], object]:
        out = torch.empty(self.tokens, RANK, device=DEVICE, dtype=DTYPE)
        grid = (triton.cdiv(self.tokens, meta["BLOCK_M"]), 1)
        kernel = fused_dropout._forward_kernel.fn[grid]
        args = (self.x, self.w, out, self.seed, self.tokens, RANK, self.width, self.p, self.scale)

        def run() -> object:
            kernel(*args, BLOCK_N=RANK, **meta)
            return out

        return run

    def backward_with(self, meta: dict, rows_per_split: int) -> Callable[[], object]:
        splits = triton.cdiv(self.tokens, rows_per_split)
        partial = torch.empty(splits, RANK, self.width, device=DEVICE, dtype=torch.float32)
        grid = (triton.cdiv(self.width, meta["BLOCK_K"]), splits)

        def run() -> object:
            fused_dropout._backward_kernel.fn[grid](
                self.grad,
                self.x,
                self.w,
                self.into,
                partial,
                self.seed,
                self.tokens,
                RANK,
                self.width,
                self.p,
                self.scale,
                rows_per_split,
                BLOCK_N=RANK,
                GRAD_INPUT=True,
                GRAD_WEIGHT=True,
                ACCUMULATE=True,
                **meta,
            )
            return partial.sum(0).to(DTYPE)

        return run

    def sweep(self) -> list[dict]:
        """Every tile (and split) of each kernel: ms, and the largest difference of its output from the
        autotuned path's (the forward's, and the backward's weight gradient: its input gradient adds in
        place), or why it did not run."""
        found = []
        _, weight_gradient = fused_dropout._backward(
            self.grad, self.x, self.w, self.p, self.seed, grad_input=False, grad_weight=True
        )
        want = {
            "forward": fused_dropout._forward(self.x, self.w, self.p, self.seed).float(),
            "backward": weight_gradient.float(),
        }
        for kernel, (rows, cols, splits) in SWEEP.items():
            for block_m, block_k, (warps, stages), split in itertools.product(
                rows, cols, WARPS_STAGES, splits
            ):
                meta = {"BLOCK_M": block_m, "BLOCK_K": block_k, "num_warps": warps, "num_stages": stages}
                fn = (
                    self.forward_with(meta, split) if kernel == "forward" else self.backward_with(meta, split)
                )
                row = {"kernel": kernel, "width": self.width, **meta, "split": split}
                try:
                    row["ms"] = graphed_ms(fn, rep=10)
                except TILE_ERRORS as error:
                    row["error"] = f"{type(error).__name__}: {str(error)[:200]}"  # listed, and printed
                    print(f"{kernel} {self.width} {meta} {split}: {row['error']}", flush=True)
                if kernel in want and "ms" in row:
                    row["max_diff"] = (fn().float() - want[kernel]).abs().max().item()
                found.append(row)
        return found


def per_step(figures: dict[int, dict[str, float]]) -> dict[str, float]:
    names = next(iter(figures.values())).keys()
    return {name: round(sum(figures[w][name] * n * LAYERS for w, n in WIDTHS.items()), 2) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--p", type=float, default=0.01)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    record: dict = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "code": fused_dropout.__file__,
        "tokens": args.tokens,
    }
    print(json.dumps(record), flush=True)
    shapes = {width: Shapes(args.tokens, width, args.p) for width in WIDTHS}
    figures = {}
    for width, shape in shapes.items():
        figures[width] = {**shape.kernels(), **shape.adapter()}
        moved = shape.bytes_moved()
        shares = {
            f"{k}_share_of_copy": round(
                figures[width]["copy_x"] * moved[k] / (4 * shape.x.numel()) / figures[width][k], 3
            )
            for k in moved
        }
        print(
            f"K={width} (ms): " + json.dumps({k: round(v, 4) for k, v in figures[width].items()}), flush=True
        )
        print(f"K={width} share of the copy's bandwidth: {json.dumps(shares)}", flush=True)
        figures[width].update(shares)
    record["per_adapter_ms"] = figures
    record["per_step_ms"] = per_step(
        {w: {k: v for k, v in f.items() if "share" not in k} for w, f in figures.items()}
    )
    record["tiles_chosen"] = {
        kernel.fn.__name__: {str(key): str(config) for key, config in kernel.cache.items()}
        for kernel in (fused_dropout._forward_kernel, fused_dropout._backward_kernel)
    }
    print("per 14B step of 2 x 2048 tokens (ms): " + json.dumps(record["per_step_ms"]), flush=True)
    print("tiles chosen: " + json.dumps(record["tiles_chosen"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))
    if args.sweep:
        record["sweep"] = [row for shape in shapes.values() for row in shape.sweep()]
        for kernel in SWEEP:
            for width in WIDTHS:
                rows = sorted(
                    (
                        r
                        for r in record["sweep"]
                        if r["kernel"] == kernel and r["width"] == width and "ms" in r
                    ),
                    key=lambda r: r["ms"],
                )
                print(f"{kernel} K={width} fastest: " + json.dumps(rows[:4]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
