"""fp8 matmuls: e4m3 quantization within its rounding, the fp8 matmul's arithmetic, letter logits close to
full precision on the demo's trained stage-1 model, and training LoRA around e4m3 frozen layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from arena_assets.ranker import fp8, scorer
from arena_assets.ranker.config import ScoreConfig
from arena_assets.ranker.data import encode_frame
from arena_assets.ranker.head import score_sequences
from arena_assets.ranker.prompt import PromptTemplate
from arena_assets.ranker.scorer import fingerprint, load_scoring_head, score
from arena_assets_tests.ranker.conftest import PairFiles

# e4m3 keeps 3 mantissa bits: a normal value rounds within 2**-4 of itself; the smallest subnormal step is
# 2**-9 of the scale, so a value near zero rounds within half of it.
RELATIVE_ROUNDING = 2**-4
SUBNORMAL_HALF_STEP = 2**-10


def _rows(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 200, generator=generator) * torch.tensor([1e-3, 1.0, 30.0, 1e4, 1.0, 0.0])[:, None]
    x[4, 7] = 500.0  # one outlier sets its row's scale
    return x


def test_rows_quantize_within_e4m3_rounding() -> None:
    x = _rows()
    q, scale = fp8.quantize_rows(x)
    assert q.dtype == fp8.E4M3 and scale.shape == (6, 1) and torch.isfinite(scale).all()
    back = q.float() * scale
    bound = RELATIVE_ROUNDING * x.abs() + SUBNORMAL_HALF_STEP * scale + 1e-12
    assert ((back - x).abs() <= bound).all()
    assert (q.float().abs().amax(dim=1)[:5] == fp8.E4M3_MAX).all()  # each row's largest maps to 448
    assert (back[5] == 0).all()  # a row of zeros stays zero, with a finite scale


def test_fp8_linear_is_the_matmul_of_the_quantized_operands() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 5, 64)
    layer = fp8.Fp8Linear(linear)
    with torch.no_grad():
        got, want = layer(x), linear(x)
    q_x, s_x = fp8.quantize_rows(x.reshape(-1, 64))
    exact = (q_x.float() * s_x) @ (layer.weight_fp8.float() * layer.weight_scale.T).T + linear.bias
    torch.testing.assert_close(got.reshape(-1, 48), exact.detach(), rtol=1e-5, atol=1e-5)
    relative = ((got - want).norm() / want.norm()).item()
    assert 0 < relative < 0.05, relative
    with pytest.raises(RuntimeError, match="for scoring"):
        layer(x.requires_grad_())


def test_q_k_and_v_share_their_input_quantization(
    demo_backbone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo_backbone, dtype=torch.float32).eval()
    layers = list(model.model.layers)
    assert fp8.quantize_linears(layers) == 7 * len(layers)
    assert not any(type(m) is torch.nn.Linear for layer in layers for m in layer.modules())
    calls = []
    real = fp8.quantize_rows
    monkeypatch.setattr(fp8, "quantize_rows", lambda x: calls.append(x.shape) or real(x))
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))
    # A layer's inputs: the attention's (q, k, v), o's, the MLP's (gate, up) and down's.
    assert len(calls) == 4 * len(layers)


def test_fp8_letter_logits_stay_close_on_the_trained_demo_model(
    merged_stage1: Path, hard_label_files: PairFiles
) -> None:
    """The demo's stage-1 model scores 200 validation rows in fp32 and with fp8 matmuls: the same winner for
    nearly every row, the A-B margins almost perfectly correlated, the accuracy kept."""
    frame = pd.read_parquet(hard_label_files.validation).head(200)
    margins = {}
    for fp8_matmuls in (False, True):
        config = ScoreConfig(model=str(merged_stage1), max_length=512, fp8_matmuls=fp8_matmuls)
        head, tokenizer, device = load_scoring_head(config, torch.device("cpu"))
        template = PromptTemplate.from_tokenizer(tokenizer)
        encoded = encode_frame(template, frame, max_length=512, rebalance=True)
        logits = score_sequences(head, encoded.input_ids, pad_token_id=tokenizer.pad_token_id,
                                 token_budget=8192, max_batch_rows=32, device=device)  # fmt: skip
        margins[fp8_matmuls] = logits[:, 0] - logits[:, 1]
    full, quantized = margins[False], margins[True]
    assert np.isfinite(quantized).all() and not np.array_equal(full, quantized)
    agreement = float(np.mean(np.sign(full) == np.sign(quantized)))
    correlation = float(np.corrcoef(full, quantized)[0, 1])
    assert agreement >= 0.97 and correlation >= 0.995, (agreement, correlation)  # measured: 1.0, 0.99989
    truth = frame["winner"].map({"model_a": 1.0, "model_b": -1.0}).to_numpy()
    accuracy = {k: float(np.mean(np.sign(v) == truth)) for k, v in margins.items()}
    assert accuracy[True] >= accuracy[False] - 0.02, accuracy  # measured: 0.96 both
    assert fingerprint(config) != fingerprint(ScoreConfig(model=str(merged_stage1), max_length=512))


def test_the_scorer_checks_fp8_against_full_precision_first(
    merged_stage1: Path, hard_label_files: PairFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trained demo model keeps its winners under fp8 and says so in its metrics; a model whose fp8
    scores disagree (here: its last layer's output negated once quantized, which negates the final hidden
    state and so flips every winner) is refused before any row is scored."""
    pairs = tmp_path / "pairs.parquet"
    pd.read_parquet(hard_label_files.open_pairs).head(24).to_parquet(pairs, index=False)

    def config(name: str) -> ScoreConfig:
        return ScoreConfig(model=str(merged_stage1), input_path=str(pairs), output_dir=str(tmp_path / name),
                           max_length=384, fp8_matmuls=True, fp8_check_rows=16)  # fmt: skip

    metrics = score(config("kept"))
    assert metrics["fp8_check_rows"] == 16 and metrics["fp8_same_winner"] >= 0.95, metrics
    assert metrics["fp8_margin_correlation"] > 0.99 and metrics["rows"] == 24

    real = scorer.quantize_linears

    def disagreeing(layers: list[torch.nn.Module]) -> int:
        layers[-1].register_forward_hook(lambda module, args, output: -output)
        return real(layers)

    monkeypatch.setattr(scorer, "quantize_linears", disagreeing)
    with pytest.raises(ValueError, match="fp8_matmuls: on the first 16 rows"):
        score(config("refused"))
    assert not (tmp_path / "refused").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fp8 kernel and matmul on a GPU")
