"""Letter head on the tiny model: equals the full logits' A/B columns, any padding, through peft LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, PreTrainedModel

from arena_assets.ranker.collate import collate_rows
from arena_assets.ranker.head import last_token_index, letter_logits, padded_tokens, position_ids_from_mask

LETTERS = (11, 42)  # any two vocabulary rows serve; the real ids come from the tokenizer
ROWS = [[5, 17, 33, 2, 9, 60, 7], [8, 9, 10], [70, 71, 72, 73, 74]]


@pytest.fixture(scope="module")
def model(tiny_backbone_dir: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(tiny_backbone_dir, dtype=torch.float32).eval()


def _batch(padding_side: str) -> dict[str, torch.Tensor]:
    return collate_rows([{"input_ids": ids} for ids in ROWS], pad_token_id=0, padding_side=padding_side)


def _reference(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A/B columns of the full-vocabulary logits at each row's last real token, [B, 2]."""
    mask = batch["attention_mask"]
    full = model(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
    ).logits
    last = full[torch.arange(len(ROWS)), last_token_index(mask)]
    return last[:, list(LETTERS)]


def test_last_token_index_right_and_left() -> None:
    right = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
    assert torch.equal(last_token_index(right), torch.tensor([2, 0, 3]))
    assert torch.equal(last_token_index(left), torch.tensor([3, 3, 3]))


def test_position_ids_count_real_tokens() -> None:
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert torch.equal(position_ids_from_mask(mask), torch.tensor([[0, 0, 0, 1], [0, 1, 2, 2]]))


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_equals_full_logits_columns(model: PreTrainedModel, padding_side: str) -> None:
    batch = _batch(padding_side)
    with torch.no_grad():
        got = letter_logits(model, batch["input_ids"], batch["attention_mask"], LETTERS)
        expected = _reference(model, batch)
    assert got.shape == (len(ROWS), 2) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_same_logits_for_left_and_right_padding(model: PreTrainedModel) -> None:
    with torch.no_grad():
        right, left = (
            letter_logits(model, b["input_ids"], b["attention_mask"], LETTERS)
            for b in (_batch("right"), _batch("left"))
        )
    torch.testing.assert_close(right, left, atol=1e-5, rtol=0)


def _lora(model: PreTrainedModel) -> torch.nn.Module:
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # random B as well as A, so the adapter changes the output
    )
    return get_peft_model(model, config)


def test_through_peft_lora_and_gradients_reach_adapters(tiny_backbone_dir: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_backbone_dir, dtype=torch.float32)
    with torch.no_grad():
        right = _batch("right")
        plain = letter_logits(base, right["input_ids"], right["attention_mask"], LETTERS)
    peft_model = _lora(base)
    batch = _batch("left")
    got = letter_logits(peft_model, batch["input_ids"], batch["attention_mask"], LETTERS)
    with torch.no_grad():
        expected = _reference(peft_model, batch)
    torch.testing.assert_close(got.detach(), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(got.detach(), plain, atol=1e-3)  # the adapter is really in the path
    got.sum().backward()
    lora = [(name, p) for name, p in peft_model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in name for name, _ in lora)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in lora)


def test_under_autocast_returns_float32_with_gradients(tiny_backbone_dir: Path) -> None:
    peft_model = _lora(AutoModelForCausalLM.from_pretrained(tiny_backbone_dir, dtype=torch.float32))
    batch = _batch("right")
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = letter_logits(peft_model, batch["input_ids"], batch["attention_mask"], LETTERS)
    assert got.dtype == torch.float32
    with torch.no_grad():
        expected = _reference(peft_model, batch)
    torch.testing.assert_close(got.detach(), expected, atol=0.1, rtol=0.05)  # bf16 decoder
    got.sum().backward()
    assert all(p.grad is not None for p in peft_model.parameters() if p.requires_grad)


def test_rejects_ddp_wrapper() -> None:
    class FakeDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self) -> None:  # no process group needed to test the guard
            torch.nn.Module.__init__(self)

    batch = _batch("right")
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        letter_logits(FakeDDP(), batch["input_ids"], batch["attention_mask"], LETTERS)


def test_rejects_adapted_lm_head(tiny_backbone_dir: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_backbone_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    batch = _batch("right")
    with pytest.raises(ValueError, match="lm_head"):
        letter_logits(peft_model, batch["input_ids"], batch["attention_mask"], LETTERS)


def test_padded_tokens_counts_the_pads_of_the_scoring_batches() -> None:
    assert padded_tokens([5, 3, 3], token_budget=100, max_batch_rows=8) == 4  # one batch of width 5
    assert padded_tokens([5, 3, 3], token_budget=10, max_batch_rows=8) == 2  # [5, 3] and [3]
    assert padded_tokens([4, 4], token_budget=100, max_batch_rows=8) == 0
