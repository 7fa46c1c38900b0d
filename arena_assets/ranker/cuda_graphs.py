"""A training pass (forward, loss, backward) captured once as a CUDA graph and replayed for its shape.

At 14B and 2 x 2048 tokens the fast path launches thousands of kernels a step from Python (seven adapted
projections a layer, each with its matmuls, its dropout kernels and its adds, forward and backward), and the
CPU's launches, not the GPU, bound the step: the GPU waits for them about a tenth of it. A CUDA graph
records the kernels of one pass once; every later pass of the same shape is one launch of the whole graph,
its inputs first copied into the tensors the graph reads.

What a captured pass takes (`check_graphable` says what to change otherwise):
- rows of one length, no padding: the trainer gives such a micro-batch no mask, and that is the pass
  captured, one graph per shape. Padded and packed passes run eagerly as before.
- one process: DDP's hooks and FSDP's collectives are not captured.
- no layer recomputed: checkpointing saves the generator's state on the CPU, which a capture forbids.
- LoRA dropout drawn in the fused kernels (ranker/fused_dropout.py), or none: their seeds come from the
  GPU's generator, which the graph advances at each replay, so every pass draws new masks. The dropout that
  replays torch's generator state in backward (ranker/lora_dropout.py) reads it on the CPU.
- nothing left alive of an eager pass's autograd graph: its AccumulateGrad nodes keep the stream they were
  made on, and a capture's backward that meets one of the default stream's fails. The trainer keeps an eager
  pass's loss as a value only, and liger-kernel's implementations are chosen when the model loads
  (ranker/modeling.py), not inside its first forward.

Gradients add up in `.grad` tensors that stay where the graph writes them: the graph adds each pass's into
them, and after the optimizer step `reset_grads` zeroes them and hands them back to the parameters. The
graphs share one memory pool, which holds a pass's activations between replays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# Eager passes before a capture: they select and compile the kernels (Triton's autotuning cannot run inside
# a capture) and let the allocator settle, as torch's documentation asks.
WARMUP_PASSES = 2


@dataclass
class CapturedPass:
    graph: torch.cuda.CUDAGraph
    input_ids: torch.Tensor  # the tensors the graph reads: each pass's inputs are copied into them
    targets: dict[str, torch.Tensor]
    weight: torch.Tensor  # the pass's share of the step's gradient (rows / step rows)
    loss: torch.Tensor  # the pass's mean loss, written by each replay


def check_graphable(config: Any, device: torch.device, num_processes: int, model: torch.nn.Module) -> None:
    """Raise ValueError naming the setting to change where a training pass cannot be captured."""
    from arena_assets.ranker.lora_dropout import DropoutLinear

    problems = []
    if device.type != "cuda":
        problems.append(f"it needs a CUDA device (this run is on {device.type})")
    if num_processes > 1:
        problems.append(f"it runs in one process (this run has {num_processes})")
    if config.gradient_checkpointing > 0:
        problems.append("recomputed layers cannot be captured: set gradient_checkpointing to 0")
    if config.pack_sequences:
        problems.append("packed passes are never captured: set pack_sequences to false")
    if config.compile_layers:
        problems.append("compiled layers are not captured here: set compile_layers to false")
    dropouts = [m for m in model.modules() if isinstance(m, DropoutLinear)]
    if any(m.dropout_p > 0 and not m.fused for m in dropouts):
        problems.append(
            "LoRA dropout replayed from the generator's state cannot be captured: keep fused_lora_dropout on "
            "(with adapter_compute_dtype, in bf16 or fp16), or set lora_dropout to 0"
        )
    if problems:
        raise ValueError("cuda_graphs: " + "; ".join(problems))


class GraphedPasses:
    """Training passes of rows of one length, each shape captured once and then replayed (module docstring).

    `loss_of(input_ids, targets)` is the pass's mean loss from the model's forward; `params` the trainable
    parameters, whose `.grad` this class holds at fixed addresses."""

    def __init__(
        self,
        loss_of: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
        params: list[torch.nn.Parameter],
    ) -> None:
        self.loss_of = loss_of
        self.params = params
        self.grads = [torch.zeros_like(p) for p in params]
        self.pool = torch.cuda.graph_pool_handle()
        self.captured: dict[tuple, CapturedPass] = {}
        self.replays = 0
        self.reset_grads()

    def reset_grads(self) -> None:
        """Zero the gradients and hand them back to the parameters (after an optimizer step freed them)."""
        torch._foreach_zero_(self.grads)
        for param, grad in zip(self.params, self.grads, strict=True):
            param.grad = grad

    def __call__(
        self, input_ids: torch.Tensor, targets: dict[str, torch.Tensor], weight: float
    ) -> torch.Tensor:
        """Add `weight` x this pass's gradients to the parameters' and return its mean loss."""
        key = (tuple(input_ids.shape), *((k, tuple(v.shape), v.dtype) for k, v in sorted(targets.items())))
        captured = self.captured.get(key)
        if captured is None:
            captured = self.captured[key] = self._capture(input_ids, targets)
        captured.input_ids.copy_(input_ids, non_blocking=True)
        for name, value in targets.items():
            captured.targets[name].copy_(value, non_blocking=True)
        captured.weight.fill_(weight)
        captured.graph.replay()
        self.replays += 1
        return captured.loss.clone()  # the next replay of this graph overwrites it

    def _capture(self, input_ids: torch.Tensor, targets: dict[str, torch.Tensor]) -> CapturedPass:
        static_ids = input_ids.clone()
        static_targets = {name: value.clone() for name, value in targets.items()}
        weight = torch.ones((), dtype=torch.float32, device=input_ids.device)
        side = torch.cuda.Stream(device=input_ids.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                # autograd.grad leaves .grad alone: the step's earlier passes keep what they added there.
                torch.autograd.grad(
                    self.loss_of(static_ids, static_targets) * weight, self.params, allow_unused=True
                )
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                loss = self.loss_of(static_ids, static_targets)
                (loss * weight).backward()
        except RuntimeError as error:
            raise RuntimeError(
                f"cuda_graphs: capturing a training pass of shape {tuple(input_ids.shape)} failed ({error}); "
                "set cuda_graphs to false to train without graphs"
            ) from error
        return CapturedPass(graph, static_ids, static_targets, weight, loss)
