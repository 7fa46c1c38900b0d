"""Incremental equals clean: a new open-model file, observed by the sensor and rebuilt by the automation,
gives the teacher logits, stage-2 rows and final metrics a clean build from scratch gives.

On a small copy of the embedded default and a few optimizer steps a stage: the equality, not the learning,
is under test (the demo's learning is asserted in test_pipeline.py).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from arena_assets.assets import layout
from arena_assets.automation import observe_raw_files_sensor
from arena_assets.definitions import defs
from arena_assets.resources import ArenaSettingsResource
from arena_assets_tests.demo_graph import graph_assets, graph_checks
from arena_assets_tests.fixtures.cpus import cpu_halves, on_cpus
from arena_assets_tests.fixtures.preloaded_launcher import PreloadedLauncher

SHORT = {"max_steps": 3, "max_validation_rows": 16, "log_every_steps": 1}
TRAINING = ("stage1_adapter", "stage2_adapter")
REBUILD_SECONDS = 240  # the automation's rebuild of a new open-model file, on two cores
REBUILT = {"open_model_pairs", "open_model_soft_logits", "stage2_dataset", "stage2_adapter", "final_model",
           "evaluation", "submission"}  # fmt: skip


def _small_raw_copy(demo_project: Path, raw_dir: Path) -> None:
    """The demo's raw files, cut to a few hundred rows each (the same layouts and awkward rows)."""
    source = demo_project / "data/raw/demo"
    shutil.copytree(source, raw_dir)
    for name, rows in (
        ("wsdm/train.parquet", 300),
        ("wsdm/test.parquet", 40),
        ("wsdm/test_labels.parquet", 40),
    ):
        pd.read_parquet(source / name).head(rows).to_parquet(raw_dir / name, index=False)
    for name in ("lmsys_55k/train.csv", "lmsys_33k/additional_33k.csv"):
        pd.read_csv(source / name).head(80).to_csv(raw_dir / name, index=False)
    for version in ("v1", "v2", "v3"):
        path = f"open_model_pairs/{version}.parquet"
        pd.read_parquet(source / path).head(40).to_parquet(raw_dir / path, index=False)


def _resources(project: Path, raw_dir: Path, artifacts: Path) -> dict:
    settings = ArenaSettingsResource(
        profile="demo",
        backbone=str(project / "data/embedded/tiny-qwen2"),
        raw_dir=str(raw_dir),
        artifact_root=str(artifacts),
    )
    # One process a step instead of accelerate's two, forked with the ranker imported: the launch itself is
    # tested elsewhere, and 19 step processes would each spend seconds importing torch and peft.
    return {"settings": settings, "launcher": PreloadedLauncher(cpu=True)}


def _materialize(resources: dict, instance: dg.DagsterInstance, assets: set[str] | None = None) -> None:
    """Every asset (`assets` None) or those named, the training ones with SHORT steps."""
    trained = [name for name in TRAINING if assets is None or name in assets]
    result = dg.materialize(
        [*graph_assets(), *graph_checks()],
        selection="*" if assets is None else sorted(assets),
        resources=resources,
        instance=instance,
        run_config={"ops": {name: {"config": SHORT} for name in trained}},
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]


def _add_v4(raw_dir: Path) -> None:
    """A new open-model file: v1's pairs with new ids and prompts."""
    v1 = pd.read_parquet(raw_dir / "open_model_pairs/v1.parquet")
    v4 = v1.assign(id="v4-" + v1["id"].astype(str), prompt=v1["prompt"] + " (v4)").head(20)
    v4.to_parquet(raw_dir / "open_model_pairs/v4.parquet", index=False)


def _clean_build(project: Path, raw_dir: Path, artifacts: Path) -> None:
    """Every asset from scratch, in a process of its own (a spawned child's target)."""
    with dg.instance_for_test() as instance:
        _materialize(_resources(project, raw_dir, artifacts), instance)


