"""Training fast paths keep the numerics: bf16 adapters with fp32 masters, partial recompute, liger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoTokenizer

from arena_assets.ranker import modeling, trainer
from arena_assets.ranker.collate import collate_rows
from arena_assets.ranker.config import ScoreConfig, TrainConfig
from arena_assets.ranker.data import encode_frame, read_pairs
from arena_assets.ranker.head import LetterHead
from arena_assets.ranker.losses import hard_label_loss
from arena_assets.ranker.prompt import PromptTemplate, letter_token_ids
from arena_assets.ranker.scorer import load_scoring_head
from arena_assets_tests.ranker.conftest import PairFiles

LORA_PARAMS = 28  # lora_A and lora_B on 7 projections x 2 layers of the tiny backbone
# bf16 keeps 8 significant bits and the two adapter paths round in different places: a loss near 0.7 (bf16
# step 0.004) moved by 4e-4 and letter logits near 0.4 (bf16 step 0.002) by 6e-3 over four steps.
BF16_LOSS_ATOL = 3e-3
BF16_LOGIT_ATOL = 2e-2
# Recompute replays the same fp32 operations on the same inputs; only summation order may differ.
RECOMPUTE_ATOL = 1e-5


def _spy_optimizer(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Captures the peft model and the optimizer's parameters (with their values before the first step)."""
    seen: dict[str, Any] = {}
    real = trainer.build_optimizer

    def spy(config: TrainConfig, params: list[tuple[str, torch.nn.Parameter]]) -> torch.optim.Optimizer:
        seen["params"] = params
        seen["initial"] = {n: p.detach().clone() for n, p in params}
        return real(config, params)

    real_peft = peft.get_peft_model

    def spy_peft(*args: Any, **kwargs: Any) -> Any:
        seen["model"] = real_peft(*args, **kwargs)
        return seen["model"]

    monkeypatch.setattr(trainer, "build_optimizer", spy)
    monkeypatch.setattr(peft, "get_peft_model", spy_peft)  # build_model imports it at call time
    return seen


def _deltas(seen: dict[str, Any], kind: str) -> torch.Tensor:
    """How far the optimizer moved the `kind` ("lora_A" / "lora_B") weights, flattened in fp32."""
    return torch.cat([(p.detach() - seen["initial"][n]).float().flatten()
                      for n, p in seen["params"] if f".{kind}." in n])


@pytest.mark.slow
def test_bf16_adapters_with_fp32_masters_match_peft_fp32_adapters(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    runs: dict[bool, dict[str, Any]] = {}
    for compute_dtype in (True, False):
        seen = _spy_optimizer(monkeypatch)
        # lr_lora_a is the recipe's 1e-5: A's updates are below bf16's resolution of A (~2e-4 of ~0.06), so
        # only fp32 masters keep them. lora_B takes the demo's 4e-3 so the model visibly moves.
        config = make_train_config(
            small_files, tmp_path / f"adapter-{compute_dtype}", precision="bf16",
            adapter_compute_dtype=compute_dtype, lr_lora_a=1e-5, max_steps=4, per_device_batch_size=8,
            global_batch_size=8, max_length=192, validation_path="", warmup_ratio=0.0, use_liger="off",
        )
        runs[compute_dtype] = {"metrics": trainer.train(config), **seen}
        backbone = config.backbone
    fast, reference = runs[True], runs[False]

    lora = [p for n, p in fast["model"].named_parameters() if p.requires_grad]
    assert len(lora) == LORA_PARAMS and {p.dtype for p in lora} == {torch.bfloat16}
    assert {p.dtype for _, p in fast["params"]} == {torch.float32}  # the optimizer steps fp32 masters
    assert not any(p is q for p in lora for _, q in fast["params"])
    assert {p.dtype for p in reference["model"].parameters() if p.requires_grad} == {torch.float32}

    fast_curve = [loss for _, loss in fast["metrics"]["train_loss_curve"]]
    reference_curve = [loss for _, loss in reference["metrics"]["train_loss_curve"]]
    assert len(fast_curve) == 4
    torch.testing.assert_close(torch.tensor(fast_curve), torch.tensor(reference_curve), rtol=0,
                               atol=BF16_LOSS_ATOL)
    # Step 1 runs before any update, so a later step that differs by more than this means the updates differ.
    assert abs(fast_curve[1] - fast_curve[0]) > 10 * BF16_LOSS_ATOL

    for kind in ("lora_A", "lora_B"):
        fast_delta, reference_delta = _deltas(fast, kind), _deltas(reference, kind)
        cosine = torch.nn.functional.cosine_similarity(fast_delta, reference_delta, dim=0)
        assert cosine > 0.99, f"{kind}: updates differ from the fp32 adapters' (cosine {cosine:.4f})"
        assert float(fast_delta.norm()) == pytest.approx(float(reference_delta.norm()), rel=0.02)

    logits = [_adapter_logits(small_files, backbone, tmp_path / f"adapter-{flag}") for flag in (True, False)]
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=BF16_LOGIT_ATOL)


