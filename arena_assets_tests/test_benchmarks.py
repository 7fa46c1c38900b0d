"""The GPU benchmark's plain parts on the CPU: every variant and loss-check run is a config its entry point
accepts (a refusal found on the GPU machine costs device time), and the loss check's verdict."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from arena_assets.ranker.config import PredictConfig, ScoreConfig, TrainConfig, config_from_dict

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    """benchmarks/bench_variants.py and loss_check.py, imported as the scripts import each other."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_variants"), importlib.import_module("loss_check")


def test_every_variant_and_loss_run_is_a_config_its_entry_point_accepts(
    bench: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    variants, _ = bench
    paths = {"work": tmp_path, "data": tmp_path / "rows.parquet"}
    for name, (kind, length, extra) in variants.VARIANTS.items():
        max_length = 4096 if length == "real" else length
        if kind == "train":
            values = variants.train_config(backbone=tmp_path / "model", name=name, max_length=max_length,
                                           extra=extra, steps=10, **paths)  # fmt: skip
            assert "gpu_memory_gib" not in values, name  # the bench's cap, not a trainer field
            assert "gradient_checkpointing" in extra, name  # the bench's FLOP count reads it
            config = config_from_dict(TrainConfig, values)
            assert config.random_init and config.max_length == max_length, name
        elif kind == "predict":
            values = variants.predict_config(model=tmp_path / "model", max_length=max_length, extra=extra,
                                             work=tmp_path, data=paths["data"])  # fmt: skip
            config = config_from_dict(PredictConfig, values)
            assert config.random_init and config.metrics_path and config.tta_share == 1.0, name
        else:
            values = variants.score_config(model=tmp_path / "model", name=name, max_length=max_length,
                                           extra=extra, random_init=True, **paths)  # fmt: skip
            config_from_dict(ScoreConfig, values)
        assert ("profile_dir" in values) == ("_profiled" in name), name
    for name in variants.LOSS_RUNS:
        config = config_from_dict(TrainConfig, variants.loss_config(backbone=tmp_path / "model", name=name,
                                                                    steps=50, **paths))  # fmt: skip
        assert config.resume and config.checkpoint_every_minutes > 0, name  # a cut run resumes next call
    assert {v for v in variants.VARIANTS if v.endswith("_80gb")}  # the memory cap has variants
    assert {kind for kind, _, _ in variants.VARIANTS.values()} == {"train", "score", "predict"}
    assert all(variants.VARIANTS[v][2]["gpu_memory_gib"] == 78.6 for v in variants.VARIANTS if "_80gb" in v)


def _run(curve: np.ndarray) -> dict:
    return {"train_loss_curve": [[step + 1, float(loss)] for step, loss in enumerate(curve)]}


def test_the_loss_check_holds_each_curve_to_the_slack_over_the_steps_all_curves_have(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    variants, loss_check = bench
    reference = np.random.default_rng(0).uniform(0.1, 2.5, size=50)
    off = np.tile([0.2, -0.2], 25)  # the straightforward bf16 recipe's distance from fp32: 0.2 each step
    slack = variants.LOSS_CURVE_SLACK
    runs = {
        "fp32": _run(reference),
        "plain": _run(reference + off),
        "fast": _run(reference - off * slack * 0.99),  # just inside
        "fast_fp8": _run((reference + off * slack * 1.01)[:37]),  # just outside, and cut at 37 steps
    }
    report = loss_check.compare_loss_curves(runs, steps=50)
    assert report["steps"] == 37  # the steps every curve has
    assert report["plain_vs_fp32_mean"] == pytest.approx(0.2) == report["plain_vs_fp32_max"]
    assert report["within_tolerance"] and not report["fast_fp8_within_tolerance"]

    runs["fast"] = _run(reference + off * np.where(np.arange(50) == 3, slack * 1.01, 1.0))  # one step too far
    assert not loss_check.compare_loss_curves(runs, steps=50)["within_tolerance"]  # the largest decides
    failed = {**runs, "fast": {"error": "CUDA out of memory"}}
    assert loss_check.compare_loss_curves(failed, steps=50) == {"fast": {"error": "CUDA out of memory"}}


def test_the_table_shows_every_run_of_a_variant_named_again(
    bench: tuple[ModuleType, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    """gpu_bench keeps the later run of a repeated variant as its figure and the earlier ones beside it; the
    table prints each run in the order they ran."""
    gpu_bench = importlib.import_module("gpu_bench")
    run = {"flops_per_token": 2.0, "peak_memory_gb": 1.0, "padding_fraction": 0.0}
    results = {
        "score_real_packed": {**run, "scoring_tokens_per_second": 300.0},
        "score_real_packed_add_after": {**run, "scoring_tokens_per_second": 200.0},
        "earlier_runs": {"score_real_packed": [{**run, "scoring_tokens_per_second": 100.0}]},
    }
    chosen = ["score_real_packed", "score_real_packed_add_after", "score_real_packed"]
    gpu_bench.print_table(results, chosen, peak=1e-9, held=0.5e-9)
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("score_")]
    assert [row[1] for row in rows] == ["100", "200", "300"]
    assert [row[2:4] for row in rows] == [["0.20", "0.40"], ["0.40", "0.80"], ["0.60", "1.20"]]  # burst, held
