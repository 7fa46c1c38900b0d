"""Stage 2: the soft-label dataset, the adapter trained on it from the base backbone, and the final model."""

import json
import math

import dagster as dg
import pandas as pd

from arena_assets.assets import layout
from arena_assets.assets.gpu_steps import RANKER_CODE_VERSION, adapter_asset, merge_asset
from arena_assets.assets.metadata import artifact_metadata, column_schema, count_table
from arena_assets.ranker.config import Stage2DatasetConfig
from arena_assets.ranker.soft_labels import build_stage2_dataset
from arena_assets.resources import ArenaSettingsResource

SOFT_LABELS_FINITE = "soft_label_rows_finite"
STAGE2_TOLERANCE = 0.02  # stage 2 may trail stage 1 by this much validation accuracy (at least)


@dg.asset(
    group_name="stage2",
    deps=["hard_label_set", "open_model_soft_logits", "open_model_pairs"],
    kinds={"pandas", "parquet"},
    code_version=RANKER_CODE_VERSION,
    check_specs=[
        dg.AssetCheckSpec(
            SOFT_LABELS_FINITE,
            asset="stage2_dataset",
            blocking=True,
            description="Every stage-2 row has two finite teacher logits.",
        )
    ],
)
def stage2_dataset(settings: ArenaSettingsResource) -> dg.MaterializeResult:
    """Stage-2 rows: human rows with teacher logits at softmax 0.95/0.05 plus open-model pairs with the
    stage-1 logits averaged over both orders (pairs sharing a validation prompt left out); every row
    followed by its A/B swap (the "240k parquet")."""
    resolved = settings.settings()
    train_path, validation_path = layout.hard_label_paths(resolved)
    config = Stage2DatasetConfig(
        hard_label_train_path=str(train_path),
        soft_logits_path=str(layout.logits_path(resolved, "open_model_soft_logits")),
        open_pairs_path=str(layout.rows_path(resolved, "open_model_pairs")),
        validation_path=str(validation_path),
        output_dir=str(layout.asset_dir(resolved, "stage2_dataset")),
    )
    counts = build_stage2_dataset(config)
    dataset = pd.read_parquet(layout.stage2_path(resolved))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(dataset),
            **counts,
            "label_source_mix": count_table(
                dataset["label_source"].value_counts().to_dict(), key="label_source", total=len(dataset)
            ),
            "dagster/column_schema": column_schema(dataset),
            **artifact_metadata(layout.stage2_path(resolved)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=SOFT_LABELS_FINITE,
                passed=counts["nonfinite_teacher_rows"] == 0,
                metadata={
                    "observed_nonfinite_rows": counts["nonfinite_teacher_rows"],
                    "expected_nonfinite_rows": 0,
                    "rows": counts["rows"],
                },
            )
        ],
    )


stage2_adapter = adapter_asset(
    2,
    "stage2_dataset",
    layout.stage2_path,
    "LoRA adapter trained from the base backbone on the stage-2 dataset (soft cross-entropy).",
)

final_model = merge_asset(
    "final_model",
    "stage2_adapter",
    "stage2",
    "The final ranker: backbone with the stage-2 adapter merged in; what evaluation and submission use.",
)


def stage2_tolerance(stage1_accuracy: float, validation_rows: int | None) -> float:
    """STAGE2_TOLERANCE, or two standard errors of the stage-1 accuracy when the split is small.

    On a small validation split the accuracy's sampling noise alone exceeds 0.02; a check tighter than
    the noise would block the final model at random.
    """
    if not validation_rows:
        return STAGE2_TOLERANCE
    noise = 2.0 * math.sqrt(stage1_accuracy * (1.0 - stage1_accuracy) / validation_rows)
    return max(STAGE2_TOLERANCE, noise)


@dg.asset_check(asset=stage2_adapter, blocking=True)
def stage2_not_worse_than_stage1(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Stage-2 validation accuracy is at least stage 1's minus the tolerance (`stage2_tolerance`)."""
    resolved = settings.settings()
    stage1, stage2 = (
        json.loads((layout.model_dir(resolved, name) / layout.METRICS_NAME).read_text())
        for name in ("stage1_adapter", "stage2_adapter")
    )
    tolerance = stage2_tolerance(stage1["val_accuracy"], stage1.get("val_rows"))
    return dg.AssetCheckResult(
        passed=stage2["val_accuracy"] >= stage1["val_accuracy"] - tolerance,
        metadata={
            "observed_stage2_accuracy": stage2["val_accuracy"],
            "stage1_accuracy": stage1["val_accuracy"],
            "tolerance": round(tolerance, 4),
        },
    )


ASSETS = [stage2_dataset, stage2_adapter, final_model]
CHECKS = [stage2_not_worse_than_stage1]
