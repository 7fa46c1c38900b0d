"""The trainer on the tiny model: every LoRA weight learns, and the demo's stage 1 reaches its accuracy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import peft
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from arena_assets.ranker import trainer
from arena_assets.ranker.artifacts import MANIFEST_NAME
from arena_assets.ranker.config import LORA_TARGETS, TrainConfig
from arena_assets_tests.ranker.conftest import PairFiles, TrainedRun

TINY_LAYERS = 2  # decoder layers of the embedded tiny backbone
METRIC_KEYS = {"val_accuracy", "val_log_loss", "train_loss_curve", "train_tokens_per_second",
               "padding_fraction", "steps", "wall_seconds"}


@pytest.fixture
def model_spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Captures the peft model the trainer builds and a copy of every parameter before the first step."""
    seen: dict[str, Any] = {}
    real = peft.get_peft_model

    def spy(*args: Any, **kwargs: Any) -> PeftModel:
        model = real(*args, **kwargs)
        seen["model"] = model
        seen["initial"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return model

    monkeypatch.setattr(peft, "get_peft_model", spy)  # build_model imports it at call time
    return seen


@pytest.mark.slow
def test_training_changes_every_trainable_parameter(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], model_spy: dict[str, Any],
    tmp_path: Path,
) -> None:
    # No weight decay: only gradients move a weight, so lora_A must change through a lora_B that left zero.
    config = make_train_config(small_files, tmp_path / "adapter", max_steps=3, weight_decay=0.0,
                               max_validation_rows=8)
    metrics = trainer.train(config)

    assert metrics["steps"] == 3
    model, initial = model_spy["model"], model_spy["initial"]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * len(LORA_TARGETS) * TINY_LAYERS  # lora_A and lora_B on every projection
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    for name, param in model.named_parameters():
        if name in trainable:
            if ".lora_B." in name:
                assert not initial[name].any(), f"{name} does not start at zero"
            assert not torch.equal(param, initial[name]), f"{name} did not change"
        else:
            assert torch.equal(param, initial[name]), f"frozen {name} changed"


def test_token_budget_and_packed_micro_batches_train_like_one_batch_a_step(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same steps (8 rows each) as one padded forward pass, as one pair a forward pass (a 1-token
    budget), or packed (each swap's prefix shared with its row, no padding): each micro-batch weighs its
    rows and packing computes the same attention, so the losses are the same."""
    common = {"max_steps": 3, "global_batch_size": 8, "max_validation_rows": 8, "precision": "fp32"}
    whole = trainer.train(
        make_train_config(small_files, tmp_path / "whole", per_device_batch_size=8, **common)
    )
    split = trainer.train(make_train_config(small_files, tmp_path / "split", micro_batch_tokens=1, **common))
    capsys.readouterr()
    packed = trainer.train(
        make_train_config(small_files, tmp_path / "packed", per_device_batch_size=8, pack_sequences=True,
                          **common)
    )  # fmt: skip
    assert "rows packed, swaps sharing their prefix" in capsys.readouterr().out  # the fast-path log line
    assert [s for s, _ in split["train_loss_curve"]] == [1, 2, 3]
    for other in (split, packed):
        for (_, a), (_, b) in zip(whole["train_loss_curve"], other["train_loss_curve"], strict=True):
            assert abs(a - b) < 1e-5
    assert whole["padding_fraction"] > 0 and split["padding_fraction"] == 0  # a pair's rows: one length
    assert packed["padding_fraction"] == 0 and 0.2 < packed["shared_prefix_fraction"] < 0.5
    assert whole["shared_prefix_fraction"] == 0
    assert abs(packed["val_accuracy"] - whole["val_accuracy"]) < 1e-9  # validation: padded, the same model


@pytest.mark.slow
def test_stage1_reaches_demo_accuracy(stage1_run: TrainedRun) -> None:
    metrics = json.loads((stage1_run.adapter_dir / "metrics.json").read_text())
    train_pairs = len(pd.read_parquet(stage1_run.config.train_path)) // 2
    validation_rows = len(pd.read_parquet(stage1_run.config.validation_path))

    # The demo's claim; benchmarks/RESULTS.md has its margin over seeds and thread counts.
    assert metrics["val_accuracy"] >= 0.85, f"stage 1 validation accuracy {metrics['val_accuracy']:.4f}"
    assert metrics.keys() >= METRIC_KEYS
    # Two epochs of pairs; each epoch's last batch is short.
    steps = 2 * -(-train_pairs // (stage1_run.config.global_batch_size // 2))
    assert stage1_run.config.epochs == 2
    assert metrics["steps"] == steps
    assert [s for s, _ in metrics["train_loss_curve"]] == list(range(1, steps + 1))
    assert metrics["val_log_loss"] < 0.45 and metrics["train_tokens_per_second"] > 0
    assert 0 <= metrics["padding_fraction"] < 0.05  # length grouping keeps padding small
    assert metrics["val_rows"] == validation_rows >= 500


@pytest.mark.slow
def test_stage1_adapter_directory_is_a_finished_peft_adapter(
    stage1_run: TrainedRun, demo_backbone: Path
) -> None:
    adapter = stage1_run.adapter_dir

    assert json.loads((adapter / MANIFEST_NAME).read_text())["kind"] == "lora_adapter"
    assert not list(adapter.parent.glob(f"{adapter.name}.tmp-*"))
    assert not adapter.with_name(adapter.name + ".work").exists()  # checkpoints cleared after the final save
    base = AutoModelForCausalLM.from_pretrained(demo_backbone, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, adapter)
    lora_b = [p for n, p in loaded.named_parameters() if ".lora_B." in n]
    assert len(lora_b) == len(LORA_TARGETS) * TINY_LAYERS and all(p.abs().sum() > 0 for p in lora_b)
