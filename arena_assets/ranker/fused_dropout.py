"""LoRA dropout drawn inside lora_A's matmuls, on a GPU (Triton kernels).

`DropoutLinear` (ranker/lora_dropout.py) keeps only lora_A's input for backward, but each adapter still
writes a dropped copy of its input and a mask in forward, writes them again in backward to replay the draw,
and passes over the input gradient once more to apply the mask: at 14B and 2 x 2048 tokens about 40 ms of a
500 ms step, in some 1,000 small kernels, for a dropout of 1%.

Here the mask is never written. Each element's random number is a hash of its index and a seed (a
counter-based generator), so every kernel that needs the mask draws it again as it loads the input:

    forward      y  = scale * (x * keep) @ A.T           reads x and A, writes y
    grad input   gx = keep * scale * (gy @ A)            the mask applied before gx is stored
    grad weight  gA = scale * gy.T @ (x * keep)          the mask applied as x is loaded

with `keep = hash(seed, row * K + column) >= p` (the hash's top 24 bits as a fraction) and `scale =
1 / (1 - p)`. Each element is kept with probability 1 - p and scaled by 1 / (1 - p), as torch's dropout
does, from another random stream: the seed is drawn from the GPU's torch generator, so a recomputed layer
(whose RNG state torch's checkpointing restores) and a resumed run draw the same masks. The products
accumulate in fp32 and round once.

lora_A reads the input of a frozen projection. `FrozenAndDropoutMatmul` runs the two in one autograd node,
so the grad-input kernel adds lora_A's part of the input gradient to the frozen projection's as it stores
it, instead of autograd adding two gradient tensors in a kernel of its own.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from arena_assets.ranker.fp8 import Fp8Linear
from arena_assets.ranker.rebuilt_activations import Rebuild

# The mask's counter, row * K + column, is a 32-bit integer.
MAX_ELEMENTS = 2**31 - 1
DTYPES = (torch.bfloat16, torch.float16)
# Rows of the weight gradient's reduction per program: its partial sums add up in one torch.sum (fixed order:
# the same gradient run after run, where atomics would add in any order).
ROWS_PER_SPLIT = 512
MAX_SPLITS = 32

# The row count changes with every packed pass: left unspecialised, each kernel compiles once per width.
_TILES = [
    triton.Config({"BLOCK_M": m, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for m, k, w, s in ((16, 128, 4, 4), (16, 256, 4, 3), (32, 128, 4, 4), (32, 256, 8, 3), (64, 128, 4, 3))
]
# A 32-bit integer hash (Wellons' lowbias32) of the element's index and the seed: a handful of integer
# operations per element where Philox takes ten rounds of wide multiplies, which bound the kernels.
_GOLDEN = tl.constexpr(0x9E3779B9)
_MIX_A = tl.constexpr(0x7FEB352D)
_MIX_B = tl.constexpr(0x846CA68B)


@triton.jit
def _keep(seed, rows, cols, width, p):
    h = (rows[:, None] * width + cols[None, :]).to(tl.uint32) * _GOLDEN + seed
    h = h ^ (h >> 16)
    h = h * _MIX_A
    h = h ^ (h >> 15)
    h = h * _MIX_B
    h = h ^ (h >> 16)
    return (h >> 8).to(tl.float32) * (1.0 / 16777216.0) >= p


@triton.autotune(configs=_TILES, key=["N", "K"])
@triton.jit(do_not_specialize=["M"])
def _forward_kernel(x, w, y, seed_ptr, M, N, K, p, scale,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    seed = tl.load(seed_ptr).to(tl.uint32)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    outs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        tile = tl.load(x + rows[:, None] * K + cols[None, :],
                       mask=(rows[:, None] < M) & (cols[None, :] < K), other=0.0)  # fmt: skip
        tile = tl.where(_keep(seed, rows, cols, K, p), tile, tl.zeros_like(tile))
        weight = tl.load(w + outs[None, :] * K + cols[:, None],
                         mask=(outs[None, :] < N) & (cols[:, None] < K), other=0.0)  # fmt: skip
        acc = tl.dot(tile, weight, acc)
    tl.store(y + rows[:, None] * N + outs[None, :], (acc * scale).to(y.dtype.element_ty),
             mask=(rows[:, None] < M) & (outs[None, :] < N))  # fmt: skip


# With ACCUMULATE the kernel adds its product to what gx holds: the autotuner restores gx between its trials.
@triton.autotune(configs=_TILES, key=["N", "K"], restore_value=["gx"])
@triton.jit(do_not_specialize=["M"])
def _grad_input_kernel(g, w, gx, seed_ptr, M, N, K, p, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, ACCUMULATE: tl.constexpr):  # fmt: skip
    seed = tl.load(seed_ptr).to(tl.uint32)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        outs = start + tl.arange(0, BLOCK_N)
        grad = tl.load(g + rows[:, None] * N + outs[None, :],
                       mask=(rows[:, None] < M) & (outs[None, :] < N), other=0.0)  # fmt: skip
        weight = tl.load(w + outs[:, None] * K + cols[None, :],
                         mask=(outs[:, None] < N) & (cols[None, :] < K), other=0.0)  # fmt: skip
        acc = tl.dot(grad, weight, acc)
    acc = tl.where(_keep(seed, rows, cols, K, p), acc * scale, tl.zeros_like(acc))
    if ACCUMULATE:
        acc += tl.load(gx + rows[:, None] * K + cols[None, :],
                       mask=(rows[:, None] < M) & (cols[None, :] < K), other=0.0).to(tl.float32)  # fmt: skip
    tl.store(gx + rows[:, None] * K + cols[None, :], acc.to(gx.dtype.element_ty),
             mask=(rows[:, None] < M) & (cols[None, :] < K))  # fmt: skip


@triton.autotune(configs=_TILES, key=["N", "K"])
@triton.jit(do_not_specialize=["M", "rows_per_split"])
def _grad_weight_kernel(g, x, partial, seed_ptr, M, N, K, p, scale, rows_per_split,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """partial[split] = scale * g[rows].T @ (x[rows] * keep) over this split's rows, in fp32."""
    seed = tl.load(seed_ptr).to(tl.uint32)
    outs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(2)
    first = split * rows_per_split
    end = tl.minimum(first + rows_per_split, M)  # a tile may reach into the next split's rows
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for start in range(first, first + rows_per_split, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        grad = tl.load(g + rows[:, None] * N + outs[None, :],
                       mask=(rows[:, None] < end) & (outs[None, :] < N), other=0.0)  # fmt: skip
        tile = tl.load(x + rows[:, None] * K + cols[None, :],
                       mask=(rows[:, None] < end) & (cols[None, :] < K), other=0.0)  # fmt: skip
        tile = tl.where(_keep(seed, rows, cols, K, p), tile, tl.zeros_like(tile))
        acc = tl.dot(tl.trans(grad), tile, acc)
    tl.store(partial + split * N * K + outs[:, None] * K + cols[None, :], acc * scale,
             mask=(outs[:, None] < N) & (cols[None, :] < K))  # fmt: skip


@triton.jit
def _mask_kernel(out, seed_ptr, M, K, p, BLOCK: tl.constexpr):
    seed = tl.load(seed_ptr).to(tl.uint32)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + rows[:, None] * K + cols[None, :], _keep(seed, rows, cols, K, p).to(tl.int8),
             mask=(rows[:, None] < M) & (cols[None, :] < K))  # fmt: skip


