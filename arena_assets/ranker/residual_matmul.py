"""The residual stream added inside the output projections' matmuls, when no gradients are kept.

A decoder layer adds its attention's output projection and its MLP's down projection to the residual stream,
`h = h + o_proj(x)`: an elementwise kernel that reads two [T, H] tensors and writes a third after the matmul
wrote one. With no gradients to keep, the matmul can accumulate into the residual itself (`h.addmm_(x, W.T)`,
the GEMM's beta = 1 epilogue reading h once), so the add and two of its three passes over memory are gone.
The sum is rounded once instead of twice (bf16(h + x W^T) rather than bf16(h + bf16(x W^T))), so the logits
equal the plain layer's up to that rounding.

    add_residual_in_matmuls(decoder)    # once the layers' modules are final: installs on the layers it can
    decoder(...)                        # under torch.no_grad(): the layers add in their matmuls

A layer keeps its own forward whenever the rewrite could change what it means: with gradients on, with hooks
on the layer or its modules (ranker/head_rows.py's last layer, output recorders), once either projection is
replaced (fp8's `Fp8Linear`, an adapter's layer) or its forward wrapped (accelerate's device hooks). Each
layer accumulates into the tensor it was given, which the decoder's loop owns and reads no more; the first
layer copies its input, which may be the caller's embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_ORIGINAL = "_arena_plain_forward"


class ResidualAddLinear(nn.Linear):
    """A bias-free nn.Linear that, given `residual`, returns it with x W^T added in place (and forgets it)."""

    residual: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, self.residual = self.residual, None
        if residual is None:
            return super().forward(x)
        if x.dtype != residual.dtype or x.dtype != self.weight.dtype:  # under autocast: the plain sum
            return residual.add_(super().forward(x))
        residual.view(-1, residual.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), self.weight.t())
        return residual


def add_residual_in_matmuls(decoder: nn.Module) -> int:
    """Give each layer of `decoder` (a Qwen2/Llama-style model: `layers`, each with `self_attn.o_proj` and
    `mlp.down_proj`, plain bias-free nn.Linear) a forward that adds the residual inside those matmuls when
    no gradients are kept; returns how many layers took it. Layers placed by accelerate's device map keep
    theirs (its hooks wrap the same forward)."""
    installed = 0
    for index, layer in enumerate(decoder.layers):
        if _ORIGINAL in vars(layer):  # installed before
            installed += 1
            continue
        projections = _projections(layer)
        if projections is None or hasattr(layer, "_hf_hook"):
            continue
        for projection in projections:
            projection.__class__ = ResidualAddLinear
        setattr(layer, _ORIGINAL, layer.forward)
        layer.forward = _adding_forward(layer, copy_input=index == 0)
        installed += 1
    return installed


def adds_residual_in_matmuls(decoder: nn.Module) -> bool:
    """Whether some layer of `decoder` adds its residual in its matmuls (when it runs without gradients)."""
    return any(_ORIGINAL in vars(layer) and _fuses(layer) for layer in decoder.layers)


def _projections(layer: nn.Module) -> tuple[nn.Linear, nn.Linear] | None:
    """The layer's o_proj and down_proj when both are plain bias-free linear layers, else None."""
    pair = (getattr(getattr(layer, "self_attn", None), "o_proj", None),
            getattr(getattr(layer, "mlp", None), "down_proj", None))  # fmt: skip
    ok = all(type(p) is nn.Linear and p.bias is None for p in pair)
    return pair if ok else None  # type: ignore[return-value]


def _fuses(layer: nn.Module) -> bool:
    """Whether the layer's projections are still ours, run our forward (accelerate's device hooks replace a
    module's `forward` on the instance), and nothing observes the layer or them."""
    modules = (layer, layer.self_attn, layer.mlp, layer.self_attn.o_proj, layer.mlp.down_proj)
    projections = modules[3:]
    if not all(type(m) is ResidualAddLinear and "forward" not in vars(m) for m in projections):
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _adding_forward(layer: nn.Module, *, copy_input: bool) -> Callable[..., Any]:
    plain = getattr(layer, _ORIGINAL)

    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        # The decoder passes everything but the hidden states by name; anything else is the plain layer's.
        if args or torch.is_grad_enabled() or not hidden_states.is_contiguous() or not _fuses(layer):
            return plain(hidden_states, *args, **kwargs)
        attention, mlp = layer.self_attn, layer.mlp
        normed = layer.input_layernorm(hidden_states)  # read before o_proj writes into hidden_states
        try:
            attention.o_proj.residual = hidden_states.clone() if copy_input else hidden_states
            hidden = attention(hidden_states=normed, **kwargs)[0]
            mlp.down_proj.residual = hidden
            return mlp(layer.post_attention_layernorm(hidden))
        finally:  # a pass that fails midway leaves no residual for the next call to add into
            attention.o_proj.residual = mlp.down_proj.residual = None

    return forward
