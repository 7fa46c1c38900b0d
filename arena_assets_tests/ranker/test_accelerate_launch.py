"""The trainer under a real `accelerate launch`, the way the Dagster launcher starts it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from arena_assets.ranker.artifacts import MANIFEST_NAME
from arena_assets.ranker.config import TrainConfig, save_config
from arena_assets_tests.ranker.conftest import PairFiles, run_to_completion


@pytest.mark.slow
def test_accelerate_launch_trains_and_writes_the_adapter(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    config_path = save_config(make_train_config(small_files, adapter, max_steps=2, max_validation_rows=8),
                              tmp_path / "train.json")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines",
               "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "arena_assets.ranker.trainer",
               "--config", str(config_path)]

    # A fresh HF_HOME: no user accelerate config file applies.
    run_to_completion(command, tmp_path / "launch.log", HF_HOME=str(tmp_path / "hf_home"))

    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    metrics = json.loads((adapter / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["num_processes"] == 1 and metrics["val_rows"] == 8
    assert json.loads((adapter / MANIFEST_NAME).read_text())["config"]["max_steps"] == 2
