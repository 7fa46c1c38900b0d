"""Training checkpoints that a killed run resumes from: adapter weights, optimizer, scheduler, RNG, step.

Layout: `<work_dir>/checkpoint-<step>/` holding `rng-<rank>.pt` from every rank, then `trainer.pt` and,
written last, `state.json`. A directory without `state.json` is unfinished and ignored.
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

from arena_assets.ranker.artifacts import atomic_write_text

KEEP_LAST = 2
_DONE = "state.json"


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


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
) -> None:
    """Write checkpoint `step`; every rank calls this (each saves its RNG), rank 0 writes the rest."""
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
    barrier()
    if not is_main_process:
        return
    torch.save(
        {
            "model": _trainable_state(model),
            "masters": masters.state_dict() if masters is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        directory / "trainer.pt",
    )
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
) -> dict[str, Any] | None:
    """Restore the newest finished checkpoint into the given objects; returns its saved state or None."""
    directory = latest(work_dir)
    if directory is None:
        return None
    blob = torch.load(directory / "trainer.pt", map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in blob["model"].items():
            params[name].copy_(value)
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
