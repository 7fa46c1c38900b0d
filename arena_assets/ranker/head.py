"""Letter logits without the full vocabulary: last real hidden state x the two lm_head rows of " A", " B";
the LetterHead module around a (peft) causal LM, and its batched no-grad forward over encoded rows.

For Qwen2.5-14B a full-vocabulary logit row is 152,064 floats per position; the ranker needs two numbers
per row, so it runs the decoder alone and multiplies one hidden state per row by two weight rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from arena_assets.ranker.collate import collate_rows, to_device
from arena_assets.ranker.head_rows import watch_head_rows, watches_head_rows
from arena_assets.ranker.packing import ATTENTION_NAME, PackedLayout, pack_rows, packed_groups, row_groups
from arena_assets.ranker.residual_matmul import add_residual_in_matmuls

# Attention implementations that run causally when they are given no mask.
CAUSAL_WITHOUT_MASK = frozenset({"sdpa", "flash_attention_2"})


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row of a [B, L] mask -> [B] long; left or right padding."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.bool()).amax(dim=-1)


def _flat_positions(input_ids: torch.Tensor, last: torch.Tensor | int) -> torch.Tensor:
    """Each row's read position `last` ([B], or one for all rows) in [B, L] inputs flattened to [B * L]."""
    rows, length = input_ids.shape
    return torch.arange(rows, device=input_ids.device) * length + last


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, [B, L] -> [B, L] long.

    A plain forward numbers positions 0..L-1 whatever the mask, so a left-padded row would see its tokens
    at shifted rotary positions; counting real tokens gives every row the same positions under any padding.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def _causal_lm(model: nn.Module) -> nn.Module:
    """The `*ForCausalLM` inside `model` (a peft `PeftModel` or the causal LM itself)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        # DDP syncs gradients only for work done through its own forward; reaching inside it would
        # silently train each rank alone. Wrap a module whose forward calls this function
        # (modeling.LetterHead) and hand that to DDP.
        raise TypeError(
            "letter_logits got a DistributedDataParallel model; wrap a module that calls it instead"
        )
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def letter_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | PackedLayout | None,
    letter_ids: tuple[int, int] | torch.Tensor,
) -> torch.Tensor:
    """Next-token logits of the two letters at each row's last real token -> [rows, 2] float32.

    Rows padded into [B, L] inputs with a [B, L] mask; rows of one length with no mask (None); or packed
    into [1, T] inputs with their `PackedLayout` (ranker/packing.py; the model loaded with its attention
    implementation). `letter_ids` as a tensor on the head's device spares a copy to the device per call.
    """
    causal_lm = _causal_lm(model)
    lm_head = causal_lm.get_output_embeddings()
    if hasattr(lm_head, "base_layer"):
        raise ValueError("lm_head carries an adapter, which letter_logits would bypass; leave it untargeted")
    decoder = causal_lm.get_decoder()  # `.model` of a *ForCausalLM
    if isinstance(attention_mask, PackedLayout):
        layout = attention_mask
        if decoder.config._attn_implementation != ATTENTION_NAME:
            raise ValueError(
                f"packed rows need the model loaded for them (attention {ATTENTION_NAME!r}), not "
                f"{decoder.config._attn_implementation!r}: set pack_sequences in the config"
            )
        # A mask per layer kind, which the decoder passes on as it is: the layout, not a mask to build.
        masks: Any = {kind: layout for kind in set(decoder.config.layer_types)}
        positions = layout.position_ids
        read = layout.last_index.to(input_ids.device)  # [R] positions in the packed [1, T]
    elif attention_mask is None and decoder.config._attn_implementation in CAUSAL_WITHOUT_MASK:
        # Rows of one length: the attention kernels' own causal mode, with no mask to build or to check
        # for padding (a check that reads the GPU, and that a CUDA graph's capture forbids). A decoder with
        # layer kinds (Qwen2) takes a mask per kind as it is; one without (Llama) finds none to build.
        layer_types = getattr(decoder.config, "layer_types", None)
        masks = {kind: None for kind in set(layer_types)} if layer_types else None
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape)
        read = _flat_positions(input_ids, input_ids.shape[1] - 1)
    else:
        if attention_mask is None:  # an attention without a causal mode of its own needs the mask
            attention_mask = torch.ones_like(input_ids)
        masks = attention_mask
        positions = position_ids_from_mask(attention_mask)
        read = _flat_positions(input_ids, last_token_index(attention_mask))
    watched = {"head_rows": read} if watches_head_rows(decoder) else {}
    hidden = decoder(
        input_ids=input_ids, attention_mask=masks, position_ids=positions, use_cache=False, **watched
    ).last_hidden_state  # [B, L, H]
    # .to(): under a device map the last layer (and so `hidden`) may sit on another GPU than the inputs.
    last = hidden.reshape(-1, hidden.shape[-1]).index_select(0, read.to(hidden.device))  # [rows, H]
    index = torch.as_tensor(letter_ids, device=lm_head.weight.device)
    # .to(): under a device map the head and the last layer may sit on different GPUs.
    weight = lm_head.weight.index_select(0, index).to(last.device)  # [2, H]
    bias = lm_head.bias.index_select(0, index).to(last.device) if lm_head.bias is not None else None
    # Two dot products per row cost nothing, so they run in fp32 even under autocast: the loss sees
    # logits at full precision.
    with torch.autocast(device_type=last.device.type, enabled=False):
        logits = last.float() @ weight.float().T
        if bias is not None:
            logits = logits + bias.float()
    return logits


class LetterHead(nn.Module):
    """Wraps a (peft) causal LM so that forward returns the two letter logits [B, 2].

    DDP hooks run on a module's forward, so the letter head itself is the module accelerate wraps. With
    `head_rows_only` the last decoder layer computes only what the head reads (ranker/head_rows.py); with
    `residual_in_matmul` the layers add their residual inside their output matmuls when run without
    gradients (ranker/residual_matmul.py).
    """

    def __init__(
        self,
        model: nn.Module,
        letter_ids: tuple[int, int],
        *,
        head_rows_only: bool = False,
        residual_in_matmul: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        # On the module's device once it is moved there, so no forward copies the ids to it.
        self.register_buffer("letter_index", torch.tensor(letter_ids), persistent=False)
        if head_rows_only:
            self.watch_head_rows()
        if residual_in_matmul:
            add_residual_in_matmuls(_causal_lm(model).get_decoder())

    def watch_head_rows(self) -> bool:
        """The last layer computed at the read positions only; call again after replacing its modules
        (fp8's quantization). Returns whether the layer takes it (head_rows.watch_head_rows)."""
        return watch_head_rows(_causal_lm(self.model).get_decoder())

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | PackedLayout | None
    ) -> torch.Tensor:
        return letter_logits(self.model, input_ids, attention_mask, self.letter_index)


