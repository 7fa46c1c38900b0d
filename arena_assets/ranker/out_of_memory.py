"""What a training run that ran out of GPU memory tells its user: which settings free memory, and whether a
rerun resumes.

A long run can meet its largest pass hours in (the qwen14b recipe trains without recomputing any layer: 68.7
GiB at real lengths on an H200, meant for 80 GB GPUs; benchmarks/RESULTS.md). Recomputing a share of the
layers replays their forward with its random state: loss and gradients within 1e-5 in fp32 on the CPU
(test_fast_paths.py; only summation order may differ), and on a GPU, where two runs of one config already
differ in their last bits (attention's backward is not bit-reproducible), no change of another kind. So
`gradient_checkpointing` stays outside the checkpoint fingerprint (ranker/checkpointing.py): the rerun with a
larger share resumes from the last checkpoint instead of starting over.

    with explained(config, "step 7 of 100", device):  # torch's error raised again with the advice
        train_step(...)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from arena_assets.ranker.config import TrainConfig

GIB = 2**30


@contextmanager
def explained(config: TrainConfig, where: str, device: torch.device) -> Iterator[None]:
    """Raise an out-of-memory error inside the block again with `advice`, torch's own chained."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise torch.OutOfMemoryError(advice(config, where=where, device=device)) from error


def advice(config: TrainConfig, *, where: str, device: torch.device) -> str:
    """The message for an out-of-memory error in `where` ("step 3 of 100"): the memory the GPU held, the
    settings that lower it (with their values now), and what a rerun does."""
    where = f"out of GPU memory in {where}"
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / GIB
        total = torch.cuda.get_device_properties(device).total_memory / GIB
        where += f" ({peak:.1f} GiB allocated at the peak, of the GPU's {total:.1f})"
    if config.micro_batch_tokens:
        smaller = f"micro_batch_tokens (now {config.micro_batch_tokens}: the tokens of one forward pass)"
    else:
        smaller = f"per_device_batch_size (now {config.per_device_batch_size}: rows a forward pass)"
    settings = (
        f"recompute a larger share of the layers in backward (gradient_checkpointing, now "
        f"{config.gradient_checkpointing:g}; an eighth, 0.125, took 4 GiB less on the 14B shape at real "
        f"lengths, and it replays the same operations), or lower {smaller}"
    )
    if config.fp8_matmuls and not config.fp8_forward:
        settings += (
            ", or set fp8_forward: true, which frees the bf16 weights kept beside their e4m3 copy (half "
            "the backbone's bf16 size; the loss then moves by e4m3's rounding)"
        )
    checkpointed = config.resume and (config.checkpoint_every_steps or config.checkpoint_every_minutes)
    if checkpointed:
        rerun = (
            "a rerun with gradient_checkpointing changed resumes from the last checkpoint; other changes "
            "start the run over"
        )
    else:
        rerun = "the run keeps no checkpoint (set checkpoint_every_minutes), so a rerun starts over"
    return f"{where}: {settings}; {rerun}"
