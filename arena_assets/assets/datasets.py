"""Training sets: the hard-label set (stage 1) and the soft-label stage-2 dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from arena_assets.assets.metadata import (
    artifact_metadata,
    column_schema,
    count_table,
    drop_metadata,
    label_balance,
    language_mix,
)
from arena_assets.assets.raw import rows_path
from arena_assets.hard_labels import build_hard_label_set
from arena_assets.ranker.artifacts import atomic_directory, file_sha256, write_manifest
from arena_assets.ranker.config import Stage2DatasetConfig, config_to_dict
from arena_assets.ranker.soft_labels import build_stage2_dataset
from arena_assets.resources import ArenaSettingsResource
from arena_assets.settings import Settings

HARD_LABEL_SOURCES = ("wsdm_train", "lmsys_55k", "lmsys_33k")
TRAIN_FILE, VALIDATION_FILE, STAGE2_FILE = "train.parquet", "validation.parquet", "stage2.parquet"


def hard_label_paths(settings: Settings) -> tuple[Path, Path]:
    """The hard-label set's train and validation parquet files."""
    directory = settings.artifact_dir("hard_label_set")
    return directory / TRAIN_FILE, directory / VALIDATION_FILE


def stage2_path(settings: Settings) -> Path:
    """The stage-2 dataset parquet."""
    return settings.artifact_dir("stage2_dataset") / STAGE2_FILE


def token_length_metadata(settings: Settings, frame: pd.DataFrame) -> dict[str, Any]:
    """Token-length percentiles and truncation rate of the judge prompts at the configured max_length."""
    from transformers import AutoTokenizer

    from arena_assets.ranker.data import encode_frame
    from arena_assets.ranker.prompt import PromptTemplate

    if not (settings.backbone / "tokenizer_config.json").is_file():
        raise dg.Failure(
            f"no tokenizer at {settings.backbone}: build the embedded default (`arena build-demo`) "
            "or point ARENA_BACKBONE at a Hugging Face model directory"
        )
    template = PromptTemplate.from_tokenizer(AutoTokenizer.from_pretrained(settings.backbone))
    encoded = encode_frame(template, frame, max_length=settings.max_length, rebalance=True)
    return {k: round(v, 4) for k, v in encoded.length_report().items()}


@dg.asset(
    group_name="data",
    deps=list(HARD_LABEL_SOURCES),
    kinds={"pandas", "parquet"},
    code_version="1",
)
def hard_label_set(settings: ArenaSettingsResource) -> dg.MaterializeResult:
    """Stage-1 rows: one per human-judged (prompt, A, B), deduplicated across sources, ties dropped; each
    train row is followed by its A/B swap (same pair_id, label flipped); validation is split by prompt."""
    resolved = settings.settings()
    frames = [pd.read_parquet(rows_path(resolved, name)) for name in HARD_LABEL_SOURCES]
    built = build_hard_label_set(frames, validation_fraction=resolved.validation_fraction, seed=resolved.seed)
    out_dir = resolved.artifact_dir("hard_label_set")
    with atomic_directory(out_dir) as tmp:
        built.train.to_parquet(tmp / TRAIN_FILE, index=False)
        built.validation.to_parquet(tmp / VALIDATION_FILE, index=False)
        write_manifest(
            tmp,
            config={"validation_fraction": resolved.validation_fraction, "seed": resolved.seed},
            inputs={n: file_sha256(rows_path(resolved, n)) for n in HARD_LABEL_SOURCES},
        )
    originals = built.train[~built.train["is_swapped"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(built.train),
            "train_rows": len(built.train),
            "train_pairs": len(originals),
            "validation_rows": len(built.validation),
            "rows_in": built.rows_in,
            **drop_metadata(built.drops),
            **label_balance(originals),
            "source_mix": count_table(
                originals["source"].value_counts().to_dict(), key="source", total=len(originals)
            ),
            "language_mix": language_mix(originals),
            **token_length_metadata(resolved, originals),
            "dagster/column_schema": column_schema(built.train),
            **artifact_metadata(out_dir),
        }
    )


@dg.asset(
    group_name="stage2",
    deps=["hard_label_set", "open_model_soft_logits", "open_model_pairs"],
    kinds={"pandas", "parquet"},
    code_version="1",
)
def stage2_dataset(settings: ArenaSettingsResource) -> dg.MaterializeResult:
    """Stage-2 rows: human rows with teacher logits at softmax 0.95/0.05 plus open-model pairs with the
    stage-1 logits averaged over both orders; every row followed by its A/B swap (the "240k parquet")."""
    from arena_assets.assets.scoring import soft_logits_path

    resolved = settings.settings()
    config = Stage2DatasetConfig(
        hard_label_train_path=str(hard_label_paths(resolved)[0]),
        soft_logits_path=str(soft_logits_path(resolved)),
        open_pairs_path=str(rows_path(resolved, "open_model_pairs")),
        output_path=str(stage2_path(resolved)),
    )
    counts = build_stage2_dataset(config)
    dataset = pd.read_parquet(config.output_path)
    write_manifest(
        stage2_path(resolved).parent,
        config=config_to_dict(config),
        inputs={
            "hard_label_train": file_sha256(Path(config.hard_label_train_path)),
            "soft_logits": file_sha256(Path(config.soft_logits_path)),
        },
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(dataset),
            **counts,
            "label_source_mix": count_table(
                dataset["label_source"].value_counts().to_dict(), key="label_source", total=len(dataset)
            ),
            "dagster/column_schema": column_schema(dataset),
            **artifact_metadata(stage2_path(resolved)),
        }
    )


datasets = [hard_label_set, stage2_dataset]
