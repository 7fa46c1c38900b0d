"""One typed settings object: which profile runs, where its files are, and the run-wide sizes.

The `demo` profile (default) trains the embedded tiny model on the generated sample data. The `qwen14b`
profile points at a local Qwen2.5-14B-Instruct directory and the real raw files. Switch with one
environment variable (`ARENA_PROFILE=qwen14b`) or the same line in a `.env` file in the working directory;
any field can be overridden the same way (`ARENA_BACKBONE=/models/qwen`, `ARENA_ARTIFACT_ROOT=...`).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["demo", "qwen14b"]

# Per-profile values for settings the user leaves unset. The ranker's own defaults (the 14B
# recipe) live in arena_assets/ranker/config.py; a profile only lists what it changes.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "demo": {
        "backbone": "data/embedded/tiny-qwen2",
        "raw_dir": "data/raw/demo",
        "artifact_root": "data/artifacts",
        "max_length": 384,
        "per_device_batch_size": 16,
        "global_batch_size": 16,
        "score_token_budget": 32768,
    },
    "qwen14b": {
        "backbone": "data/models/Qwen2.5-14B-Instruct",
        "raw_dir": "data/raw",
        "artifact_root": "data/artifacts_qwen14b",
        "max_length": 4096,
        "per_device_batch_size": 2,
        "global_batch_size": 16,
        "score_token_budget": 16384,
    },
}

# Training knobs the demo profile changes so that a 0.3M-parameter random model learns in minutes on CPU.
# The qwen14b profile keeps every ranker default.
PROFILE_TRAIN_OVERRIDES: dict[str, dict[str, Any]] = {
    "demo": {
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "lr_lora_a": 2e-3,
        "lr_lora_b": 4e-3,
        "epochs": 2,
        "warmup_ratio": 0.05,
        "gradient_checkpointing": 0.0,
    },
    "qwen14b": {},
}


class Settings(BaseSettings):
    """Run-wide settings; unset fields take the profile's value (see PROFILE_DEFAULTS)."""

    model_config = SettingsConfigDict(env_prefix="ARENA_", env_file=".env", extra="ignore")

    profile: Profile = "demo"
    project_dir: Path = Field(default_factory=Path.cwd, description="Relative paths resolve against this.")

    # model
    backbone: Path | None = Field(None, description="Hugging Face model directory of the backbone.")
    # data
    raw_dir: Path | None = Field(None, description="Root of the raw files (layout: README, 'Data').")
    artifact_root: Path | None = Field(None, description="Each asset writes under <artifact_root>/<asset>/.")
    validation_fraction: float = 0.05
    multi_turn_policy: Literal["join", "first", "drop"] = "join"
    seed: int = 42
    # sizes
    max_length: int | None = None
    per_device_batch_size: int | None = None
    global_batch_size: int | None = None
    score_token_budget: int | None = None
    num_processes: int = 1

    def model_post_init(self, __context: Any) -> None:
        for name, value in PROFILE_DEFAULTS[self.profile].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("backbone", "raw_dir", "artifact_root"):
            path = Path(getattr(self, name))
            object.__setattr__(self, name, path if path.is_absolute() else self.project_dir / path)

    @property
    def train_overrides(self) -> dict[str, Any]:
        """Ranker TrainConfig fields this profile sets (besides sizes and paths)."""
        return dict(PROFILE_TRAIN_OVERRIDES[self.profile])

    # Raw file locations, fixed relative to raw_dir (README, 'Data').
    @cached_property
    def wsdm_train_path(self) -> Path:
        return self.raw_dir / "wsdm" / "train.parquet"

    @cached_property
    def wsdm_test_path(self) -> Path:
        return self.raw_dir / "wsdm" / "test.parquet"

    @cached_property
    def lmsys_55k_path(self) -> Path:
        return self.raw_dir / "lmsys_55k" / "train.csv"

    @cached_property
    def lmsys_33k_dir(self) -> Path:
        return self.raw_dir / "lmsys_33k"

    @cached_property
    def open_model_pairs_dir(self) -> Path:
        return self.raw_dir / "open_model_pairs"

    def lmsys_33k_paths(self) -> list[Path]:
        return sorted(self.lmsys_33k_dir.glob("*.csv"))

    def open_model_pair_paths(self) -> list[Path]:
        return sorted(self.open_model_pairs_dir.glob("*.parquet"))

    def artifact_dir(self, asset_name: str) -> Path:
        return self.artifact_root / asset_name


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and `.env`), with explicit overrides on top."""
    return Settings(**overrides)
