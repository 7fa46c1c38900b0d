"""Packed rows: the layout on tiny lists; on the tiny model a packed pass's letter logits and gradients
(shared prefixes computed once) equal to padded rows', with attention by the varlen path or on rows gathered
whole for SDPA; on a GPU, PyTorch's varlen kernel and SDPA on gathered rows equal to rows computed alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel

from arena_assets.ranker.collate import collate_rows
from arena_assets.ranker.head import letter_logits, score_packed, score_sequences
from arena_assets.ranker.modeling import load_backbone
from arena_assets.ranker.packing import (
    ATTENTION_NAME,
    PackedLayout,
    _per_sequence_attention,
    pack_rows,
    packed_attention,
    packed_groups,
    row_groups,
    shared_prefix_length,
)

LETTERS = (11, 42)
# Two swap pairs (a common prefix, then A and B in either order) and a pair with nothing in common.
PAIRS = [
    [1, 2, 3, 4, 50, 51, 52, 60, 61, 9],
    [1, 2, 3, 4, 60, 61, 50, 51, 52, 9],
    [1, 2, 7, 70, 71, 80, 9],
    [1, 2, 7, 80, 70, 71, 9],
    [33, 34, 35],
    [36, 37],
]
# The two swap pairs alone: every row begins [1, 2], a prefix of all rows that the first row computes.
COMMON_PREFIX_PAIRS = PAIRS[:4]


def test_shared_prefix_leaves_each_row_its_last_token() -> None:
    assert shared_prefix_length([1, 2, 3, 4], [1, 2, 9]) == 2
    assert shared_prefix_length([1, 2, 3], [1, 2, 3]) == 2  # identical rows still compute their last token
    assert shared_prefix_length([5], [5, 6]) == 0
    assert shared_prefix_length([4, 5], [6, 5]) == 0


def test_pack_rows_layout_by_hand() -> None:
    tokens, layout = pack_rows([[5, 6, 7], [5, 6, 8, 9]], share_pair_prefix=True)
    assert tokens == [5, 6, 7, 8, 9]
    assert layout.position_ids.tolist() == [[0, 1, 2, 2, 3]]
    assert layout.cu_seq_q.tolist() == [0, 3, 5] and layout.cu_seq_k.tolist() == [0, 3, 7]
    assert layout.kv_index.tolist() == [0, 1, 2, 0, 1, 3, 4]
    assert layout.last_index.tolist() == [2, 4]
    assert (layout.max_q, layout.max_k, layout.shared_tokens) == (3, 4, 2)
    assert layout.row_index is None and layout.row_output_index is None and layout.row_width == 0
    # Each attention sequence as a row of width 4 (its keys, then padding read from position 0), and each
    # packed position's own query's slot in those rows.
    _, rows = pack_rows([[5, 6, 7], [5, 6, 8, 9]], share_pair_prefix=True, row_multiple=4)
    assert rows.row_width == 4 and rows.row_index.tolist() == [0, 1, 2, 0, 0, 1, 3, 4]
    assert rows.row_output_index.tolist() == [0, 1, 2, 6, 7]
    _, rows = pack_rows([[5, 6, 7], [5, 6, 8, 9]], share_pair_prefix=True, row_multiple=3)
    assert rows.row_width == 6 and rows.row_output_index.tolist() == [0, 1, 2, 8, 9]
    tokens, layout = pack_rows([[5, 6, 7], [4, 6, 8, 9]], share_pair_prefix=False)
    assert tokens == [5, 6, 7, 4, 6, 8, 9] and layout.shared_tokens == 0
    assert layout.position_ids.tolist() == [[0, 1, 2, 0, 1, 2, 3]]
    assert layout.kv_index.tolist() == list(range(7)) and layout.last_index.tolist() == [2, 6]


def test_pack_rows_computes_the_prefix_of_all_rows_once() -> None:
    """Two pairs whose rows all begin [1, 2] (a system prompt): the first row computes it, every other row
    reads its keys; a swap reads its own pair's longer prefix."""
    rows = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 7], [1, 2, 8, 9]]
    tokens, layout = pack_rows(rows, share_pair_prefix=True)
    assert tokens == [1, 2, 3, 4, 5, 7, 8, 9]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 3, 2, 2, 3]]
    assert layout.cu_seq_q.tolist() == [0, 4, 5, 6, 8] and layout.cu_seq_k.tolist() == [0, 4, 8, 11, 15]
    assert layout.kv_index.tolist() == [0, 1, 2, 3, 0, 1, 2, 4, 0, 1, 5, 0, 1, 6, 7]
    assert layout.last_index.tolist() == [3, 4, 5, 7] and layout.shared_tokens == 3 + 2 + 2
    # Unpaired rows share the common prefix alone.
    tokens, layout = pack_rows(rows, share_pair_prefix=False)
    assert tokens == [1, 2, 3, 4, 3, 5, 7, 8, 9] and layout.shared_tokens == 3 * 2


