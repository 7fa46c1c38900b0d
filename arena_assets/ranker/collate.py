"""Swap-pair batching and padding.

Dataset rows come as adjacent pairs: rows 2k and 2k+1 are one (prompt, A, B) and its A/B swap with the
label flipped. Batches are built from pair indices so both orders of a pair always share a batch, and are
grouped by length so padding stays a small share of the tokens processed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from arena_assets.ranker.config import TrainConfig

# Keys a feature may carry besides input_ids, and the tensors they become.
_LABEL = "label"
_TEACHER = "teacher_logits"


def pair_batches(
    pair_lengths: Sequence[int],
    pairs_per_batch: int,
    *,
    seed: int,
    epoch: int = 0,
    group_by_length: bool = True,
    mega_batch_size: int = 64,
) -> list[list[int]]:
    """Batches of pair indices: shuffled, length-sorted within mega-batches, batch order shuffled.

    `pair_lengths[p]` is the token length of pair p (the longer of its two rows). Every pair appears once;
    the last, incomplete batch is kept. Same (seed + epoch) gives the same batches.
    """
    if pairs_per_batch < 1 or mega_batch_size < 1:
        raise ValueError(
            f"pairs_per_batch and mega_batch_size must be >= 1, got {pairs_per_batch}, {mega_batch_size}"
        )
    rng = random.Random(seed + epoch)
    order = list(range(len(pair_lengths)))
    rng.shuffle(order)
    if group_by_length:
        # Sorting only within a window of mega_batch_size batches keeps randomness across the epoch
        # while batches hold similar lengths (the scheme of transformers' LengthGroupedSampler).
        window = mega_batch_size * pairs_per_batch
        order = [
            pair
            for start in range(0, len(order), window)
            for pair in sorted(order[start : start + window], key=lambda p: pair_lengths[p], reverse=True)
        ]
    batches = [order[start : start + pairs_per_batch] for start in range(0, len(order), pairs_per_batch)]
    rng.shuffle(batches)
    return batches


def shard_batches(
    batches: list[list[int]],
    *,
    num_processes: int,
    process_index: int,
    costs: Sequence[float] | None = None,
) -> list[list[int]]:
    """Rank r's share of one step's micro-batches: as many for every rank, the heaviest balanced out.

    Under DDP every rank must run as many forward passes, or the ranks deadlock in the gradient all-reduce,
    so the tail is dropped (at most N-1 batches). A step lasts as long as its busiest rank, so with `costs`
    (a batch's padded tokens) the batches go heaviest first to the least-loaded rank that still has room
    (longest-processing-time scheduling); with equal costs that is batches r, r+N, r+2N, ... for rank r.
    Every rank computes the same assignment, and a rank's batches keep their order in the step.
    """
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index must be in [0, {num_processes}), got {process_index}")
    per_rank = len(batches) // num_processes
    if batches and per_rank == 0:
        raise ValueError(f"{len(batches)} batches cannot be shared among {num_processes} processes")
    kept = range(per_rank * num_processes)
    weight = [1.0] * len(kept) if costs is None else [float(costs[i]) for i in kept]
    load, count = [0.0] * num_processes, [0] * num_processes
    mine = []
    for index in sorted(kept, key=lambda i: -weight[i]):  # stable: equal costs keep the step's order
        rank = min((r for r in range(num_processes) if count[r] < per_rank), key=lambda r: load[r])
        load[rank] += weight[index]
        count[rank] += 1
        if rank == process_index:
            mine.append(index)
    return [batches[i] for i in sorted(mine)]


def pair_rows(pair_indices: Sequence[int]) -> list[int]:
    """Dataset row indices of the given pairs: [2p, 2p + 1 for each p]."""
    return [row for pair in pair_indices for row in (2 * pair, 2 * pair + 1)]


def collate_rows(
    features: list[dict[str, Any]], *, pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad rows into tensors; `labels` / `teacher_logits` are returned when every feature carries them.

    Example, pad_token_id=0, padding_side="right":

        features = [{"input_ids": [5, 6, 7], "label": 0}, {"input_ids": [8, 9], "label": 1}]
        -> input_ids      [[5, 6, 7], [8, 9, 0]]
           attention_mask [[1, 1, 1], [1, 1, 0]]
           labels         [0, 1]
        (padding_side="left" gives [[5, 6, 7], [0, 8, 9]] and mask [[1, 1, 1], [0, 1, 1]].)

    Shapes: input_ids [B, L] long, attention_mask [B, L] long, labels [B] long (0 = A wins, 1 = B wins),
    teacher_logits [B, 2] float32.
    """
    if not features:
        raise ValueError("collate_rows got no features")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    lengths = [len(feature["input_ids"]) for feature in features]
    if min(lengths) == 0:
        raise ValueError("a feature has empty input_ids; the head needs a last real token")
    width = max(lengths)
    input_ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, (feature, length) in enumerate(zip(features, lengths, strict=True)):
        span = slice(0, length) if padding_side == "right" else slice(width - length, width)
        input_ids[row, span] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
        attention_mask[row, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, **collate_targets(features)}


def collate_targets(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """`labels` [B] long and / or `teacher_logits` [B, 2] float32, for the keys every feature carries."""
    batch = {}
    if _has_key(features, _LABEL):
        batch["labels"] = torch.tensor([int(feature[_LABEL]) for feature in features], dtype=torch.long)
    if _has_key(features, _TEACHER):
        teacher = [list(feature[_TEACHER]) for feature in features]
        if any(len(values) != 2 for values in teacher):
            raise ValueError(f"teacher_logits must hold 2 values per row, got {teacher}")
        batch["teacher_logits"] = torch.tensor(teacher, dtype=torch.float32)
    return batch


def _has_key(features: list[dict[str, Any]], key: str) -> bool:
    """Whether every feature has `key`; a batch where only some do is a data bug, so it raises."""
    present = sum(key in feature for feature in features)
    if 0 < present < len(features):
        raise ValueError(f"{present} of {len(features)} features carry {key!r}; expected all or none")
    return present == len(features)


def plan_steps(config: TrainConfig, lengths: np.ndarray, *, num_processes: int) -> list[list[list[int]]]:
    """Every optimizer step as its micro-batches of row indices (a row and its swap adjacent), in order.

    The steps do not depend on `num_processes`: step s holds the same global_batch_size /
    per_device_batch_size micro-batches for any N, and each process runs as many of them, balanced by
    padded tokens (`shard_batches`). Epochs are joined before they are cut into steps. Only the last step
    can be short; it keeps a multiple of N micro-batches (at most N-1 are dropped per run), since every
    process must run as many forward passes. With `micro_batch_tokens` the micro-batches are cut by padded
    tokens instead (`token_budget_micro_batches`).
    """
    if config.micro_batch_tokens > 0:
        return _plan_token_budget_steps(config, lengths, num_processes=num_processes)
    pairs_per_batch = config.per_device_batch_size // 2
    per_step = config.accumulation_steps(num_processes) * num_processes
    pair_lengths = np.maximum(lengths[0::2], lengths[1::2]).tolist()
    batches: list[list[int]] = []
    enough = lambda: len(batches) >= config.max_steps * per_step  # noqa: E731
    for epoch_batches in _epochs_of_pair_batches(config, pair_lengths, pairs_per_batch, enough=enough):
        batches.extend(pair_rows(b) for b in epoch_batches)
    steps = [batches[start : start + per_step] for start in range(0, len(batches), per_step)]
    if steps:
        steps[-1] = steps[-1][: len(steps[-1]) // num_processes * num_processes]
        if not steps[-1]:
            steps.pop()
    if batches and not steps:
        raise ValueError(f"{len(batches)} micro-batches cannot be shared among {num_processes} processes")
    return steps


def token_budget_micro_batches(
    pairs: Sequence[int], pair_lengths: Sequence[int], *, budget: int, num_processes: int
) -> list[list[int]]:
    """One step's pairs as micro-batches of row indices, each at most `budget` padded tokens (a pair
    longer than that alone), their count a multiple of `num_processes`.

    Longest first, each pair joins the open micro-batch while its rows times the longest row fit the
    budget: short rows share a forward pass, long ones keep it to themselves. Then the fullest micro-batch
    is halved until every process gets as many; a step of fewer pairs than processes keeps none.
    """
    batches: list[list[int]] = []
    for pair in sorted(pairs, key=lambda p: -pair_lengths[p]):
        if batches and 2 * (len(batches[-1]) + 1) * pair_lengths[batches[-1][0]] <= budget:
            batches[-1].append(pair)
        else:
            batches.append([pair])
    while len(batches) % num_processes and max(map(len, batches)) > 1:
        fullest = max(range(len(batches)), key=lambda i: len(batches[i]))
        half = len(batches[fullest]) // 2
        batches[fullest : fullest + 1] = [batches[fullest][:half], batches[fullest][half:]]
    batches = batches[: len(batches) // num_processes * num_processes]
    return [pair_rows(batch) for batch in batches]


def _plan_token_budget_steps(
    config: TrainConfig, lengths: np.ndarray, *, num_processes: int
) -> list[list[list[int]]]:
    """plan_steps with `micro_batch_tokens`: steps of global_batch_size rows, pairs of similar length in a
    step (length-grouped like the micro-batches of the fixed-size plan), cut by the token budget."""
    pairs_per_step = config.global_batch_size // 2
    if pairs_per_step < num_processes:
        raise ValueError(
            f"global_batch_size {config.global_batch_size} holds {pairs_per_step} swap pairs, fewer than "
            f"the {num_processes} processes that each need one"
        )
    pair_lengths = np.maximum(lengths[0::2], lengths[1::2]).tolist()
    steps: list[list[list[int]]] = []
    enough = lambda: len(steps) >= config.max_steps  # noqa: E731
    for epoch_steps in _epochs_of_pair_batches(config, pair_lengths, pairs_per_step, enough=enough):
        for pairs in epoch_steps:
            micro_batches = token_budget_micro_batches(
                pairs, pair_lengths, budget=config.micro_batch_tokens, num_processes=num_processes
            )
            if micro_batches:  # an epoch's short last step with fewer pairs than processes is left out
                steps.append(micro_batches)
    return steps


def _epochs_of_pair_batches(
    config: TrainConfig, pair_lengths: list[int], pairs_per_batch: int, *, enough: Callable[[], bool]
) -> Iterator[list[list[int]]]:
    """Each epoch's `pair_batches`, a fractional last epoch cut short; with epochs == 0, "as many epochs as
    max_steps needs": epochs until `enough()`, asked after the caller has taken the previous one."""
    epoch = 0
    while epoch < config.epochs or (config.epochs <= 0 and not enough()):
        epoch_batches = pair_batches(
            pair_lengths,
            pairs_per_batch,
            seed=config.seed,
            epoch=epoch,
            group_by_length=config.group_by_length,
        )
        if config.epochs > 0 and epoch + 1 > config.epochs:  # a fractional last epoch
            epoch_batches = epoch_batches[: int(len(epoch_batches) * (config.epochs - epoch))]
        if not epoch_batches:
            return
        yield epoch_batches
        epoch += 1


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`; to a GPU through pinned memory, without waiting. A copy from ordinary (pageable)
    memory first waits until the GPU has run everything queued before it, so each batch's inputs would
    leave the GPU idle while the CPU queues the forward pass."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
