"""The residual added inside the output matmuls (ranker/residual_matmul.py): the same letter logits as the
plain layers, padded, unpadded and packed, with the adds gone; the plain layers wherever the rewrite could
change a meaning (gradients, hooks, fp8's projections), the caller's embeddings untouched, and no residual
left behind by a failed pass."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM, PreTrainedModel

from arena_assets.ranker.fp8 import Fp8Linear, quantize_linears
from arena_assets.ranker.head import LetterHead
from arena_assets.ranker.modeling import load_backbone
from arena_assets.ranker.residual_matmul import (
    ResidualAddLinear,
    add_residual_in_matmuls,
    adds_residual_in_matmuls,
)
from arena_assets_tests.ranker.test_head_rows import LETTERS, _inputs


class _OpCounts:
    """How many times each aten op was called inside the block (the CPU profiler's events)."""

    def __enter__(self) -> _OpCounts:
        self._profile = profile(activities=[ProfilerActivity.CPU])
        self._profile.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._profile.__exit__(*exc)
        events = self._profile.key_averages()
        self.counts = {e.key.removeprefix("aten::"): e.count for e in events if e.key.startswith("aten::")}


def _model(directory: Path, *, packed: bool = False, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    return load_backbone(str(directory), dtype=dtype, device=torch.device("cpu"), use_liger="off",
                         packed=packed).eval()  # fmt: skip


def _logits(head: LetterHead, inputs: tuple) -> tuple[torch.Tensor, dict[str, int]]:
    with torch.no_grad(), _OpCounts() as ops:
        logits = head(*inputs)
    return logits, ops.counts


@pytest.mark.parametrize("kind", ["right", "left", "one length", "packed"])
@pytest.mark.parametrize("head_rows_only", [False, True])
def test_the_same_letter_logits_with_the_adds_in_the_matmuls(
    tiny_backbone_dir: Path, kind: str, head_rows_only: bool
) -> None:
    inputs, packed = _inputs(kind), kind == "packed"
    plain_head = LetterHead(_model(tiny_backbone_dir, packed=packed), LETTERS, head_rows_only=head_rows_only)
    plain, plain_ops = _logits(plain_head, inputs)
    model = _model(tiny_backbone_dir, packed=packed)
    head = LetterHead(model, LETTERS, head_rows_only=head_rows_only, residual_in_matmul=True)
    fused, fused_ops = _logits(head, inputs)
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
    assert adds_residual_in_matmuls(model.model)
    # Two adds a layer become two in-place matmuls in each layer that fuses: every layer, or all but the
    # last one, whose projections head_rows_only hooks (it keeps the plain layer).
    fusing = len(model.model.layers) - head_rows_only
    assert fused_ops.get("addmm_", 0) == 2 * fusing and plain_ops.get("addmm_", 0) == 0
    assert plain_ops["add"] - fused_ops["add"] == 2 * fusing


def test_bf16_logits_within_rounding_of_the_plain_layers(tiny_backbone_dir: Path) -> None:
    inputs = _inputs("right")
    plain, _ = _logits(LetterHead(_model(tiny_backbone_dir, dtype=torch.bfloat16), LETTERS), inputs)
    model = _model(tiny_backbone_dir, dtype=torch.bfloat16)
    fused, ops = _logits(LetterHead(model, LETTERS, residual_in_matmul=True), inputs)
    assert ops.get("addmm_", 0) == 2 * len(model.model.layers)
    reference, _ = _logits(LetterHead(_model(tiny_backbone_dir), LETTERS), inputs)
    # One rounding of the sum instead of two: as close to fp32 as the plain bf16 layers are, within bf16.
    assert (fused - reference).abs().max() <= 2 * (plain - reference).abs().max() + 0.05


def test_the_plain_layers_with_gradients(tiny_backbone_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_backbone_dir, dtype=torch.float32).eval()
    inputs = _inputs("right")
    with torch.no_grad():
        expected = LetterHead(model, LETTERS)(*inputs)
    head = LetterHead(model, LETTERS, residual_in_matmul=True)
    with _OpCounts() as ops:
        logits = head(*inputs)
    logits.sum().backward()  # in place on a tensor autograd saved would fail here
    assert ops.counts.get("addmm_", 0) == 0
    torch.testing.assert_close(logits.detach(), expected, rtol=0, atol=1e-6)
    assert model.model.layers[0].mlp.down_proj.weight.grad is not None


def test_left_alone_where_it_cannot_apply(tiny_backbone_dir: Path) -> None:
    """A layer with a bias on its output projection, or an adapter's layer there, keeps its plain forward;
    so does a layer someone hooks (output recorders, head_rows), checked at every call."""
    model = _model(tiny_backbone_dir)
    first, second = model.model.layers
    first.self_attn.o_proj = torch.nn.Linear(128, 128, bias=True)
    assert add_residual_in_matmuls(model.model) == 1
    assert type(first.mlp.down_proj) is torch.nn.Linear and type(second.mlp.down_proj) is ResidualAddLinear
    assert adds_residual_in_matmuls(model.model)
    handle = second.register_forward_hook(lambda *_: None)
    assert not adds_residual_in_matmuls(model.model)
    _, ops = _logits(LetterHead(model, LETTERS), _inputs("right"))
    assert ops.get("addmm_", 0) == 0
    handle.remove()
    _, ops = _logits(LetterHead(model, LETTERS), _inputs("right"))
    assert ops["addmm_"] == 2
    assert add_residual_in_matmuls(model.model) == 1  # installing twice changes nothing
    # A projection whose forward is wrapped on the instance (accelerate's device hooks) would return its
    # product without the residual: the layer adds it itself.
    second.self_attn.o_proj.forward = functools.partial(torch.nn.Linear.forward, second.self_attn.o_proj)
    assert not adds_residual_in_matmuls(model.model)
    _, ops = _logits(LetterHead(model, LETTERS), _inputs("right"))
    assert ops.get("addmm_", 0) == 0


def test_fp8_replaces_the_projections_and_the_layers_add_after_them(tiny_backbone_dir: Path) -> None:
    inputs = _inputs("right")
    plain = _model(tiny_backbone_dir)
    count = quantize_linears(list(plain.model.layers))
    expected, _ = _logits(LetterHead(plain, LETTERS), inputs)
    model = _model(tiny_backbone_dir)
    head = LetterHead(model, LETTERS, residual_in_matmul=True)
    assert quantize_linears(list(model.model.layers)) == count  # ResidualAddLinear quantized as nn.Linear
    assert isinstance(model.model.layers[0].self_attn.o_proj, Fp8Linear)
    assert not adds_residual_in_matmuls(model.model)
    logits, ops = _logits(head, inputs)
    assert ops.get("addmm_", 0) == 0
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_the_callers_embeddings_are_not_written(tiny_backbone_dir: Path) -> None:
    model = _model(tiny_backbone_dir)
    add_residual_in_matmuls(model.model)
    embeds = model.get_input_embeddings()(_inputs("one length")[0])
    kept = embeds.clone()
    with torch.no_grad():
        model.model(inputs_embeds=embeds, use_cache=False)
    assert torch.equal(embeds, kept)


def test_a_failed_pass_leaves_no_residual_behind(tiny_backbone_dir: Path) -> None:
    model = _model(tiny_backbone_dir)
    add_residual_in_matmuls(model.model)
    layer = model.model.layers[1]

    def fail(*_args, **_kwargs):
        raise RuntimeError("the MLP failed")

    layer.mlp.forward = fail
    with torch.no_grad(), pytest.raises(RuntimeError, match="the MLP failed"):
        model.model(input_ids=_inputs("one length")[0], use_cache=False)
    assert layer.self_attn.o_proj.residual is None and layer.mlp.down_proj.residual is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuBLAS's epilogue and liger's kernels run on CUDA")
def test_bf16_on_the_gpu_as_close_to_fp32_as_the_plain_layers(tmp_path: Path) -> None:
    """A Qwen2 model of 8 layers at 1,024 wide, random weights, rows of 300 to 580 tokens, liger's kernels:
    the layers that add in their matmuls stay as close to the fp32 logits as the plain bf16 layers."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from arena_assets.ranker.collate import collate_rows

    config = Qwen2Config(
        vocab_size=512, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
        num_key_value_heads=4, max_position_embeddings=4096,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "model")
    rows = [[(7 * i + 3 * j) % 500 + 5 for j in range(300 + 40 * i)] for i in range(8)]
    batch = collate_rows([{"input_ids": ids} for ids in rows], pad_token_id=0)
    inputs = (batch["input_ids"].cuda(), batch["attention_mask"].cuda())

    def logits(dtype: torch.dtype, fused: bool) -> torch.Tensor:
        model = load_backbone(str(tmp_path / "model"), dtype=dtype, device=torch.device("cuda"))
        head = LetterHead(model.eval(), LETTERS, head_rows_only=True, residual_in_matmul=fused)
        with torch.no_grad():
            return head(*inputs).float()

    reference = logits(torch.float32, False)
    plain, fused = logits(torch.bfloat16, False), logits(torch.bfloat16, True)
    scale = reference.abs().max()
    assert (fused - reference).abs().max() <= 1.5 * (plain - reference).abs().max() + 0.01 * scale
    assert (fused - plain).abs().max() <= 0.05 * scale
