"""GPU steps that make models: the stage-1 and stage-2 LoRA adapters and their merged models.

Each asset builds the ranker's typed config (ranker defaults, then the profile, then the run config),
writes it next to its output, and runs the ranker entry point as an `accelerate launch` child through
Pipes; the child's rank 0 reports the metadata.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from arena_assets.assets.datasets import hard_label_paths, stage2_path
from arena_assets.assets.run_config import build_ranker_config, run_config_class
from arena_assets.ranker.config import MergeConfig, TrainConfig, save_config
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource
from arena_assets.settings import Settings

GPU_POOL = "gpu"
GPU_TAGS = {"arena/gpu": "true"}
_WIRED = {"backbone", "output_dir", "train_path", "validation_path", "label"}

Stage1TrainRunConfig = run_config_class("Stage1TrainRunConfig", TrainConfig, exclude=_WIRED)
Stage2TrainRunConfig = run_config_class("Stage2TrainRunConfig", TrainConfig, exclude=_WIRED)
MergeRunConfig = run_config_class(
    "MergeRunConfig", MergeConfig, exclude={"backbone", "adapter_dir", "output_dir"}
)


def model_dir(settings: Settings, asset_name: str) -> Path:
    """The model or adapter directory an asset writes."""
    return settings.artifact_dir(asset_name) / "model"


def config_path(settings: Settings, asset_name: str) -> Path:
    """Where an asset writes the ranker config it launches with (next to its output)."""
    return settings.artifact_dir(asset_name) / "config.json"


def sizes(settings: Settings) -> dict[str, Any]:
    """Run-wide sizes from the settings, as ranker config fields."""
    return {
        "max_length": settings.max_length,
        "per_device_batch_size": settings.per_device_batch_size,
        "global_batch_size": settings.global_batch_size,
        "seed": settings.seed,
    }


def train_config(settings: Settings, run_config: dg.Config, *, stage: int) -> TrainConfig:
    """The TrainConfig of stage 1 (hard labels) or stage 2 (soft labels), always from the base backbone."""
    train_path = hard_label_paths(settings)[0] if stage == 1 else stage2_path(settings)
    wiring = {
        "backbone": str(settings.backbone),
        "output_dir": str(model_dir(settings, f"stage{stage}_adapter")),
        "train_path": str(train_path),
        "validation_path": str(hard_label_paths(settings)[1]),
        "label": "hard" if stage == 1 else "soft",
    }
    return build_ranker_config(
        TrainConfig, settings.train_overrides, sizes(settings), wiring, run_config=run_config
    )


def launch(
    context: dg.AssetExecutionContext, launcher: AccelerateLauncher, module: str, config: Any, path: Path
) -> dg.MaterializeResult:
    """Write the config, run the module as a Pipes child, and add the config path to its metadata."""
    save_config(config, path)
    result = launcher.materialize(context=context, module=module, config_path=path)
    metadata = {**(result.metadata or {}), "config_path": dg.MetadataValue.path(str(path))}
    return dg.MaterializeResult(
        metadata=metadata, check_results=result.check_results, data_version=result.data_version
    )


def adapter_asset(
    stage: int, dataset: str, run_config: type[dg.Config], description: str
) -> dg.AssetsDefinition:
    """The LoRA adapter asset of one stage, trained from the base backbone on `dataset`."""
    name = f"stage{stage}_adapter"

    @dg.asset(
        name=name,
        group_name=f"stage{stage}",
        deps=[dataset],
        pool=GPU_POOL,
        tags=GPU_TAGS,
        kinds={"pytorch", "peft"},
        code_version="1",
        description=description,
    )
    def _adapter(
        context: dg.AssetExecutionContext,
        config: run_config,
        settings: ArenaSettingsResource,
        launcher: AccelerateLauncher,
    ) -> dg.MaterializeResult:
        resolved = settings.settings()
        ranker = train_config(resolved, config, stage=stage)
        return launch(context, launcher, "arena_assets.ranker.trainer", ranker, config_path(resolved, name))

    return _adapter


stage1_adapter = adapter_asset(
    1,
    "hard_label_set",
    Stage1TrainRunConfig,
    "LoRA adapter trained on the hard-label set (cross-entropy on the A/B letter logits).",
)


def merge_asset(name: str, adapter: str, description: str) -> dg.AssetsDefinition:
    """An asset that merges `adapter` into the base backbone."""

    @dg.asset(
        name=name,
        group_name=adapter.split("_")[0],
        deps=[adapter],
        pool=GPU_POOL,
        tags=GPU_TAGS,
        kinds={"pytorch", "safetensors"},
        code_version="1",
        description=description,
    )
    def _merge(
        context: dg.AssetExecutionContext,
        config: MergeRunConfig,
        settings: ArenaSettingsResource,
        launcher: AccelerateLauncher,
    ) -> dg.MaterializeResult:
        resolved = settings.settings()
        wiring = {
            "backbone": str(resolved.backbone),
            "adapter_dir": str(model_dir(resolved, adapter)),
            "output_dir": str(model_dir(resolved, name)),
            "max_length": resolved.max_length,
        }
        merge_config = build_ranker_config(MergeConfig, wiring, run_config=config)
        return launch(
            context, launcher, "arena_assets.ranker.merger", merge_config, config_path(resolved, name)
        )

    return _merge


merged_stage1_model = merge_asset(
    "merged_stage1_model",
    "stage1_adapter",
    "Backbone with the stage-1 adapter merged in (safetensors); parity with the adapter checked on a probe.",
)


stage2_adapter = adapter_asset(
    2,
    "stage2_dataset",
    Stage2TrainRunConfig,
    "LoRA adapter trained from the base backbone on the stage-2 dataset (soft cross-entropy).",
)


final_model = merge_asset(
    "final_model",
    "stage2_adapter",
    "The final ranker: backbone with the stage-2 adapter merged in; what evaluation and submission use.",
)

training_assets = [stage1_adapter, merged_stage1_model, stage2_adapter, final_model]