def _adapter_logits(files: PairFiles, backbone: str, adapter_dir: Path) -> torch.Tensor:
    """Letter logits [8, 2] of the first validation rows through the scorer's bf16 backbone + adapter path."""
    config = ScoreConfig(model=backbone, adapter_dir=str(adapter_dir), precision="bf16", max_length=192,
                         token_budget=4096, use_liger="off")
    head, tokenizer, _ = load_scoring_head(config, torch.device("cpu"))
    batch = _batch(tokenizer, read_pairs(files.validation).head(8))
    with torch.no_grad():
        return head(batch["input_ids"], batch["attention_mask"])


def _batch(tokenizer: Any, frame: Any, labels: bool = False) -> dict[str, torch.Tensor]:
    encoded = encode_frame(PromptTemplate.from_tokenizer(tokenizer), frame, max_length=192, rebalance=True)
    features = [{"input_ids": ids} for ids in encoded.input_ids]
    if labels:
        winners = frame["winner"]
        features = [{**f, "label": int(w == "model_b")} for f, w in zip(features, winners, strict=True)]
    return collate_rows(features, pad_token_id=tokenizer.pad_token_id)


def _move_lora_b(model: torch.nn.Module) -> None:
    """The same small random lora_B in every model, so that gradients reach lora_A too (B starts at zero)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))


def _loss_and_grads(
    config: TrainConfig, batch: dict[str, torch.Tensor], *, head_rows_only: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int]]:
    """One training forward/backward as the trainer runs it; also how often each layer's attention ran."""
    set_seed(0)
    accelerator = Accelerator()
    model, _ = modeling.build_model(config, accelerator.device)
    _move_lora_b(model)
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    layers = model.get_base_model().model.layers
    calls = [0] * len(layers)
    for index, layer in enumerate(layers):
        layer.self_attn.register_forward_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    letters = letter_token_ids(AutoTokenizer.from_pretrained(config.backbone))
    head = LetterHead(model, letters, head_rows_only=head_rows_only).train()
    torch.manual_seed(1)  # the same dropout masks in every configuration
    loss = hard_label_loss(head(batch["input_ids"], batch["attention_mask"]), batch["labels"])
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, calls


@pytest.mark.parametrize(("share", "recomputed"), [(0.5, [2, 1]), (1.0, [2, 2])])
def test_gradient_checkpointing_gives_the_same_loss_and_grads(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], share: float,
    recomputed: list[int], tmp_path: Path,
) -> None:
    def config(gc: float) -> TrainConfig:
        # Dropout on, so recompute must also replay the random masks.
        return make_train_config(small_files, tmp_path / "unused", precision="fp32",
                                 gradient_checkpointing=gc, lora_dropout=0.1)

    tokenizer = AutoTokenizer.from_pretrained(config(0.0).backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True)
    loss, grads, calls = _loss_and_grads(config(0.0), batch)
    assert calls == [1, 1]
    assert all(g.abs().sum() > 0 for g in grads.values())

    loss_gc, grads_gc, calls_gc = _loss_and_grads(config(share), batch)
    assert calls_gc == recomputed  # the first share of the layers runs forward twice
    torch.testing.assert_close(loss_gc, loss, rtol=0, atol=RECOMPUTE_ATOL)
    assert grads_gc.keys() == grads.keys() and len(grads) == LORA_PARAMS
    for name, grad in grads.items():
        torch.testing.assert_close(grads_gc[name], grad, rtol=0, atol=RECOMPUTE_ATOL, msg=name)


