"""The config staircase: ranker defaults < the profile's recipe < run-wide settings < paths < launchpad."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from arena_assets.assets import layout
from arena_assets.assets.gpu_steps import TrainRunConfig, ranker_config
from arena_assets.ranker.config import MergeConfig, ScoreConfig, TrainConfig, load_config
from arena_assets.settings import PROFILES, RECIPES_DIR, Settings
from arena_assets_tests.demo_graph import DemoRun

STEPS = {"stage1": TrainConfig, "stage2": TrainConfig, "score": ScoreConfig, "merge": MergeConfig}
PATH_FIELDS = {"backbone", "output_dir", "train_path", "validation_path"}


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("step", sorted(STEPS))
def test_every_recipe_file_is_a_valid_ranker_config(profile: str, step: str, tmp_path: Path) -> None:
    settings = Settings(profile=profile, project_dir=tmp_path)
    config = settings.ranker_config(STEPS[step], step)  # unknown or misspelt fields raise
    assert isinstance(config, STEPS[step])


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_training_and_scoring_of_a_profile_use_one_max_length(profile: str, tmp_path: Path) -> None:
    settings = Settings(profile=profile, project_dir=tmp_path)
    lengths = {step: settings.ranker_config(cls, step).max_length for step, cls in STEPS.items()}
    assert len(set(lengths.values())) == 1, lengths
    overridden = Settings(profile=profile, project_dir=tmp_path, max_length=1024)
    assert {overridden.ranker_config(cls, step).max_length for step, cls in STEPS.items()} == {1024}


def test_qwen14b_falls_through_to_the_ranker_defaults(tmp_path: Path) -> None:
    settings = Settings(profile="qwen14b", project_dir=tmp_path)
    config, default = settings.ranker_config(TrainConfig, "stage1"), TrainConfig()
    for name in ("max_length", "per_device_batch_size", "global_batch_size", "seed", "lora_r", "lr_lora_b"):
        assert getattr(config, name) == getattr(default, name), name


def test_each_stair_overrides_the_one_below(tmp_path: Path) -> None:
    recipe = Settings(project_dir=tmp_path).recipe("stage1")
    assert recipe["lora_r"] != TrainConfig.lora_r  # the demo recipe changes the default
    settings = Settings(project_dir=tmp_path, seed=7, max_length=256)
    config = ranker_config(
        TrainConfig, settings, "stage1", wiring={"train_path": "/x.parquet"},
        run_config=TrainRunConfig(max_length=200, lora_r=8),
    )
    assert (config.lora_alpha, config.seed) == (recipe["lora_alpha"], 7)  # recipe; run-wide setting
    assert (config.max_length, config.lora_r) == (200, 8)  # the launchpad over the run-wide setting
    assert config.train_path == "/x.parquet" and config.adam_eps == TrainConfig.adam_eps  # wiring; default


def test_a_bad_value_names_the_step_and_the_field(tmp_path: Path) -> None:
    settings = Settings(project_dir=tmp_path)
    with pytest.raises(ValueError, match="stage1 config field 'precision' is 'fp8'"):
        settings.ranker_config(TrainConfig, "stage1", precision="fp8")
    with pytest.raises(ValueError, match=r"stage2 config .*unknown field\(s\) \['lora_rank'\]"):
        settings.ranker_config(TrainConfig, "stage2", lora_rank=8)


@pytest.mark.slow
def test_the_standalone_recipe_file_is_the_asset_run_with_other_paths(demo_run: DemoRun) -> None:
    # `python -m arena_assets.ranker.trainer --config configs/ranker/demo/stage1.yaml` after `make demo`
    # reads the files the asset read and trains with the config the asset launched with.
    launched = load_config(TrainConfig, layout.config_path(demo_run.settings, "stage1_adapter"))
    standalone = load_config(TrainConfig, RECIPES_DIR / "demo" / "stage1.yaml")
    differ = {f.name for f in dataclasses.fields(TrainConfig)
              if getattr(launched, f.name) != getattr(standalone, f.name)}
    assert differ <= PATH_FIELDS, differ - PATH_FIELDS
    demo = Settings(profile="demo", project_dir=Path("."))  # as `make demo` runs in the project directory
    assert Path(standalone.train_path) == layout.hard_label_paths(demo)[0]
    assert Path(standalone.validation_path) == layout.hard_label_paths(demo)[1]
    assert Path(standalone.backbone) == demo.backbone


def test_the_14b_recipe_packs_rows_and_the_demo_pads_them(tmp_path: Path) -> None:
    qwen, demo = (Settings(profile=p, project_dir=tmp_path) for p in ("qwen14b", "demo"))
    for step, cls in (("stage1", TrainConfig), ("stage2", TrainConfig), ("score", ScoreConfig)):
        assert qwen.ranker_config(cls, step).pack_sequences, step
        assert not demo.ranker_config(cls, step).pack_sequences, step


def test_long_runs_checkpoint_and_the_demo_does_not(tmp_path: Path) -> None:
    for step in ("stage1", "stage2"):
        qwen = Settings(profile="qwen14b", project_dir=tmp_path).ranker_config(TrainConfig, step)
        assert 0 < qwen.checkpoint_every_minutes <= 30 and qwen.resume  # a kill loses at most 30 minutes
        demo = Settings(profile="demo", project_dir=tmp_path).ranker_config(TrainConfig, step)
        assert not (demo.checkpoint_every_minutes or demo.checkpoint_every_steps)  # minutes of CPU: free
