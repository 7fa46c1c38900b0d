"""What every GPU step shares: the pool, run configs made from the ranker's dataclasses, the config
staircase, the Pipes launch, and the asset factories for adapters, merges and scoring.

A GPU asset builds its ranker config (ranker defaults < the profile's recipe file < run-wide settings <
artifact paths < the launchpad), writes it next to its output and runs the ranker entry point as an
`accelerate launch` child through Pipes; the child's rank 0 reports metadata and check results.
"""

# No `from __future__ import annotations` in the asset modules: Dagster reads run-config classes from
# the annotations at definition time.
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import dagster as dg
from pydantic import Field, create_model

from arena_assets.assets import layout
from arena_assets.ranker.artifacts import RANKER_DIR, source_version
from arena_assets.ranker.config import (
    MergeConfig,
    PredictConfig,
    ScoreConfig,
    TrainConfig,
    field_defaults,
    field_types,
    save_config,
)
from arena_assets.ranker.pipes import PARITY_CHECK
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource
from arena_assets.settings import RankerStep, Settings

GPU_POOL = "gpu"
GPU_TAGS = {"arena/gpu": "true"}
# The code a GPU step runs: the ranker and this wiring. A change to either marks these assets stale.
RANKER_CODE_VERSION = source_version(RANKER_DIR, Path(__file__))

# Fields each asset sets from the artifact layout, and benchmark-only fields: not in the launchpad.
_TRAIN_WIRED = {"backbone", "output_dir", "train_path", "validation_path", "label", "random_init"}
_MERGE_WIRED = {"backbone", "adapter_dir", "output_dir"}
_SCORE_WIRED = {"model", "adapter_dir", "input_path", "id_column", "output_dir", "random_init"}
_PREDICT_WIRED = {"model", "input_path", "id_column", "output_path", "submission_path"}


def _schema_type(annotation: Any) -> Any:
    """Dagster config has no tuple or Literal type: tuples become lists, Literals their value type."""
    origin = get_origin(annotation)
    if origin is tuple:
        return list[next(a for a in get_args(annotation) if a is not Ellipsis)]
    if origin is Literal:  # the choices are checked in ranker_config
        return type(get_args(annotation)[0])
    return annotation


def run_config_class(name: str, ranker_config: type, *, exclude: set[str]) -> type[dg.Config]:
    """A `dg.Config` with every ranker field but `exclude` as an optional override (unset: the recipe)."""
    defaults = field_defaults(ranker_config)
    fields: dict[str, Any] = {}
    for field_name, annotation in field_types(ranker_config).items():
        if field_name in exclude:
            continue
        choices = f"one of {list(get_args(annotation))}; " if get_origin(annotation) is Literal else ""
        description = (
            f"{choices}unset: the profile's recipe, else the ranker default {defaults[field_name]!r}"
        )
        fields[field_name] = (
            typing.Optional[_schema_type(annotation)],  # noqa: UP045 - pydantic needs the runtime form
            Field(default=None, description=description),
        )
    return create_model(name, __base__=dg.Config, **fields)


TrainRunConfig = run_config_class("TrainRunConfig", TrainConfig, exclude=_TRAIN_WIRED)
MergeRunConfig = run_config_class("MergeRunConfig", MergeConfig, exclude=_MERGE_WIRED)
ScoreRunConfig = run_config_class("ScoreRunConfig", ScoreConfig, exclude=_SCORE_WIRED)
PredictRunConfig = run_config_class("PredictRunConfig", PredictConfig, exclude=_PREDICT_WIRED)


def ranker_config(
    cls: type,
    settings: Settings,
    step: RankerStep,
    *,
    wiring: dict[str, Any] | None = None,
    run_config: dg.Config | None = None,
) -> Any:
    """One step's ranker config (`Settings.ranker_config`), the paths and the launchpad's fields on top."""
    fields = dict(wiring or {})
    if run_config is not None:
        fields.update({k: v for k, v in run_config.model_dump().items() if v is not None})
    try:
        return settings.ranker_config(cls, step, **fields)
    except ValueError as error:
        raise dg.Failure(str(error)) from error


