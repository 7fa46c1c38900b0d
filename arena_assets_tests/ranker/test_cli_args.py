"""Every ranker entry point takes a config file and any field as its own flag, the flag winning."""

from __future__ import annotations

import importlib

import pytest

from arena_assets.ranker.cli_args import parse_config
from arena_assets.ranker.config import MergeConfig, PredictConfig, ScoreConfig, TrainConfig
from arena_assets.settings import RECIPES_DIR

RECIPE = str(RECIPES_DIR / "demo" / "stage1.yaml")


def test_flags_override_the_file_and_the_file_the_defaults() -> None:
    config = parse_config(
        TrainConfig,
        [
            "--config",
            RECIPE,
            "--lora_r",
            "32",
            "--max_length=2048",
            "--lora_target_modules",
            "q_proj",
            "v_proj",
            "--no_resume",
        ],
    )
    assert (config.lora_r, config.max_length, config.resume) == (32, 2048, False)  # flags
    assert config.lora_target_modules == ("q_proj", "v_proj")
    assert config.lr_lora_b == 4e-3 and config.epochs == 2  # the file
    assert config.adam_eps == TrainConfig().adam_eps  # the default


def test_flags_alone_and_bad_values() -> None:
    assert parse_config(PredictConfig, ["--model", "m", "--tta_share", "0.25"]).tta_share == 0.25
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--precision", "fp8"])  # not a choice
    with pytest.raises(ValueError, match="tta_share"):
        parse_config(PredictConfig, ["--tta_share", "2"])


@pytest.mark.parametrize(
    "module, cls",
    [("trainer", TrainConfig), ("merger", MergeConfig), ("scorer", ScoreConfig), ("predict", PredictConfig)],
)
def test_every_entry_point_lists_every_field(
    module: str, cls: type, capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process: the entry points run as `python -m` children in the training and graph tests.
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(f"arena_assets.ranker.{module}").main(["--help"])
    assert exited.value.code == 0
    listed = capsys.readouterr().out
    for name in cls.__dataclass_fields__:
        assert f"--{name}" in listed, name
