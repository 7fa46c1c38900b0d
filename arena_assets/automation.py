"""Automation: a sensor observes the raw files (no run per observation); the automation sensor rebuilds
whatever their new versions made stale."""

from __future__ import annotations

import dagster as dg

from arena_assets.assets.data import changed_observations
from arena_assets.resources import ArenaSettingsResource

OBSERVE_SECONDS = 60  # a changed raw file is noticed within about a minute

# Rebuild an asset once its parents changed, never while a parent is still updating, and only when the
# blocking checks of its parents passed (a bad hard-label set must not reach a GPU).
REBUILD_WHEN_STALE = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


@dg.sensor(
    name="observe_raw_files",
    minimum_interval_seconds=OBSERVE_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Hashes the raw files; reports a new data version (no run) only when a file set changed.",
)
def observe_raw_files_sensor(
    context: dg.SensorEvaluationContext, settings: ArenaSettingsResource
) -> dg.SensorResult:
    """Runless observations of the raw file sets whose content hash changed since the last one recorded."""
    return dg.SensorResult(asset_events=changed_observations(context.instance, settings.settings()))


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
