"""FSDP for LoRA training (`TrainConfig.fsdp`): the letter head sharded over the processes with torch's FSDP2.

Each decoder layer is one unit, gathered whole for its own forward and backward and sharded again after;
the embeddings, the final norm and `lm_head` stay in the root unit, which is whole for the root forward
(`LetterHead.forward`), where `letter_logits` reads the two lm_head rows. Every parameter, the LoRA ones
included, is a DTensor sharded on its first dimension, so a rank holds 1/N of the backbone, the adapters,
their gradients and (through `MasterWeights`) the optimizer state.

The launch is the same as DDP's (`--num_processes N --multi_gpu`); the trainer shards instead of wrapping
the head in DDP. accelerate's own FSDP plugin is not used: its FSDP1 flattens the LoRA weights into shards
that `MasterWeights` and the adapter save cannot use, and it only runs on GPUs, where this runs on the
CPU's gloo ranks too (the tests). `gradient_sync` serves both wrappers: it skips the gradient reduction of
all but a step's last micro-batch under DDP or FSDP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from arena_assets.ranker.head import LetterHead
from arena_assets.ranker.modeling import decoder_layers


def shard_letter_head(head: LetterHead) -> LetterHead:
    """Shard `head` in place over the default process group: a unit per decoder layer, then the root."""
    for layer in decoder_layers(head.model):
        fully_shard(layer)
    fully_shard(head)
    return head


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


@contextmanager
def gradient_sync(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Reduce gradients over the ranks in this backward only when `enabled` (a step's last micro-batch).

    The skipped micro-batches keep local gradients to add to: DDP's `no_sync`, or FSDP2's switch for the
    reduce-scatter. With one process there is nothing to reduce.
    """
    if enabled:
        yield
    elif is_sharded(module):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    elif isinstance(module, DistributedDataParallel):
        with module.no_sync():
            yield
    else:
        yield


def full_trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights, whole, on the CPU: a collective under FSDP (every rank must call it)."""
    state = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            whole = param.full_tensor() if isinstance(param, DTensor) else param
            state[name] = whole.detach().cpu()
    return state
