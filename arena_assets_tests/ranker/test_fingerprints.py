"""Nothing stale, nothing lost: checkpoints resume only the run that wrote them, and an adapter is replaced
only once every part of its run (W&B included) has succeeded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from arena_assets.ranker import out_of_memory, trainer
from arena_assets.ranker.artifacts import MANIFEST_NAME
from arena_assets.ranker.config import TrainConfig
from arena_assets_tests.ranker.conftest import PairFiles

STEPS = 4


class Interrupted(RuntimeError):
    """Raised where a kill would land: after the last checkpoint, before the adapter is saved."""


@pytest.fixture
def small_config(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> Callable[..., TrainConfig]:
    """A few steps of the demo recipe on the small files, checkpointing every step."""

    def build(**overrides: Any) -> TrainConfig:
        fields = {
            "max_steps": STEPS,
            "global_batch_size": 16,
            "per_device_batch_size": 16,
            "checkpoint_every_steps": 1,
            "max_validation_rows": 8,
            **overrides,
        }
        return make_train_config(small_files, tmp_path / "adapter", **fields)

    return build


def _interrupted_run(config: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train every step (each checkpointed), then die before saving, as a killed run would."""
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "evaluate", lambda run: (_ for _ in ()).throw(Interrupted("killed")))
        with pytest.raises(Interrupted):
            trainer.train(config)
    work = Path(config.output_dir + ".work")
    assert sorted(p.name for p in work.glob("checkpoint-*")) and not Path(config.output_dir).exists()


@pytest.fixture
def run_log(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """What the runs so far logged and printed."""

    def read() -> str:
        captured = capsys.readouterr()
        return caplog.text + captured.out + captured.err

    return read


@pytest.mark.slow
def test_an_unchanged_config_resumes(
    small_config: Callable[..., TrainConfig],
    monkeypatch: pytest.MonkeyPatch,
    run_log: Callable[[], str],
) -> None:
    _interrupted_run(small_config(), monkeypatch)
    metrics = trainer.train(small_config(log_every_steps=1))  # a runtime field may change

    assert f"resumed from step {STEPS} of {STEPS}" in run_log()
    assert metrics["steps"] == STEPS


@pytest.mark.slow
@pytest.mark.parametrize("change", [{"lora_r": 8}, {"max_steps": 2}])
def test_a_changed_config_starts_fresh(
    small_config: Callable[..., TrainConfig],
    change: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    run_log: Callable[[], str],
) -> None:
    _interrupted_run(small_config(), monkeypatch)
    config = small_config(**change)
    metrics = trainer.train(config)  # before fingerprints: a shape error, or the old run's weights

    log = run_log()
    assert "resumed" not in log and "not resuming" in log
    name, value = next(iter(change.items()))
    assert f"config.{name}" in log  # the log line says what changed
    assert metrics["steps"] == min(STEPS, change.get("max_steps", STEPS))
    assert [s for s, _ in metrics["train_loss_curve"]] == list(range(1, metrics["steps"] + 1))
    assert json.loads((Path(config.output_dir) / MANIFEST_NAME).read_text())["config"][name] == value


@pytest.mark.slow
def test_a_run_out_of_memory_says_what_to_change_and_resumes_with_more_layers_recomputed(
    small_config: Callable[..., TrainConfig],
    monkeypatch: pytest.MonkeyPatch,
    run_log: Callable[[], str],
) -> None:
    real_step = trainer.train_step

    def third_step_out_of_memory(run: Any, batches: Any) -> Any:
        if run.state.step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(run, batches)

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "train_step", third_step_out_of_memory)
        advice = (rf"out of GPU memory in step 3 of {STEPS}: recompute a larger share of the layers .*"
                  r"gradient_checkpointing, now 0;.* resumes from the last checkpoint")  # fmt: skip
        with pytest.raises(torch.OutOfMemoryError, match=advice) as raised:
            trainer.train(small_config(gradient_checkpointing=0.0))
    assert "Tried to allocate" in str(raised.value.__cause__)  # torch's own message, chained

    metrics = trainer.train(small_config(gradient_checkpointing=0.5))  # recompute: equal within rounding
    assert f"resumed from step 2 of {STEPS}" in run_log()
    assert metrics["steps"] == STEPS
    # Without checkpoints nothing resumes, and the message says so.
    unsaved = out_of_memory.advice(small_config(checkpoint_every_steps=0), where=f"step 1 of {STEPS}",
                                   device=torch.device("cpu"))  # fmt: skip
    assert "keeps no checkpoint (set checkpoint_every_minutes), so a rerun starts over" in unsaved
    assert "fp8_forward" not in unsaved


def test_a_run_out_of_memory_in_the_fp8_check_says_what_to_change(
    small_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fp8 check's passes, before the first step, take training's memory: the same advice, and with the
    input gradient alone in fp8, the setting that frees the bf16 weights."""
    real_finish = trainer.finish_model

    def out_of_memory_after_quantizing(*args: Any, **kwargs: Any) -> None:
        real_finish(*args, **kwargs)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 MiB")

    monkeypatch.setattr(trainer, "finish_model", out_of_memory_after_quantizing)
    advice = (r"out of GPU memory in the fp8 check before training: recompute a larger share .* or set "
              r"fp8_forward: true, which frees the bf16 weights")  # fmt: skip
    with pytest.raises(torch.OutOfMemoryError, match=advice) as raised:
        trainer.train(small_config(fp8_matmuls=True, fp8_forward=False))
    assert "Tried to allocate" in str(raised.value.__cause__)


@pytest.mark.slow
def test_wandb_offline_run_writes_the_adapter(
    small_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = small_config(max_steps=1, checkpoint_every_steps=0, wandb=True, wandb_mode="offline")

    metrics = trainer.train(config)  # the installed wandb has no Run.get_url(): this once failed here

    assert metrics["wandb_url"] == ""  # offline runs have no URL
    assert metrics["train_tokens_per_second"] > 0  # one step: no timed step, so the whole run's rate
    assert (Path(config.output_dir) / "adapter_model.safetensors").is_file()
    assert list((tmp_path / "wandb").glob("wandb/offline-run-*"))


@pytest.mark.slow
def test_a_failure_at_the_end_keeps_the_previous_adapter(
    small_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(max_steps=1, checkpoint_every_steps=0)
    trainer.train(config)
    manifest = (Path(config.output_dir) / MANIFEST_NAME).read_text()

    class BrokenRun:
        url = "https://wandb.example/run"

        def log(self, *args: Any, **kwargs: Any) -> None:
            pass

        def finish(self) -> None:
            raise ConnectionError("W&B unreachable")

    monkeypatch.setattr(trainer, "start_wandb", lambda config, is_main: BrokenRun())
    with pytest.raises(ConnectionError):
        trainer.train(small_config(max_steps=2, checkpoint_every_steps=0, wandb=True))

    assert (Path(config.output_dir) / MANIFEST_NAME).read_text() == manifest  # untouched