def _block_n(rank: int) -> int:
    return min(max(16, triton.next_power_of_2(rank)), 128)


def keep_mask(seed: torch.Tensor, rows: int, width: int, p: float) -> torch.Tensor:
    """The [rows, width] mask the kernels draw from `seed` (True: kept), for checks against a reference."""
    out = torch.empty(rows, width, dtype=torch.int8, device=seed.device)
    _mask_kernel[(triton.cdiv(rows, 32), triton.cdiv(width, 32))](out, seed, rows, width, p, BLOCK=32)
    return out.bool()


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernels take these inputs: half precision on a GPU, the mask's counter in 32 bits."""
    return x.is_cuda and x.dtype in DTYPES and weight.dtype == x.dtype and x.numel() <= MAX_ELEMENTS


def _forward(flat: torch.Tensor, weight: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    """scale * (flat * keep) @ weight.T: [rows, width] -> [rows, rank]."""
    (rows, width), rank = flat.shape, weight.shape[0]
    out = torch.empty(rows, rank, dtype=flat.dtype, device=flat.device)
    block_n = _block_n(rank)

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(rank, block_n)

    _forward_kernel[grid](flat, weight, out, seed, rows, rank, width, p, 1.0 / (1.0 - p), BLOCK_N=block_n)
    return out


def _grad_input(
    grad: torch.Tensor, weight: torch.Tensor, p: float, seed: torch.Tensor, into: torch.Tensor | None = None
) -> torch.Tensor:
    """keep * scale * (grad @ weight): [rows, rank] -> [rows, width]; added to `into` (in place) if given."""
    (rows, rank), width = grad.shape, weight.shape[1]
    out = torch.empty(rows, width, dtype=grad.dtype, device=grad.device) if into is None else into

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(width, meta["BLOCK_K"])

    _grad_input_kernel[grid](grad, weight, out, seed, rows, rank, width, p, 1.0 / (1.0 - p),
                             BLOCK_N=_block_n(rank), ACCUMULATE=into is not None)  # fmt: skip
    return out


def _grad_weight(grad: torch.Tensor, flat: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    """scale * grad.T @ (flat * keep) in fp32, rounded once to the inputs' dtype: [rank, width]."""
    (rows, width), rank = flat.shape, grad.shape[1]
    splits = min(triton.cdiv(rows, ROWS_PER_SPLIT), MAX_SPLITS)
    rows_per_split = triton.cdiv(rows, splits)
    partial = torch.empty(splits, rank, width, dtype=torch.float32, device=flat.device)
    block_n = _block_n(rank)

    def grid(meta: dict) -> tuple[int, int, int]:
        return triton.cdiv(rank, block_n), triton.cdiv(width, meta["BLOCK_K"]), splits

    _grad_weight_kernel[grid](grad, flat, partial, seed, rows, rank, width, p, 1.0 / (1.0 - p),
                              rows_per_split, BLOCK_N=block_n)  # fmt: skip
    return partial.sum(0).to(flat.dtype)


def _keep_for_backward(ctx: Any, flat: torch.Tensor, weight: torch.Tensor, seed: torch.Tensor,
                       rebuild: Rebuild | None) -> None:  # fmt: skip
    # With a rebuild (ranker/rebuilt_activations.py), backward makes x again instead of keeping it.
    ctx.rebuild = rebuild.keep() if rebuild is not None else None
    ctx.save_for_backward(*(() if rebuild is not None else (flat,)), weight, seed)


def _kept(ctx: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x as [rows, width], weight, seed), as `_keep_for_backward` left them."""
    if ctx.rebuild is not None:
        weight, seed = ctx.saved_tensors
        return ctx.rebuild.get().reshape(-1, ctx.input_shape[-1]).contiguous(), weight, seed
    return ctx.saved_tensors


class DropoutMatmul(torch.autograd.Function):
    """y = dropout(x, p) @ weight.T with the mask drawn in the kernels (see module docstring)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float, seed: torch.Tensor, rebuild: Rebuild | None
    ) -> torch.Tensor:
        flat, weight = x.reshape(-1, x.shape[-1]).contiguous(), weight.contiguous()
        out = _forward(flat, weight, p, seed)
        _keep_for_backward(ctx, flat, weight, seed, rebuild)
        ctx.p, ctx.input_shape = p, x.shape
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        flat, weight, seed = _kept(ctx)
        grad = grad_out.reshape(-1, weight.shape[0]).contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _grad_input(grad, weight, ctx.p, seed).view(ctx.input_shape)
        if ctx.needs_input_grad[1]:
            grad_w = _grad_weight(grad, flat, ctx.p, seed)
        return grad_x, grad_w, None, None, None


class FrozenAndDropoutMatmul(torch.autograd.Function):
    """(frozen(x), dropout(x, p) @ weight.T): a LoRA projection's frozen layer and its lora_A, which read one
    x, in one autograd node, so that x's gradient is written once. Apart, autograd adds lora_A's input
    gradient to the frozen layer's in a kernel of its own: at 14B and 2 x 2048 tokens seven sums of [4096,
    5120 or 13824] tensors a layer, about 16 ms of a 430 ms step. Here the grad-input kernel adds its product
    to the frozen layer's input gradient as it stores it, in fp32, rounding once (benchmarks/RESULTS.md:
    1.7% and 2.7% faster steps)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        p: float,
        seed: torch.Tensor,
        rebuild: Rebuild | None,
        frozen: torch.nn.Module,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        result = frozen(x)  # autograd is off in here: an Fp8Linear projects, an nn.Linear multiplies
        flat, weight = x.reshape(-1, x.shape[-1]).contiguous(), weight.contiguous()
        hidden = _forward(flat, weight, p, seed)
        _keep_for_backward(ctx, flat, weight, seed, rebuild)
        ctx.p, ctx.input_shape, ctx.frozen = p, x.shape, frozen
        return result, hidden.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(
        ctx: Any, grad_result: torch.Tensor, grad_hidden: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None, None]:
        flat, weight, seed = _kept(ctx)
        grad = grad_hidden.reshape(-1, weight.shape[0]).contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            frozen_grad = _frozen_input_gradient(ctx.frozen, grad_result.reshape(-1, grad_result.shape[-1]))
            grad_x = _grad_input(grad, weight, ctx.p, seed, into=frozen_grad).view(ctx.input_shape)
        if ctx.needs_input_grad[1]:
            grad_w = _grad_weight(grad, flat, ctx.p, seed)
        return grad_x, grad_w, None, None, None, None


def _frozen_input_gradient(frozen: torch.nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """grad @ W for a frozen layer's weight W, as a new contiguous [rows, in_features] tensor."""
    if isinstance(frozen, Fp8Linear):
        return frozen.input_gradient(grad)
    return (grad @ frozen.weight).contiguous()


def frozen_and_dropout_matmul(
    frozen: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor, p: float, rebuild: Rebuild | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(frozen(x), dropout(x, p) @ weight.T) in one autograd node (FrozenAndDropoutMatmul); the seed as
    `dropout_matmul`'s. The caller checks `joins(frozen, x, weight)`."""
    seed = torch.randint(0, MAX_ELEMENTS, (1,), device=x.device, dtype=torch.int32)
    return FrozenAndDropoutMatmul.apply(x, weight, p, seed, rebuild, frozen)


def joins(frozen: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `frozen_and_dropout_matmul` takes this layer and these inputs: the kernels apply, x needs a
    gradient, and the layer is frozen, without a bias gradient, in x's dtype (an nn.Linear or a training
    Fp8Linear)."""
    if not (applies(x, weight) and x.requires_grad):
        return False
    if isinstance(frozen, Fp8Linear):
        return frozen.backward
    if type(frozen) is not torch.nn.Linear or frozen.weight.requires_grad or frozen.weight.dtype != x.dtype:
        return False
    return frozen.bias is None or not frozen.bias.requires_grad


def dropout_matmul(
    x: torch.Tensor, weight: torch.Tensor, p: float, rebuild: Rebuild | None = None
) -> torch.Tensor:
    """dropout(x, p) @ weight.T for training, the mask drawn in the kernels; the seed comes from the torch
    generator of x's device (no synchronisation: it stays on the device). `rebuild`: the call that makes x
    again in backward, kept instead of x."""
    seed = torch.randint(0, MAX_ELEMENTS, (1,), device=x.device, dtype=torch.int32)
    return DropoutMatmul.apply(x, weight, p, seed, rebuild)