def launch(
    context: dg.AssetExecutionContext,
    launcher: AccelerateLauncher,
    module: str,
    config: Any,
    asset: str,
    settings: Settings,
) -> dg.MaterializeResult:
    """Write the config next to the asset's output, run the module as a Pipes child, return its result."""
    path = save_config(config, layout.config_path(settings, asset))
    result = launcher.materialize(context=context, module=module, config_path=path)
    metadata = {**(result.metadata or {}), "config_path": dg.MetadataValue.path(str(path))}
    return dg.MaterializeResult(
        metadata=metadata, check_results=result.check_results, data_version=result.data_version
    )


def adapter_asset(
    stage: int, dataset: str, train_path: typing.Callable[[Settings], Path], description: str
) -> dg.AssetsDefinition:
    """The LoRA adapter of one stage, trained from the base backbone on `dataset`."""
    name = f"stage{stage}_adapter"
    step: RankerStep = "stage1" if stage == 1 else "stage2"

    @dg.asset(
        name=name,
        group_name=step,
        deps=[dataset],
        pool=GPU_POOL,
        tags=GPU_TAGS,
        kinds={"pytorch", "peft"},
        code_version=RANKER_CODE_VERSION,
        description=description,
    )
    def _adapter(
        context: dg.AssetExecutionContext,
        config: TrainRunConfig,
        settings: ArenaSettingsResource,
        launcher: AccelerateLauncher,
    ) -> dg.MaterializeResult:
        resolved = settings.settings()
        wiring = {
            "backbone": str(resolved.backbone),
            "output_dir": str(layout.model_dir(resolved, name)),
            "train_path": str(train_path(resolved)),
            "validation_path": str(layout.hard_label_paths(resolved)[1]),
            "label": "hard" if stage == 1 else "soft",
        }
        train = ranker_config(TrainConfig, resolved, step, wiring=wiring, run_config=config)
        return launch(context, launcher, "arena_assets.ranker.trainer", train, name, resolved)

    return _adapter


def merge_asset(name: str, adapter: str, group: str, description: str) -> dg.AssetsDefinition:
    """The base backbone with `adapter` merged in; the merger reports the parity check it computes."""

    @dg.asset(
        name=name,
        group_name=group,
        deps=[adapter],
        pool=GPU_POOL,
        tags=GPU_TAGS,
        kinds={"pytorch", "safetensors"},
        code_version=RANKER_CODE_VERSION,
        description=description,
        check_specs=[
            dg.AssetCheckSpec(
                PARITY_CHECK,
                asset=name,
                blocking=True,
                description="The merged model gives the adapter model's letter logits on a probe batch.",
            )
        ],
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
            "adapter_dir": str(layout.model_dir(resolved, adapter)),
            "output_dir": str(layout.model_dir(resolved, name)),
        }
        merge = ranker_config(MergeConfig, resolved, "merge", wiring=wiring, run_config=config)
        return launch(context, launcher, "arena_assets.ranker.merger", merge, name, resolved)

    return _merge


def score(
    context: dg.AssetExecutionContext,
    launcher: AccelerateLauncher,
    settings: Settings,
    run_config: dg.Config,
    *,
    asset: str,
    model_asset: str,
    input_path: Path,
    id_column: str = "id",
) -> dg.MaterializeResult:
    """Run the scorer on `input_path` with the model of `model_asset`; logits land under `asset`."""
    wiring = {
        "model": str(layout.model_dir(settings, model_asset)),
        "input_path": str(input_path),
        "id_column": id_column,
        "output_dir": str(layout.scores_dir(settings, asset)),
    }
    config = ranker_config(ScoreConfig, settings, "score", wiring=wiring, run_config=run_config)
    return launch(context, launcher, "arena_assets.ranker.scorer", config, asset, settings)