def test_recomputed_lora_dropout_gives_peft_numbers_and_keeps_less_for_backward(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path,
) -> None:
    def config(recompute: bool) -> TrainConfig:
        # liger off: where it is installed it would patch Qwen2's module globals, CPU models' too.
        return make_train_config(small_files, tmp_path / "unused", precision="fp32", lora_dropout=0.3,
                                 gradient_checkpointing=0.0, recompute_lora_dropout=recompute,
                                 use_liger="off")

    tokenizer = AutoTokenizer.from_pretrained(config(False).backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True)
    loss, grads, _ = _loss_and_grads(config(False), batch)
    kept = _bytes_kept_for_backward(config(False), batch)
    loss_recomputed, grads_recomputed, _ = _loss_and_grads(config(True), batch)
    # The same masks drawn again and the same products: equal, not merely close.
    torch.testing.assert_close(loss_recomputed, loss, rtol=0, atol=0)
    assert grads_recomputed.keys() == grads.keys() and len(grads) == LORA_PARAMS
    for name, grad in grads.items():
        torch.testing.assert_close(grads_recomputed[name], grad, rtol=0, atol=0, msg=name)
    # peft keeps a dropped copy and a mask per projection (7 a layer), this keeps the shared inputs.
    assert _bytes_kept_for_backward(config(True), batch) < 0.8 * kept


def test_lora_update_in_the_matmul_gives_peft_numbers(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    def config(precision: str, in_matmul: bool) -> TrainConfig:
        return make_train_config(small_files, tmp_path / "unused", precision=precision, lora_dropout=0.1,
                                 gradient_checkpointing=0.0, lora_update_in_matmul=in_matmul,
                                 use_liger="off")  # fmt: skip

    def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([grads[name].float().flatten() for name in sorted(grads)])

    tokenizer = AutoTokenizer.from_pretrained(config("fp32", False).backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True)
    loss, grads, _ = _loss_and_grads(config("fp32", False), batch)
    loss_fused, grads_fused, _ = _loss_and_grads(config("fp32", True), batch)
    # fp32: the same products, summed in another order.
    torch.testing.assert_close(loss_fused, loss, rtol=0, atol=RECOMPUTE_ATOL)
    assert grads_fused.keys() == grads.keys() and len(grads) == LORA_PARAMS
    for name, grad in grads.items():
        torch.testing.assert_close(grads_fused[name], grad, rtol=0, atol=RECOMPUTE_ATOL, msg=name)
    # bf16: one rounding where peft rounds three times, so no farther from fp32 than peft's bf16 (a slack
    # for the summation order of another CPU); measured here 0.88x peft's loss error, 0.97x its gradients'.
    loss_peft16, grads_peft16, _ = _loss_and_grads(config("bf16", False), batch)
    loss_fused16, grads_fused16, _ = _loss_and_grads(config("bf16", True), batch)
    assert (loss_fused16 - loss).abs() <= 1.25 * (loss_peft16 - loss).abs() + 1e-5
    assert (flat(grads_fused16) - flat(grads)).norm() <= 1.25 * (flat(grads_peft16) - flat(grads)).norm()
    assert _bytes_kept_for_backward(config("fp32", True), batch) <= _bytes_kept_for_backward(
        config("fp32", False), batch
    )


def test_lora_update_in_the_matmul_leaves_other_adapters_to_peft() -> None:
    """Merged, disabled or fp32 adapters under a bf16 input take peft's own forward."""
    from peft import LoraConfig, get_peft_model

    from arena_assets.ranker.lora_output import AddmmLoraLinear, add_lora_in_matmul

    torch.manual_seed(0)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(16, 8)), LoraConfig(r=4, target_modules=["0"]))
    assert add_lora_in_matmul(model) == 1
    layer = model.base_model.model[0]
    assert isinstance(layer, AddmmLoraLinear)
    torch.nn.init.normal_(layer.lora_B["default"].weight)
    x = torch.randn(3, 5, 16)
    fused = model(x)
    lora_a, lora_b = layer.lora_A["default"], layer.lora_B["default"]
    expected = layer.base_layer(x) + lora_b(lora_a(x)) * layer.scaling["default"]
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-6)
    with model.disable_adapter():
        torch.testing.assert_close(model(x), layer.base_layer(x))
    layer.merge()
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    layer.unmerge()
    model.base_model.model.to(torch.bfloat16)
    lora_a.float(), lora_b.float()  # peft's fp32 adapters: peft's own cast around them
    assert model(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("bias", [False, True])
def test_lora_update_adds_to_the_frozen_output_in_place(bias: bool) -> None:
    """No copy of the frozen projection's output: the update is written into it, with peft's gradients."""
    from peft import LoraConfig, get_peft_model

    from arena_assets.ranker.lora_output import add_lora_in_matmul

    torch.manual_seed(0)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(16, 8, bias=bias)),
                           LoraConfig(r=4, target_modules=["0"]))  # fmt: skip
    layer = model.base_model.model[0]
    torch.nn.init.normal_(layer.lora_B["default"].weight)
    x = torch.randn(3, 5, 16, requires_grad=True)
    lora_a, lora_b = layer.lora_A["default"], layer.lora_B["default"]
    expected = layer.base_layer(x) + lora_b(lora_a(x)) * layer.scaling["default"]
    want = torch.autograd.grad(expected.square().sum(), [x, lora_a.weight, lora_b.weight])
    add_lora_in_matmul(model)
    frozen_outputs: list[torch.Tensor] = []
    layer.base_layer.register_forward_hook(lambda module, args, out: frozen_outputs.append(out))
    out = model(x)
    assert out.data_ptr() == frozen_outputs[0].data_ptr()  # written in place
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    got = torch.autograd.grad(out.square().sum(), [x, lora_a.weight, lora_b.weight])
    for name, a, b in zip(("x", "lora_A", "lora_B"), got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def _bytes_kept_for_backward(config: TrainConfig, batch: dict[str, torch.Tensor]) -> int:
    """Bytes of the distinct tensors that autograd keeps for backward over one training forward."""
    set_seed(0)
    model, _ = modeling.build_model(config, torch.device("cpu"))
    head = LetterHead(model, letter_token_ids(AutoTokenizer.from_pretrained(config.backbone))).train()
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        hard_label_loss(head(batch["input_ids"], batch["attention_mask"]), batch["labels"])
    return sum(storages.values())


@pytest.mark.slow
def test_compiled_layers_give_the_same_loss_and_grads(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path,
) -> None:
    """Regional torch.compile (inductor's CPU kernels here), half the layers recomputed around it."""
    def config(compiled: bool) -> TrainConfig:
        # No dropout: compiled code draws its masks from another random stream than eager code.
        return make_train_config(small_files, tmp_path / "unused", precision="fp32", lora_dropout=0.0,
                                 gradient_checkpointing=0.5, compile_layers=compiled)

    tokenizer = AutoTokenizer.from_pretrained(config(False).backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True)
    loss, grads, _ = _loss_and_grads(config(False), batch)
    torch._dynamo.utils.counters.clear()
    try:
        loss_compiled, grads_compiled, _ = _loss_and_grads(config(True), batch)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile, not fall back
        # The compiled last layer through head_rows.py's hooks, as the trainer runs it by default.
        loss_read, grads_read, _ = _loss_and_grads(config(True), batch, head_rows_only=True)
    finally:
        torch._dynamo.reset()  # no compiled graphs left for later tests
    # Fused kernels sum in another order than eager ones: fp32 rounding, well under the recompute bound.
    for compiled_loss, compiled_grads in ((loss_compiled, grads_compiled), (loss_read, grads_read)):
        torch.testing.assert_close(compiled_loss, loss, rtol=0, atol=RECOMPUTE_ATOL)
        assert compiled_grads.keys() == grads.keys() and len(grads) == LORA_PARAMS
        for name, grad in grads.items():
            torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=RECOMPUTE_ATOL, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="liger-kernel's Triton kernels need CUDA")
