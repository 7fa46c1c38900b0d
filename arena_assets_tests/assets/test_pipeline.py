"""The whole graph, raw files to submission, materialized in this process on the embedded default (CPU)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from arena_assets_tests.assets.conftest import (
    SMALL_RUN_CONFIG,
    SMALL_TRAIN,
    demo_resources,
    graph_assets,
    graph_checks,
    resolved,
)

MATERIALIZED = [
    "wsdm_train",
    "wsdm_test",
    "lmsys_55k",
    "lmsys_33k",
    "open_model_pairs",
    "hard_label_set",
    "stage1_adapter",
    "merged_stage1_model",
    "open_model_soft_logits",
    "stage2_dataset",
    "stage2_adapter",
    "final_model",
    "evaluation",
    "submission",
]


@pytest.fixture(scope="module")
def pipeline(demo_project: Path, tmp_path_factory: pytest.TempPathFactory):
    """One in-process run of every asset and check, with short training (SMALL_RUN_CONFIG)."""
    artifact_root = tmp_path_factory.mktemp("pipeline") / "artifacts"
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*graph_assets(), *graph_checks()],
            selection="*",
            resources=demo_resources(demo_project, artifact_root),
            run_config=SMALL_RUN_CONFIG,
            instance=instance,
            raise_on_error=False,
        )
        yield result, resolved(demo_project, artifact_root)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    """The raw values of an asset's materialization metadata in this run."""
    (materialization,) = [
        m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(asset)
    ]
    return {k: v.value for k, v in materialization.materialization.metadata.items()}


@pytest.mark.slow
def test_every_asset_materializes_and_every_check_passes(pipeline) -> None:
    result, _ = pipeline
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == set(MATERIALIZED)
    # The observable raw files are not part of a materialize run (the schedule observes them).
    assert not result.get_asset_observation_events()
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()
    }
    declared = {
        (key.asset_key.to_user_string(), key.name) for check in graph_checks() for key in check.check_keys
    }
    assert len(result.get_asset_check_evaluations()) == len(declared) == 9
    assert evaluations == dict.fromkeys(declared, True)


@pytest.mark.slow
def test_hard_label_set_metadata(pipeline) -> None:
    result, settings = pipeline
    meta = metadata(result, "hard_label_set")
    train = pd.read_parquet(settings.artifact_dir("hard_label_set") / "train.parquet")
    assert meta["train_rows"] == len(train) == 2 * meta["train_pairs"] > 0
    drops = {r.data["reason"]: r.data["rows"] for r in meta["drops_by_reason"].records}
    assert sum(drops.values()) == meta["rows_dropped"] and drops["duplicate"] == meta["dropped_duplicate"]
    languages = {r.data["language"]: r.data["rows"] for r in meta["language_mix"].records}
    assert sum(languages.values()) == meta["train_pairs"] and len(languages) > 1


@pytest.mark.slow
def test_stage1_adapter_metadata(pipeline) -> None:
    result, settings = pipeline
    meta = metadata(result, "stage1_adapter")
    assert meta["steps"] == SMALL_TRAIN["max_steps"]  # the run config reached the trainer
    assert 0.0 <= meta["val_accuracy"] <= 1.0 and meta["val_rows"] == SMALL_TRAIN["max_validation_rows"]
    assert meta["train_tokens_per_second"] > 0
    assert "](data:image/" in meta["loss_curve"]  # an inline image in markdown
    assert (Path(meta["adapter_dir"]) / "adapter_config.json").is_file()
    assert Path(meta["config_path"]) == settings.artifact_dir("stage1_adapter") / "config.json"


@pytest.mark.slow
def test_evaluation_and_submission(pipeline) -> None:
    result, settings = pipeline
    evaluation = metadata(result, "evaluation")
    validation = pd.read_parquet(settings.artifact_dir("hard_label_set") / "validation.parquet")
    assert 0.0 <= evaluation["val_accuracy"] <= 1.0 and evaluation["val_rows"] == len(validation)
    assert (settings.artifact_dir("evaluation") / "report.json").is_file()

    submission = metadata(result, "submission")
    test = pd.read_parquet(settings.wsdm_test_path)
    assert submission["rows"] == len(test)
    csv = pd.read_csv(settings.artifact_dir("submission") / "submission.csv")
    assert list(csv.columns) == ["id", "winner"]
    assert sorted(csv["id"]) == sorted(test["id"])
    assert set(csv["winner"]) <= {"model_a", "model_b"}
