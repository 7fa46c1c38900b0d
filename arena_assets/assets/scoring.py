"""GPU steps that score pairs: stage-1 soft logits, the final model's evaluation, and the submission."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from arena_assets.assets.datasets import hard_label_paths
from arena_assets.assets.metadata import artifact_metadata
from arena_assets.assets.raw import rows_path
from arena_assets.assets.run_config import build_ranker_config, run_config_class
from arena_assets.assets.training import GPU_POOL, GPU_TAGS, config_path, launch, model_dir
from arena_assets.ranker.artifacts import atomic_write_parquet, atomic_write_text
from arena_assets.ranker.config import ScoreConfig
from arena_assets.ranker.evaluation import pair_metrics, prob_b, swap_averaged_logits
from arena_assets.ranker.scorer import OUTPUT_NAME
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource
from arena_assets.settings import Settings

ScoreRunConfig = run_config_class(
    "ScoreRunConfig", ScoreConfig, exclude={"model", "adapter_dir", "input_path", "output_dir"}
)


def soft_logits_path(settings: Settings) -> Path:
    """The stage-1 model's letter logits on the open-model pairs."""
    return settings.artifact_dir("open_model_soft_logits") / OUTPUT_NAME


def score_with(
    context: dg.AssetExecutionContext,
    launcher: AccelerateLauncher,
    settings: Settings,
    run_config: dg.Config,
    *,
    asset_name: str,
    model_asset: str,
    input_path: Path,
    id_column: str = "id",
) -> dg.MaterializeResult:
    """Launch the scorer on `input_path` with the model of `model_asset`, output under `asset_name`."""
    wiring = {
        "model": str(model_dir(settings, model_asset)),
        "input_path": str(input_path),
        "id_column": id_column,
        "output_dir": str(settings.artifact_dir(asset_name)),
        "max_length": settings.max_length,
        "token_budget": settings.score_token_budget,
    }
    config = build_ranker_config(ScoreConfig, wiring, run_config=run_config)
    return launch(context, launcher, "arena_assets.ranker.scorer", config, config_path(settings, asset_name))


def _scored(settings: Settings, asset_name: str, keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Logits of both orders for the rows with these ids, in their order."""
    logits = pd.read_parquet(settings.artifact_dir(asset_name) / OUTPUT_NAME).set_index("id")
    aligned = logits.loc[keys.astype(str)]
    return (
        aligned[["a_logit", "b_logit"]].to_numpy(),
        aligned[["a_logit_swapped", "b_logit_swapped"]].to_numpy(),
    )


@dg.asset(
    group_name="stage1",
    deps=["merged_stage1_model", "open_model_pairs"],
    pool=GPU_POOL,
    tags=GPU_TAGS,
    kinds={"pytorch", "parquet"},
    code_version="1",
)
def open_model_soft_logits(
    context: dg.AssetExecutionContext,
    config: ScoreRunConfig,
    settings: ArenaSettingsResource,
    launcher: AccelerateLauncher,
) -> dg.MaterializeResult:
    """One row per open-model pair: the merged stage-1 model's A/B logits in both orders."""
    resolved = settings.settings()
    return score_with(
        context,
        launcher,
        resolved,
        config,
        asset_name="open_model_soft_logits",
        model_asset="merged_stage1_model",
        input_path=rows_path(resolved, "open_model_pairs"),
    )


@dg.asset(
    group_name="evaluation",
    deps=["final_model", "hard_label_set"],
    pool=GPU_POOL,
    tags=GPU_TAGS,
    kinds={"pytorch", "json"},
    code_version="1",
)
def evaluation(
    context: dg.AssetExecutionContext,
    config: ScoreRunConfig,
    settings: ArenaSettingsResource,
    launcher: AccelerateLauncher,
) -> dg.MaterializeResult:
    """The final model on the validation split: accuracy, log loss, calibration, with and without swap
    averaging, overall and per language."""
    resolved = settings.settings()
    validation_path = hard_label_paths(resolved)[1]
    launched = score_with(
        context,
        launcher,
        resolved,
        config,
        asset_name="evaluation",
        model_asset="final_model",
        input_path=validation_path,
        id_column="pair_id",
    )
    rows = pd.read_parquet(validation_path)
    logits, swapped = _scored(resolved, "evaluation", rows["pair_id"])
    labels = (rows["winner"] == "model_b").to_numpy().astype(np.int64)
    overall = pair_metrics(logits, swapped, labels)
    by_language = []
    for language, index in rows.groupby(rows["language"].fillna("unknown")).indices.items():
        scores = pair_metrics(logits[index], swapped[index], labels[index])
        by_language.append(
            dg.TableRecord(
                {"language": str(language), "rows": len(index), "accuracy": round(scores["accuracy_tta"], 4)}
            )
        )
    report = {**overall, "per_language": {r.data["language"]: r.data["accuracy"] for r in by_language}}
    atomic_write_text(resolved.artifact_dir("evaluation") / "report.json", json.dumps(report, indent=2))
    table = dg.MetadataValue.table(
        records=by_language,
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("language", "string"),
                dg.TableColumn("rows", "int"),
                dg.TableColumn("accuracy", "float"),
            ]
        ),
    )
    metadata = {
        **(launched.metadata or {}),
        **{f"val_{k}": v for k, v in overall.items()},
        "accuracy_by_language": table,
    }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="evaluation",
    deps=["final_model", "wsdm_test"],
    pool=GPU_POOL,
    tags=GPU_TAGS,
    kinds={"pytorch", "csv"},
    code_version="1",
)
def submission(
    context: dg.AssetExecutionContext,
    config: ScoreRunConfig,
    settings: ArenaSettingsResource,
    launcher: AccelerateLauncher,
) -> dg.MaterializeResult:
    """Kaggle submission `id,winner` for every WSDM test row, from the final model's swap-averaged logits."""
    resolved = settings.settings()
    test_path = rows_path(resolved, "wsdm_test")
    launched = score_with(
        context,
        launcher,
        resolved,
        config,
        asset_name="submission",
        model_asset="final_model",
        input_path=test_path,
    )
    rows = pd.read_parquet(test_path)
    logits, swapped = _scored(resolved, "submission", rows["id"])
    p_b = prob_b(swap_averaged_logits(logits, swapped))
    frame = pd.DataFrame(
        {"id": rows["id"].astype(np.int64), "winner": np.where(p_b > 0.5, "model_b", "model_a")}
    )
    out = resolved.artifact_dir("submission") / "submission.csv"
    atomic_write_text(out, frame.to_csv(index=False))
    atomic_write_parquet(frame.assign(prob_b=p_b), out.with_suffix(".parquet"))
    metadata = {
        **(launched.metadata or {}),
        "rows": len(frame),
        "share_model_b": float((p_b > 0.5).mean()),
        **artifact_metadata(out),
    }
    labels_path = resolved.wsdm_test_path.with_name("test_labels.parquet")
    if labels_path.is_file():  # the embedded demo ships the hidden test labels; real test sets do not
        truth = pd.read_parquet(labels_path).set_index("id").loc[frame["id"], "winner"].to_numpy()
        metadata["test_accuracy"] = float((frame["winner"].to_numpy() == truth).mean())
    return dg.MaterializeResult(metadata=metadata)


scoring_assets = [open_model_soft_logits, evaluation, submission]
