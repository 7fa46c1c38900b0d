"""The step profiler: operators sorted into kinds of work, and a trainer run that writes its profile."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from arena_assets.ranker import trainer
from arena_assets.ranker.config import TrainConfig
from arena_assets.ranker.profiling import UNATTRIBUTED, busy_and_span, op_category, summarize
from arena_assets_tests.ranker.conftest import PairFiles


@pytest.mark.parametrize(
    ("name", "shapes", "category"),
    [
        ("aten::mm", [[4096, 5120], [5120, 5120]], "matmul"),
        ("aten::mm", [[4096, 5120], [5120, 64]], "lora_matmul"),
        ("aten::addmm", [[64], [4096, 64], [64, 5120]], "lora_matmul"),
        ("aten::addmm_", [[4096, 5120], [4096, 13824], [13824, 5120]], "matmul"),
        ("aten::addmm_", [[4096, 5120], [4096, 64], [64, 5120]], "lora_matmul"),
        ("aten::_flash_attention_forward", [[1, 40, 2048, 128]], "attention"),
        ("aten::_scaled_dot_product_cudnn_attention_backward", [], "attention"),
        ("aten::_fused_adamw_", [], "optimizer"),
        ("aten::copy_", [[64, 5120], [64, 5120]], "copy"),
        ("aten::mul", [[4096, 5120], []], "other"),
    ],
)
def test_operators_fall_into_their_kind_of_work(name: str, shapes: list[list[int]], category: str) -> None:
    assert op_category(name, shapes, lora_r=64) == category


def test_a_frozen_matmul_is_not_lora_without_adapters() -> None:
    assert op_category("aten::mm", [[4096, 64], [64, 5120]], lora_r=0) == "matmul"


def test_summary_divides_by_steps_and_counts_kernels_no_operator_launched() -> None:
    ops = [
        {"name": "aten::mm", "shapes": [[8, 16], [16, 16]], "self_us": 6000.0},
        {"name": "aten::mm", "shapes": [[8, 16], [16, 4]], "self_us": 2000.0},
        {"name": "aten::mul", "shapes": [[8, 16], []], "self_us": 1000.0},
    ]
    kernels = [{"name": "gemm", "us": 8000.0}, {"name": "elementwise", "us": 1000.0},
               {"name": "triton_rms_norm", "us": 1000.0}]  # fmt: skip
    summary = summarize(ops, kernels, steps=2, lora_r=4)
    assert summary["ms_per_step"] == {"lora_matmul": 1.0, "matmul": 3.0, "other": 0.5, UNATTRIBUTED: 0.5}
    assert summary["share"]["matmul"] == 0.6 and summary["device"] == "cuda"
    assert summarize(ops, [], steps=1, lora_r=4)["device"] == "cpu"  # CPU: operators' own CPU time
    timed = summarize(ops, kernels, steps=2, lora_r=4, span_us=20_000.0, busy_us=15_000.0)
    assert timed["step_span_ms"] == 10.0 and timed["device_idle_share"] == 0.25


def test_busy_time_counts_overlapping_kernels_once() -> None:
    assert busy_and_span([(0.0, 4.0), (2.0, 5.0), (8.0, 10.0), (8.5, 9.0)]) == (7.0, 10.0)
    assert busy_and_span([]) == (0.0, 0.0)


def test_a_profiled_run_writes_its_trace_and_reports_time_by_kind(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    profile_dir = tmp_path / "profile"
    config = make_train_config(small_files, tmp_path / "adapter", max_steps=4, max_validation_rows=8,
                               global_batch_size=4, per_device_batch_size=4, max_length=256,
                               profile_dir=str(profile_dir), profile_steps=2)  # fmt: skip
    metrics = trainer.train(config)

    summary = json.loads((profile_dir / "summary.json").read_text())
    assert summary["steps"] == 2  # steps 3 and 4: the first two are left out
    assert summary["ms_per_step"]["matmul"] > 0 and summary["ms_per_step"]["lora_matmul"] > 0
    assert summary["ms_per_step"]["optimizer"] > 0
    assert abs(sum(summary["share"].values()) - 1) < 1e-3
    assert metrics["profile_matmul_ms_per_step"] == summary["ms_per_step"]["matmul"]
    ops = json.loads((profile_dir / "ops.json").read_text())["ops"]
    assert any(op["name"] == "aten::mm" and op["shapes"] for op in ops)
    with gzip.open(profile_dir / "trace.json.gz", "rt") as trace:
        assert json.load(trace)["traceEvents"]
    assert not list(profile_dir.glob("*.tmp*"))


@pytest.mark.slow
def test_a_profiled_scorer_records_passes_and_gives_the_same_logits(
    demo_backbone: Path, small_files: PairFiles, tmp_path: Path
) -> None:
    """The scorer's profile records passes 3 and 4 and reaches the metrics; the logits are the unprofiled
    run's, and a profiled rerun into the same directory reuses the shards (the profile is no part of them)."""
    import pandas as pd

    from arena_assets.ranker.artifacts import LOGITS_NAME
    from arena_assets.ranker.config import ScoreConfig
    from arena_assets.ranker.scorer import score

    def run(name: str, **overrides: object) -> tuple[pd.DataFrame, dict]:
        score(ScoreConfig(model=str(demo_backbone), input_path=str(small_files.open_pairs),
                          output_dir=str(tmp_path / name), max_length=384, token_budget=1024,
                          **overrides))  # fmt: skip
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        return pd.read_parquet(tmp_path / name / LOGITS_NAME), metrics

    plain, _ = run("plain")
    profiled, metrics = run("profiled", profile_dir=str(tmp_path / "profile"))
    pd.testing.assert_frame_equal(profiled, plain)
    summary = json.loads((tmp_path / "profile" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["ms_per_step"]["matmul"] > 0
    assert "lora_matmul" not in summary["ms_per_step"]  # a merged model: no adapter rank to find
    assert metrics["profile_matmul_ms_per_pass"] == summary["ms_per_step"]["matmul"]
    _, again = run("plain", profile_dir=str(tmp_path / "profile-again"))
    assert again["rows_scored_this_run"] == 0
