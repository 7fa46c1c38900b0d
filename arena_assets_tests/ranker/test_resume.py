"""A training run killed with SIGKILL resumes from its last checkpoint and ends where an unbroken run ends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from arena_assets.ranker.config import TrainConfig
from arena_assets.ranker.trainer import train
from arena_assets_tests.ranker.conftest import PairFiles, kill_when, module_command, run_to_completion

MAX_STEPS = 8  # 48 pairs at 8 a step: the run crosses from the first epoch into the second
SAME_RUN_ATOL = 1e-4  # the same CPU arithmetic on restored weights, optimizer and RNG; only I/O lies between


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    def config(output_dir: Path) -> TrainConfig:
        # Dropout on, so the resumed run must also restore the random state.
        return make_train_config(small_files, output_dir, epochs=2, max_steps=MAX_STEPS, global_batch_size=16,
                                 per_device_batch_size=16, checkpoint_every_steps=2, lora_dropout=0.1,
                                 max_validation_rows=16)

    reference = train(config(tmp_path / "unbroken" / "adapter"))

    adapter = tmp_path / "resumed" / "adapter"
    work = adapter.with_name("adapter.work")
    command = module_command("arena_assets.ranker.trainer", config(adapter), tmp_path / "train.json")
    kill_when(command, tmp_path / "killed.log", ready=lambda: any(work.glob("checkpoint-*/state.json")))
    finished = sorted(p.parent.name for p in work.glob("checkpoint-*/state.json"))
    assert finished and finished[-1] < f"checkpoint-{MAX_STEPS:08d}" and not adapter.exists()

    output = run_to_completion(command, tmp_path / "resumed.log")
    resumed_from = int(finished[-1].removeprefix("checkpoint-"))
    assert f"resumed from step {resumed_from} of {MAX_STEPS}" in output
    metrics = json.loads((adapter / "metrics.json").read_text())
    assert metrics["steps"] == reference["steps"] == MAX_STEPS
    assert [s for s, _ in metrics["train_loss_curve"]] == list(range(1, MAX_STEPS + 1))
    assert metrics["val_log_loss"] == pytest.approx(reference["val_log_loss"], abs=SAME_RUN_ATOL)
    resumed_curve = [loss for _, loss in metrics["train_loss_curve"]]
    unbroken_curve = [loss for _, loss in reference["train_loss_curve"]]
    assert resumed_curve == pytest.approx(unbroken_curve, abs=SAME_RUN_ATOL)
    assert metrics["padding_fraction"] == pytest.approx(reference["padding_fraction"], abs=1e-12)
    assert not work.exists()