def test_the_kernel_quantizes_as_torch_does_and_the_gpu_matmul_agrees() -> None:
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no fp8 tensor cores")
    x = _rows().cuda().to(torch.bfloat16)
    q, scale = fp8.quantize_rows(x)
    q_ref, scale_ref = fp8.quantize_rows_torch(x)
    assert torch.equal(scale, scale_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 128).cuda().to(torch.bfloat16)
    x = torch.randn(3, 50, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        got, want = fp8.Fp8Linear(linear)(x), linear(x)
    assert got.dtype == torch.bfloat16
    assert ((got.float() - want.float()).norm() / want.float().norm()).item() < 0.05
    # Training: the input gradient through the fp8 matmul, against bf16's.
    linear.requires_grad_(False)
    x_fp8, x_bf16 = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad_out = torch.randn(3, 50, 128, device="cuda", dtype=torch.bfloat16)
    fp8.Fp8Linear(linear, backward=True)(x_fp8).backward(grad_out)
    linear(x_bf16).backward(grad_out)
    off = (x_fp8.grad.float() - x_bf16.grad.float()).norm() / x_bf16.grad.float().norm()
    assert x_fp8.grad.dtype == torch.bfloat16 and off.item() < 0.05


def test_a_trainable_fp8_linear_passes_its_input_the_gradient_of_the_quantized_operands() -> None:
    """Training: dx = dy @ W with dy quantized per row and W per input channel; W itself gets no gradient."""
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(32, 64, generator=generator))
        linear.bias.copy_(torch.randn(32, generator=generator))
    linear.requires_grad_(False)
    layer = fp8.Fp8Linear(linear, backward=True)
    x = torch.randn(2, 5, 64, generator=generator, requires_grad=True)
    grad_out = torch.randn(2, 5, 32, generator=generator)
    layer(x).backward(grad_out)
    # The same arithmetic written out: both operands quantized, products in fp32.
    g, g_scale = fp8.quantize_rows_torch(grad_out.reshape(10, 32))
    w, w_scale = fp8.quantize_rows_torch(linear.weight.t().contiguous())  # [in, out]: per input channel
    expected = ((g.float() * g_scale) @ (w.float() * w_scale).t()).view(2, 5, 64)
    torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=1e-6)
    exact = grad_out @ linear.weight
    assert not torch.equal(x.grad, exact)
    assert (x.grad - exact).norm() / exact.norm() < 0.05  # within e4m3's rounding of fp32's
    assert not any(b.requires_grad for b in layer.buffers())
    scoring = fp8.Fp8Linear(linear)  # built without backward: refuses gradients rather than dropping them
    with pytest.raises(RuntimeError, match="backward=True"):
        scoring(torch.randn(3, 64, requires_grad=True))


