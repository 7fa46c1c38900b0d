"""Activations that backward rebuilds instead of keeping: a layer's RMSNorm outputs and its SwiGLU product.

Every adapted projection's lora_A keeps its input for its weight gradient: the normed hidden states of the
attention (q, k and v share them) and of the MLP (gate and up), and the SwiGLU product silu(gate) * up
(down). Each of the three is one elementwise kernel away from tensors that backward keeps anyway: an RMSNorm
keeps its input, the SwiGLU its two inputs. So a decoder layer's forward runs under saved-tensor hooks that
keep, for those three tensors, the call that made them; backward makes them again when it needs them, once
for all the projections that share one. At the 14B shape that is 48 of the 155 KB a token keeps a layer.

The rebuilt tensor is the forward's bit for bit: the same kernel on the same inputs, in the same autocast
state. A layer that recomputes its forward (gradient checkpointing) keeps none of them and is left alone.

    rebuild_activations(decoder_layers(peft_model), liger=True)  # before training; returns how many layers
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

NORMS = ("input_layernorm", "post_attention_layernorm")
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class _Rebuild:
    """One tensor kept as the call that made it; every saved view of it shares this object."""

    def __init__(self, tensor: torch.Tensor, make: Callable[[], torch.Tensor]) -> None:
        # Matched while the tensor lives: its storage can be handed to a new tensor only after it died.
        self.tensor = weakref.ref(tensor)
        self.storage = tensor.untyped_storage().data_ptr()
        self.dtype = tensor.dtype
        self.make = make
        device = tensor.device.type
        self.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        self.pending = 0  # saved views not yet unpacked
        self.value: torch.Tensor | None = None

    def covers(self, tensor: torch.Tensor) -> bool:
        return (
            self.tensor() is not None
            and tensor.dtype == self.dtype
            and tensor.untyped_storage().data_ptr() == self.storage
        )

    def get(self) -> torch.Tensor:
        """The tensor, made again on the first unpack and held until the last saved view took it."""
        if self.value is None:
            device, dtype, enabled = self.autocast
            with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
                self.value = self.make()
        value = self.value
        self.pending -= 1
        if self.pending <= 0:
            self.value = None
        return value


@dataclass(frozen=True)
class _SavedView:
    rebuild: _Rebuild
    size: torch.Size
    stride: tuple[int, ...]
    offset: int


class _LayerRebuilds:
    """The saved-tensor hooks of one forward call of one layer, and the tensors it rebuilds. Hooks already
    active around the layer (offloading to the CPU, a memory count) still receive every other tensor."""

    def __init__(self) -> None:
        self.rebuilds: list[_Rebuild] = []
        top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
        self.outer: tuple[Callable, Callable] | None = top(False) if top is not None else None

    def add(self, tensor: torch.Tensor, make: Callable[[], torch.Tensor]) -> None:
        # Only a tensor that owns its whole storage: then every view of the storage is a view of it.
        owns_storage = (
            tensor.is_contiguous()
            and tensor.storage_offset() == 0
            and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        )
        if owns_storage:
            self.rebuilds.append(_Rebuild(tensor, make))

    def pack(self, tensor: torch.Tensor) -> Any:
        if tensor.layout != torch.strided:
            return self.outer[0](tensor) if self.outer else tensor
        for rebuild in self.rebuilds:
            if rebuild.covers(tensor):
                rebuild.pending += 1
                return _SavedView(rebuild, tensor.size(), tensor.stride(), tensor.storage_offset())
        return self.outer[0](tensor) if self.outer else tensor

    def unpack(self, saved: Any) -> torch.Tensor:
        if isinstance(saved, _SavedView):
            return saved.rebuild.get().as_strided(saved.size, saved.stride, saved.offset)
        return self.outer[1](saved) if self.outer else saved


class _LayerState:
    """Which forward call of a layer is running (None outside one, or in one that keeps nothing)."""

    current: _LayerRebuilds | None = None


def rebuild_activations(layers: list[torch.nn.Module], *, liger: bool) -> int:
    """Rebuild the RMSNorm outputs and the SwiGLU product in backward in every decoder layer that has them
    (see module docstring); `liger`: the MLPs run liger-kernel's SwiGLU. Returns how many layers apply it."""
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


def _layer_forward(
    layer: torch.nn.Module, state: _LayerState, forward: Callable, *args: Any, **kwargs: Any
) -> Any:
    recomputes = getattr(layer, "gradient_checkpointing", False) and layer.training
    if recomputes or not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    rebuilds = _LayerRebuilds()
    state.current = rebuilds
    try:
        with torch.autograd.graph.saved_tensors_hooks(rebuilds.pack, rebuilds.unpack):
            return forward(*args, **kwargs)
    finally:
        state.current = None


def _norm_forward(state: _LayerState, forward: Callable, hidden: torch.Tensor) -> torch.Tensor:
    normed = forward(hidden)
    if state.current is not None:
        state.current.add(normed, functools.partial(forward, hidden))
    return normed


def _mlp_forward(
    mlp: torch.nn.Module, state: _LayerState, product: Callable, hidden: torch.Tensor
) -> torch.Tensor:
    """The Llama/Qwen2 MLP, down(act(gate(x)) * up(x)), with its product rebuilt in backward."""
    gate, up = mlp.gate_proj(hidden), mlp.up_proj(hidden)
    swiglu = product(gate, up)
    if state.current is not None:
        state.current.add(swiglu, functools.partial(product, gate, up))
    return mlp.down_proj(swiglu)


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


def rebuilds_activations(layer: torch.nn.Module) -> bool:
    """Whether `rebuild_activations` applies to this layer (a recomputing layer keeps nothing anyway)."""
    forward = getattr(layer, "forward", None)
    return isinstance(forward, functools.partial) and forward.func is _layer_forward
