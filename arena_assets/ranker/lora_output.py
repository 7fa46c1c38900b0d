"""LoRA's update added to the frozen projection's output by the lora_B matmul itself.

peft computes `result + lora_B(h) * scaling`: lora_B's output, a scaled copy of it and the sum are three
tensors the size of the projection's output (at 14B and 2 x 2048 tokens, 45,056 output features a layer:
about 370 MB each), and backward scales the gradient once more. `result.addmm_(h, B.T, alpha=scaling)`
is one GEMM whose epilogue reads `result` and adds the scaled product in its fp32 accumulator, in place: no
intermediate tensors, and one rounding to the compute dtype instead of three. Its backward passes the
gradient to `result` unchanged and scales only the rank-sized products. In place because `torch.addmm`
copies `result` into its output before the GEMM (at 14B and 2 x 2048 tokens a copy the size of every
projection's output, about 8 ms of a step); the frozen projection's output is taken as a [rows, out] tensor
of its own (`frozen_rows`), which nothing keeps for backward.

Where lora_A draws its dropout in Triton kernels, the frozen projection and lora_A run as one autograd node
(`DropoutLinear.with_frozen`), so that x's gradient is written once, not as two tensors and their sum.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear

from arena_assets.ranker.fp8 import frozen_rows
from arena_assets.ranker.lora_dropout import DropoutLinear


class AddmmLoraLinear(LoraLinear):
    """peft's LoRA Linear with the one-GEMM update (see module docstring) where it applies: one plain
    adapter, active and unmerged, its weights in the input's dtype, no bias, no per-call arguments. Anywhere
    else it is peft's forward."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return super().forward(x, *args, **kwargs)
        name = self.active_adapters[0]
        if name not in self.lora_A or name in getattr(self, "lora_variant", {}):
            return super().forward(x, *args, **kwargs)
        lora_a, lora_b = self.lora_A[name], self.lora_B[name]
        if lora_b.bias is not None:
            return super().forward(x, *args, **kwargs)
        if lora_b.weight.dtype != x.dtype or lora_a.weight.dtype != x.dtype:
            return super().forward(x, *args, **kwargs)  # peft's fp32 adapters cast around the matmuls
        joined = lora_a.with_frozen(self.base_layer, x) if isinstance(lora_a, DropoutLinear) else None
        if joined is not None:  # lora_A's dropout is its own (DropoutLinear): lora_dropout is the identity
            result, hidden = joined
        else:
            result = frozen_rows(self.base_layer, x)
            hidden = lora_a(self.lora_dropout[name](x))
        hidden, alpha = hidden.reshape(-1, hidden.shape[-1]), self.scaling[name]
        if result._is_view():  # autograd cannot write through a view that a custom function returned
            result = torch.addmm(result, hidden, lora_b.weight.t(), alpha=alpha)
        else:
            result.addmm_(hidden, lora_b.weight.t(), alpha=alpha)
        return result.view(*x.shape[:-1], result.shape[-1])


def add_lora_in_matmul(model: torch.nn.Module) -> int:
    """Give every peft LoRA Linear the one-GEMM update; returns how many changed."""
    changed = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.__class__ = AddmmLoraLinear
            changed += 1
    return changed
