"""Activations that backward rebuilds instead of keeping: a layer's RMSNorm outputs and its SwiGLU product.

Every adapted projection's lora_A keeps its input for its weight gradient: the normed hidden states of the
attention (q, k and v share them) and of the MLP (gate and up), and the SwiGLU product silu(gate) * up
(down). Each of the three is one elementwise kernel away from tensors that backward keeps anyway: an RMSNorm
keeps its input, the SwiGLU its two inputs. So the layer's norms and MLP hand each of them out with the call
that made it (`rebuild_of`), and lora_A's dropout functions (ranker/lora_dropout.py, fused_dropout.py) keep
that call instead of the tensor; backward makes it again, once for all the projections that share it. At
the 14B shape that is 48 of the 155 KB a token keeps a layer.

The rebuilt tensor is the forward's bit for bit: the same kernel on the same inputs, in the same autocast
state. A layer that recomputes its forward (gradient checkpointing) keeps none of them and is left alone.

    rebuild_activations(decoder_layers(peft_model), liger=True)  # before training; returns how many layers
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

NORMS = ("input_layernorm", "post_attention_layernorm")
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
_ATTRIBUTE = "_arena_rebuild"


class Rebuild:
    """A tensor as the call that made it, for the functions that would keep it for backward.

    Each keeper calls `keep()` in forward and `get()` once in backward; the tensor is made on the first
    `get()` and held until the last keeper took it. Then the call's inputs go too: the keepers' autograd
    nodes hold this object for as long as anything holds the loss (the trainer's, until the next pass's
    forward), and the inputs are a pass's worth of activations."""

    def __init__(self, make: Callable[[], torch.Tensor], device: torch.device) -> None:
        self.make: Callable[[], torch.Tensor] | None = make
        kind = device.type
        # The forward's autocast state, entered again to rebuild; None (the trainer's case: weights in the
        # compute dtype, no autocast) spares backward the context, which costs more than its kernel's launch.
        self.autocast = (kind, torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else None
        self.kept = 0
        self.value: torch.Tensor | None = None

    def keep(self) -> Rebuild:
        self.kept += 1
        return self

    def get(self) -> torch.Tensor:
        if self.make is None:
            raise RuntimeError("a rebuilt activation was asked for after its last keeper took it")
        if self.value is None:
            with torch.no_grad():
                if self.autocast is None:
                    self.value = self.make()
                else:
                    with torch.autocast(self.autocast[0], dtype=self.autocast[1]):
                        self.value = self.make()
        value = self.value
        self.kept -= 1
        if self.kept <= 0:
            self.value, self.make = None, None
        return value


def rebuild_of(tensor: torch.Tensor) -> Rebuild | None:
    """The call that rebuilds `tensor` in backward, where a layer handed it out with one."""
    return getattr(tensor, _ATTRIBUTE, None)


def rebuild_activations(layers: list[torch.nn.Module], *, liger: bool) -> int:
    """Hand out the RMSNorm outputs and the SwiGLU product with their rebuilds in every decoder layer that
    has them (see module docstring); `liger`: the MLPs run liger-kernel's SwiGLU. Returns how many layers."""
    applied = 0
    for layer in layers:
        norms = [getattr(layer, name, None) for name in NORMS]
        mlp = getattr(layer, "mlp", None)
        if any(n is None for n in norms) or not all(hasattr(mlp, p) for p in PROJECTIONS):
            continue
        state = _LayerState()
        layer.forward = functools.partial(_layer_forward, layer, state, layer.forward)
        for norm in norms:
            norm.forward = functools.partial(_norm_forward, state, norm.forward)
        mlp.forward = functools.partial(_mlp_forward, mlp, state, _swiglu_product(mlp, liger))
        applied += 1
    return applied


def rebuilds_activations(layer: torch.nn.Module) -> bool:
    """Whether `rebuild_activations` applies to this layer."""
    forward = getattr(layer, "forward", None)
    return isinstance(forward, functools.partial) and forward.func is _layer_forward


class _LayerState:
    """Whether a forward call of the layer that rebuilds is running (a recomputing one keeps nothing)."""

    active = False


def _layer_forward(
    layer: torch.nn.Module, state: _LayerState, forward: Callable, *args: Any, **kwargs: Any
) -> Any:
    recomputes = getattr(layer, "gradient_checkpointing", False) and layer.training
    state.active = torch.is_grad_enabled() and not recomputes
    try:
        return forward(*args, **kwargs)
    finally:
        state.active = False


def _handed_out(state: _LayerState, tensor: torch.Tensor, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    if state.active:
        setattr(tensor, _ATTRIBUTE, Rebuild(make, tensor.device))
    return tensor


def _norm_forward(state: _LayerState, forward: Callable, hidden: torch.Tensor) -> torch.Tensor:
    return _handed_out(state, forward(hidden), functools.partial(forward, hidden))


def _mlp_forward(
    mlp: torch.nn.Module, state: _LayerState, product: Callable, hidden: torch.Tensor
) -> torch.Tensor:
    """The Llama/Qwen2 MLP, down(act(gate(x)) * up(x)), its product handed out with its rebuild."""
    gate, up = mlp.gate_proj(hidden), mlp.up_proj(hidden)
    return mlp.down_proj(_handed_out(state, product(gate, up), functools.partial(product, gate, up)))


def _swiglu_product(
    mlp: torch.nn.Module, liger: bool
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """act(gate) * up as the MLP's own forward computes it: liger's fused kernel, or the activation and a
    multiply."""
    if liger:
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction  # a GPU extra

        return LigerSiLUMulFunction.apply
    act_fn = mlp.act_fn
    return lambda gate, up: act_fn(gate) * up