def test_liger_kernels_keep_loss_and_grads(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    pytest.importorskip("liger_kernel")  # the conftest starts every test from transformers' Qwen2 code

    def run(use_liger: str) -> tuple[torch.Tensor, dict, torch.nn.Module]:
        config = make_train_config(small_files, tmp_path / "unused", precision="bf16", use_liger=use_liger,
                                   lora_dropout=0.0)
        set_seed(0)
        accelerator = Accelerator()
        model, _ = modeling.build_model(config, accelerator.device)
        _move_lora_b(model)
        tokenizer = AutoTokenizer.from_pretrained(config.backbone)
        batch = {k: v.to(accelerator.device) for k, v in
                 _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True).items()}
        head = LetterHead(model, letter_token_ids(tokenizer)).train()
        logits = head(batch["input_ids"], batch["attention_mask"])
        loss = hard_label_loss(logits, batch["labels"])
        loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}
        return torch.cat([loss.detach().view(1), logits.detach().flatten()]), grads, model.get_base_model()

    plain, plain_grads, plain_model = run("off")
    fused, fused_grads, fused_model = run("on")
    assert getattr(fused_model, "arena_liger", False) and not getattr(plain_model, "arena_liger", False)
    # Both run in bf16; liger's fused kernels round once where eager PyTorch rounds per operation (on an H100:
    # loss and logits moved by 3e-3 at most, gradient cosines stayed above 0.996).
    torch.testing.assert_close(fused, plain, rtol=0, atol=BF16_LOGIT_ATOL)
    assert fused_grads.keys() == plain_grads.keys() and len(plain_grads) == LORA_PARAMS
    for name, grad in plain_grads.items():
        cosine = torch.nn.functional.cosine_similarity(fused_grads[name].flatten(), grad.flatten(), dim=0)
        assert cosine > 0.99, f"{name}: gradient direction changed with liger (cosine {cosine:.4f})"


