"""Stage 1: the hard-label adapter, the merged teacher, and the teacher's logits on the open-model pairs."""

import dagster as dg
import numpy as np
import pandas as pd

from arena_assets.assets import layout
from arena_assets.assets.gpu_steps import (
    GPU_POOL,
    GPU_TAGS,
    RANKER_CODE_VERSION,
    ScoreRunConfig,
    adapter_asset,
    merge_asset,
    score,
)
from arena_assets.ranker.artifacts import LOGIT_COLUMNS
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource

stage1_adapter = adapter_asset(
    1,
    "hard_label_set",
    lambda settings: layout.hard_label_paths(settings)[0],
    "LoRA adapter trained on the hard-label set (cross-entropy on the A/B letter logits).",
)

merged_stage1_model = merge_asset(
    "merged_stage1_model",
    "stage1_adapter",
    "stage1",
    "Backbone with the stage-1 adapter merged in (safetensors); parity with the adapter checked on a probe.",
)


@dg.asset(
    group_name="stage1",
    deps=["merged_stage1_model", "open_model_pairs"],
    pool=GPU_POOL,
    tags=GPU_TAGS,
    kinds={"pytorch", "parquet"},
    code_version=RANKER_CODE_VERSION,
)
def open_model_soft_logits(
    context: dg.AssetExecutionContext,
    config: ScoreRunConfig,
    settings: ArenaSettingsResource,
    launcher: AccelerateLauncher,
) -> dg.MaterializeResult:
    """One row per open-model pair: the merged stage-1 model's A/B logits in both orders."""
    resolved = settings.settings()
    return score(
        context,
        launcher,
        resolved,
        config,
        asset="open_model_soft_logits",
        model_asset="merged_stage1_model",
        input_path=layout.rows_path(resolved, "open_model_pairs"),
    )


@dg.asset_check(asset=open_model_soft_logits, blocking=True)
def soft_logits_cover_open_pairs(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Every open-model pair has four finite logits, and no id is scored twice."""
    resolved = settings.settings()
    logits = pd.read_parquet(layout.logits_path(resolved, "open_model_soft_logits"))
    expected = set(pd.read_parquet(layout.rows_path(resolved, "open_model_pairs"))["id"].astype(str))
    values = logits[list(LOGIT_COLUMNS)].to_numpy()
    missing = len(expected - set(logits["id"]))
    return dg.AssetCheckResult(
        passed=bool(np.isfinite(values).all()) and missing == 0 and not logits["id"].duplicated().any(),
        metadata={
            "observed_nonfinite": int((~np.isfinite(values)).sum()),
            "observed_missing_ids": missing,
            "observed_duplicate_ids": int(logits["id"].duplicated().sum()),
            "expected_rows": len(expected),
        },
    )


ASSETS = [stage1_adapter, merged_stage1_model, open_model_soft_logits]
CHECKS = [soft_logits_cover_open_pairs]