def _observe(instance: dg.DagsterInstance, resources: dict) -> int:
    result = observe_raw_files_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return len(result.asset_events)


def _built(instance: dg.DagsterInstance, key: str) -> int:
    return len(instance.fetch_materializations(dg.AssetKey(key), limit=100).records)


@pytest.mark.slow
def test_a_new_open_model_file_rebuilds_only_what_it_changed_and_equals_a_clean_build(
    demo_project: Path, tmp_path: Path
) -> None:
    raw_dir = tmp_path / "raw"
    _small_raw_copy(demo_project, raw_dir)
    # The clean build starts now, on a copy that already holds the new file, in another process, and each
    # build runs on its own half of the CPUs (fixtures/cpus.py): both are mostly single-threaded Python
    # (Dagster's and the steps'), and with as many CPUs they use as many torch threads, as equality needs.
    clean_raw = tmp_path / "clean-raw"
    shutil.copytree(raw_dir, clean_raw)
    _add_v4(clean_raw)
    clean_build = multiprocessing.get_context("spawn").Process(
        target=_clean_build, args=(demo_project, clean_raw, tmp_path / "clean")
    )
    halves = cpu_halves()
    with on_cpus(halves[1]):
        clean_build.start()
    try:
        incremental = _resources(demo_project, raw_dir, tmp_path / "incremental")
        with on_cpus(halves[0]), dg.instance_for_test() as instance:
            assert _observe(instance, incremental) == 5
            _materialize(incremental, instance)
            # The sensor's tick so far.
            baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
            assert not baseline.total_requested

            _add_v4(raw_dir)
            assert _observe(instance, incremental) == 1  # only the open-model pairs changed
            cursor, rebuilt, deadline = baseline.cursor, set(), time.monotonic() + REBUILD_SECONDS
            while True:  # what the automation sensor does, tick after tick, until nothing is stale
                tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
                cursor = tick.cursor
                keys = defs.resolve_asset_graph().materializable_asset_keys
                requested = {k.to_user_string() for k in keys if tick.get_num_requested(k)}
                if not requested:
                    break
                _materialize(incremental, instance, requested)
                rebuilt |= requested
                assert time.monotonic() < deadline, f"still rebuilding after {REBUILD_SECONDS} s: {rebuilt}"
            assert rebuilt == REBUILT
            assert _built(instance, "stage1_adapter") == _built(instance, "merged_stage1_model") == 1
            # Another tick for the same change, and a touched file with the same content: nothing.
            (raw_dir / "open_model_pairs/v4.parquet").touch()
            assert _observe(instance, incremental) == 0
            assert not dg.evaluate_automation_conditions(
                defs=defs, instance=instance, cursor=cursor
            ).total_requested

        clean_build.join(timeout=600)
        assert clean_build.exitcode == 0, f"the clean build failed (exit code {clean_build.exitcode})"
    finally:
        if clean_build.is_alive():  # the test failed before the clean build ended
            clean_build.kill()
    clean = _resources(demo_project, clean_raw, tmp_path / "clean")
    settings = {
        name: r["settings"].settings() for name, r in (("incremental", incremental), ("clean", clean))
    }
    pd.testing.assert_frame_equal(
        *(pd.read_parquet(layout.logits_path(s, "open_model_soft_logits")) for s in settings.values())
    )
    pd.testing.assert_frame_equal(*(pd.read_parquet(layout.stage2_path(s)) for s in settings.values()))
    final = [json.loads(layout.report_path(s).read_text()) for s in settings.values()]
    assert final[0] == final[1]
    metrics = [
        json.loads((layout.model_dir(s, "stage2_adapter") / layout.METRICS_NAME).read_text())
        for s in settings.values()
    ]
    assert {k: v for k, v in metrics[0].items() if k.startswith("val_")} == {
        k: v for k, v in metrics[1].items() if k.startswith("val_")
    }
