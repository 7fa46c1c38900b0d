"""The one Definitions: assets by domain, checks, resources, automation."""

from __future__ import annotations

import dagster as dg

from arena_assets.assets.datasets import datasets
from arena_assets.assets.raw import raw_datasets, raw_files
from arena_assets.assets.scoring import scoring_assets
from arena_assets.assets.training import training_assets
from arena_assets.automation import (
    REBUILD_WHEN_STALE,
    full_pipeline_job,
    observe_raw_files_job,
    observe_raw_files_schedule,
    rebuild_stale_assets_sensor,
)
from arena_assets.checks import asset_checks
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource
from arena_assets.settings import load_settings

_settings = load_settings()

defs = dg.Definitions(
    assets=[
        raw_files,
        *dg.map_asset_specs(
            lambda spec: spec.replace_attributes(automation_condition=REBUILD_WHEN_STALE),
            [*raw_datasets, *datasets, *training_assets, *scoring_assets],
        ),
    ],
    asset_checks=asset_checks,
    jobs=[full_pipeline_job, observe_raw_files_job],
    schedules=[observe_raw_files_schedule],
    sensors=[rebuild_stale_assets_sensor],
    resources={
        "settings": ArenaSettingsResource(),
        "launcher": AccelerateLauncher(num_processes=_settings.num_processes),
    },
)
