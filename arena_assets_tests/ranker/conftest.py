"""Ranker integration fixtures: the demo hard-label set, small subsets, the demo recipe on other files, and
the session's demo run (stage 1 and its merge) for tests of trained models."""

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
from transformers.models.qwen2 import modeling_qwen2

from arena_assets.assets import layout
from arena_assets.hard_labels import hard_label_set_of
from arena_assets.ranker.config import TrainConfig, load_config, save_config
from arena_assets.readers import read_source
from arena_assets.settings import Settings
from arena_assets_tests.demo_graph import DemoRun

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_PAIRS = 48  # swap pairs in the small training subset (96 rows)
SMALL_VALIDATION_ROWS = 32
# liger patches these module globals even when applied to one model instance, so on a GPU every Qwen2 model
# built later in the process, a CPU model's too, would get its (CUDA-only) kernels.
_QWEN2_GLOBALS = {name: getattr(modeling_qwen2, name) for name in ("apply_rotary_pos_emb", "Qwen2RMSNorm",
                                                                    "Qwen2MLP")}


@pytest.fixture(autouse=True)
def transformers_own_qwen2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from transformers' Qwen2 code; what a test's liger patched is undone after it."""
    for name, original in _QWEN2_GLOBALS.items():
        monkeypatch.setattr(modeling_qwen2, name, original)


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
    built = hard_label_set_of(settings)
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
    pd.read_parquet(hard_label_files.validation).head(SMALL_VALIDATION_ROWS).to_parquet(
        files.validation, index=False
    )
    pd.read_parquet(hard_label_files.open_pairs).head(32).to_parquet(files.open_pairs, index=False)
    return files


@pytest.fixture(scope="session")
def make_train_config(demo_project: Path) -> Callable[..., TrainConfig]:
    """The demo's stage-1 config (configs/ranker/demo/stage1.yaml, as the asset loads it) on other files."""
    settings = Settings(project_dir=demo_project)

    def build(files: PairFiles, output_dir: Path, **overrides: Any) -> TrainConfig:
        paths = {
            "backbone": str(settings.backbone),
            "output_dir": str(output_dir),
            "train_path": str(files.train),
            "validation_path": str(files.validation),
        }
        fields = {**paths, "log_every_steps": 1000, **overrides}
        return settings.ranker_config(TrainConfig, "stage1", **fields)

    return build


@pytest.fixture(scope="session")
def stage1_run(demo_run: DemoRun) -> TrainedRun:
    """Stage 1 of the session's demo run (the stage1_adapter asset): its config and metrics."""
    config = load_config(TrainConfig, layout.config_path(demo_run.settings, "stage1_adapter"))
    return TrainedRun(config=config, metrics=demo_run.metrics("stage1_adapter"))


@pytest.fixture(scope="session")
def merged_stage1(demo_run: DemoRun) -> Path:
    """The stage-1 adapter merged into the backbone (fp32 on the CPU) by the session's demo run."""
    return layout.model_dir(demo_run.settings, "merged_stage1_model")


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