def test_pack_rows_rejects_what_it_cannot_pack() -> None:
    with pytest.raises(ValueError, match="pairs"):
        pack_rows([[1, 2], [1, 3], [4]], share_pair_prefix=True)
    with pytest.raises(ValueError, match="empty"):
        pack_rows([[1, 2], []], share_pair_prefix=False)


def test_packed_groups_fill_the_budget_with_whole_pairs() -> None:
    lengths = [10, 10, 3, 3, 7, 7, 30, 30]
    groups = packed_groups(lengths, token_budget=35, pairs=True)
    assert groups == [[6, 7], [0, 1, 4, 5], [2, 3]]  # longest first; a pair over the budget goes alone
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    assert packed_groups([4, 9, 2], token_budget=11, pairs=False) == [[1], [0, 2]]


def test_row_groups_hold_as_many_rows_as_their_width_allows() -> None:
    """Longest first; each pack's width its longest row rounded up to 8, and as many whole pairs as fit 64
    padded tokens at it (a pair over it goes alone): packs of one width have one shape."""
    lengths = [10, 12, 3, 3, 7, 5, 30, 30, 4, 6, 15, 9]
    groups = row_groups(lengths, token_budget=64, pairs=True, multiple=8)
    assert groups == [[6, 7], [10, 11, 0, 1], [4, 5, 8, 9, 2, 3]]
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    assert row_groups([4, 9, 2, 3], token_budget=16, pairs=False, multiple=4) == [[1], [0, 3, 2]]


def _rows_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: list[list[int]]) -> torch.Tensor:
    """Reference: each row's causal attention computed alone ([1, H, L, D] tensors of its own tokens), then
    packed as pack_rows packs the rows (a swap keeps only its positions after the shared prefix)."""
    outputs = []
    for i, row in enumerate(rows):
        out = torch.nn.functional.scaled_dot_product_attention(
            q[i], k[i], v[i], is_causal=True, enable_gqa=True
        )[0].transpose(0, 1)
        outputs.append(out if i % 2 == 0 else out[shared_prefix_length(rows[i - 1], row) :])
    return torch.cat(outputs)


def _attention_inputs(rows: list[list[int]], device: str, dtype: torch.dtype, heads: int, kv_heads: int,
                      dim: int, row_multiple: int = 0) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Per-row q, k, v whose values depend only on (row token, position), so a swap's prefix positions get
    the same values as its row's, as the model gives them; and the same values packed."""
    torch.manual_seed(0)
    tables = [(torch.randn(100, n, dim, device=device, dtype=dtype), torch.randn(2048, n, dim, device=device,
                                                                                   dtype=dtype))
              for n in (heads, kv_heads, kv_heads)]  # fmt: skip
    per_row = [[(by_token[row] + by_position[: len(row)]).transpose(0, 1).unsqueeze(0) for row in rows]
               for by_token, by_position in tables]  # fmt: skip
    tokens, layout = pack_rows(rows, share_pair_prefix=True, row_multiple=row_multiple)
    positions = layout.position_ids[0]
    packed = [(by_token[tokens] + by_position[positions]).transpose(0, 1).unsqueeze(0)
              for by_token, by_position in tables]  # fmt: skip
    return per_row, packed, layout


