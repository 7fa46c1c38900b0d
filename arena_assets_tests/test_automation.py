"""Automation: the sensor that observes the raw files (no runs), and the one that rebuilds what is stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,  # not exported; what a check run records as its target
)

from arena_assets.automation import OBSERVE_SECONDS, observe_raw_files_sensor
from arena_assets.definitions import defs
from arena_assets.resources import ArenaSettingsResource

RAW_FILES = {
    "wsdm_train_files",
    "wsdm_test_files",
    "lmsys_55k_files",
    "lmsys_33k_files",
    "open_model_pairs_files",
}
HARD_LABEL_SET = dg.AssetKey("hard_label_set")


@pytest.fixture(scope="module")
def graph() -> dg.AssetGraph:
    return defs.resolve_asset_graph()


def requested(result: dg.EvaluateAutomationConditionsResult, graph: dg.AssetGraph) -> set[str]:
    """Names of the assets a tick requested."""
    return {key.to_user_string() for key in graph.materializable_asset_keys if result.get_num_requested(key)}


def built_by_hand(instance: dg.DagsterInstance, graph: dg.AssetGraph) -> None:
    """Record a materialization of every asset (a first build by hand), without any check results."""
    for key in graph.materializable_asset_keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def observe(instance: dg.DagsterInstance, raw_dir: Path) -> int:
    """One tick of the observing sensor, its events recorded as the daemon records them; returns how many."""
    context = dg.build_sensor_context(
        instance=instance, resources={"settings": ArenaSettingsResource(raw_dir=str(raw_dir))}
    )
    result = observe_raw_files_sensor(context)
    assert not result.run_requests  # observations only: the run list stays clean
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return len(result.asset_events)


def test_sensors_run_out_of_the_box() -> None:
    observing = defs.resolve_sensor_def("observe_raw_files")
    assert observing.default_status == dg.DefaultSensorStatus.RUNNING
    assert observing.minimum_interval_seconds == OBSERVE_SECONDS <= 60
    assert not defs.schedules and {job.name for job in defs.jobs or []} == {"full_pipeline"}
    sensor = defs.resolve_sensor_def("rebuild_stale_assets")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_changed_raw_file_requests_its_dataset(
    graph: dg.AssetGraph, demo_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw_dir = tmp_path / "raw"
    shutil.copytree(demo_project / "data/raw/demo", raw_dir)
    with dg.instance_for_test() as instance:
        assert observe(instance, raw_dir) == len(RAW_FILES)
        assert not instance.get_runs()
        built_by_hand(instance, graph)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(first, graph) == set()

        # Observed again, and again after a touch that keeps the content: nothing new, nothing stale.
        assert observe(instance, raw_dir) == 0
        (raw_dir / "wsdm" / "train.parquet").touch()
        assert observe(instance, raw_dir) == 0
        unchanged = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert requested(unchanged, graph) == set()

        train = raw_dir / "wsdm" / "train.parquet"
        pd.read_parquet(train).iloc[:-1].to_parquet(train, index=False)
        assert observe(instance, raw_dir) == 1
        changed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=unchanged.cursor)
        # wsdm_train and, in the same run, the hard-label set built from it; stage 1 waits for that
        # hard-label set's blocking checks. The other sources are untouched.
        assert requested(changed, graph) == {"wsdm_train", "hard_label_set"}

        # A second tick for the same change requests nothing.
        assert observe(instance, raw_dir) == 0
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=changed.cursor)
        assert requested(again, graph) == set()
        assert not instance.get_runs()


def _hard_label_set_built(instance: dg.DagsterInstance, graph: dg.AssetGraph, *, failed: set[str]) -> None:
    """A new materialization of hard_label_set whose checks in `failed` failed and the others passed."""
    instance.report_runless_asset_event(dg.AssetMaterialization(HARD_LABEL_SET))
    record = instance.fetch_materializations(HARD_LABEL_SET, limit=1).records[0]
    target = AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )
    for key in graph.asset_check_keys:
        if key.asset_key == HARD_LABEL_SET:
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=HARD_LABEL_SET,
                    check_name=key.name,
                    passed=key.name not in failed,
                    target_materialization_data=target,
                )
            )


def test_failed_blocking_check_holds_back_stage1(graph: dg.AssetGraph) -> None:
    with dg.instance_for_test() as instance:
        for key in RAW_FILES:
            instance.report_runless_asset_event(dg.AssetObservation(key, tags={"dagster/data_version": "v1"}))
        built_by_hand(instance, graph)
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(tick, graph) == set()

        _hard_label_set_built(instance, graph, failed={"swap_pairs_complete"})
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert requested(tick, graph) == set()

        # label_balance_within_bounds only warns: it does not hold anything back.
        _hard_label_set_built(instance, graph, failed={"label_balance_within_bounds"})
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        # stage1_adapter, the merge and the scoring in the same run (the merge's parity check is its own,
        # so a failed parity stops that run before the scoring); stage2_dataset and evaluation also read
        # the hard-label set but wait for the blocking checks of their other parents (none recorded here).
        assert requested(tick, graph) == {"stage1_adapter", "merged_stage1_model", "open_model_soft_logits"}