def length_sorted_batches(lengths: list[int], *, token_budget: int, max_batch_rows: int) -> list[list[int]]:
    """Row indices grouped longest-first so each batch's padded size stays within `token_budget`."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        if current and ((len(current) + 1) * width > token_budget or len(current) >= max_batch_rows):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def padded_tokens(lengths: list[int] | np.ndarray, *, token_budget: int, max_batch_rows: int) -> int:
    """Pad positions that `score_sequences` adds to rows of these lengths (its batches, right-padded)."""
    lengths = [int(n) for n in lengths]
    return sum(
        len(batch) * max(lengths[i] for i in batch) - sum(lengths[i] for i in batch)
        for batch in length_sorted_batches(lengths, token_budget=token_budget, max_batch_rows=max_batch_rows)
    )


@torch.no_grad()
def score_sequences(
    head: torch.nn.Module,
    input_ids: list[list[int]],
    *,
    pad_token_id: int,
    token_budget: int,
    max_batch_rows: int,
    device: torch.device,
    after_pass: Callable[[], None] | None = None,
) -> np.ndarray:
    """Letter logits [N, 2] (float32) for encoded sequences, in their original order; `after_pass` is
    called after each forward pass (a profiler's step)."""
    lengths = [len(ids) for ids in input_ids]
    batches = []
    for batch_rows in length_sorted_batches(
        lengths, token_budget=token_budget, max_batch_rows=max_batch_rows
    ):
        batch = collate_rows([{"input_ids": input_ids[i]} for i in batch_rows], pad_token_id=pad_token_id)
        logits = head(to_device(batch["input_ids"], device), to_device(batch["attention_mask"], device))
        batches.append((batch_rows, logits.float()))
        if after_pass is not None:
            after_pass()
    return in_row_order(len(input_ids), batches)


@torch.no_grad()
def score_packed(
    head: torch.nn.Module,
    input_ids: list[list[int]],
    *,
    pairs: bool,
    token_budget: int,
    device: torch.device,
    after_pass: Callable[[], None] | None = None,
    row_multiple: int = 0,
) -> tuple[np.ndarray, int]:
    """Letter logits [N, 2] (float32) for encoded sequences packed `token_budget` row tokens a forward pass,
    in their original order, and the row tokens the shared prefixes saved. With `pairs`, rows 2i and 2i + 1
    (a row and its swap) share a pass and their common prefix. `row_multiple`: attention through SDPA on
    whole rows (ranker/packing.py's `row_attention`)."""
    lengths = [len(ids) for ids in input_ids]
    shared, batches = 0, []
    groups = (
        row_groups(lengths, token_budget=token_budget, pairs=pairs, multiple=row_multiple)
        if row_multiple
        else packed_groups(lengths, token_budget=token_budget, pairs=pairs)
    )
    for group in groups:
        rows = [input_ids[i] for i in group]
        tokens, layout = pack_rows(rows, share_pair_prefix=pairs, row_multiple=row_multiple)
        logits = head(to_device(torch.tensor([tokens]), device), layout.to(device))
        batches.append((group, logits.float()))
        shared += layout.shared_tokens
        if after_pass is not None:
            after_pass()
    return in_row_order(len(input_ids), batches), shared


def in_row_order(count: int, batches: list[tuple[Sequence[int], torch.Tensor]]) -> np.ndarray:
    """[count, 2] float32 logits from (rows, logits on the device) batches. Read once at the end, so the
    CPU prepares and queues the next batches while the GPU runs (reading a batch waits for the GPU)."""
    out = np.zeros((count, 2), dtype=np.float32)
    if batches:
        rows = np.concatenate([np.asarray(rows, dtype=np.int64) for rows, _ in batches])
        out[rows] = torch.cat([logits for _, logits in batches]).cpu().numpy()
    return out
