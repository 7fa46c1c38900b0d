"""One typed settings object: which profile runs, where its files are, and the few run-wide overrides.

The `demo` profile (default) trains the embedded tiny model on the generated sample data. The `qwen14b`
profile points at a local Qwen2.5-14B-Instruct directory and the real raw files. Switch with one
environment variable (`ARENA_PROFILE=qwen14b`) or the same line in a `.env` file in the working directory;
any field can be overridden the same way (`ARENA_BACKBONE=/models/qwen`, `ARENA_ARTIFACT_ROOT=...`).

Configuration is a staircase, each step listing only what it changes: the ranker defaults
(arena_assets/ranker/config.py), then the profile's recipe file for the step
(configs/ranker/<profile>/<step>.yaml), then the run-wide overrides below when set, then the artifact paths
the asset decides, then the launchpad's run config for that one asset.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from arena_assets.ranker.config import TrainConfig, config_from_dict, field_types

C = TypeVar("C")
Profile = Literal["demo", "qwen14b"]
RankerStep = Literal["stage1", "stage2", "score", "merge", "predict"]

# The profiles' recipe files: configs/ranker/<profile>/<step>.yaml, ranker config fields by name.
RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs" / "ranker"

# What each profile changes of the settings below.
PROFILES: dict[str, dict[str, Any]] = {
    "demo": {
        "backbone": "data/embedded/tiny-qwen2",
        "raw_dir": "data/raw/demo",
        "artifact_root": "data/artifacts",
        # A fifth of the demo's ~2,900 judged rows: over 500 validation rows, about 1 point of standard error.
        "validation_fraction": 0.2,
    },
    "qwen14b": {
        "backbone": "data/models/Qwen2.5-14B-Instruct",
        "raw_dir": "data/raw",
        "artifact_root": "data/artifacts_qwen14b",
    },
}

# Run-wide overrides: when set, each applies to every ranker step that has the field.
RUN_WIDE_FIELDS = ("max_length", "per_device_batch_size", "global_batch_size", "seed")


class Settings(BaseSettings):
    """Run-wide settings; a field left unset takes its profile's value (PROFILES), then the default here."""

    model_config = SettingsConfigDict(env_prefix="ARENA_", env_file=".env", extra="ignore")

    profile: Profile = "demo"
    project_dir: Path = Field(default_factory=Path.cwd, description="Relative paths resolve against this.")

    # model and files (every profile sets them)
    backbone: Path | None = Field(None, description="Hugging Face model directory of the backbone.")
    raw_dir: Path | None = Field(None, description="Root of the raw files (layout: README, 'Data').")
    artifact_root: Path | None = Field(None, description="Each asset writes under <artifact_root>/<asset>/.")
    # data
    validation_fraction: float = 0.05
    multi_turn_policy: Literal["join", "first", "drop"] = "join"
    # run-wide overrides of the ranker steps (None: the recipe's value)
    seed: int | None = Field(None, description="Training seed, also the split's and the sample data's.")
    max_length: int | None = None
    per_device_batch_size: int | None = None
    global_batch_size: int | None = None
    # runtime
    num_processes: int = Field(1, ge=1, description="Processes per GPU step (the launcher's default).")

    def model_post_init(self, __context: Any) -> None:
        for name, value in PROFILES[self.profile].items():
            if name not in self.model_fields_set or getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("backbone", "raw_dir", "artifact_root"):
            path = Path(getattr(self, name))
            object.__setattr__(self, name, path if path.is_absolute() else self.project_dir / path)

    @property
    def data_seed(self) -> int:
        """Seed of the train/validation split and the sample data: `seed`, else the ranker's default."""
        return self.seed if self.seed is not None else TrainConfig.seed

    def recipe_path(self, step: RankerStep) -> Path:
        """The profile's recipe file for one ranker step (it may not exist: then the ranker defaults)."""
        return RECIPES_DIR / self.profile / f"{step}.yaml"

    def recipe(self, step: RankerStep) -> dict[str, Any]:
        """The ranker config fields the profile's recipe sets for one step."""
        path = self.recipe_path(step)
        return dict(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

    def run_wide_overrides(self) -> dict[str, Any]:
        """The run-wide ranker fields that are set, for every step that has them."""
        return {name: getattr(self, name) for name in RUN_WIDE_FIELDS if getattr(self, name) is not None}

    def ranker_config(self, cls: type[C], step: RankerStep, **fields: Any) -> C:
        """One step's ranker config: defaults < the recipe file < run-wide overrides < `fields`.

        ValueError names the step and the field when a value is not one the dataclass accepts.
        """
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = self.recipe(step)
        values.update({k: v for k, v in self.run_wide_overrides().items() if k in names})
        values.update(fields)
        for name, annotation in field_types(cls).items():
            choices = get_args(annotation) if get_origin(annotation) is Literal else ()
            if choices and name in values and values[name] not in choices:
                raise ValueError(
                    f"{step} config field {name!r} is {values[name]!r}; choose one of {list(choices)}"
                )
        try:
            return config_from_dict(cls, values)
        except ValueError as error:
            raise ValueError(f"{step} config ({self.recipe_path(step)} and overrides): {error}") from error

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
