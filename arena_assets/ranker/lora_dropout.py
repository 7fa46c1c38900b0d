"""LoRA dropout that keeps the adapter's input for backward instead of its dropped copy and mask.

peft computes `lora_B(lora_A(dropout(x)))`. For backward, autograd keeps the dropped copy of `x` (lora_A's
input) and the dropout mask, for every adapted projection: q, k and v each keep their own copy of the same
hidden states, gate and up two more. At 14B and 2 x 2048 tokens that is about 15 GB, a fifth of the peak.

Here lora_A applies the dropout itself, in one autograd function that keeps only `x` (the tensor that q, k
and v share, kept once; or only the call that rebuilds it, ranker/rebuilt_activations.py) and the
random-number state before the mask was drawn. Backward draws the same mask again from that state. The
numbers are peft's: the same mask, the same products. On a GPU, with `fused`, the mask is drawn inside
lora_A's matmul kernels instead and never written (ranker/fused_dropout.py): the same distribution from
another random stream.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from arena_assets.ranker.rebuilt_activations import Rebuild, rebuild_of


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


class _DropoutThenLinear(torch.autograd.Function):
    """y = dropout(x) @ weight.T, keeping x (or its rebuild) and the RNG state rather than dropout(x) and its
    mask."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float, rebuild: Rebuild | None
    ) -> torch.Tensor:
        ctx.rng_state = _rng_state(x.device)
        ctx.p = p
        dropped, _ = torch.native_dropout(x, p, True)
        ctx.rebuild = rebuild.keep() if rebuild is not None else None
        ctx.save_for_backward(*(() if rebuild is not None else (x,)), weight)
        return F.linear(dropped, weight)

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, weight = (ctx.rebuild.get(), *ctx.saved_tensors) if ctx.rebuild is not None else ctx.saved_tensors
        cuda = x.device.type == "cuda"
        # Replay the forward's draw without moving the generator that the rest of training uses.
        with torch.random.fork_rng(devices=[x.device] if cuda else []):
            if cuda:
                torch.cuda.set_rng_state(ctx.rng_state, x.device)
            else:
                torch.set_rng_state(ctx.rng_state)
            dropped, mask = torch.native_dropout(x, ctx.p, True)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.native_dropout_backward(grad_out @ weight, mask, 1.0 / (1.0 - ctx.p))
        if ctx.needs_input_grad[1]:
            grad_weight = grad_out.reshape(-1, grad_out.shape[-1]).T @ dropped.reshape(-1, x.shape[-1])
        return grad_x, grad_weight, None, None


class DropoutLinear(torch.nn.Linear):
    """A LoRA A matrix that applies its adapter's dropout (`dropout_p`) itself (see module docstring).

    A subclass of nn.Linear with the same parameters, so saved adapters and peft's own code see lora_A as
    before; outside training with gradients it is dropout then linear, as peft computes it."""

    dropout_p: float = 0.0
    fused: bool = False  # on a GPU, in half precision: the mask drawn in the matmul kernels

    def _drops(self) -> bool:
        """Whether this call draws a mask: training, with gradients and a dropout above 0."""
        return self.training and self.dropout_p > 0 and torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._drops():
            if self.fused and x.is_cuda:
                from arena_assets.ranker import fused_dropout  # Triton: a GPU process's import

                if fused_dropout.applies(x, self.weight):
                    return fused_dropout.dropout_matmul(x, self.weight, self.dropout_p, rebuild_of(x))
            return _DropoutThenLinear.apply(x, self.weight, self.dropout_p, rebuild_of(x))
        return F.linear(F.dropout(x, self.dropout_p, self.training), self.weight)

    def with_frozen(
        self, frozen: torch.nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(frozen(x), self(x)) from one autograd node that writes x's gradient once, where the fused
        kernels take them (ranker/fused_dropout.py, `FrozenAndDropoutMatmul`); None elsewhere."""
        if not (self._drops() and self.fused and x.is_cuda):
            return None
        from arena_assets.ranker import fused_dropout  # Triton: a GPU process's import

        if not fused_dropout.joins(frozen, x, self.weight):
            return None
        return fused_dropout.frozen_and_dropout_matmul(frozen, x, self.weight, self.dropout_p, rebuild_of(x))


def recompute_lora_dropout(model: torch.nn.Module, *, fused: bool = False) -> int:
    """Move every LoRA adapter's dropout into its lora_A (a DropoutLinear, drawing its mask in Triton
    kernels on a GPU with `fused`); returns how many moved."""
    moved = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            lora_a = module.lora_A[name]
            if not isinstance(dropout, torch.nn.Dropout) or type(lora_a) is not torch.nn.Linear:
                continue
            if lora_a.bias is not None:
                raise ValueError(f"{type(module).__name__}: lora_A with a bias is not supported here")
            lora_a.__class__ = DropoutLinear
            lora_a.dropout_p = dropout.p
            lora_a.fused = fused
            dropouts[name] = torch.nn.Identity()
            moved += 1
    return moved