@pytest.mark.parametrize("row_multiple", [0, 4], ids=["varlen_path", "whole_rows"])
def test_packed_attention_is_each_rows_own_causal_attention(row_multiple: int) -> None:
    """A swap's queries are the last of its keys (the shared prefix's, then its own): causal from the end."""
    rows = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 6, 5, 4], [7, 8, 9], [7, 8, 9, 9, 9]]
    per_row, packed, layout = _attention_inputs(rows, "cpu", torch.float32, 4, 2, 8, row_multiple)
    assert (layout.row_width > 0) == bool(row_multiple)
    got, _ = packed_attention(torch.nn.Module(), *packed, layout)
    expected = _rows_attention(*per_row, rows)
    assert got.shape == (1, len(expected), 4, 8)
    torch.testing.assert_close(got[0], expected)


@pytest.fixture(scope="module")
def models(tiny_backbone_dir: Path) -> tuple[PreTrainedModel, PreTrainedModel]:
    """The tiny backbone loaded for padded rows (SDPA) and for packed ones, the same weights."""
    cpu = torch.device("cpu")
    padded = load_backbone(str(tiny_backbone_dir), dtype=torch.float32, device=cpu, use_liger="off")
    packed = load_backbone(str(tiny_backbone_dir), dtype=torch.float32, device=cpu, use_liger="off",
                           packed=True)  # fmt: skip
    assert packed.config._attn_implementation == ATTENTION_NAME
    return padded.eval(), packed.eval()


def _padded_logits(model: torch.nn.Module, rows: list[list[int]]) -> torch.Tensor:
    batch = collate_rows([{"input_ids": ids} for ids in rows], pad_token_id=0)
    return letter_logits(model, batch["input_ids"], batch["attention_mask"], LETTERS)


def _packed_logits(
    model: torch.nn.Module, rows: list[list[int]], *, share: bool, row_multiple: int = 0
) -> torch.Tensor:
    tokens, layout = pack_rows(rows, share_pair_prefix=share, row_multiple=row_multiple)
    return letter_logits(model, torch.tensor([tokens]), layout, LETTERS)


@pytest.mark.parametrize("rows", [PAIRS, COMMON_PREFIX_PAIRS], ids=["pairs", "common_prefix"])
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("row_multiple", [0, 8], ids=["varlen_path", "whole_rows"])
def test_packed_letter_logits_equal_padded_rows(
    models: tuple[PreTrainedModel, PreTrainedModel], share: bool, rows: list[list[int]], row_multiple: int
) -> None:
    padded, packed = models
    with torch.no_grad():
        expected = _padded_logits(padded, rows)
        got = _packed_logits(packed, rows, share=share, row_multiple=row_multiple)
        # The packing model runs padded batches through SDPA exactly as the plain one does.
        torch.testing.assert_close(_padded_logits(packed, rows), expected, atol=0, rtol=0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rows", [PAIRS, COMMON_PREFIX_PAIRS], ids=["pairs", "common_prefix"])
def test_packed_gradients_equal_padded_rows_through_lora(
    models: tuple[PreTrainedModel, PreTrainedModel], rows: list[list[int]]
) -> None:
    """A shared prefix gets the gradient of every row reading it: LoRA gradients equal the padded pass's."""
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
                      lora_dropout=0.0, init_lora_weights=False)  # fmt: skip
    grads = []
    shared = lambda m, r: _packed_logits(m, r, share=True)  # noqa: E731
    for model, run in ((models[0], _padded_logits), (models[1], shared)):
        torch.manual_seed(3)
        peft_model = get_peft_model(model, lora)
        logits = run(peft_model, rows)
        (logits[:, 0] - 2 * logits[:, 1]).pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad})
        peft_model.unload()  # the module-scoped models leave without adapters
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 2 * 5 * 2
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("row_multiple", [0, 16], ids=["varlen_path", "whole_rows"])
def test_score_packed_equals_score_sequences(
    models: tuple[PreTrainedModel, PreTrainedModel], row_multiple: int
) -> None:
    from arena_assets.ranker.head import LetterHead

    padded, packed = LetterHead(models[0], LETTERS), LetterHead(models[1], LETTERS)
    cpu = torch.device("cpu")
    expected = score_sequences(padded, PAIRS, pad_token_id=0, token_budget=32, max_batch_rows=4, device=cpu)
    got, shared = score_packed(packed, PAIRS, pairs=True, token_budget=20, device=cpu,
                               row_multiple=row_multiple)  # fmt: skip
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), atol=1e-5, rtol=0)
    assert shared == 4 + 3 + 0


