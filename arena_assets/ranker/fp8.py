"""fp8 matmuls for a decoder's frozen linear layers (float8 e4m3): scoring, and training LoRA around them.

Scoring spends about four fifths of a forward pass in the decoder's projections (benchmarks/RESULTS.md),
and an H100 or H200 multiplies e4m3 at twice its bf16 rate. Here each weight is quantized once, per output
channel: the row's largest magnitude maps to e4m3's largest, 448. Each input is quantized per row (token)
at each call, in one pass; q, k and v (which read one tensor) share its quantization. The matmul
accumulates in fp32 and writes the compute dtype (`torch._scaled_mm`, row-wise scales).

The letter logits move: e4m3 keeps 3 mantissa bits, so each weight and input is off by up to 1/16 of its
value, and the errors average out over the dot products. So it is opt-in (`ScoreConfig.fp8_matmuls`), and
the scorer's fingerprint holds it: fp8 logits never mix with bf16 ones in one output. The tests bound the
difference on the demo's trained model.

Training (`TrainConfig.fp8_matmuls`) runs the frozen projections' forward and their input gradient in e4m3;
the LoRA adapters, their gradients, attention and the optimizer stay as they were. The input gradient
dx = dy @ W multiplies over the output channels, so it takes a second copy of W quantized per input channel
(W's bf16 copy is freed: the two e4m3 copies take its memory), and each dy quantized per row. With
`forward=False` only the input gradient runs in e4m3: the forward, and so the loss, is the compute dtype's,
and W's bf16 copy stays beside the one e4m3 copy.

    quantize_linears(decoder_layers(model))  # after loading (a merged model: no adapters); returns a count
    quantize_linears(decoder_layers(peft_model), backward=True)  # training: the frozen base layers only
    quantize_linears(decoder_layers(peft_model), backward=True, forward=False)  # the input gradient alone
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from arena_assets.ranker.residual_matmul import ResidualAddLinear

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
# A row of zeros keeps a finite scale.
MIN_AMAX = 1e-12
# What quantize_linears replaces: nn.Linear, also when it adds a residual in its matmul (whose layer then
# adds it after the fp8 one).
PLAIN_LINEARS = (nn.Linear, ResidualAddLinear)
_QUANTIZED = "_arena_fp8"  # the tensor attribute holding an input's quantization, for its sibling projections


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 [M, K], fp32 scales [M, 1]) with x ~ q * scale, each row scaled to e4m3's range.

    On a GPU one Triton kernel reads x once; elsewhere torch's operations compute the same numbers."""
    if x.is_cuda:
        from arena_assets.ranker.fp8_kernels import quantize_rows_kernel  # Triton: a GPU process's import

        return quantize_rows_kernel(x)
    return quantize_rows_torch(x)