class _StorageWatch:
    """Weak references to tensors' storages, to ask which are still in memory."""

    def __init__(self) -> None:
        self.refs: list[int] = []

    def remember(self, tensor: torch.Tensor) -> None:
        self.refs.append(tensor.untyped_storage()._weak_ref())

    def alive(self) -> list[bool]:
        alive = [not torch.UntypedStorage._expired(ref) for ref in self.refs]
        for ref in self.refs:
            torch.UntypedStorage._free_weak_ref(ref)
        self.refs = []
        return alive


def _training_head(config: TrainConfig) -> tuple[list[torch.nn.Module], LetterHead]:
    set_seed(0)
    model, _ = modeling.build_model(config, torch.device("cpu"))
    head = LetterHead(model, letter_token_ids(AutoTokenizer.from_pretrained(config.backbone))).train()
    return modeling.decoder_layers(model), head


def _storages_alive_after_forward(config: TrainConfig, batch: dict[str, torch.Tensor]) -> list[bool]:
    """After one training forward: whether each layer's two RMSNorm outputs and SwiGLU product are still in
    memory (held for backward), in layer order."""
    layers, head = _training_head(config)
    watch = _StorageWatch()
    for layer in layers:
        layer.input_layernorm.register_forward_hook(lambda _m, _i, out: watch.remember(out))
        layer.post_attention_layernorm.register_forward_hook(lambda _m, _i, out: watch.remember(out))
        layer.mlp.down_proj.register_forward_pre_hook(lambda _m, args: watch.remember(args[0]))
    loss = hard_label_loss(head(batch["input_ids"], batch["attention_mask"]), batch["labels"])
    alive = watch.alive()
    loss.backward()  # the rebuilt tensors serve backward
    return alive


def _inputs_alive_after_backward(config: TrainConfig, batch: dict[str, torch.Tensor]) -> list[bool]:
    """After one training forward and backward, the loss still held (as the trainer holds it until the next
    pass's forward): whether the tensors the rebuilds make their tensors from (each RMSNorm's input, the
    gate and up projections' outputs) are still in memory, in the layers that rebuild (a recomputed layer's
    input is torch's checkpoint's to hold)."""
    from arena_assets.ranker.rebuilt_activations import rebuilds_activations

    layers, head = _training_head(config)
    watch = _StorageWatch()
    for layer in layers:
        if not rebuilds_activations(layer) or getattr(layer, "gradient_checkpointing", False):
            continue
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.register_forward_pre_hook(lambda _m, args: watch.remember(args[0]))
        for projection in (layer.mlp.gate_proj, layer.mlp.up_proj):
            projection.register_forward_hook(lambda _m, _i, out: watch.remember(out))
    loss = hard_label_loss(head(batch["input_ids"], batch["attention_mask"]), batch["labels"])
    loss.backward()
    assert watch.refs and loss.grad_fn is not None  # held, with its graph, while the storages are looked at
    return watch.alive()


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_rebuilt_activations_give_the_same_numbers_and_are_not_kept(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path, share: float
) -> None:
    def config(rebuild: bool) -> TrainConfig:
        # Dropout on (its masks replayed in backward), liger off (CPU), half the layers recomputed or none.
        return make_train_config(small_files, tmp_path / "unused", precision="fp32", lora_dropout=0.1,
                                 gradient_checkpointing=share, rebuild_activations=rebuild,
                                 use_liger="off")  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(config(False).backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True)
    loss, grads, _ = _loss_and_grads(config(False), batch)
    loss_rebuilt, grads_rebuilt, _ = _loss_and_grads(config(True), batch)
    # The same kernels on the same inputs: equal, not merely close.
    torch.testing.assert_close(loss_rebuilt, loss, rtol=0, atol=0)
    assert grads_rebuilt.keys() == grads.keys() and len(grads) == LORA_PARAMS
    for name, grad in grads.items():
        torch.testing.assert_close(grads_rebuilt[name], grad, rtol=0, atol=0, msg=name)
    # Kept: every layer that is not recomputed keeps the three (a recomputed one keeps none of them).
    recomputed = round(share * 2) * 3
    kept = [False] * recomputed + [True] * (6 - recomputed)
    assert _storages_alive_after_forward(config(False), batch) == kept
    assert _storages_alive_after_forward(config(True), batch) == [False] * 6
    # Hooks around the model (here a count of what is kept) still see every tensor not rebuilt.
    assert 0 < _bytes_kept_for_backward(config(True), batch) < _bytes_kept_for_backward(config(False), batch)
    # Nor after backward, while the loss and so its graph's nodes are held: at the 14B shape that was 13 GiB
    # a 2 x 2048 pass (benchmarks/RESULTS.md, 2026-11-29, the fp8 check's passes).
    assert not any(_inputs_alive_after_backward(config(True), batch))


