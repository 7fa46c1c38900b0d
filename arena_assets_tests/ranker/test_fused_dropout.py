"""LoRA dropout in lora_A's Triton kernels: the products of a reference that applies the kernels' own mask.

Without a GPU the kernels run in Triton's interpreter (in a child process: the interpreter is chosen when the
kernels are defined), in float16, which numpy holds; on a GPU they also run in bf16, and in a model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from arena_assets.ranker.config import TrainConfig
from arena_assets_tests.ranker.conftest import PairFiles

pytest.importorskip("triton")

KEEP_P = 0.3  # large, so that the mask shows in every product
# The reference runs in fp32 on the inputs' half-precision values; the kernels round their output once.
ATOL = {torch.float16: 2e-2, torch.bfloat16: 1.5e-1}


def reference_keep(seed: int, rows: int, width: int, p: float) -> torch.Tensor:
    """The mask as the kernels define it, in int64 arithmetic mod 2**32: the lowbias32 hash of row * half +
    column // 2 plus the seed (half: the width's pairs of columns, rounded up), its low 16 bits the even
    column's draw and its high 16 bits the odd one's, kept where the draw as a fraction is at least p (p in
    fp32, as a kernel argument). It pins the stream: a rewrite of the kernels' hash must draw the same
    masks."""
    low32, half = 2**32 - 1, (width + 1) // 2
    row, column = torch.arange(rows)[:, None], torch.arange(width)[None, :]
    h = ((row * half + column // 2) * 0x9E3779B9 + seed) & low32
    h = ((h ^ (h >> 16)) * 0x7FEB352D) & low32
    h = ((h ^ (h >> 15)) * 0x846CA68B) & low32
    h = h ^ (h >> 16)
    draw = torch.where(column % 2 == 0, h & 0xFFFF, h >> 16)
    return draw.float() / 2**16 >= torch.tensor(p, dtype=torch.float32)


def check_kernels(device: str, dtype: torch.dtype) -> None:
    """Every tile shape of the two kernels against fp32 products with the mask `keep_mask` draws, on
    sizes that no tile divides; the mask's rate; the same seed gives the same mask, another seed another."""
    from arena_assets.ranker import fused_dropout

    kernels = (fused_dropout._forward_kernel, fused_dropout._backward_kernel)
    tiles = [list(kernel.configs) for kernel in kernels]
    split_rows = fused_dropout.ROWS_PER_SPLIT
    generator = torch.Generator().manual_seed(0)
    rows, width, rank = 70, 200, 12
    seed = torch.tensor([1234], dtype=torch.int32, device=device)
    keep = fused_dropout.keep_mask(seed, rows, width, KEEP_P)
    assert torch.equal(keep.cpu(), reference_keep(1234, rows, width, KEEP_P))
    # An odd width: a row's last column has a pair of its own, its hash's high half unused.
    odd = fused_dropout.keep_mask(seed, 9, 37, KEEP_P)
    assert torch.equal(odd.cpu(), reference_keep(1234, 9, 37, KEEP_P))
    assert abs(keep.float().mean().item() - (1 - KEEP_P)) < 0.02
    assert torch.equal(keep, fused_dropout.keep_mask(seed, rows, width, KEEP_P))
    assert not torch.equal(keep, fused_dropout.keep_mask(seed + 1, rows, width, KEEP_P))
    x0 = torch.randn(2, rows // 2, width, generator=generator).to(device, dtype)
    w0 = torch.randn(rank, width, generator=generator).to(device, dtype)
    grad = torch.randn(2, rows // 2, rank, generator=generator).to(device, dtype)
    xf, wf = x0.float().reshape(rows, width).requires_grad_(), w0.float().requires_grad_()
    reference = (xf * keep / (1 - KEEP_P)) @ wf.T
    reference.backward(grad.float().reshape(rows, rank))
    frozen = torch.nn.Linear(width, 24, bias=False).to(device, dtype).requires_grad_(False)
    frozen.weight.mul_(10)  # its part of x's gradient well above the tolerance, so that a lost part shows
    frozen_weight = frozen.weight.float()
    frozen_reference = x0.float().reshape(rows, width) @ frozen_weight.T
    grad_result = torch.randn(2, rows // 2, 24, generator=generator).to(device, dtype)

    def close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:  # `label`: the loop's tiles below
        torch.testing.assert_close(got.float().reshape(want.shape), want.detach(), rtol=1e-2,
                                   atol=ATOL[dtype], msg=f"{name} {label}")  # fmt: skip

    # Every kernel's every tile; the backward's weight-gradient rows in one program and split over several
    # (14 each here).
    count = max(len(kernel_tiles) for kernel_tiles in tiles)
    for index, rows_per_split in [(index, 512) for index in range(count)] + [(0, 16), (-1, 16)]:
        fused_dropout.ROWS_PER_SPLIT = rows_per_split
        tile = [kernel_tiles[index % len(kernel_tiles)] for kernel_tiles in tiles]
        for kernel, kernel_tile in zip(kernels, tile, strict=True):
            kernel.configs = [kernel_tile]  # one tile at a time (the interpreter cannot time them to choose)
        label = f"{list(map(str, tile))} rows per split {rows_per_split}"
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        out = fused_dropout.DropoutMatmul.apply(x, w, KEEP_P, seed, None)
        out.backward(grad)
        assert out.shape == (2, rows // 2, rank) and out.dtype == dtype
        close("out", out, reference)
        close("grad x", x.grad, xf.grad)
        close("grad w", w.grad, wf.grad)
        assert (x.grad.reshape(rows, width)[~keep] == 0).all()  # a dropped input gets no gradient
        # One of the two gradients alone: the backward kernel leaves the other product out.
        for x_grad in (True, False):
            x, w = x0.clone().requires_grad_(x_grad), w0.clone().requires_grad_(not x_grad)
            fused_dropout.DropoutMatmul.apply(x, w, KEEP_P, seed, None).backward(grad)
            close(f"alone {x_grad}", *((x.grad, xf.grad) if x_grad else (w.grad, wf.grad)))
            assert (w.grad if x_grad else x.grad) is None
        # Beside a frozen layer in one node: lora_A's input gradient added to the frozen layer's in a kernel.
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        result, hidden = fused_dropout.FrozenAndDropoutMatmul.apply(x, w, KEEP_P, seed, None, frozen)
        assert not result._is_view()  # lora_B's GEMM adds to it in place (ranker/lora_output.py)
        torch.autograd.backward([result, hidden], [grad_result.reshape(result.shape), grad])
        pairs = (("frozen out", result, frozen_reference), ("lora_A out", hidden, reference),
                 ("joined grad x", x.grad, xf.grad + grad_result.float().reshape(rows, -1) @ frozen_weight),
                 ("joined grad w", w.grad, wf.grad))  # fmt: skip
        for name, got, want in pairs:
            close(name, got, want)
    for kernel, kernel_tiles in zip(kernels, tiles, strict=True):
        kernel.configs = kernel_tiles
    fused_dropout.ROWS_PER_SPLIT = split_rows


def _interpreter_breaks_on_numpy() -> bool:
    """Triton's interpreter before 3.7 turns one-element arrays into loop bounds with int(), which numpy 2.4
    and later refuse (a GPU machine's torch 2.11 pins Triton 3.6; there the GPU tests below cover the
    kernels)."""
    import numpy
    import triton

    def version(module: object) -> tuple[int, int]:
        return tuple(int(part) for part in module.__version__.split(".")[:2])  # type: ignore[return-value]

    return version(triton) < (3, 7) and version(numpy) >= (2, 4)


@pytest.mark.skipif(_interpreter_breaks_on_numpy(), reason="this Triton's interpreter fails under this numpy")
def test_kernels_match_their_mask_in_the_interpreter() -> None:
    script = "from arena_assets_tests.ranker.test_fused_dropout import check_kernels; import torch; " \
             "check_kernels('cpu', torch.float16)"  # fmt: skip
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton kernels on a GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernels_match_their_mask_on_the_gpu(dtype: torch.dtype) -> None:
    check_kernels("cuda", dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton kernels on a GPU")
def test_recomputed_layers_draw_the_same_masks(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bf16 on the tiny model: every layer recomputed gives the gradients of none recomputed, so the
    recompute drew the forward's masks (the seeds come from the GPU generator, which checkpointing
    restores)."""
    from transformers import AutoTokenizer

    from arena_assets.ranker import fused_dropout
    from arena_assets.ranker.data import read_pairs
    from arena_assets_tests.ranker.test_fast_paths import _batch, _loss_and_grads

    calls = []
    real = fused_dropout.dropout_matmul
    monkeypatch.setattr(fused_dropout, "dropout_matmul", lambda *a: calls.append(1) or real(*a))

    def config(gc: float) -> TrainConfig:
        return make_train_config(small_files, tmp_path / "unused", precision="bf16", lora_dropout=0.1,
                                 gradient_checkpointing=gc, use_liger="off")  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(config(0.0).backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True)
    loss, grads, _ = _loss_and_grads(config(0.0), batch)
    assert calls, "the fused kernels did not run"
    loss_gc, grads_gc, _ = _loss_and_grads(config(1.0), batch)
    torch.testing.assert_close(loss_gc, loss, rtol=0, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_gc[name], grad, rtol=0, atol=1e-6, msg=name)
    again, _, _ = _loss_and_grads(config(0.0), batch)
    assert torch.equal(again, loss)  # the same seed: the same masks, run after run


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton kernels on a GPU")
@pytest.mark.parametrize("fp8", [False, True])
def test_lora_a_and_its_frozen_layer_write_one_input_gradient(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, fp8: bool,
) -> None:
    """bf16 on the tiny model, the frozen layers in bf16 or with their input gradient in e4m3: lora_A and
    its frozen projection in one autograd node give the loss of the two apart exactly (the same masks) and
    their gradients within a sum's bf16 rounding (the kernel adds in fp32 and rounds once)."""
    from transformers import AutoTokenizer

    from arena_assets.ranker import fused_dropout
    from arena_assets.ranker.data import read_pairs
    from arena_assets_tests.ranker.test_fast_paths import _batch, _loss_and_grads

    if fp8 and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 matmuls need a GPU with fp8 tensor cores (L4, H100, H200)")
    calls = []
    real = fused_dropout.frozen_and_dropout_matmul
    monkeypatch.setattr(fused_dropout, "frozen_and_dropout_matmul", lambda *a: calls.append(1) or real(*a))
    fp8_settings = {"fp8_matmuls": True, "fp8_forward": False} if fp8 else {}
    config = make_train_config(small_files, tmp_path / "unused", precision="bf16", lora_dropout=0.1,
                               use_liger="off", **fp8_settings)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(config.backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True)
    loss, grads, _ = _loss_and_grads(config, batch)
    assert calls, "lora_A and the frozen layers did not run as one node"
    monkeypatch.setattr(fused_dropout, "joins", lambda *a: False)
    loss_apart, grads_apart, _ = _loss_and_grads(config, batch)
    assert torch.equal(loss, loss_apart)
    def relative(got: torch.Tensor, want: torch.Tensor) -> float:
        return ((got.float() - want.float()).norm() / want.float().norm()).item()

    errors = {name: relative(grads[name], grad) for name, grad in grads_apart.items()}
    overall = relative(*(torch.cat([g[n].flatten() for n in grads_apart]) for g in (grads, grads_apart)))
    worst = max(errors, key=errors.get)
    print(f"joined against apart: {overall:.2e} over all gradients, {errors[worst]:.2e} at most ({worst})")
    # One rounding fewer in x's gradient a layer, which the tiny random model's attention backward amplifies.
    # On an H200: bf16 6.7e-3 over all and 1.3e-2 at most (a CPU emulation gives the same, against bf16's own
    # 1.1e-2 from fp32); with the input gradient in e4m3, 2.7e-2 and 6.4e-2 (a small change upstream moves
    # some values to the next e4m3 step, 1/16 away). Without the frozen layer's part: 0.88 and 1.18.
    assert overall < 5e-2 and errors[worst] < 0.15, (overall, worst, errors[worst])


def test_the_kernels_are_chosen_for_half_precision_adapters_only(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on a GPU with Triton: bf16 adapters take the kernels and the log line says so; fp32 adapters, fp32
    compute, compiled layers and `fused_lora_dropout: false` keep torch's replayed dropout."""
    from arena_assets.ranker import modeling
    from arena_assets.ranker.lora_dropout import DropoutLinear

    monkeypatch.setattr(modeling, "fused_dropout_available", lambda device, rank: True)

    def fused(**overrides: object) -> tuple[bool, str]:
        config = make_train_config(small_files, tmp_path / "unused", lora_dropout=0.1, **overrides)
        model, dtype = modeling.build_model(config, torch.device("cpu"))
        flags = {m.fused for m in model.modules() if isinstance(m, DropoutLinear)}
        assert len(flags) == 1
        return flags.pop(), modeling.fast_path_report(model, config, dtype)

    chosen, report = fused(precision="bf16")
    assert chosen and "LoRA dropout in lora_A's kernels, one input gradient with the frozen" in report
    chosen, report = fused(precision="bf16", lora_update_in_matmul=False)  # peft's forward: two nodes
    assert chosen and "LoRA dropout in lora_A's kernels, LoRA update added" in report
    for overrides in ({"precision": "bf16", "adapter_compute_dtype": False}, {"precision": "fp32"},
                      {"precision": "bf16", "compile_layers": True},
                      {"precision": "bf16", "fused_lora_dropout": False}):  # fmt: skip
        chosen, report = fused(**overrides)
        assert not chosen and "LoRA dropout recomputed" in report, overrides


def test_ranks_above_what_the_backward_kernel_holds_take_torchs_dropout() -> None:
    """The backward kernel holds the whole rank in one tile: a larger rank is refused up front (and the log
    line names torch's dropout), on a CUDA device as on any other."""
    from arena_assets.ranker import fused_dropout, modeling

    cuda = torch.device("cuda")  # a device name only: nothing runs on it
    assert modeling.fused_dropout_available(cuda, fused_dropout.MAX_RANK)
    assert not modeling.fused_dropout_available(cuda, fused_dropout.MAX_RANK + 1)
    assert not modeling.fused_dropout_available(torch.device("cpu"), 16)
