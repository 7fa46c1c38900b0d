"""LoRA dropout drawn inside lora_A's matmuls, on a GPU (Triton kernels).

`DropoutLinear` (ranker/lora_dropout.py) keeps only lora_A's input for backward, but each adapter still
writes a dropped copy of its input and a mask in forward, writes them again in backward to replay the draw,
and passes over the input gradient once more to apply the mask: at 14B and 2 x 2048 tokens about 40 ms of a
500 ms step, in some 1,000 small kernels, for a dropout of 1%.

Here the mask is never written. Each element's random number is a hash of its index and a seed (a
counter-based generator), so each kernel that needs the mask draws it again as it loads the input:

    forward      y  = scale * (x * keep) @ A.T           reads x and A, writes y
    backward     gx = keep * scale * (gy @ A)            the mask applied before gx is stored
                 gA = scale * gy.T @ (x * keep)          the same mask applied as x is loaded

with `keep = draw(row, column) >= p` and `scale = 1 / (1 - p)`. One hash of the seed and the index of a pair
of neighbouring columns, row * ceil(K / 2) + column // 2, gives both their draws: its low 16 bits the even
column's, its high 16 bits the odd one's, each as a fraction of 2**16: p is taken to the next multiple of
2**-16 (0.01 drops 0.0100098 of the elements). Each element is kept with probability 1 - p and scaled by
1 / (1 - p), as torch's dropout does, from another random stream: the seed is drawn from the GPU's torch
generator, so a recomputed layer (whose RNG state torch's checkpointing restores) and a resumed run draw the
same masks. The products accumulate in fp32 and round once.

The hash, a dozen integer operations, is what bounds these kernels, not their bytes
(benchmarks/dropout_bench.py): so one hash serves two elements (11% off the kernels' time against a hash an
element), and the backward draws the mask once for both of its products.

lora_A reads the input of a frozen projection. `FrozenAndDropoutMatmul` runs the two in one autograd node,
so the backward kernel adds lora_A's part of the input gradient to the frozen projection's as it stores
it, instead of autograd adding two gradient tensors in a kernel of its own.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from arena_assets.ranker.fp8 import Fp8Linear, frozen_input_gradient, frozen_rows
from arena_assets.ranker.rebuilt_activations import Rebuild

# The mask's counter, row * K + column, is a 32-bit integer.
MAX_ELEMENTS = 2**31 - 1
DTYPES = (torch.bfloat16, torch.float16)
# The backward kernel holds the whole rank in one tile: LoRA's ranks; a larger one takes torch's dropout.
MAX_RANK = 128
# Rows of the backward's weight-gradient reduction per program: its partial sums add up in one torch.sum.
ROWS_PER_SPLIT = 512
MAX_SPLITS = 32

# The row count changes with every packed pass: left unspecialised, each kernel compiles once per width.
# Tiles from benchmarks/dropout_bench.py's sweep on an H200 (benchmarks/RESULTS.md); small ones for few rows.
_FORWARD_TILES = [
    triton.Config({"BLOCK_M": m, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for m, k, w, s in ((16, 128, 4, 4), (16, 256, 4, 3), (32, 128, 4, 4), (32, 256, 8, 3), (64, 128, 4, 3))
]
_BACKWARD_TILES = [
    triton.Config({"BLOCK_M": m, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for m, k, w, s in ((16, 64, 4, 3), (32, 64, 4, 3), (64, 64, 4, 3), (64, 64, 8, 3), (16, 128, 4, 3))
]
# A 32-bit integer hash (Wellons' lowbias32) of the element's index and the seed: a handful of integer
# operations per element where Philox takes ten rounds of wide multiplies, which bound the kernels.
_GOLDEN = tl.constexpr(0x9E3779B9)
_MIX_A = tl.constexpr(0x7FEB352D)
_MIX_B = tl.constexpr(0x846CA68B)


@triton.jit
def _threshold(p):
    """A 16-bit draw below this drops the element: ceil(p * 2**16), so that `bits >= threshold` is
    `bits / 2**16 >= p` exactly, without a conversion to float per element."""
    return tl.math.ceil(p * 65536.0).to(tl.uint32)


@triton.jit
def _keep(seed, rows, first_col, BLOCK_K: tl.constexpr, width, threshold):
    """The mask of columns first_col .. first_col + BLOCK_K (first_col even) of `rows`: one hash draws two
    neighbouring columns, its low 16 bits the even one, its high 16 bits the odd one."""
    pairs = first_col // 2 + tl.arange(0, BLOCK_K // 2)
    # (row * half + pair) * GOLDEN + seed, mod 2**32, as a row part plus a pair part: one add a hash.
    row_part = (rows * ((width + 1) // 2)).to(tl.uint32) * _GOLDEN + seed
    h = row_part[:, None] + (pairs.to(tl.uint32) * _GOLDEN)[None, :]
    h = h ^ (h >> 16)
    h = h * _MIX_A
    h = h ^ (h >> 15)
    h = h * _MIX_B
    h = h ^ (h >> 16)
    return tl.interleave(h & 0xFFFF, h >> 16) >= threshold


@triton.autotune(configs=_FORWARD_TILES, key=["N", "K"])
@triton.jit(do_not_specialize=["M"])
def _forward_kernel(x, w, y, seed_ptr, M, N, K, p, scale,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    seed, threshold = tl.load(seed_ptr).to(tl.uint32), _threshold(p)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    outs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        tile = tl.load(x + rows[:, None] * K + cols[None, :],
                       mask=(rows[:, None] < M) & (cols[None, :] < K), other=0.0)  # fmt: skip
        tile = tl.where(_keep(seed, rows, start, BLOCK_K, K, threshold), tile, tl.zeros_like(tile))
        weight = tl.load(w + outs[None, :] * K + cols[:, None],
                         mask=(outs[None, :] < N) & (cols[:, None] < K), other=0.0)  # fmt: skip
        acc = tl.dot(tile, weight, acc)
    tl.store(y + rows[:, None] * N + outs[None, :], (acc * scale).to(y.dtype.element_ty),
             mask=(rows[:, None] < M) & (outs[None, :] < N))  # fmt: skip


# Over one column block and one split of the rows, the mask drawn once for both products. With ACCUMULATE the
# input gradient is added to what gx holds: the autotuner restores gx between its trials.
@triton.autotune(configs=_BACKWARD_TILES, key=["N", "K"], restore_value=["gx"])
@triton.jit(do_not_specialize=["M", "rows_per_split"])
def _backward_kernel(g, x, w, gx, partial, seed_ptr, M, N, K, p, scale, rows_per_split, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GRAD_INPUT: tl.constexpr,
                     GRAD_WEIGHT: tl.constexpr, ACCUMULATE: tl.constexpr):  # fmt: skip
    """gx[rows] (+)= keep * scale * (g[rows] @ w) and partial[split] = scale * g[rows].T @ (x[rows] * keep),
    in fp32, for this split's rows; BLOCK_N covers the rank."""
    seed, threshold = tl.load(seed_ptr).to(tl.uint32), _threshold(p)
    outs = tl.arange(0, BLOCK_N)
    cols = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(1)
    first = split * rows_per_split
    end = tl.minimum(first + rows_per_split, M)
    if GRAD_INPUT:
        weight = tl.load(w + outs[:, None] * K + cols[None, :],
                         mask=(outs[:, None] < N) & (cols[None, :] < K), other=0.0)  # fmt: skip
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for start in range(first, end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        inside = (rows[:, None] < end) & (cols[None, :] < K)
        grad = tl.load(g + rows[:, None] * N + outs[None, :],
                       mask=(rows[:, None] < end) & (outs[None, :] < N), other=0.0)  # fmt: skip
        keep = _keep(seed, rows, tl.program_id(0) * BLOCK_K, BLOCK_K, K, threshold)
        if GRAD_WEIGHT:
            tile = tl.load(x + rows[:, None] * K + cols[None, :], mask=inside, other=0.0)
            acc = tl.dot(tl.trans(grad), tl.where(keep, tile, tl.zeros_like(tile)), acc)
        if GRAD_INPUT:
            product = tl.dot(grad, weight)
            product = tl.where(keep, product * scale, tl.zeros_like(product))
            at = gx + rows[:, None] * K + cols[None, :]
            if ACCUMULATE:
                product += tl.load(at, mask=inside, other=0.0).to(tl.float32)
            tl.store(at, product.to(gx.dtype.element_ty), mask=inside)
    if GRAD_WEIGHT:
        tl.store(partial + split * N * K + outs[:, None] * K + cols[None, :], acc * scale,
                 mask=(outs[:, None] < N) & (cols[None, :] < K))  # fmt: skip


@triton.jit
def _mask_kernel(out, seed_ptr, M, K, p, BLOCK: tl.constexpr):
    seed, threshold = tl.load(seed_ptr).to(tl.uint32), _threshold(p)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    keep = _keep(seed, rows, tl.program_id(1) * BLOCK, BLOCK, K, threshold)
    tl.store(out + rows[:, None] * K + cols[None, :], keep.to(tl.int8),
             mask=(rows[:, None] < M) & (cols[None, :] < K))  # fmt: skip


def _block_n(rank: int) -> int:
    return min(max(16, triton.next_power_of_2(rank)), 128)


def keep_mask(seed: torch.Tensor, rows: int, width: int, p: float) -> torch.Tensor:
    """The [rows, width] mask the kernels draw from `seed` (True: kept), for checks against a reference."""
    out = torch.empty(rows, width, dtype=torch.int8, device=seed.device)
    _mask_kernel[(triton.cdiv(rows, 32), triton.cdiv(width, 32))](out, seed, rows, width, p, BLOCK=32)
    return out.bool()


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernels take these inputs: half precision on a GPU, the mask's counter in 32 bits, a rank
    of at most MAX_RANK."""
    return (
        x.is_cuda
        and x.dtype in DTYPES
        and weight.dtype == x.dtype
        and x.numel() <= MAX_ELEMENTS
        and weight.shape[0] <= MAX_RANK
    )


def _forward(flat: torch.Tensor, weight: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    """scale * (flat * keep) @ weight.T: [rows, width] -> [rows, rank]."""
    (rows, width), rank = flat.shape, weight.shape[0]
    out = torch.empty(rows, rank, dtype=flat.dtype, device=flat.device)
    block_n = _block_n(rank)

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(rank, block_n)

    _forward_kernel[grid](flat, weight, out, seed, rows, rank, width, p, 1.0 / (1.0 - p), BLOCK_N=block_n)
    return out


def _backward(
    grad: torch.Tensor,
    flat: torch.Tensor,
    weight: torch.Tensor,
    p: float,
    seed: torch.Tensor,
    *,
    grad_input: bool,
    grad_weight: bool,
    into: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(keep * scale * (grad @ weight), scale * grad.T @ (flat * keep)) for grad [rows, rank] and flat [rows,
    width], each only if asked: the input gradient [rows, width], added to `into` (in place) if given; the
    weight gradient [rank, width] summed over the splits' fp32 partials in one torch.sum (fixed order: the
    same gradient run after run, where atomics would add in any order), rounded once to the inputs' dtype."""
    if not (grad_input or grad_weight):
        return None, None
    (rows, width), rank = flat.shape, weight.shape[0]
    splits = min(triton.cdiv(rows, ROWS_PER_SPLIT), MAX_SPLITS)
    rows_per_split = triton.cdiv(rows, splits)
    gx = partial = None
    if grad_input:
        gx = torch.empty(rows, width, dtype=grad.dtype, device=grad.device) if into is None else into
    if grad_weight:
        partial = torch.empty(splits, rank, width, dtype=torch.float32, device=flat.device)

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(width, meta["BLOCK_K"]), splits

    # A product not asked for gets a stand-in pointer that the kernel never reads or writes.
    gx_out, partial_out = gx if grad_input else flat, partial if grad_weight else grad
    _backward_kernel[grid](grad, flat, weight, gx_out, partial_out, seed, rows, rank, width, p,
                           1.0 / (1.0 - p), rows_per_split, BLOCK_N=_block_n(rank), GRAD_INPUT=grad_input,
                           GRAD_WEIGHT=grad_weight, ACCUMULATE=into is not None)  # fmt: skip
    return gx, partial.sum(0).to(flat.dtype) if grad_weight else None


def _lora_a_forward(
    ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float, seed: torch.Tensor, rebuild: Rebuild | None
) -> torch.Tensor:
    """scale * (x * keep) @ weight.T, x's shape but the last dimension, keeping for `_lora_a_backward` x (or,
    with a rebuild, ranker/rebuilt_activations.py, the call that makes x again in backward), the weight and
    the seed."""
    flat, weight = x.reshape(-1, x.shape[-1]).contiguous(), weight.contiguous()
    out = _forward(flat, weight, p, seed)
    ctx.rebuild = rebuild.keep() if rebuild is not None else None
    ctx.save_for_backward(*(() if rebuild is not None else (flat,)), weight, seed)
    ctx.p, ctx.input_shape = p, x.shape
    return out.view(*x.shape[:-1], weight.shape[0])


def _lora_a_backward(
    ctx: Any, grad_out: torch.Tensor, into: torch.Tensor | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(x's gradient, the weight's gradient) of `_lora_a_forward`'s call, each where its input needs one;
    x's added to `into` (in place) if given."""
    if ctx.rebuild is not None:
        weight, seed = ctx.saved_tensors
        flat = ctx.rebuild.get().reshape(-1, ctx.input_shape[-1]).contiguous()
    else:
        flat, weight, seed = ctx.saved_tensors
    grad = grad_out.reshape(-1, weight.shape[0]).contiguous()
    grad_x, grad_w = _backward(grad, flat, weight, ctx.p, seed, grad_input=ctx.needs_input_grad[0],
                               grad_weight=ctx.needs_input_grad[1], into=into)  # fmt: skip
    return grad_x.view(ctx.input_shape) if grad_x is not None else None, grad_w


class DropoutMatmul(torch.autograd.Function):
    """y = dropout(x, p) @ weight.T with the mask drawn in the kernels (see module docstring)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float, seed: torch.Tensor, rebuild: Rebuild | None
    ) -> torch.Tensor:
        return _lora_a_forward(ctx, x, weight, p, seed, rebuild)

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        return *_lora_a_backward(ctx, grad_out), None, None, None


class FrozenAndDropoutMatmul(torch.autograd.Function):
    """(frozen(x) as [rows, out], dropout(x, p) @ weight.T): a LoRA projection's frozen layer and its
    lora_A, which read one x, in one autograd node, so that x's gradient is written once. Apart, autograd
    adds lora_A's input gradient to the frozen layer's in a kernel of its own: at 14B and 2 x 2048 tokens
    seven sums of [4096, 5120 or 13824] tensors a layer, about 16 ms of a 430 ms step. Here the backward
    kernel adds its product to the frozen layer's input gradient as it stores it, in fp32, rounding once
    (benchmarks/RESULTS.md: 1.7% and 2.7% faster steps)."""

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
        result = frozen_rows(frozen, x)  # [rows, out], not a view: lora_B's GEMM adds to it in place
        ctx.frozen = frozen
        return result, _lora_a_forward(ctx, x, weight, p, seed, rebuild)

    @staticmethod
    def backward(
        ctx: Any, grad_result: torch.Tensor, grad_hidden: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None, None]:
        frozen_grad = None
        if ctx.needs_input_grad[0]:
            frozen_grad = frozen_input_gradient(ctx.frozen, grad_result)
        return *_lora_a_backward(ctx, grad_hidden, into=frozen_grad), None, None, None, None


def frozen_and_dropout_matmul(
    frozen: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor, p: float, rebuild: Rebuild | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(frozen(x) as [rows, out], a tensor of its own, dropout(x, p) @ weight.T) in one autograd node
    (FrozenAndDropoutMatmul); the seed as `dropout_matmul`'s. The caller checks `joins(frozen, x, weight)`."""
    return FrozenAndDropoutMatmul.apply(x, weight, p, _seed(x.device), rebuild, frozen)


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
    """dropout(x, p) @ weight.T for training, the mask drawn in the kernels from a seed of x's device's torch
    generator (`_seed`). `rebuild`: the call that makes x again in backward, kept instead of x."""
    return DropoutMatmul.apply(x, weight, p, _seed(x.device), rebuild)


def _seed(device: torch.device) -> torch.Tensor:
    """A mask's seed from the torch generator of the device (no synchronisation: it stays there)."""
    return torch.randint(0, MAX_ELEMENTS, (1,), device=device, dtype=torch.int32)
