"""Packed forward passes: a micro-batch's rows end to end in one sequence, no padding, and the prefixes
rows share computed once: the system prompt all rows begin with, and what a row shares with its A/B swap
(the query, the first response's opening tag).

    tokens, layout = pack_rows([row, swap, row2, swap2], share_pair_prefix=True)
    head(torch.tensor([tokens]), layout)  # LetterHead: the letter logits of the four rows, in order

A row that shares a prefix continues from its end: its positions start where the prefix ends, and its
attention reads the prefix's keys and values (gathered again) and its own, never another row's. So every
linear layer sees a prefix once, and no position is padding.

The layout reaches each attention layer as the decoder's attention mask, where `packed_attention` reads it:
PyTorch's varlen flash kernel on a GPU, per-sequence SDPA elsewhere; or, for a layout packed with
`row_multiple` (the scorer's `sdpa_row_multiple`), SDPA on each row gathered whole (`row_attention`). A
padded batch (a mask tensor) goes to transformers' SDPA unchanged, so one loaded model serves both.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from arena_assets.ranker.collate import to_device

# The attention implementation a model loads with for packed rows (`attention_implementation` registers it).
ATTENTION_NAME = "arena_packed"


def attention_implementation() -> str:
    """The name to load a model with for packed rows, registered with transformers (again is harmless).

    Padded batches build the mask SDPA takes; packed ones pass their layout in place of a mask.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, packed_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