def quantize_rows_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_rows` in torch's operations (any device)."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp(min=MIN_AMAX)
    # Reciprocals and products only, as the kernel computes them (a division by a scalar is a product by its
    # reciprocal on some devices and not on others).
    q = (x.float() * (amax.reciprocal() * E4M3_MAX)).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, amax * (1.0 / E4M3_MAX)


def scaled_matmul(
    a: torch.Tensor, a_scale: torch.Tensor, b_rows: torch.Tensor, b_scale: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """(a * a_scale) @ (b_rows * b_scale.t()).t() for e4m3 a [M, K] with scales [M, 1] and e4m3 b_rows
    [N, K] with scales [1, N] -> [M, N] in `dtype`, accumulated in fp32."""
    if a.is_cuda:
        return torch._scaled_mm(a, b_rows.t(), scale_a=a_scale, scale_b=b_scale, out_dtype=dtype)
    # The same products of the quantized operands in fp32 (the CPU has no row-wise fp8 matmul).
    return ((a.float() * a_scale) @ (b_rows.float() * b_scale.t()).t()).to(dtype)


class _Fp8Matmul(torch.autograd.Function):
    """y = x @ W.T through e4m3 with W frozen: backward gives x's gradient alone, dy @ W in e4m3."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: Fp8Linear) -> torch.Tensor:
        ctx.layer = layer
        return layer.project(x)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        layer = ctx.layer
        grad = layer.input_gradient(grad_out.reshape(-1, layer.out_features))
        return grad.view(*grad_out.shape[:-1], layer.in_features), None


class Fp8Linear(nn.Module):
    """A frozen nn.Linear whose matmul runs in e4m3 (see module docstring); bias and output in the input's
    dtype. With `backward`, gradients reach its input (training LoRA around it); without, it scores only.
    Without `forward` (training only) the forward keeps the layer's own weight and only the input gradient
    runs in e4m3."""

    def __init__(self, linear: nn.Linear, *, backward: bool = False, forward: bool = True) -> None:
        super().__init__()
        if not (forward or backward):
            raise ValueError("Fp8Linear: forward=False leaves only the input gradient in e4m3: set backward")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.fp8_forward = forward
        if forward:
            quantized, scale = quantize_rows_torch(weight)  # once: per output channel
            self.register_buffer("weight_fp8", quantized)  # [out, in], row-major: the matmul takes its .t()
            self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        else:
            self.register_buffer("weight", weight)  # the same storage: no copy
        self.backward = backward
        if backward:  # dy @ W multiplies over the output channels: W quantized per input channel
            quantized_t, scale_t = quantize_rows_torch(weight.t().contiguous())
            self.register_buffer("weight_t_fp8", quantized_t)  # [in, out]
            self.register_buffer("weight_t_scale", scale_t.t().contiguous())  # [1, in]
        bias = linear.bias
        self.register_buffer("bias", bias.detach().clone() if bias is not None else None)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_rows(x).view(*x.shape[:-1], self.out_features)

    def project_rows(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [rows, out]: a tensor of its own, not a view."""
        if not self.fp8_forward:
            return nn.functional.linear(x.reshape(-1, self.in_features), self.weight, self.bias)
        quantized = getattr(x, _QUANTIZED, None)  # the same input, quantized by a sibling projection
        if quantized is None:
            quantized = quantize_rows(x.reshape(-1, self.in_features))
            setattr(x, _QUANTIZED, quantized)
        values, scale = quantized
        out = scaled_matmul(values, scale, self.weight_fp8, self.weight_scale, x.dtype)
        if self.bias is not None:
            out.add_(self.bias)
        return out

    def input_gradient(self, grad_out: torch.Tensor) -> torch.Tensor:
        """dy [M, out] -> dy @ W [M, in] in dy's dtype, dy quantized per row (a layer with `backward`)."""
        values, scale = quantize_rows(grad_out)
        return scaled_matmul(values, scale, self.weight_t_fp8, self.weight_t_scale, grad_out.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.project(x)
        if not self.backward:
            raise RuntimeError("Fp8Linear was built for scoring (no gradients); build it with backward=True")
        return _Fp8Matmul.apply(x, self)

    def extra_repr(self) -> str:
        e4m3 = "e4m3" if self.fp8_forward else "e4m3 for the input gradient"
        return f"in_features={self.in_features}, out_features={self.out_features}, {e4m3}"


def frozen_rows(frozen: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A frozen projection's output for x [..., in] as [rows, out], for LoRA's update to add to it in place
    (ranker/lora_output.py). An nn.Linear's, and an Fp8Linear's outside autograd (in an autograd.Function's
    forward), is a tensor of its own; an Fp8Linear under autograd, or another layer, may give a view, which
    autograd does not let a custom function's output be written through: the caller checks `_is_view()`."""
    if isinstance(frozen, Fp8Linear):
        # x itself, not a flattened view of it: q, k and v find the quantization a sibling left on it.
        rows = frozen(x) if torch.is_grad_enabled() else frozen.project_rows(x)
        return rows.reshape(-1, rows.shape[-1])
    return frozen(x.reshape(-1, x.shape[-1]))


def frozen_input_gradient(frozen: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """grad [rows, out] @ W for a frozen nn.Linear or a training Fp8Linear: x's gradient through the layer of
    `frozen_rows`, as a new contiguous [rows, in] tensor."""
    if isinstance(frozen, Fp8Linear):
        return frozen.input_gradient(grad)
    return (grad @ frozen.weight).contiguous()


def require_fp8(device: torch.device) -> None:
    """Raise unless `device` multiplies e4m3: a GPU of compute capability 8.9 or later (Ada, Hopper); the CPU
    computes the same products of the quantized operands in fp32 (tests and the demo)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise RuntimeError(
            f"fp8_matmuls: {name} has no fp8 tensor cores (compute capability 8.9 or later: L4, H100, H200); "
            "run without fp8_matmuls"
        )


def quantize_linears(layers: list[nn.Module], *, backward: bool = False, forward: bool = True) -> int:
    """Replace every nn.Linear inside these (decoder) layers with an Fp8Linear, freeing the original
    weights; returns how many. With `backward` (training) only the frozen ones, each passing gradients to its
    input: the trainable ones (LoRA's) stay; without `forward` their forward keeps the original weights.
    Sizes must be multiples of 16 (the fp8 matmul's tiles)."""
    count = 0
    for layer in layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if type(child) not in PLAIN_LINEARS or (backward and child.weight.requires_grad):
                    continue
                if child.in_features % 16 or child.out_features % 16:
                    raise ValueError(
                        f"fp8_matmuls: {name} is {child.in_features} x {child.out_features}; the fp8 matmul "
                        "needs multiples of 16: run this model without fp8_matmuls"
                    )
                setattr(parent, name, Fp8Linear(child, backward=backward, forward=forward))
                count += 1
    if count == 0:  # a setting that changes nothing must not pass for one that does
        raise ValueError("fp8_matmuls: these layers hold no linear layer to quantize")
    return count


def margin_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Two scorings of the same rows, letter logits [N, 2] each: the share of rows whose A-B margin has the
    same sign (the same winner) and the margins' correlation (nan for fewer than two rows or a constant)."""
    a, b = reference[:, 0] - reference[:, 1], other[:, 0] - other[:, 1]
    constant = len(a) < 2 or a.std() == 0 or b.std() == 0
    return {
        "same_winner": float(np.mean(np.sign(a) == np.sign(b))),
        "margin_correlation": float("nan") if constant else float(np.corrcoef(a, b)[0, 1]),
    }


def gradient_agreement(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Two gradients of the same parameters, flattened: their cosine, and the norm of their difference
    relative to the reference's (nan where the reference is zero). Summed in float64: float32 sums over the
    14B backbone's 275M LoRA parameters drift by a percent on the CPU (a cosine of 1.012 was seen)."""
    reference, other = reference.double(), other.double()
    reference_norm = float(reference.norm())
    error = float((other - reference).norm())
    return {
        "grad_cosine": float(nn.functional.cosine_similarity(reference, other, dim=0)),
        "grad_relative_error": error / reference_norm if reference_norm else float("nan"),
    }
