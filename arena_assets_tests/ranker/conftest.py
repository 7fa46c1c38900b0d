"""Ranker integration fixtures: the demo hard-label set, small subsets, and one stage-1 run shared by all."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from arena_assets.hard_labels import build_hard_label_set
from arena_assets.ranker.config import MergeConfig, TrainConfig, save_config
from arena_assets.readers import read_source
from arena_assets.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_PAIRS = 48  # swap pairs in the small training subset (96 rows)
SMALL_VALIDATION_ROWS = 32


@dataclass(frozen=True)
class PairFiles:
    """Parquet files of one data set: train rows (swap pairs adjacent), validation rows, open-model pairs."""

    train: Path
    validation: Path
    open_pairs: Path


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run: its config, the metrics it returned and the adapter directory."""

    config: TrainConfig
    metrics: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return Path(self.config.output_dir)


@pytest.fixture(scope="session")
def demo_backbone(demo_project: Path) -> Path:
    """The demo profile's backbone directory (the embedded tiny Qwen2)."""
    return Settings(project_dir=demo_project).backbone


@pytest.fixture(scope="session")
def hard_label_files(demo_project: Path, tmp_path_factory: pytest.TempPathFactory) -> PairFiles:
    """The demo raw files read and built into the hard-label set, as the `hard_label_set` asset does."""
    settings = Settings(project_dir=demo_project)
    frames = [
        read_source("wsdm_train", [settings.wsdm_train_path]).frame,
        read_source("lmsys_55k", [settings.lmsys_55k_path]).frame,
        read_source("lmsys_33k", settings.lmsys_33k_paths()).frame,
    ]
    built = build_hard_label_set(frames, validation_fraction=settings.validation_fraction, seed=settings.seed)
    out = tmp_path_factory.mktemp("hard_label_set")
    files = PairFiles(out / "train.parquet", out / "validation.parquet", out / "open_pairs.parquet")
    built.train.to_parquet(files.train, index=False)
    built.validation.to_parquet(files.validation, index=False)
    open_pairs = read_source("open_model", settings.open_model_pair_paths()).frame
    open_pairs.to_parquet(files.open_pairs, index=False)
    return files


@pytest.fixture(scope="session")
def small_files(hard_label_files: PairFiles, tmp_path_factory: pytest.TempPathFactory) -> PairFiles:
    """The first 48 swap pairs, 32 validation rows and 32 open-model pairs: for mechanics, not accuracy."""
    out = tmp_path_factory.mktemp("small")
    files = PairFiles(out / "train.parquet", out / "validation.parquet", out / "open_pairs.parquet")
    pd.read_parquet(hard_label_files.train).head(2 * SMALL_PAIRS).to_parquet(files.train, index=False)
    pd.read_parquet(hard_label_files.validation).head(SMALL_VALIDATION_ROWS).to_parquet(files.validation,
                                                                                         index=False)
    pd.read_parquet(hard_label_files.open_pairs).head(32).to_parquet(files.open_pairs, index=False)
    return files


@pytest.fixture(scope="session")
def make_train_config(demo_project: Path) -> Callable[..., TrainConfig]:
    """Builds a TrainConfig the way the stage-1 asset does (demo overrides and sizes), plus `overrides`."""
    settings = Settings(project_dir=demo_project)

    def build(files: PairFiles, output_dir: Path, **overrides: Any) -> TrainConfig:
        values: dict[str, Any] = {
            **settings.train_overrides,
            "max_length": settings.max_length,
            "per_device_batch_size": settings.per_device_batch_size,
            "global_batch_size": settings.global_batch_size,
            "seed": settings.seed,
            "backbone": str(settings.backbone),
            "output_dir": str(output_dir),
            "train_path": str(files.train),
            "validation_path": str(files.validation),
            "log_every_steps": 1000,
            **overrides,
        }
        return TrainConfig(**values)

    return build


@pytest.fixture(scope="session")
def stage1_run(
    hard_label_files: PairFiles, make_train_config: Callable[..., TrainConfig],
    tmp_path_factory: pytest.TempPathFactory,
) -> TrainedRun:
    """Stage 1 on the whole demo hard-label set with the demo profile's settings (2 epochs); once per session.

    One epoch lands at 0.853 validation accuracy, a row away from the 0.85 bar; two reach 0.92.
    """
    from arena_assets.ranker.trainer import train

    out = tmp_path_factory.mktemp("stage1") / "adapter"
    config = make_train_config(hard_label_files, out)
    return TrainedRun(config=config, metrics=train(config))


@pytest.fixture(scope="session")
def merged_stage1(
    stage1_run: TrainedRun, demo_backbone: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The stage-1 adapter merged into the backbone (fp32 on the CPU), once per session."""
    from arena_assets.ranker.merger import merge

    out = tmp_path_factory.mktemp("merged_stage1") / "model"
    merge(MergeConfig(backbone=str(demo_backbone), adapter_dir=str(stage1_run.adapter_dir),
                      output_dir=str(out), max_length=stage1_run.config.max_length))
    return out


def module_command(module: str, config: Any, config_path: Path) -> list[str]:
    """`python -m <module> --config <file>` with `config` written to `config_path`."""
    save_config(config, config_path)
    return [sys.executable, "-m", module, "--config", str(config_path)]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without Dagster Pipes variables (the child runs standalone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_to_completion(command: list[str], log: Path, timeout: float = 300, **extra_env: str) -> str:
    """Run a child process to the end; returns its output, failing the test with it on a non-zero exit."""
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=REPO_ROOT, env=child_env(**extra_env), stdout=handle,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
    output = log.read_text()
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output[-4000:]}"
    return output


def kill_when(command: list[str], log: Path, ready: Callable[[], bool], timeout: float = 300) -> None:
    """Start a child, SIGKILL it as soon as `ready()` holds; fails if it ends first or never gets there."""
    with open(log, "w") as handle:
        child = subprocess.Popen(command, cwd=REPO_ROOT, env=child_env(), stdout=handle,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if child.poll() is not None:
                    pytest.fail(f"child exited ({child.returncode}) before it could be killed:\n"
                                f"{log.read_text()[-4000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"child not ready after {timeout} s:\n{log.read_text()[-4000:]}")
                time.sleep(0.01)
            child.kill()  # SIGKILL: no cleanup handlers run, as when a node dies
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
    assert child.returncode == -9, f"child was not killed by SIGKILL (exit {child.returncode})"