def test_packed_rows_need_the_packing_model(models: tuple[PreTrainedModel, PreTrainedModel]) -> None:
    with pytest.raises(ValueError, match="pack_sequences"):
        _packed_logits(models[0], PAIRS, share=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the kernels of interest run on CUDA")
def test_sdpa_on_gathered_rows_equals_rows_alone_on_the_gpu() -> None:
    """bf16 at the 14B shape, each attention sequence gathered whole for SDPA (cuDNN's kernel on Hopper),
    against fp32 rows computed alone."""
    rows = [[1] * 300 + [2] * 500 + [3] * 700, [1] * 300 + [3] * 700 + [2] * 500, [4] * 90, [4] * 60 + [5]]
    per_row, packed, layout = _attention_inputs(rows, "cuda", torch.bfloat16, 40, 8, 128, row_multiple=128)
    with torch.no_grad():
        got, _ = packed_attention(torch.nn.Module(), *packed, layout.to("cuda"))
    expected = _rows_attention(*([t.float() for t in part] for part in per_row), rows)
    assert layout.row_width == 1536 and got.shape[1] == len(expected)
    torch.testing.assert_close(got[0].float(), expected, atol=2e-2, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch's varlen kernel runs on CUDA")
def test_varlen_kernel_equals_whole_rows_on_the_gpu() -> None:
    """bf16, 40 query heads over 8 key heads as in Qwen2.5-14B, PyTorch's varlen flash kernel, against fp32
    rows computed alone; and its gradients against the per-sequence SDPA path's."""
    rows = [[1] * 300 + [2] * 500 + [3] * 700, [1] * 300 + [3] * 700 + [2] * 500, [4] * 90, [4] * 60 + [5]]
    per_row, packed, layout = _attention_inputs(rows, "cuda", torch.bfloat16, 40, 8, 128)
    layout = layout.to("cuda")
    got, _ = packed_attention(torch.nn.Module(), *packed, layout)
    expected = _rows_attention(*([t.float() for t in part] for part in per_row), rows)
    assert got.shape[1] == len(expected)
    torch.testing.assert_close(got[0].float(), expected, atol=2e-2, rtol=0)
    weight = torch.randn(got.shape[1:], device="cuda")
    grads = []
    for attention in (packed_attention, _per_sequence_reference):
        inputs = [t.detach().float().requires_grad_() for t in packed]
        cast = [t.to(torch.bfloat16) for t in inputs] if attention is packed_attention else inputs
        out, _ = attention(torch.nn.Module(), *cast, layout)
        (out[0].float() * weight).sum().backward()
        grads.append([t.grad for t in inputs])
    for name, got_grad, reference in zip("qkv", *grads, strict=True):
        torch.testing.assert_close(got_grad, reference, atol=3e-2 * reference.abs().max().item(), rtol=0,
                                   msg=name)  # fmt: skip


def _per_sequence_reference(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: PackedLayout
) -> tuple[torch.Tensor, None]:
    """packed_attention's CPU path, on whatever device the inputs are."""
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    k, v = (t.index_select(0, layout.kv_index) for t in (k, v))
    return _per_sequence_attention(q, k, v, layout, None).unsqueeze(0), None
