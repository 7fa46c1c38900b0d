"""The one Definitions: each pipeline stage's assets and checks, the resources, the automation."""

from __future__ import annotations

import dagster as dg

from arena_assets.assets import data, evaluation, stage1, stage2
from arena_assets.automation import (
    REBUILD_WHEN_STALE,
    full_pipeline_job,
    observe_raw_files_sensor,
    rebuild_stale_assets_sensor,
)
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource
from arena_assets.runs import releasing_executor

# data:       raw_files (observed), wsdm_train, wsdm_test, lmsys_55k, lmsys_33k, open_model_pairs,
#             hard_label_set
# stage1:     stage1_adapter, merged_stage1_model, open_model_soft_logits
# stage2:     stage2_dataset, stage2_adapter, final_model
# evaluation: evaluation, submission
STAGES = (data, stage1, stage2, evaluation)

defs = dg.Definitions(
    assets=[
        data.raw_files,
        *dg.map_asset_specs(
            lambda spec: spec.replace_attributes(automation_condition=REBUILD_WHEN_STALE),
            [asset for stage in STAGES for asset in stage.ASSETS if asset is not data.raw_files],
        ),
    ],
    asset_checks=[check for stage in STAGES for check in stage.CHECKS],
    jobs=[full_pipeline_job],
    sensors=[observe_raw_files_sensor, rebuild_stale_assets_sensor],
    resources={"settings": ArenaSettingsResource(), "launcher": AccelerateLauncher()},
    # Dagster's executor, after releasing the runs whose process died (a killed CLI run held the gpu pool).
    executor=releasing_executor,
)
