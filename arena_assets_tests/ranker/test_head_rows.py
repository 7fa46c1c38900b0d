"""The last layer at the read positions only (ranker/head_rows.py): the same letter logits and LoRA gradients
as the full layer, padded, unpadded, packed and through the trainer's fast paths, with only the read rows
through its MLP; left alone where it cannot apply; watched again after fp8 replaces its projections."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from arena_assets.ranker.collate import collate_rows
from arena_assets.ranker.data import read_pairs
from arena_assets.ranker.fp8 import quantize_linears
from arena_assets.ranker.head import LetterHead
from arena_assets.ranker.head_rows import unwatch_head_rows, watch_head_rows, watches_head_rows
from arena_assets.ranker.modeling import load_backbone
from arena_assets.ranker.packing import pack_rows
from arena_assets_tests.ranker.conftest import PairFiles
from arena_assets_tests.ranker.test_fast_paths import LORA_PARAMS, _batch, _loss_and_grads
from arena_assets_tests.ranker.test_packing import PAIRS

LETTERS = (11, 42)


@pytest.fixture(scope="module")
def model(tiny_backbone_dir: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(tiny_backbone_dir, dtype=torch.float32).eval()


def _rows_through_last_mlp(head: LetterHead, *inputs) -> tuple[torch.Tensor, int]:
    """The head's logits, and how many positions the last layer's down projection multiplied."""
    seen = []
    down = head.model.model.layers[-1].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[:-1].numel()))
    try:
        with torch.no_grad():
            logits = head(*inputs)
    finally:
        handle.remove()
    return logits, seen[0]


def _inputs(kind: str) -> tuple:
    rows = PAIRS[:4]
    if kind == "packed":
        tokens, layout = pack_rows(rows, share_pair_prefix=True)
        return torch.tensor([tokens]), layout
    if kind == "one length":
        return torch.tensor([row[:7] for row in rows]), None
    batch = collate_rows([{"input_ids": ids} for ids in rows], pad_token_id=0, padding_side=kind)
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("kind", ["right", "left", "one length", "packed"])
def test_the_same_letter_logits_from_the_read_rows_alone(tiny_backbone_dir: Path, kind: str) -> None:
    packed = kind == "packed"
    model = load_backbone(str(tiny_backbone_dir), dtype=torch.float32, device=torch.device("cpu"),
                          use_liger="off", packed=packed).eval()  # fmt: skip
    inputs = _inputs(kind)
    full, full_rows = _rows_through_last_mlp(LetterHead(model, LETTERS), *inputs)
    head = LetterHead(model, LETTERS, head_rows_only=True)
    assert watches_head_rows(model.model)
    read, read_rows = _rows_through_last_mlp(head, *inputs)
    torch.testing.assert_close(read, full, rtol=0, atol=1e-5)
    assert read_rows == len(PAIRS[:4]) < full_rows  # one position a row, not every position
    unwatch_head_rows(model.model)
    assert not watches_head_rows(model.model)
    assert _rows_through_last_mlp(LetterHead(model, LETTERS), *inputs)[1] == full_rows


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_the_same_loss_and_grads_through_the_fast_paths(
    small_files: PairFiles, make_train_config: Callable[..., Any], tmp_path: Path, share: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trainer's model (bf16-style adapters, recomputed dropout, the update in the matmul, rebuilt
    activations, the first layers recomputed or none): LoRA gradients of every layer, the last included."""
    watched = []
    watch = LetterHead.watch_head_rows
    monkeypatch.setattr(LetterHead, "watch_head_rows", lambda h: watched.append(watch(h)) or watched[-1])
    config = make_train_config(small_files, tmp_path / "unused", precision="fp32", lora_dropout=0.0,
                               gradient_checkpointing=share, use_liger="off")  # fmt: skip
    batch = _batch(AutoTokenizer.from_pretrained(config.backbone), read_pairs(small_files.train).head(8),
                   labels=True)  # fmt: skip
    loss, grads, _ = _loss_and_grads(config, batch)
    loss_read, grads_read, _ = _loss_and_grads(config, batch, head_rows_only=True)
    assert watched == [True]  # the trainer's last layer took the hooks
    torch.testing.assert_close(loss_read, loss, rtol=0, atol=1e-5)
    assert grads_read.keys() == grads.keys() and len(grads) == LORA_PARAMS
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads_read[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_recomputed_last_layer_is_left_alone(model: PreTrainedModel) -> None:
    model.model.layers[-1].gradient_checkpointing = True
    try:
        assert not watch_head_rows(model.model)
        assert not watches_head_rows(model.model)
    finally:
        model.model.layers[-1].gradient_checkpointing = False


def test_watched_again_after_fp8_replaces_the_projections(tiny_backbone_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_backbone_dir, dtype=torch.float32).eval()
    inputs = _inputs("right")
    head = LetterHead(model, LETTERS, head_rows_only=True)
    quantize_linears(list(model.model.layers))  # new q_proj and o_proj modules, without the hooks
    seen = []
    q_proj = model.model.layers[-1].self_attn.q_proj
    # After the pre-hooks, whichever registered first: what the projection multiplied.
    q_proj.register_forward_hook(lambda _m, args, _out: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        head(*inputs)
        assert seen[-1].shape[0] == inputs[0].numel()  # every position: the old hooks left with the old layer
        assert head.watch_head_rows()
        read = head(*inputs)
        assert seen[-1].shape[0] == len(PAIRS[:4])
        unwatch_head_rows(model.model)
        full = head(*inputs)
    torch.testing.assert_close(read, full, rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="liger's and the fused dropout's Triton kernels")
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_same_loss_and_grads_with_liger_and_fused_dropout(
    small_files: PairFiles, make_train_config: Callable[..., Any], tmp_path: Path, dropout: float
) -> None:
    """What the GPU runs: bf16, liger's kernels, lora_A's fused dropout kernels on the last layer's read rows.
    With dropout the last layer draws its masks for other rows (the read rows alone), so only the loss is
    close; the last layer's LoRA gradients, from 8 positions, move (a cosine of 0.75 was seen)."""
    pytest.importorskip("liger_kernel")
    config = make_train_config(small_files, tmp_path / "unused", precision="bf16", use_liger="on",
                               lora_dropout=dropout, gradient_checkpointing=0.0)  # fmt: skip
    batch = _batch(AutoTokenizer.from_pretrained(config.backbone), read_pairs(small_files.train).head(8),
                   labels=True)  # fmt: skip
    loss, grads, _ = _loss_and_grads(config, batch)
    loss_read, grads_read, _ = _loss_and_grads(config, batch, head_rows_only=True)
    torch.testing.assert_close(loss_read, loss, rtol=0, atol=0.02 if dropout else 0.005)
    assert grads_read.keys() == grads.keys() and len(grads) == LORA_PARAMS
    assert all(g.isfinite().all() and g.abs().sum() > 0 for g in grads_read.values())
    if dropout:
        return
    for name, grad in grads.items():
        cosine = torch.nn.functional.cosine_similarity(grads_read[name].float().flatten(),
                                                       grad.float().flatten(), dim=0)  # fmt: skip
        assert cosine > 0.999, f"{name}: gradient cosine {cosine:.6f}"
