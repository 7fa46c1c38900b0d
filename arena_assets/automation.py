"""Automation: observe the raw files on a schedule; rebuild whatever their new versions made stale."""

from __future__ import annotations

import dagster as dg

from arena_assets.assets.data import RAW_SOURCES

OBSERVE_CRON = "*/5 * * * *"

# Rebuild an asset once its parents changed, never while a parent is still updating, and only when the
# blocking checks of its parents passed (a bad hard-label set must not reach a GPU).
REBUILD_WHEN_STALE = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()

observe_raw_files_job = dg.define_asset_job(
    "observe_raw_files",
    selection=dg.AssetSelection.assets(*[s.file_key for s in RAW_SOURCES]),
    description="Hash the raw input files; a changed hash marks everything downstream stale.",
)

observe_raw_files_schedule = dg.ScheduleDefinition(
    name="observe_raw_files_every_5_minutes",
    job=observe_raw_files_job,
    cron_schedule=OBSERVE_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

rebuild_stale_assets_sensor = dg.AutomationConditionSensorDefinition(
    "rebuild_stale_assets",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Materializes assets whose upstream data changed (eager, gated on blocking checks).",
)

full_pipeline_job = dg.define_asset_job(
    "full_pipeline", selection=dg.AssetSelection.all(), description="Every asset, raw files to submission."
)