def test_an_fp8_linear_without_fp8_forward_quantizes_only_the_input_gradient() -> None:
    """fp8_forward false: the forward is the layer's own, bit for bit; dx = dy @ W as with fp8 throughout."""
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=True).requires_grad_(False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(32, 64, generator=generator))
    both, backward_only = (fp8.Fp8Linear(linear, backward=True, forward=f) for f in (True, False))
    x = torch.randn(2, 5, 64, generator=generator, requires_grad=True)
    grad_out = torch.randn(2, 5, 32, generator=generator)
    y = backward_only(x)
    assert torch.equal(y, linear(x)) and not torch.equal(both(x), linear(x))
    y.backward(grad_out)
    grad_backward_only = x.grad.clone()
    x.grad = None
    both(x).backward(grad_out)
    assert torch.equal(grad_backward_only, x.grad) and not torch.equal(x.grad, grad_out @ linear.weight)
    assert backward_only.weight.data_ptr() == linear.weight.data_ptr()  # kept, not copied
    assert not hasattr(backward_only, "weight_fp8")  # nor quantized for a forward it does not run
    with pytest.raises(ValueError, match="set backward"):
        fp8.Fp8Linear(linear, forward=False)


@pytest.mark.parametrize("fp8_forward", [True, False], ids=["fp8_forward", "fp8_input_gradient_only"])
def test_training_with_fp8_matmuls_quantizes_the_frozen_layers_and_keeps_lora_gradients(
    small_files: PairFiles, make_train_config, tmp_path: Path, fp8_forward: bool
) -> None:
    from transformers import AutoTokenizer

    from arena_assets.ranker.data import read_pairs
    from arena_assets_tests.ranker.test_fast_paths import LORA_PARAMS, _batch, _loss_and_grads

    def config(fp8_matmuls: bool):
        return make_train_config(small_files, tmp_path, lora_dropout=0.0, gradient_checkpointing=0.0,
                                 fp8_matmuls=fp8_matmuls,
                                 fp8_forward=fp8_forward or not fp8_matmuls)  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(config(False).backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(4), labels=True)
    loss, grads, _ = _loss_and_grads(config(False), batch)
    loss_fp8, grads_fp8, _ = _loss_and_grads(config(True), batch)
    if fp8_forward:
        assert abs(float(loss_fp8) - float(loss)) < 0.05 * abs(float(loss)) and float(loss_fp8) != float(loss)
    else:  # the forward untouched: the loss of full precision, digit for digit
        assert float(loss_fp8) == float(loss)
        assert any(not torch.equal(grads_fp8[name], grad) for name, grad in grads.items())
    assert grads_fp8.keys() == grads.keys() and len(grads) == LORA_PARAMS
    for name, grad in grads.items():
        cosine = torch.nn.functional.cosine_similarity(grads_fp8[name].flatten(), grad.flatten(), dim=0)
        assert cosine > 0.98, f"{name}: fp8 moved the gradient too far (cosine {cosine:.4f})"