@dataclass(frozen=True)
class PackedLayout:
    """Where each row of a packed sequence of T positions lies, in the forms the attention kernel reads.

    An attention sequence is a row: its queries are the positions it computes itself, its keys those of the
    prefix it shares with an earlier row (none for the first row), then its own. Queries are the packed
    positions in order, so the query offsets are cumulative; keys are gathered by `kv_index`.
    """

    position_ids: torch.Tensor  # [1, T] long: each token's position within its row
    last_index: torch.Tensor  # [R] long: packed position of each row's last token, in row order
    cu_seq_q: torch.Tensor  # [S + 1] int32: query offsets of the S attention sequences
    cu_seq_k: torch.Tensor  # [S + 1] int32: key offsets into the gathered keys
    kv_index: torch.Tensor  # [Tk] long: packed position of each gathered key
    max_q: int
    max_k: int
    shared_tokens: int  # row tokens not recomputed (prefixes computed once for several rows)
    # With pack_rows' `row_multiple`: the attention sequences as the rows of one [S, row_width] batch.
    row_index: torch.Tensor | None = None  # [S * row_width] long: packed position of each slot (padding: 0)
    row_output_index: torch.Tensor | None = None  # [T] long: the slot of each packed position's own query
    row_width: int = 0  # the longest sequence's keys, rounded up to a multiple of `row_multiple`

    def to(self, device: torch.device | str) -> PackedLayout:
        """The layout with its tensors on `device`."""
        moved = {
            f.name: to_device(getattr(self, f.name), device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)


def shared_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    """Leading tokens the two rows share, leaving each at least its last token to compute."""
    limit = min(len(first), len(second)) - 1
    a = np.asarray(first[:limit])
    b = np.asarray(second[:limit])
    differ = np.flatnonzero(a != b)
    return int(differ[0]) if differ.size else max(limit, 0)


def pack_rows(
    rows: Sequence[Sequence[int]], *, share_pair_prefix: bool, row_multiple: int = 0
) -> tuple[list[int], PackedLayout]:
    """One packed token sequence of `rows` and its layout.

    The leading tokens all rows have in common (the system prompt) are computed once, by the first row;
    with `share_pair_prefix`, rows 2i and 2i + 1 (a row and its swap) also share theirs. Any rows may be
    packed; a prefix is whatever tokens they have in common, and each row keeps at least its last token.
    With `row_multiple`, attention gathers each row whole into one padded batch for SDPA instead
    (`row_attention`), its width the longest row rounded up to that multiple.

    Example, rows [5, 6, 7] and [5, 6, 8, 9]: tokens [5, 6, 7, 8, 9], positions [0, 1, 2, 2, 3]; queries
    [0, 3) and [3, 5), keys of the second gathered from positions [0, 1, 3, 4]; last tokens at 2, 4.
    """
    if not rows or min(len(row) for row in rows) == 0:
        raise ValueError("pack_rows needs at least one row, and no empty row")
    if share_pair_prefix and len(rows) % 2:
        raise ValueError(f"share_pair_prefix packs rows in pairs, got {len(rows)} rows")
    common = min((shared_prefix_length(rows[0], row) for row in rows[1:]), default=0)
    tokens: list[int] = []
    positions, keys, last = [], [], []
    query_lengths, key_lengths = [], []
    shared = 0
    for r, row in enumerate(rows):
        # A row continues an earlier one's keys: a swap its pair's first row, any other row the first row.
        if r == 0:
            parent, prefix = 0, 0
        elif share_pair_prefix and r % 2:
            parent, prefix = r - 1, shared_prefix_length(rows[r - 1], row)
        else:
            parent, prefix = 0, common
        begin = len(tokens)
        tokens.extend(row[prefix:])
        own = np.arange(begin, begin + len(row) - prefix)
        positions.append(np.arange(prefix, len(row)))
        keys.append(np.concatenate([keys[parent][:prefix], own]) if prefix else own)
        query_lengths.append(len(own))
        key_lengths.append(len(row))
        last.append(begin + len(own) - 1)
        shared += prefix
    layout = PackedLayout(
        position_ids=torch.from_numpy(np.concatenate(positions)).long().unsqueeze(0),
        last_index=torch.tensor(last, dtype=torch.long),
        cu_seq_q=torch.tensor(np.concatenate([[0], np.cumsum(query_lengths)]), dtype=torch.int32),
        cu_seq_k=torch.tensor(np.concatenate([[0], np.cumsum(key_lengths)]), dtype=torch.int32),
        kv_index=torch.from_numpy(np.concatenate(keys)).long(),
        max_q=max(query_lengths),
        max_k=max(key_lengths),
        shared_tokens=shared,
    )
    if row_multiple:
        layout = _with_row_gathers(layout, keys, query_lengths, row_multiple)
    return tokens, layout


def _with_row_gathers(
    layout: PackedLayout, keys: list[np.ndarray], query_lengths: list[int], multiple: int
) -> PackedLayout:
    """The layout with each attention sequence placed in a row of width its longest rounded up to
    `multiple`: its keys' packed positions, then padding (position 0, whose outputs are dropped)."""
    width = _round_up(layout.max_k, multiple)
    row_index = np.zeros(len(keys) * width, dtype=np.int64)
    row_output_index = np.empty(int(sum(query_lengths)), dtype=np.int64)
    for s, (positions, own) in enumerate(zip(keys, query_lengths, strict=True)):
        start = s * width
        row_index[start : start + len(positions)] = positions
        row_output_index[positions[-own:]] = start + len(positions) - own + np.arange(own)
    return dataclasses.replace(
        layout,
        row_index=torch.from_numpy(row_index),
        row_output_index=torch.from_numpy(row_output_index),
        row_width=width,
    )


def packed_groups(lengths: Sequence[int], *, token_budget: int, pairs: bool) -> list[list[int]]:
    """Row indices grouped longest-first into packs of at most `token_budget` row tokens (whole pairs
    when `pairs`; a pair or row over the budget goes alone)."""
    units = _units(len(lengths), pairs=pairs)
    units.sort(key=lambda unit: -sum(lengths[r] for r in unit))
    groups: list[list[int]] = []
    size = 0
    for unit in units:
        cost = sum(lengths[r] for r in unit)
        if groups and size + cost <= token_budget:
            groups[-1].extend(unit)
            size += cost
        else:
            groups.append(list(unit))
            size = cost
    return groups


def row_groups(lengths: Sequence[int], *, token_budget: int, pairs: bool, multiple: int) -> list[list[int]]:
    """Row indices grouped longest-first for attention on whole rows (`row_attention`): each pack's width is
    its longest row rounded up to `multiple`, and it holds as many rows (whole pairs when `pairs`) as fit
    `token_budget` at that width. So a pack's shape follows from its width alone, and packs of one width
    repeat the shape whose cuDNN plan the first of them built."""
    units = _units(len(lengths), pairs=pairs)
    units.sort(key=lambda unit: -max(lengths[r] for r in unit))
    groups: list[list[int]] = []
    while units:
        width = _round_up(max(lengths[r] for r in units[0]), multiple)
        count = max(1, token_budget // (width * (2 if pairs else 1)))  # units a pack holds
        groups.append([r for unit in units[:count] for r in unit])
        units = units[count:]
    return groups


def _units(count: int, *, pairs: bool) -> list[list[int]]:
    """The rows that go into a pack together: pairs (2i, 2i + 1), or each row alone."""
    step = 2 if pairs else 1
    return [list(range(i, min(i + step, count))) for i in range(0, count, step)]


def _round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | PackedLayout | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: [1, H, T, D] inputs -> [1, T, H, D] for a PackedLayout mask,
    SDPA for anything else."""
    if not isinstance(attention_mask, PackedLayout):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout:
        raise ValueError("packed attention has no attention dropout; set the model's attention_dropout to 0")
    if kwargs.get("sliding_window"):
        raise ValueError("packed attention has no sliding window; this model's config enables one")
    layout = attention_mask
    q = query[0].transpose(0, 1)  # [T, Hq, D]
    if layout.row_index is not None:
        out = row_attention(q, key[0].transpose(0, 1), value[0].transpose(0, 1), layout, scaling)
        return out.unsqueeze(0), None
    k = key[0].transpose(0, 1).index_select(0, layout.kv_index)  # [Tk, Hkv, D]
    v = value[0].transpose(0, 1).index_select(0, layout.kv_index)
    if q.is_cuda:
        out = _varlen_attention(q.contiguous(), k, v, layout, scaling)
    else:
        out = _per_sequence_attention(q, k, v, layout, scaling)
    return out.unsqueeze(0), None


def _varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: PackedLayout, scaling: float | None
) -> torch.Tensor:
    """PyTorch's varlen flash kernel, causal from the end of each sequence's keys (a swap's queries are
    the last of its keys), over the arguments of the installed release (2.10 took `is_causal`, later ones a
    window). The kernel reads grouped-query key heads itself; releases that check the head counts take
    them with `enable_gqa`, earlier ones pass them through unchecked."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError as error:
        raise RuntimeError(
            f"pack_sequences on a GPU needs PyTorch 2.10 or later (torch.nn.attention.varlen); this is "
            f"{torch.__version__}: upgrade torch or set pack_sequences to false"
        ) from error
    accepts = inspect.signature(varlen_attn).parameters
    kwargs: dict[str, object] = {"window_size": (-1, 0)} if "window_size" in accepts else {"is_causal": True}
    if "enable_gqa" in accepts:
        kwargs["enable_gqa"] = True
    return varlen_attn(q, k, v, layout.cu_seq_q, layout.cu_seq_k, layout.max_q, layout.max_k, scale=scaling,
                       **kwargs)  # fmt: skip


def row_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: PackedLayout, scaling: float | None
) -> torch.Tensor:
    """[T, H, D] packed states -> [T, Hq, D]: each attention sequence gathered into a row of one
    [S, row_width] batch and attended by SDPA in its causal mode, then each position's own query's output
    taken back.

    A row is causal from its start, so no mask is needed: padding at its end is read only by the padding's
    own queries, whose outputs are dropped. Only attention pays for the padding and for a swap's prefix
    queries, computed again. On Hopper SDPA runs cuDNN's kernel, about twice the varlen flash kernel; cuDNN
    builds an execution plan for each new shape (about 50 ms of CPU time), which a width rounded up to a
    multiple lets later passes reuse."""
    sequences, width = len(layout.cu_seq_q) - 1, layout.row_width

    def as_rows(states: torch.Tensor) -> torch.Tensor:  # [T, H, D] -> [S, H, width, D]
        taken = _take(states, layout.row_index)
        return taken.view(sequences, width, *taken.shape[1:]).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        as_rows(q), as_rows(k), as_rows(v), is_causal=True, scale=scaling, enable_gqa=True
    )
    out = out.transpose(1, 2).reshape(sequences * width, out.shape[1], out.shape[3])
    return _take(out, layout.row_output_index)


def _take(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """states[index] for [N, H, D] states, gathered by their memory: whole positions, or each head's (a
    transposed [H, N, D] tensor, as rotary embeddings leave queries), where a strided gather is 4x slower."""
    if not states.is_contiguous() and states.transpose(0, 1).is_contiguous():
        return states.transpose(0, 1).index_select(1, index).transpose(0, 1)
    return states.index_select(0, index)


def _per_sequence_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: PackedLayout, scaling: float | None
) -> torch.Tensor:
    """What the varlen kernel computes, one attention sequence at a time with SDPA (on the CPU)."""
    q_offsets, k_offsets = layout.cu_seq_q.tolist(), layout.cu_seq_k.tolist()
    outputs = []
    for s in range(len(q_offsets) - 1):
        qs = q[q_offsets[s] : q_offsets[s + 1]].transpose(0, 1)  # [Hq, Lq, D]
        ks = k[k_offsets[s] : k_offsets[s + 1]].transpose(0, 1)
        vs = v[k_offsets[s] : k_offsets[s + 1]].transpose(0, 1)
        mask = causal_lower_right(qs.shape[1], ks.shape[1])
        out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scaling, enable_gqa=True)
        outputs.append(out.transpose(0, 1))
    return torch.cat(outputs)
