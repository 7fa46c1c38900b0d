"""Training checkpoints that a killed run resumes from: adapter weights, optimizer, scheduler, RNG, step.

Layout: `<work_dir>/fingerprint.json` (what produced the checkpoints: the result-changing config, the input
and model versions, the code, the process count), then `<work_dir>/checkpoint-<step>/` holding
`rng-<rank>.pt` from every rank, `trainer.pt` and, written last, `state.json`. A checkpoint without
`state.json` is unfinished and ignored; a work directory with another fingerprint is never resumed from.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arena_assets.ranker.artifacts import atomic_write_text, file_sha256, model_identity, ranker_code_version
from arena_assets.ranker.config import TrainConfig, config_to_dict
from arena_assets.ranker.modeling import local_shard

# Config fields that never change the trained weights: a checkpoint stays valid when only these differ.
# Recomputed layers replay their forward with its random state (within fp32 rounding on the CPU:
# test_fast_paths.py), so a run that ran out of memory resumes with a larger share (ranker/out_of_memory.py).
RUNTIME_FIELDS = frozenset({
    "output_dir", "validation_path", "max_validation_rows", "eval_every_steps", "eval_batch_size",
    "checkpoint_every_steps", "checkpoint_every_minutes", "resume", "log_every_steps",
    "wandb", "wandb_project", "wandb_mode", "wandb_run_name", "fp8_check_passes", "fp8_min_grad_cosine",
    "gradient_checkpointing",
})  # fmt: skip

KEEP_LAST = 2
_DONE = "state.json"
FINGERPRINT_NAME = "fingerprint.json"


def fingerprint(config: TrainConfig, num_processes: int) -> dict[str, Any]:
    """What decides the trained weights: a checkpoint is resumed only under the same fingerprint."""
    return {
        "config": {k: v for k, v in config_to_dict(config).items() if k not in RUNTIME_FIELDS},
        "inputs": {
            "train": file_sha256(Path(config.train_path)),
            "backbone": model_identity(config.backbone),
        },
        "code": ranker_code_version(),
        "num_processes": num_processes,
    }


def claim(
    work_dir: Path,
    fingerprint: dict[str, Any],
    *,
    is_main_process: bool,
    barrier: Callable[[], None],
    log: Callable[[str], None],
) -> None:
    """Make `work_dir` this run's before anything resumes from it.

    A work directory written under another fingerprint (another config, input, model, code or process
    count) is moved aside to `<work_dir>.stale`, replacing an older one, with a log line naming what
    differs; then this run's fingerprint is written.
    """
    work_dir = Path(work_dir)
    if is_main_process:
        path = work_dir / FINGERPRINT_NAME
        old = json.loads(path.read_text()) if path.is_file() else None
        if work_dir.exists() and old != fingerprint:
            stale = work_dir.with_name(work_dir.name + ".stale")
            shutil.rmtree(stale, ignore_errors=True)
            work_dir.rename(stale)
            log(
                f"not resuming: {work_dir} was written by another run ({_differences(old, fingerprint)}); "
                f"moved it to {stale} and starting fresh"
            )
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(fingerprint, indent=2, sort_keys=True))
    barrier()


def _differences(old: dict[str, Any] | None, new: dict[str, Any], prefix: str = "") -> str:
    """The keys whose values differ between two fingerprints, e.g. `config.lora_r 64 -> 32`."""
    if old is None:
        return "no fingerprint"
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{prefix}{key}.")
            changes.extend([inner] if inner else [])
        elif a != b:
            changes.append(f"{prefix}{key} {a!r} -> {b!r}")
    return "; ".join(changes)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights this rank holds: whole ones, or its shards under FSDP."""
    return {n: local_shard(p).detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _trainer_file(directory: Path, process_index: int, sharded: bool) -> Path:
    """Where a rank's weights and optimizer state go: one file from rank 0, or one per rank under FSDP."""
    return directory / (f"trainer-{process_index}.pt" if sharded else "trainer.pt")


def save(
    work_dir: Path,
    *,
    step: int,
    model: torch.nn.Module,
    masters: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    process_index: int,
    is_main_process: bool,
    barrier: Callable[[], None],
    sharded: bool = False,
) -> None:
    """Write checkpoint `step`; every rank calls this (each saves its RNG, and under FSDP its shards),
    rank 0 writes the rest and, once every rank is done, `state.json`."""
    directory = Path(work_dir) / f"checkpoint-{step:08d}"
    if is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
    barrier()
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(rng, directory / f"rng-{process_index}.pt")
    if sharded or is_main_process:
        torch.save(
            {
                "model": _trainable_state(model),
                "masters": masters.state_dict() if masters is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
            _trainer_file(directory, process_index, sharded),
        )
    barrier()
    if not is_main_process:
        return
    atomic_write_text(directory / _DONE, json.dumps(state))
    finished = sorted(p for p in Path(work_dir).glob("checkpoint-*") if (p / _DONE).is_file())
    for old in finished[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)


def latest(work_dir: Path) -> Path | None:
    """The newest finished checkpoint directory, if any."""
    finished = sorted(p for p in Path(work_dir).glob("checkpoint-*") if (p / _DONE).is_file())
    return finished[-1] if finished else None


def load_latest(
    work_dir: Path,
    *,
    model: torch.nn.Module,
    masters: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    process_index: int,
    sharded: bool = False,
) -> dict[str, Any] | None:
    """Restore the newest finished checkpoint into the given objects; returns its saved state or None."""
    directory = latest(work_dir)
    if directory is None:
        return None
    trainer_file = _trainer_file(directory, process_index, sharded)
    blob = torch.load(trainer_file, map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in blob["model"].items():
            local_shard(params[name]).copy_(value)
    if masters is not None:
        masters.load_state_dict(blob["masters"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rng_path = directory / f"rng-{process_index}.pt"
    if not rng_path.is_file():
        raise FileNotFoundError(
            f"{rng_path} is missing: the checkpoint was written with fewer processes. "
            "Resume with the same number of processes, or delete the work directory."
        )
    rng = torch.load(rng_path, weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = json.loads((directory / _DONE).read_text())
    state["loss_curve"] = [tuple(x) for x in state["loss_curve"]]
    return state


def clear(work_dir: Path) -> None:
    """Remove the work directory once the final artifact is written."""
    shutil.rmtree(work_dir, ignore_errors=True)
