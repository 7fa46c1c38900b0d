"""The last decoder layer computed only at the positions the letter head reads.

The head reads one hidden state a row: the last layer's output at the row's last token. The layer's other
positions feed nothing but their keys and values, which that token attends to. So the last layer's query
and output projections and its MLP (96% of its matmuls at the 14B shape, 2% of the model's) run on the read
positions alone and put their rows into zeros of the full shape; the norms, keys, values and attention keep
every position. What the head reads is unchanged up to the matmuls' summation order; the positions it does
not read carry the residual stream without the last layer's update, and nothing reads them.

    watch_head_rows(decoder)            # once the last layer's modules are final; again after replacing them
    decoder(..., head_rows=positions)   # [R] long: the read positions in the flattened [B * T] inputs

Without `head_rows` a watched decoder computes every position, as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_STATE = "_arena_head_rows"


class _ReadRows:
    """The positions of the pass in flight, shared by the hooks of one decoder."""

    def __init__(self) -> None:
        self.positions: torch.Tensor | None = None
        self.handles: list[Any] = []


def watch_head_rows(decoder: nn.Module) -> bool:
    """Hook the decoder's last layer to compute its queries, output projection and MLP at `head_rows` only;
    returns whether it could. A last layer that recomputes in backward is left alone (its replay would need
    the positions of its own pass), as is one without Qwen2/Llama's `self_attn.q_proj`, `o_proj` and `mlp`."""
    layer = decoder.layers[-1]
    attention = getattr(layer, "self_attn", None)
    modules = [getattr(attention, "q_proj", None), getattr(attention, "o_proj", None)]
    modules.append(getattr(layer, "mlp", None))
    unwatch_head_rows(decoder)
    if getattr(layer, "gradient_checkpointing", False) or any(m is None for m in modules):
        return False
    state = _ReadRows()

    def take_positions(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        state.positions = kwargs.pop("head_rows", None)
        return args, kwargs

    state.handles.append(decoder.register_forward_pre_hook(take_positions, with_kwargs=True))
    for module in modules:
        state.handles.append(module.register_forward_pre_hook(_read_rows_in(state)))
        state.handles.append(module.register_forward_hook(_rows_into_place(state)))
    setattr(decoder, _STATE, state)
    return True


def unwatch_head_rows(decoder: nn.Module) -> None:
    """Remove `watch_head_rows`'s hooks, if any."""
    state = getattr(decoder, _STATE, None)
    if state is not None:
        for handle in state.handles:
            handle.remove()
        delattr(decoder, _STATE)


def watches_head_rows(decoder: nn.Module) -> bool:
    return getattr(decoder, _STATE, None) is not None


def _read_rows_in(state: _ReadRows):
    def hook(module: nn.Module, args: tuple) -> tuple | None:
        if state.positions is None or not args:
            return None
        x = args[0]
        module._arena_full_shape = x.shape[:-1]
        rows = x.reshape(-1, x.shape[-1]).index_select(0, state.positions.to(x.device))
        return (rows.unsqueeze(0), *args[1:])

    return hook


def _rows_into_place(state: _ReadRows):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        shape = module.__dict__.pop("_arena_full_shape", None)
        if shape is None:
            return None
        rows = output.reshape(-1, output.shape[-1])
        full = rows.new_zeros(shape.numel(), rows.shape[-1])
        return full.index_copy(0, state.positions.to(rows.device), rows).view(*shape, rows.shape[-1])

    return hook
