"""Evaluation: the final model on the validation split, and the Kaggle submission for the test file.

Both score with the final model through the GPU launcher; the metrics and the submission frame are the
ranker's pure functions (arena_assets/ranker/evaluation.py).
"""

import json

import dagster as dg
import pandas as pd

from arena_assets.assets import layout
from arena_assets.assets.gpu_steps import (
    GPU_POOL,
    GPU_TAGS,
    RANKER_CODE_VERSION,
    PredictRunConfig,
    ScoreRunConfig,
    launch,
    ranker_config,
    score,
)
from arena_assets.assets.metadata import artifact_metadata, metrics_table
from arena_assets.ranker.artifacts import atomic_write_text, model_identity, write_manifest
from arena_assets.ranker.config import PredictConfig, config_to_dict
from arena_assets.ranker.evaluation import evaluation_report, read_logits
from arena_assets.ranker.pipes import readable
from arena_assets.ranker.plots import reliability_markdown
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
            **readable({f"val_{k}": v for k, v in scalars.items()}),
            **(launched.metadata or {}),
            "reliability": dg.MetadataValue.md(reliability_markdown(report["calibration_bins"])),
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
    config: PredictRunConfig,
    settings: ArenaSettingsResource,
    launcher: AccelerateLauncher,
) -> dg.MaterializeResult:
    """Kaggle submission `id,winner` for every WSDM test row from the final model, by the predictor that runs
    anywhere the model goes (`arena predict`): both orders for the least certain rows (all, by default)."""
    resolved = settings.settings()
    wiring = {
        "model": str(layout.model_dir(resolved, "final_model")),
        "input_path": str(layout.rows_path(resolved, "wsdm_test")),
        "output_path": str(layout.predictions_path(resolved)),
        "submission_path": str(layout.submission_path(resolved)),
    }
    predict = ranker_config(PredictConfig, resolved, "predict", wiring=wiring, run_config=config)
    directory = layout.asset_dir(resolved, "submission")
    # The manifest marks the CSVs finished, so the last run's goes before this run writes new ones.
    (directory / layout.MANIFEST_NAME).unlink(missing_ok=True)
    launched = launch(context, launcher, "arena_assets.ranker.predict", predict, "submission", resolved)
    write_manifest(
        directory,
        config=config_to_dict(predict),
        inputs={"final_model": model_identity(predict.model)},
        extra={"kind": "submission"},
    )
    frame = pd.read_csv(layout.predictions_path(resolved))
    metadata = {**(launched.metadata or {}), **artifact_metadata(layout.submission_path(resolved))}
    labels_path = resolved.wsdm_test_path.with_name(TEST_LABELS_NAME)
    if labels_path.is_file():
        truth = pd.read_parquet(labels_path).set_index("id").loc[frame["id"], "winner"].to_numpy()
        metadata["test_accuracy"] = float((frame["winner"].to_numpy() == truth).mean())
    return dg.MaterializeResult(metadata=metadata)


ASSETS = [evaluation, submission]
CHECKS: list[dg.AssetChecksDefinition] = []
