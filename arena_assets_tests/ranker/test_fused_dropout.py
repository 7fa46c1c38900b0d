"""LoRA dropout in lora_A's Triton kernels: the products of a reference that applies the kernels' own mask.

Without a GPU the kernels run in Triton's interpreter (in a child process: the interpreter is chosen when the
kernels are defined), in float16, which numpy holds; on a GPU they also run in bf16, and in a model.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from arena_assets.ranker.config import TrainConfig
from arena_assets_tests.ranker.conftest import PairFiles

pytest.importorskip("triton")

KEEP_P = 0.3  # large, so that the mask shows in every product
# The reference runs in fp32 on the inputs' half-precision values; the kernels round their output once.
ATOL = {torch.float16: 2e-2, torch.bfloat16: 1.5e-1}


def check_kernels(device: str, dtype: torch.dtype) -> None:
    """Every tile shape of the three kernels against fp32 products with the mask `keep_mask` draws, on
    sizes that no tile divides; the mask's rate; the same seed gives the same mask, another seed another."""
    from arena_assets.ranker import fused_dropout

    kernels = (
        fused_dropout._forward_kernel, fused_dropout._grad_input_kernel, fused_dropout._grad_weight_kernel
    )
    tiles, split_rows = list(kernels[0].configs), fused_dropout.ROWS_PER_SPLIT
    generator = torch.Generator().manual_seed(0)
    rows, width, rank = 70, 200, 12
    seed = torch.tensor([1234], dtype=torch.int32, device=device)
    keep = fused_dropout.keep_mask(seed, rows, width, KEEP_P)
    assert abs(keep.float().mean().item() - (1 - KEEP_P)) < 0.02
    assert torch.equal(keep, fused_dropout.keep_mask(seed, rows, width, KEEP_P))
    assert not torch.equal(keep, fused_dropout.keep_mask(seed + 1, rows, width, KEEP_P))
    x0 = torch.randn(2, rows // 2, width, generator=generator).to(device, dtype)
    w0 = torch.randn(rank, width, generator=generator).to(device, dtype)
    grad = torch.randn(2, rows // 2, rank, generator=generator).to(device, dtype)
    xf, wf = x0.float().reshape(rows, width).requires_grad_(), w0.float().requires_grad_()
    reference = (xf * keep / (1 - KEEP_P)) @ wf.T
    reference.backward(grad.float().reshape(rows, rank))
    # Every tile, the weight gradient's rows in one program and split over several (14 rows each here).
    for tile, rows_per_split in [(tile, 512) for tile in tiles] + [(tiles[0], 16), (tiles[-1], 16)]:
        fused_dropout.ROWS_PER_SPLIT = rows_per_split
        for kernel in kernels:
            kernel.configs = [tile]  # one tile at a time (the interpreter cannot time them to choose)
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        out = fused_dropout.DropoutMatmul.apply(x, w, KEEP_P, seed, None)
        out.backward(grad)
        assert out.shape == (2, rows // 2, rank) and out.dtype == dtype
        pairs = (("out", out, reference), ("grad x", x.grad, xf.grad), ("grad w", w.grad, wf.grad))
        for name, got, want in pairs:
            torch.testing.assert_close(got.float().reshape(want.shape), want.detach(), rtol=1e-2,
                                       atol=ATOL[dtype], msg=f"{name} {tile} {rows_per_split}")  # fmt: skip
        assert (x.grad.reshape(rows, width)[~keep] == 0).all()  # a dropped input gets no gradient
    for kernel in kernels:
        kernel.configs = tiles
    fused_dropout.ROWS_PER_SPLIT = split_rows


@contextlib.contextmanager
def _first_tile_and_seeds_one_at_a_time() -> Iterator[None]:
    """The kernels on their first tile only (the same tiles for every call, and nothing to time in the
    interpreter), and a group's seeds drawn one at a time as separate calls draw them; restored after."""
    from arena_assets.ranker import fused_dropout

    kernels = (
        fused_dropout._forward_kernel, fused_dropout._grad_input_kernel, fused_dropout._grad_weight_kernel
    )
    tiles, seeds = [kernel.configs for kernel in kernels], fused_dropout._seeds

    def one_at_a_time(count: int, device: torch.device) -> torch.Tensor:
        return torch.cat([seeds(1, device) for _ in range(count)])

    for kernel in kernels:
        kernel.configs = kernel.configs[:1]
    fused_dropout._seeds = one_at_a_time
    try:
        yield
    finally:
        for kernel, configs in zip(kernels, tiles, strict=True):
            kernel.configs = configs
        fused_dropout._seeds = seeds


def check_grouped_kernels(device: str, dtype: torch.dtype) -> None:
    """Three lora_A matrices in one kernel call, each with its mask (`keep_mask` of its own seed), against
    fp32 products; the input gradient is the sum of the three masked ones."""
    from arena_assets.ranker import fused_dropout

    generator = torch.Generator().manual_seed(1)
    rows, width, rank, groups = 70, 200, 16, 3
    seeds = torch.tensor([11, 12, 13], dtype=torch.int32, device=device)
    keeps = [fused_dropout.keep_mask(seeds[g : g + 1], rows, width, KEEP_P) for g in range(groups)]
    x0 = torch.randn(2, rows // 2, width, generator=generator).to(device, dtype)
    w0 = [torch.randn(rank, width, generator=generator).to(device, dtype) for _ in range(groups)]
    grads = [torch.randn(2, rows // 2, rank, generator=generator).to(device, dtype) for _ in range(groups)]
    xf = x0.float().reshape(rows, width).requires_grad_()
    wf = [w.float().requires_grad_() for w in w0]
    references = [(xf * keep / (1 - KEEP_P)) @ w.T for keep, w in zip(keeps, wf, strict=True)]
    sum((r * g.float().reshape(rows, rank)).sum() for r, g in zip(references, grads, strict=True)).backward()
    x, w = x0.clone().requires_grad_(), [v.clone().requires_grad_() for v in w0]
    with _first_tile_and_seeds_one_at_a_time():
        out = fused_dropout.DropoutMatmul.apply(x, torch.cat(w), KEEP_P, seeds, None)
        assert out.shape == (groups, 2, rows // 2, rank)
        sum((o * g).sum() for o, g in zip(out.unbind(0), grads, strict=True)).backward()
    got = [*out.unbind(0), x.grad, *(v.grad for v in w)]
    want = [*references, xf.grad, *(v.grad for v in wf)]
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a.float().reshape(b.shape), b.detach(), rtol=1e-2, atol=ATOL[dtype],
                                   msg=f"tensor {index}")  # fmt: skip
    dropped_everywhere = ~keeps[0] & ~keeps[1] & ~keeps[2]
    assert dropped_everywhere.any() and (x.grad.reshape(rows, width)[dropped_everywhere] == 0).all()


def check_shared_inputs(device: str, dtype: torch.dtype) -> None:
    """The tiny backbone with LoRA on every projection: q/k/v and gate/up sharing their lora_A kernel give
    the loss and gradients of one kernel each, with the same masks (the seeds drawn one at a time, as the
    separate calls draw them), with and without rebuilt activations and recompute."""
    import copy

    import peft
    from transformers import AutoModelForCausalLM

    from arena_assets.ranker import fused_dropout
    from arena_assets.ranker.lora_dropout import DropoutLinear, recompute_lora_dropout, share_inputs
    from arena_assets.ranker.lora_output import add_lora_in_matmul
    from arena_assets.ranker.modeling import apply_gradient_checkpointing, decoder_layers
    from arena_assets.ranker.rebuilt_activations import rebuild_activations
    from arena_assets_tests.ranker.conftest import REPO_ROOT

    torch.manual_seed(0)
    backbone = AutoModelForCausalLM.from_pretrained(REPO_ROOT / "data/embedded/tiny-qwen2", dtype=dtype)
    lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=KEEP_P, task_type="CAUSAL_LM",
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"])  # fmt: skip
    base = peft.get_peft_model(backbone, lora, autocast_adapter_dtype=False).to(device)
    for name, param in base.named_parameters():  # lora_B starts at zero, which would hide lora_A's gradients
        if ".lora_B." in name:
            torch.nn.init.normal_(param, std=0.05)
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(2)).to(device)
    calls: list[int] = []
    forward = fused_dropout.DropoutMatmul.forward
    fused_dropout.DropoutMatmul.forward = staticmethod(lambda *args: calls.append(1) or forward(*args))

    def run(shared: bool, rebuilt: bool, recompute: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = copy.deepcopy(base).train()
        recompute_lora_dropout(model, fused=True)
        add_lora_in_matmul(model)
        groups = share_inputs(model) if shared else 0
        assert groups == (4 if shared else 0)  # two layers, q/k/v and gate/up
        apply_gradient_checkpointing(model, recompute)
        if rebuilt:
            rebuild_activations(decoder_layers(model), liger=False)
        torch.manual_seed(3)
        calls.clear()
        with _first_tile_and_seeds_one_at_a_time():
            loss = model(input_ids=ids).logits[:, -1, :8].float().square().mean()
            loss.backward()
        # One kernel call a projection, or one for q/k/v and one for gate/up; a recomputed layer twice.
        assert len(calls) == (4 if shared else 7) * round(2 * (1 + recompute))
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        assert all(m.fused for m in model.modules() if isinstance(m, DropoutLinear))
        return loss.detach().float(), grads

    try:
        for rebuilt, recompute in ((False, 0.0), (True, 0.0), (True, 0.5)):
            loss, grads = run(False, rebuilt, recompute)
            loss_shared, grads_shared = run(True, rebuilt, recompute)
            assert len(grads) == 28
            torch.testing.assert_close(loss_shared, loss, rtol=1e-3, atol=1e-4)
            for name, grad in grads.items():
                scale = grad.abs().max().item()
                torch.testing.assert_close(grads_shared[name], grad, rtol=0, atol=5e-3 * scale, msg=name)
    finally:
        fused_dropout.DropoutMatmul.forward = staticmethod(forward)


def _interpreter_breaks_on_numpy() -> bool:
    """Triton's interpreter before 3.7 turns one-element arrays into loop bounds with int(), which numpy 2.4
    and later refuse (a GPU machine's torch 2.11 pins Triton 3.6; there the GPU tests below cover the
    kernels)."""
    import numpy
    import triton

    def version(module: object) -> tuple[int, int]:
        return tuple(int(part) for part in module.__version__.split(".")[:2])  # type: ignore[return-value]

    return version(triton) < (3, 7) and version(numpy) >= (2, 4)


def _run_in_the_interpreter(*checks: str) -> None:
    """The named check functions of this module in a child process, on the CPU, in float16."""
    script = "import torch; from arena_assets_tests.ranker import test_fused_dropout as t; " + "; ".join(
        f"t.{check}('cpu', torch.float16)" for check in checks
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.skipif(_interpreter_breaks_on_numpy(), reason="this Triton's interpreter fails under this numpy")
def test_kernels_match_their_mask_in_the_interpreter() -> None:
    _run_in_the_interpreter("check_kernels")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton kernels on a GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernels_match_their_mask_on_the_gpu(dtype: torch.dtype) -> None:
    check_kernels("cuda", dtype)


@pytest.mark.skipif(_interpreter_breaks_on_numpy(), reason="this Triton's interpreter fails under this numpy")
def test_shared_input_kernels_match_in_the_interpreter() -> None:
    _run_in_the_interpreter("check_grouped_kernels", "check_shared_inputs")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton kernels on a GPU")
def test_shared_input_kernels_match_on_the_gpu() -> None:
    check_grouped_kernels("cuda", torch.bfloat16)
    check_shared_inputs("cuda", torch.bfloat16)


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


def test_the_kernels_are_chosen_for_half_precision_adapters_only(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on a GPU with Triton: bf16 adapters take the kernels and the log line says so; fp32 adapters, fp32
    compute, compiled layers and `fused_lora_dropout: false` keep torch's replayed dropout."""
    from arena_assets.ranker import modeling
    from arena_assets.ranker.lora_dropout import DropoutLinear

    monkeypatch.setattr(modeling, "fused_dropout_available", lambda device: True)

    def fused(**overrides: object) -> tuple[bool, str]:
        config = make_train_config(small_files, tmp_path / "unused", lora_dropout=0.1, **overrides)
        model, dtype = modeling.build_model(config, torch.device("cpu"))
        flags = {m.fused for m in model.modules() if isinstance(m, DropoutLinear)}
        assert len(flags) == 1
        return flags.pop(), modeling.fast_path_report(model, config, dtype)

    chosen, report = fused(precision="bf16")
    assert chosen and "LoRA dropout in lora_A's kernels (q/k/v and gate/up sharing theirs)" in report
    chosen, report = fused(precision="bf16", share_lora_inputs=False)
    assert chosen and "LoRA dropout in lora_A's kernels," in report
    for overrides in ({"precision": "bf16", "adapter_compute_dtype": False}, {"precision": "fp32"},
                      {"precision": "bf16", "compile_layers": True},
                      {"precision": "bf16", "fused_lora_dropout": False}):  # fmt: skip
        chosen, report = fused(**overrides)
        assert not chosen and "LoRA dropout recomputed" in report, overrides
