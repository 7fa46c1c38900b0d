"""Asset checks, one function per invariant; blocking where a bad artifact must not reach GPU work."""

from __future__ import annotations

import json
import math

import dagster as dg
import numpy as np
import pandas as pd

from arena_assets.assets.datasets import hard_label_paths, stage2_path
from arena_assets.assets.raw import rows_path
from arena_assets.assets.scoring import soft_logits_path
from arena_assets.assets.training import model_dir
from arena_assets.readers.schema import CANONICAL_COLUMNS
from arena_assets.resources import ArenaSettingsResource

HARD_LABEL_COLUMNS = (*CANONICAL_COLUMNS, "pair_id", "is_swapped")
LABEL_SHARE_BOUNDS = (0.3, 0.7)  # share of B wins among original rows; outside it the data is suspicious
STAGE2_TOLERANCE = 0.02  # stage 2 may trail stage 1 by this much validation accuracy (at least)


@dg.asset_check(asset="hard_label_set", blocking=True)
def hard_label_schema(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Both splits have the canonical columns plus pair_id/is_swapped, and every winner is model_a/model_b."""
    problems = {}
    for path in hard_label_paths(settings.settings()):
        frame = pd.read_parquet(path)
        missing = [c for c in HARD_LABEL_COLUMNS if c not in frame.columns]
        bad_winners = (
            int((~frame["winner"].isin(["model_a", "model_b"])).sum()) if "winner" in frame else len(frame)
        )
        if missing or bad_winners:
            problems[path.name] = {"missing_columns": missing, "rows_without_winner": bad_winners}
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})


@dg.asset_check(asset="hard_label_set")
def label_balance_within_bounds(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """The share of B wins among original training rows lies within LABEL_SHARE_BOUNDS."""
    train = pd.read_parquet(hard_label_paths(settings.settings())[0])
    share = float((train.loc[~train["is_swapped"], "winner"] == "model_b").mean())
    low, high = LABEL_SHARE_BOUNDS
    return dg.AssetCheckResult(
        passed=low <= share <= high,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"observed_share_b": share, "expected_low": low, "expected_high": high},
    )


@dg.asset_check(asset="hard_label_set", blocking=True)
def no_prompt_in_both_splits(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """No normalised prompt appears in both the train and the validation split."""
    from arena_assets.hard_labels import normalise

    train_path, validation_path = hard_label_paths(settings.settings())
    shared = set(normalise(pd.read_parquet(train_path)["prompt"])) & set(
        normalise(pd.read_parquet(validation_path)["prompt"])
    )
    return dg.AssetCheckResult(
        passed=not shared, metadata={"observed_shared_prompts": len(shared), "expected_shared_prompts": 0}
    )


@dg.asset_check(asset="hard_label_set", blocking=True)
def swap_pairs_complete(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Train rows come as (original, swap) pairs: one pair_id, responses exchanged, label flipped."""
    train = pd.read_parquet(hard_label_paths(settings.settings())[0])
    first, second = train.iloc[0::2].reset_index(drop=True), train.iloc[1::2].reset_index(drop=True)
    if len(first) != len(second):
        return dg.AssetCheckResult(
            passed=False, metadata={"observed_rows": len(train), "expected": "even count"}
        )
    broken = (
        (first["pair_id"] != second["pair_id"])
        | first["is_swapped"]
        | ~second["is_swapped"]
        | (first["response_a"] != second["response_b"])
        | (first["response_b"] != second["response_a"])
        | (first["winner"] == second["winner"])
    )
    return dg.AssetCheckResult(
        passed=not broken.any(),
        metadata={
            "observed_broken_pairs": int(broken.sum()),
            "expected_broken_pairs": 0,
            "pairs": len(first),
        },
    )


@dg.asset_check(asset="open_model_soft_logits", blocking=True)
def soft_logits_cover_open_pairs(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Every open-model pair has four finite logits, and no id is scored twice."""
    resolved = settings.settings()
    logits = pd.read_parquet(soft_logits_path(resolved))
    expected = set(pd.read_parquet(rows_path(resolved, "open_model_pairs"))["id"].astype(str))
    values = logits[["a_logit", "b_logit", "a_logit_swapped", "b_logit_swapped"]].to_numpy()
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


@dg.asset_check(asset="stage2_dataset", blocking=True)
def soft_label_rows_finite(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Every stage-2 row has two finite teacher logits."""
    frame = pd.read_parquet(stage2_path(settings.settings()))
    values = np.stack(frame["teacher_logits"].map(lambda v: np.asarray(v, dtype=np.float64)).to_list())
    ok = values.ndim == 2 and values.shape[1] == 2 and bool(np.isfinite(values).all())
    return dg.AssetCheckResult(
        passed=ok, metadata={"observed_nonfinite": int((~np.isfinite(values)).sum()), "rows": len(frame)}
    )


def merge_parity_check(asset: str) -> dg.AssetChecksDefinition:
    """The merged model's letter logits equal the adapter model's on the probe batch (from parity.json)."""

    @dg.asset_check(
        asset=asset,
        name="merged_model_matches_adapter",
        blocking=True,
        description=f"{asset} gives the adapter model's letter logits on a probe batch.",
    )
    def _check(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
        report = json.loads((model_dir(settings.settings(), asset) / "parity.json").read_text())
        return dg.AssetCheckResult(
            passed=report["max_abs_logit_diff"] <= report["atol"],
            metadata={
                "observed_max_abs_diff": report["max_abs_logit_diff"],
                "expected_at_most": report["atol"],
            },
        )

    return _check


def stage2_tolerance(stage1_accuracy: float, validation_rows: int | None) -> float:
    """STAGE2_TOLERANCE, or two standard errors of the stage-1 accuracy when the split is small.

    On a small validation split the accuracy's sampling noise alone exceeds 0.02; a check tighter than
    the noise would block the final model at random.
    """
    if not validation_rows:
        return STAGE2_TOLERANCE
    noise = 2.0 * math.sqrt(stage1_accuracy * (1.0 - stage1_accuracy) / validation_rows)
    return max(STAGE2_TOLERANCE, noise)


@dg.asset_check(asset="stage2_adapter", blocking=True)
def stage2_not_worse_than_stage1(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Stage-2 validation accuracy is at least stage 1's minus the tolerance (`stage2_tolerance`)."""
    resolved = settings.settings()
    stage1, stage2 = (
        json.loads((model_dir(resolved, name) / "metrics.json").read_text())
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


asset_checks = [
    hard_label_schema,
    label_balance_within_bounds,
    no_prompt_in_both_splits,
    swap_pairs_complete,
    soft_logits_cover_open_pairs,
    soft_label_rows_finite,
    merge_parity_check("merged_stage1_model"),
    merge_parity_check("final_model"),
    stage2_not_worse_than_stage1,
]