def test_the_trainer_trains_and_saves_with_fp8_matmuls(
    small_files: PairFiles, make_train_config, tmp_path: Path
) -> None:
    from arena_assets.ranker import trainer

    config = make_train_config(small_files, tmp_path / "adapter", fp8_matmuls=True, max_steps=2,
                               max_validation_rows=8)  # fmt: skip
    metrics = trainer.train(config)
    assert metrics["steps"] == 2 and np.isfinite(metrics["train_loss_final"])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # The check before training: LoRA's gradient close to full precision's, but not the same numbers.
    assert metrics["fp8_check_passes"] == config.fp8_check_passes == 2
    assert 0.98 < metrics["fp8_grad_cosine"] < 1.0 and 0.0 < metrics["fp8_grad_relative_error"] < 0.2
    assert abs(metrics["fp8_loss"] - metrics["fp8_loss_full"]) < 0.05 * metrics["fp8_loss_full"]


def test_the_fp8_check_leaves_training_as_it_was(
    small_files: PairFiles, make_train_config, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from arena_assets.ranker import trainer

    def trained(name: str, check_passes: int) -> dict[str, torch.Tensor]:
        config = make_train_config(small_files, tmp_path / name, fp8_matmuls=True, max_steps=2,
                                   max_validation_rows=8, fp8_check_passes=check_passes,
                                   lora_dropout=0.1)  # fmt: skip
        metrics = trainer.train(config)
        assert ("fp8_grad_cosine" in metrics) == (check_passes > 0)
        return load_file(tmp_path / name / "adapter_model.safetensors")

    checked, unchecked = trained("checked", 2), trained("unchecked", 0)
    assert checked.keys() == unchecked.keys()
    for name, weight in checked.items():  # the check drew its dropout masks from a forked generator
        assert torch.equal(weight, unchecked[name]), name


def test_the_trainer_refuses_fp8_when_the_gradient_strays(
    small_files: PairFiles, make_train_config, tmp_path: Path
) -> None:
    from arena_assets.ranker import trainer

    config = make_train_config(small_files, tmp_path / "adapter", fp8_matmuls=True, max_steps=2,
                               fp8_min_grad_cosine=1.0)  # fmt: skip
    refusal = r"fp8_matmuls: on the first 2 micro-batches of .*fp8_min_grad_cosine 1\.0"
    with pytest.raises(ValueError, match=refusal):
        trainer.train(config)
    assert not (tmp_path / "adapter").exists()


def test_quantizing_layers_without_a_linear_layer_is_refused() -> None:
    frozen = torch.nn.Linear(16, 16).requires_grad_(False)
    assert fp8.quantize_linears([torch.nn.Sequential(frozen)], backward=True) == 1
    trainable = torch.nn.Sequential(torch.nn.Linear(16, 16))  # LoRA's kind: training leaves it alone
    with pytest.raises(ValueError, match="no linear layer to quantize"):
        fp8.quantize_linears([trainable], backward=True)
    assert fp8.quantize_linears([trainable]) == 1  # scoring quantizes every one


def test_fp8_forward_alone_is_refused(small_files: PairFiles, make_train_config, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp8_forward: false .* takes fp8_matmuls: true"):
        make_train_config(small_files, tmp_path, fp8_forward=False)


def test_gradient_agreement_keeps_its_sums_exact_over_many_parameters() -> None:
    """30M parameters (the 14B backbone's LoRA has 275M): float32 sums on the CPU gave a cosine of 0.995
    here, and 1.012 on the 14B check."""
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(30_000_000, generator=generator)
    other = reference + 0.13 * torch.randn(30_000_000, generator=generator)
    agreement = fp8.gradient_agreement(reference, other)
    assert agreement["grad_cosine"] == pytest.approx(1 / np.sqrt(1 + 0.13**2), abs=1e-4)
    assert agreement["grad_relative_error"] == pytest.approx(0.13, abs=1e-4)
