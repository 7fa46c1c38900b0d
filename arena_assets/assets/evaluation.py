"""Evaluation: the final model on the validation split, and the Kaggle submission for the test file.

Both score with the final model through the GPU launcher; the metrics and the submission frame are the
ranker's pure functions (arena_assets/ranker/evaluation.py).
"""

import json

import dagster as dg
import pandas as pd

from arena_assets.assets import layout
from arena_assets.assets.gpu_steps import GPU_POOL, GPU_TAGS, RANKER_CODE_VERSION, ScoreRunConfig, score
from arena_assets.assets.metadata import artifact_metadata, metrics_table
from arena_assets.ranker.artifacts import atomic_write_parquet, atomic_write_text
from arena_assets.ranker.evaluation import evaluation_report, read_logits, submission_frame
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource

# Demo only: the embedded default ships the hidden test labels beside the test file; real test sets do not.
TEST_LABELS_NAME = "test_labels.parquet"


@dg.asset(
    group_name="evaluation",
    deps=["final_model", "hard_label_set"],
    pool=GPU_POOL,
    tags=GPU_TAGS,
    kinds={"pytorch", "json"},
    code_version=RANKER_CODE_VERSION,
)
def evaluation(
    context: dg.AssetExecutionContext,
    config: ScoreRunConfig,
    settings: ArenaSettingsResource,
    launcher: AccelerateLauncher,
) -> dg.MaterializeResult:
    """The final model on the validation split: accuracy, log loss, calibration, with and without swap
    averaging, overall, on WSDM rows alone, per language and per source."""
    resolved = settings.settings()
    validation_path = layout.hard_label_paths(resolved)[1]
    launched = score(
        context,
        launcher,
        resolved,
        config,
        asset="evaluation",
        model_asset="final_model",
        input_path=validation_path,
        id_column="pair_id",
    )
    rows = pd.read_parquet(validation_path)
    logits, swapped = read_logits(layout.logits_path(resolved, "evaluation"), rows["pair_id"])
    report = evaluation_report(rows, logits, swapped)
    atomic_write_text(layout.report_path(resolved), json.dumps(report, indent=2))
    scalars = {k: v for k, v in report.items() if isinstance(v, float)}
    return dg.MaterializeResult(
        metadata={
            **(launched.metadata or {}),
            **{f"val_{k}": v for k, v in scalars.items()},
            "accuracy_by_language": metrics_table(report["per_language"], key="language"),
            "accuracy_by_source": metrics_table(report.get("per_source", {}), key="source"),
        }
    )


@dg.asset(
    group_name="evaluation",
    deps=["final_model", "wsdm_test"],
    pool=GPU_POOL,
    tags=GPU_TAGS,
    kinds={"pytorch", "csv"},
    code_version=RANKER_CODE_VERSION,
)
def submission(
    context: dg.AssetExecutionContext,
    config: ScoreRunConfig,
    settings: ArenaSettingsResource,
    launcher: AccelerateLauncher,
) -> dg.MaterializeResult:
    """Kaggle submission `id,winner` for every WSDM test row, from the final model's swap-averaged logits."""
    resolved = settings.settings()
    test_path = layout.rows_path(resolved, "wsdm_test")
    launched = score(
        context,
        launcher,
        resolved,
        config,
        asset="submission",
        model_asset="final_model",
        input_path=test_path,
    )
    rows = pd.read_parquet(test_path)
    frame = submission_frame(rows["id"], *read_logits(layout.logits_path(resolved, "submission"), rows["id"]))
    out = layout.submission_path(resolved)
    atomic_write_text(out, frame[["id", "winner"]].to_csv(index=False))
    atomic_write_parquet(frame, out.with_suffix(".parquet"))
    metadata = {
        **(launched.metadata or {}),
        "rows": len(frame),
        "share_model_b": float((frame["winner"] == "model_b").mean()),
        **artifact_metadata(out),
    }
    labels_path = resolved.wsdm_test_path.with_name(TEST_LABELS_NAME)
    if labels_path.is_file():
        truth = pd.read_parquet(labels_path).set_index("id").loc[frame["id"], "winner"].to_numpy()
        metadata["test_accuracy"] = float((frame["winner"].to_numpy() == truth).mean())
    return dg.MaterializeResult(metadata=metadata)


ASSETS = [evaluation, submission]
CHECKS: list[dg.AssetChecksDefinition] = []
