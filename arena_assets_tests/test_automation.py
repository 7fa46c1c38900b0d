"""Automation: the schedule that observes the raw files, and the sensor that rebuilds what they made stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,  # not exported; what a check run records as its target
)

from arena_assets.automation import OBSERVE_CRON
from arena_assets.definitions import defs

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


def test_schedule_and_sensor_run_out_of_the_box() -> None:
    schedule = defs.resolve_schedule_def("observe_raw_files_every_5_minutes")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == OBSERVE_CRON
    job = defs.resolve_job_def(schedule.job_name)
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == RAW_FILES
    sensor = defs.resolve_sensor_def("rebuild_stale_assets")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_changed_raw_file_requests_its_dataset(
    graph: dg.AssetGraph, demo_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw_dir = tmp_path / "raw"
    shutil.copytree(demo_project / "data/raw/demo", raw_dir)
    monkeypatch.setenv("ARENA_RAW_DIR", str(raw_dir))  # what the Definitions' settings resource reads
    observe = defs.get_job_def("observe_raw_files")
    with dg.instance_for_test() as instance:
        assert observe.execute_in_process(instance=instance).success
        built_by_hand(instance, graph)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(first, graph) == set()

        # Same files observed again: same content hashes, nothing stale.
        assert observe.execute_in_process(instance=instance).success
        unchanged = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert requested(unchanged, graph) == set()

        train = raw_dir / "wsdm" / "train.parquet"
        pd.read_parquet(train).iloc[:-1].to_parquet(train, index=False)
        assert observe.execute_in_process(instance=instance).success
        changed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=unchanged.cursor)
        # wsdm_train and, in the same run, the hard-label set built from it; stage 1 waits for that
        # hard-label set's blocking checks. The other sources are untouched.
        assert requested(changed, graph) == {"wsdm_train", "hard_label_set"}

        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=changed.cursor)
        assert requested(again, graph) == set()


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
