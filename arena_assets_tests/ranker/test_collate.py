"""Swap-pair batching, sharding and padding with exact tensors."""

from __future__ import annotations

import random

import pytest
import torch

from arena_assets.ranker.collate import (
    collate_rows,
    pair_batches,
    pair_rows,
    shard_batches,
)


def _skewed_lengths(count: int) -> list[int]:
    """Mostly short pairs with a long tail, like arena conversations."""
    rng = random.Random(1)
    return [int(rng.lognormvariate(5.5, 1.0)) + 8 for _ in range(count)]


def test_every_pair_once_and_last_incomplete_batch_kept() -> None:
    batches = pair_batches(_skewed_lengths(103), 4, seed=3)
    assert sorted(p for batch in batches for p in batch) == list(range(103))
    assert sorted(len(batch) for batch in batches) == [3] + [4] * 25


@pytest.mark.parametrize("group_by_length", [True, False])
def test_deterministic_by_seed_and_epoch(group_by_length: bool) -> None:
    lengths = _skewed_lengths(200)
    make = lambda seed, epoch: pair_batches(  # noqa: E731
        lengths, 4, seed=seed, epoch=epoch, group_by_length=group_by_length, mega_batch_size=8
    )
    assert make(0, 0) == make(0, 0)
    assert make(0, 0) != make(1, 0)
    assert make(0, 0) != make(0, 1)


def test_length_grouping_sorts_within_mega_batches() -> None:
    lengths = _skewed_lengths(64)
    batches = pair_batches(lengths, 2, seed=0, mega_batch_size=4)
    for batch in batches:  # each batch is a contiguous slice of a descending sort
        assert [lengths[p] for p in batch] == sorted((lengths[p] for p in batch), reverse=True)


def _padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    padded = sum(len(batch) * max(lengths[p] for p in batch) for batch in batches)
    return 1.0 - sum(lengths) / padded


def test_length_grouping_reduces_padding() -> None:
    lengths = _skewed_lengths(2000)
    grouped = pair_batches(lengths, 8, seed=0)
    random_order = pair_batches(lengths, 8, seed=0, group_by_length=False)
    assert _padding_share(lengths, grouped) < 0.2
    assert _padding_share(lengths, random_order) > 0.4


def test_pair_rows_keeps_both_orders_adjacent() -> None:
    assert pair_rows([3, 0, 5]) == [6, 7, 0, 1, 10, 11]
    assert pair_rows([]) == []


def test_batches_hold_whole_pairs() -> None:
    for batch in pair_batches(_skewed_lengths(50), 3, seed=0):
        rows = pair_rows(batch)
        assert len(rows) == 2 * len(batch)
        for first, second in zip(rows[::2], rows[1::2], strict=True):
            assert first % 2 == 0 and second == first + 1


@pytest.mark.parametrize("num_processes", [1, 2, 3, 4])
def test_shards_are_equal_disjoint_and_strided(num_processes: int) -> None:
    batches = [[i] for i in range(10)]
    shards = [
        shard_batches(batches, num_processes=num_processes, process_index=r) for r in range(num_processes)
    ]
    per_rank = 10 // num_processes
    assert all(len(shard) == per_rank for shard in shards)
    assert shards[0] == batches[0 : per_rank * num_processes : num_processes]
    flat = [b[0] for shard in shards for b in shard]
    assert len(flat) == len(set(flat)) == per_rank * num_processes


def test_shard_exact_assignment() -> None:
    batches = [[0], [1], [2], [3], [4]]
    assert shard_batches(batches, num_processes=2, process_index=0) == [[0], [2]]
    assert shard_batches(batches, num_processes=2, process_index=1) == [[1], [3]]


def test_shard_rejects_bad_rank_and_too_few_batches() -> None:
    with pytest.raises(ValueError, match="process_index"):
        shard_batches([[0]], num_processes=2, process_index=2)
    with pytest.raises(ValueError, match="cannot be shared"):
        shard_batches([[0]], num_processes=2, process_index=0)
    assert shard_batches([], num_processes=2, process_index=1) == []


def test_collate_right_padding_with_labels() -> None:
    batch = collate_rows(
        [{"input_ids": [5, 6, 7], "label": 0}, {"input_ids": [8, 9], "label": 1}], pad_token_id=0
    )
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [8, 9, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([0, 1]))
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == batch["labels"].dtype == torch.long


def test_collate_left_padding_with_teacher_logits() -> None:
    features = [
        {"input_ids": [5], "teacher_logits": [0.5, -0.5]},
        {"input_ids": [8, 9, 4], "teacher_logits": [-1.0, 2.0]},
    ]
    batch = collate_rows(features, pad_token_id=99, padding_side="left")
    assert set(batch) == {"input_ids", "attention_mask", "teacher_logits"}
    assert torch.equal(batch["input_ids"], torch.tensor([[99, 99, 5], [8, 9, 4]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[0, 0, 1], [1, 1, 1]]))
    assert batch["teacher_logits"].dtype == torch.float32
    assert torch.equal(batch["teacher_logits"], torch.tensor([[0.5, -0.5], [-1.0, 2.0]]))


def test_collate_scoring_rows_have_no_targets() -> None:
    batch = collate_rows([{"input_ids": [1, 2]}, {"input_ids": [3, 4]}], pad_token_id=0)
    assert set(batch) == {"input_ids", "attention_mask"}
    assert int(batch["attention_mask"].sum()) == 4


def test_collate_rejects_malformed_features() -> None:
    with pytest.raises(ValueError, match="1 of 2 features carry 'label'"):
        collate_rows([{"input_ids": [1], "label": 0}, {"input_ids": [2]}], pad_token_id=0)
    with pytest.raises(ValueError, match="2 values"):
        collate_rows([{"input_ids": [1], "teacher_logits": [0.1, 0.2, 0.3]}], pad_token_id=0)
    with pytest.raises(ValueError, match="empty"):
        collate_rows([{"input_ids": []}], pad_token_id=0)
    with pytest.raises(ValueError, match="padding_side"):
        collate_rows([{"input_ids": [1]}], pad_token_id=0, padding_side="middle")
