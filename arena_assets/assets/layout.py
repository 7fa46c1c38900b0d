"""Where every artifact lives: one directory per asset under the artifact root, and the files in it.

Assets, checks, the CLI and the tests find paths here, so no asset module needs another to know a path.
"""

from __future__ import annotations

from pathlib import Path

from arena_assets.ranker.artifacts import (
    LOGITS_NAME,
    MANIFEST_NAME,
    METRICS_NAME,
    PARITY_NAME,
    REPORT_NAME,
    SUBMISSION_NAME,
    TMP_MARK,
)
from arena_assets.settings import Settings

ROWS_NAME = "rows.parquet"  # a raw dataset's canonical rows
TRAIN_NAME, VALIDATION_NAME = "train.parquet", "validation.parquet"  # the hard-label set
STAGE2_NAME = "stage2.parquet"
MODEL_DIR_NAME = "model"  # an adapter or merged model directory inside its asset's directory
SCORES_DIR_NAME = "scores"  # a scoring asset's logits, metrics and manifest
CONFIG_NAME = "config.json"  # the ranker config an asset launched with
PREDICTIONS_NAME = "predictions.csv"

__all__ = [
    "CONFIG_NAME",
    "LOGITS_NAME",
    "MANIFEST_NAME",
    "METRICS_NAME",
    "PARITY_NAME",
    "REPORT_NAME",
    "SUBMISSION_NAME",
    "TMP_MARK",
]


def asset_dir(settings: Settings, asset: str) -> Path:
    """The directory an asset owns."""
    return settings.artifact_dir(asset)


def rows_path(settings: Settings, source: str) -> Path:
    """A raw dataset's canonical rows."""
    return asset_dir(settings, source) / ROWS_NAME


def hard_label_paths(settings: Settings) -> tuple[Path, Path]:
    """The hard-label set's train and validation parquet files."""
    directory = asset_dir(settings, "hard_label_set")
    return directory / TRAIN_NAME, directory / VALIDATION_NAME


def stage2_path(settings: Settings) -> Path:
    """The stage-2 dataset parquet."""
    return asset_dir(settings, "stage2_dataset") / STAGE2_NAME


def model_dir(settings: Settings, asset: str) -> Path:
    """The adapter or model directory of a training or merge asset."""
    return asset_dir(settings, asset) / MODEL_DIR_NAME


def config_path(settings: Settings, asset: str) -> Path:
    """The ranker config an asset writes next to its output and launches with."""
    return asset_dir(settings, asset) / CONFIG_NAME


def scores_dir(settings: Settings, asset: str) -> Path:
    """The scorer's output directory of a scoring asset."""
    return asset_dir(settings, asset) / SCORES_DIR_NAME


def logits_path(settings: Settings, asset: str) -> Path:
    """A scoring asset's letter logits."""
    return scores_dir(settings, asset) / LOGITS_NAME


def report_path(settings: Settings) -> Path:
    """The evaluation report."""
    return asset_dir(settings, "evaluation") / REPORT_NAME


def submission_path(settings: Settings) -> Path:
    """The Kaggle submission CSV."""
    return asset_dir(settings, "submission") / SUBMISSION_NAME


def predictions_path(settings: Settings) -> Path:
    """The submission asset's per-row probabilities (id, prob_a, prob_b, winner, both_orders)."""
    return asset_dir(settings, "submission") / PREDICTIONS_NAME