def test_a_rebuild_is_made_once_for_its_keepers_and_then_let_go() -> None:
    from arena_assets.ranker.rebuilt_activations import Rebuild, rebuild_of

    calls = []
    rebuild = Rebuild(lambda: calls.append(1) or torch.arange(3.0), torch.device("cpu"))
    keepers = [rebuild.keep() for _ in range(3)]  # q, k and v keep the normed hidden states
    values = [keeper.get() for keeper in keepers]
    assert len(calls) == 1 and all(v is values[0] for v in values)
    assert rebuild.value is None and rebuild.make is None  # the last keeper took it: nothing held after
    with pytest.raises(RuntimeError, match="after its last keeper"):
        rebuild.get()
    assert rebuild_of(torch.zeros(2)) is None  # a tensor no layer handed out is kept as it is
    # Made under the forward's autocast, which backward does not run under.
    a = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        made = a @ a
        rebuild = Rebuild(lambda: a @ a, a.device)
    assert made.dtype == torch.bfloat16 and rebuild.keep().get().dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="liger's and the fused dropout's Triton kernels")
def test_rebuilt_activations_give_the_same_numbers_with_liger_and_fused_dropout(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    """What the GPU runs: liger's RMSNorm and SwiGLU rebuilt, their outputs feeding the dropout kernels."""
    pytest.importorskip("liger_kernel")

    def config(rebuild: bool) -> TrainConfig:
        return make_train_config(small_files, tmp_path / "unused", precision="bf16", use_liger="on",
                                 lora_dropout=0.1, gradient_checkpointing=0.0,
                                 rebuild_activations=rebuild)  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(config(False).backbone)
    batch = _batch(tokenizer, read_pairs(small_files.train).head(8), labels=True)
    loss, grads, _ = _loss_and_grads(config(False), batch)
    loss_rebuilt, grads_rebuilt, _ = _loss_and_grads(config(True), batch)
    # The same kernels on the same inputs and the same masks; only attention's backward may sum in another
    # order from run to run.
    torch.testing.assert_close(loss_rebuilt, loss, rtol=0, atol=1e-4)
    assert grads_rebuilt.keys() == grads.keys() and len(grads) == LORA_PARAMS
    for name, grad in grads.items():
        cosine = torch.nn.functional.cosine_similarity(grads_rebuilt[name].float().flatten(),
                                                       grad.float().flatten(), dim=0)  # fmt: skip
        assert cosine > 0.9999, f"{name}: rebuilt activations changed the gradient (cosine {cosine:.6f})"


def test_random_init_builds_the_same_weights_and_leaves_the_callers_random_state(demo_backbone: Path) -> None:
    """Benchmark processes compare their outputs, so random_init builds one model from a fixed seed."""
    models, draws = [], []
    for _ in range(2):
        torch.manual_seed(5)
        models.append(modeling.load_backbone(str(demo_backbone), dtype=torch.float32,
                                             device=torch.device("cpu"), random_init=True))  # fmt: skip
        draws.append(torch.rand(3))
    torch.manual_seed(5)
    assert torch.equal(draws[0], torch.rand(3)) and torch.equal(draws[0], draws[1])
    pairs = list(zip(models[0].parameters(), models[1].parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs)
