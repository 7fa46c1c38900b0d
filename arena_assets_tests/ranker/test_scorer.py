"""The scorer: every row scored exactly once in both orders, also across a SIGKILL and a restart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from arena_assets.ranker.artifacts import LOGITS_NAME as OUTPUT_NAME
from arena_assets.ranker.artifacts import MANIFEST_NAME
from arena_assets.ranker.config import ScoreConfig
from arena_assets.ranker.scorer import score
from arena_assets_tests.ranker.conftest import PairFiles, kill_when, module_command

OUTPUT_COLUMNS = ["id", "a_logit", "b_logit", "a_logit_swapped", "b_logit_swapped"]
KILL_ROWS = 96
KILL_SHARD_ROWS = 4  # 24 shards: the child is still scoring when the first one lands


def _config(model: Path, input_path: Path, output_dir: Path, **overrides: object) -> ScoreConfig:
    return ScoreConfig(model=str(model), input_path=str(input_path), output_dir=str(output_dir),
                       max_length=384, token_budget=4096, **overrides)


def _metrics(output_dir: Path) -> dict[str, float]:
    return json.loads((output_dir / "metrics.json").read_text())


def test_every_row_is_scored_once_in_both_orders(demo_backbone: Path, small_files: PairFiles,
                                                 tmp_path: Path) -> None:
    config = _config(demo_backbone, small_files.open_pairs, tmp_path / "scores", rows_per_shard=8)
    score(config)

    logits = pd.read_parquet(tmp_path / "scores" / OUTPUT_NAME)
    expected_ids = pd.read_parquet(small_files.open_pairs)["id"].astype(str).tolist()
    assert list(logits.columns) == OUTPUT_COLUMNS
    assert logits["id"].tolist() == expected_ids and logits["id"].is_unique and len(logits) == 32
    assert np.isfinite(logits[OUTPUT_COLUMNS[1:]].to_numpy()).all()
    assert {k: _metrics(tmp_path / "scores")[k] for k in ("rows", "rows_scored_this_run", "shards")} == {
        "rows": 32, "rows_scored_this_run": 32, "shards": 4}
    assert json.loads((tmp_path / "scores" / MANIFEST_NAME).read_text())["kind"] == "letter_logits"

    score(config)  # a rerun finds every shard done
    assert _metrics(tmp_path / "scores")["rows_scored_this_run"] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scores" / OUTPUT_NAME), logits)


def test_swapped_logits_are_the_logits_of_the_swapped_input(demo_backbone: Path, small_files: PairFiles,
                                                            tmp_path: Path) -> None:
    pairs = pd.read_parquet(small_files.open_pairs)
    swapped_path = tmp_path / "swapped.parquet"
    pairs.assign(response_a=pairs["response_b"], response_b=pairs["response_a"]).to_parquet(swapped_path)

    score(_config(demo_backbone, small_files.open_pairs, tmp_path / "both"))
    score(_config(demo_backbone, swapped_path, tmp_path / "plain", both_orders=False))
    both = pd.read_parquet(tmp_path / "both" / OUTPUT_NAME)
    plain = pd.read_parquet(tmp_path / "plain" / OUTPUT_NAME)

    assert list(plain.columns) == ["id", "a_logit", "b_logit"]
    # Same token sequences in the same length-sorted batches: bit-identical on the CPU.
    np.testing.assert_array_equal(both[["a_logit_swapped", "b_logit_swapped"]].to_numpy(),
                                  plain[["a_logit", "b_logit"]].to_numpy())
    # The order matters to the model, so the check above is not two copies of one column.
    assert not np.allclose(both["a_logit"], both["a_logit_swapped"])


@pytest.mark.slow
def test_a_killed_scorer_restarts_and_scores_every_row_exactly_once(
    demo_backbone: Path, hard_label_files: PairFiles, tmp_path: Path
) -> None:
    input_path = tmp_path / "pairs.parquet"
    pd.read_parquet(hard_label_files.open_pairs).head(KILL_ROWS).to_parquet(input_path)
    out = tmp_path / "scores"
    config = _config(demo_backbone, input_path, out, rows_per_shard=KILL_SHARD_ROWS)
    shards = out.with_name("scores.work")

    command = module_command("arena_assets.ranker.scorer", config, tmp_path / "score.json")
    kill_when(command, tmp_path / "kill.log", ready=lambda: any(shards.glob("shard-*.parquet")))
    done_before = sorted(shards.glob("shard-*.parquet"))
    assert 1 <= len(done_before) < KILL_ROWS // KILL_SHARD_ROWS and not (out / OUTPUT_NAME).exists()

    score(config)  # the restart
    restarted = _metrics(out)
    assert restarted["rows_scored_this_run"] == KILL_ROWS - KILL_SHARD_ROWS * len(done_before)
    assert restarted["rows"] == KILL_ROWS
    logits = pd.read_parquet(out / OUTPUT_NAME)
    assert logits["id"].is_unique
    assert logits["id"].tolist() == pd.read_parquet(input_path)["id"].astype(str).tolist()

    score(_config(demo_backbone, input_path, tmp_path / "uninterrupted", rows_per_shard=KILL_SHARD_ROWS))
    pd.testing.assert_frame_equal(logits, pd.read_parquet(tmp_path / "uninterrupted" / OUTPUT_NAME))


def test_rescoring_with_another_model_into_a_used_directory_gives_its_logits(
    demo_backbone: Path, tiny_backbone_dir: Path, small_files: PairFiles, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    used = tmp_path / "scores"
    score(_config(demo_backbone, small_files.open_pairs, used, rows_per_shard=8))
    before = pd.read_parquet(used / OUTPUT_NAME)

    score(_config(tiny_backbone_dir, small_files.open_pairs, used, rows_per_shard=8))
    score(_config(tiny_backbone_dir, small_files.open_pairs, tmp_path / "clean", rows_per_shard=8))

    rescored = pd.read_parquet(used / OUTPUT_NAME)
    assert _metrics(used)["rows_scored_this_run"] == 32  # no shard of the other model was reused
    pd.testing.assert_frame_equal(rescored, pd.read_parquet(tmp_path / "clean" / OUTPUT_NAME))
    assert not np.allclose(rescored[OUTPUT_COLUMNS[1:]].to_numpy(), before[OUTPUT_COLUMNS[1:]].to_numpy())
    assert "not resuming" in caplog.text + capsys.readouterr().err  # the log line says why
    assert used.with_name("scores.work.stale").is_dir()  # the other model's shards moved aside


def test_appended_rows_score_only_the_new_shards(demo_backbone: Path, small_files: PairFiles,
                                                 tmp_path: Path) -> None:
    pairs = pd.read_parquet(small_files.open_pairs)
    pairs.head(24).to_parquet(tmp_path / "first.parquet")
    score(_config(demo_backbone, tmp_path / "first.parquet", tmp_path / "scores", rows_per_shard=8))

    # A new file of pairs comes after the old ones: three shards stay, the fourth is new.
    score(_config(demo_backbone, small_files.open_pairs, tmp_path / "scores", rows_per_shard=8))
    assert _metrics(tmp_path / "scores")["rows_scored_this_run"] == 8

    score(_config(demo_backbone, small_files.open_pairs, tmp_path / "clean", rows_per_shard=8))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scores" / OUTPUT_NAME),
                                  pd.read_parquet(tmp_path / "clean" / OUTPUT_NAME))


def test_a_device_map_with_several_processes_is_refused_before_loading(
    small_files: PairFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`device_map: auto` is one process driving every GPU; N processes would each try to do the same."""
    import accelerate

    from arena_assets.ranker import scorer

    class TwoRanks(accelerate.Accelerator):
        num_processes = 2

    monkeypatch.setattr(scorer, "Accelerator", TwoRanks)
    monkeypatch.setattr(scorer, "load_scoring_head", lambda *_: pytest.fail("loaded the model"))
    config = _config(Path("unused"), small_files.open_pairs, tmp_path / "scores", device_map="auto")
    with pytest.raises(ValueError, match="run the scorer with one process"):
        score(config)


@pytest.mark.parametrize("both_orders", [True, False])
def test_packed_scoring_gives_the_padded_logits(demo_backbone: Path, small_files: PairFiles, tmp_path: Path,
                                                both_orders: bool) -> None:
    """Both orders of a pair in one packed pass, their prefix and the pass's system prompt computed once:
    the padded run's logits; also with attention on whole rows through SDPA (`sdpa_row_multiple`)."""
    score(_config(demo_backbone, small_files.open_pairs, tmp_path / "padded", both_orders=both_orders))
    score(_config(demo_backbone, small_files.open_pairs, tmp_path / "packed", both_orders=both_orders,
                  pack_sequences=True))  # fmt: skip
    score(_config(demo_backbone, small_files.open_pairs, tmp_path / "rows", both_orders=both_orders,
                  pack_sequences=True, sdpa_row_multiple=64))  # fmt: skip
    padded = pd.read_parquet(tmp_path / "padded" / OUTPUT_NAME)
    for name in ("packed", "rows"):
        packed = pd.read_parquet(tmp_path / name / OUTPUT_NAME)
        assert list(packed.columns) == list(padded.columns)
        assert packed["id"].tolist() == padded["id"].tolist()
        np.testing.assert_allclose(packed.iloc[:, 1:].to_numpy(), padded.iloc[:, 1:].to_numpy(), atol=1e-4,
                                   rtol=0, err_msg=name)  # fmt: skip
    metrics = _metrics(tmp_path / "packed")
    assert metrics["padding_fraction"] == 0 and _metrics(tmp_path / "padded")["padding_fraction"] > 0
    # The system prompt (every row of a pass) and, with both orders, the query (a pair's two rows) are a good
    # share of these short rows: 0.45 and 0.37 of the row tokens.
    shared = metrics["shared_prefix_fraction"]
    assert (0.4 < shared < 0.5) if both_orders else (0.3 < shared < 0.4)


def test_whole_row_attention_needs_packed_passes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set pack_sequences true"):
        _config(Path("unused"), tmp_path / "pairs.parquet", tmp_path / "scores", sdpa_row_multiple=128)


def test_the_log_line_names_how_the_passes_run(demo_backbone: Path, tmp_path: Path) -> None:
    from arena_assets.ranker.scorer import load_scoring_head, scoring_path_report

    cpu = torch.device("cpu")
    rows = _config(demo_backbone, tmp_path / "pairs.parquet", tmp_path / "scores", pack_sequences=True,
                   sdpa_row_multiple=64)  # fmt: skip
    line = scoring_path_report(load_scoring_head(rows, cpu)[0], rows)
    assert line.startswith("scoring both orders: compute float32, rows packed (a row and its swap sharing")
    assert "attention SDPA on whole rows, widths a multiple of 64" in line
    assert "last layer at the read rows only" in line and "linear layers in the compute dtype" in line
    assert line.endswith("residual added in the output matmuls")
    padded = _config(demo_backbone, tmp_path / "pairs.parquet", tmp_path / "scores", both_orders=False,
                     head_rows_only=False, residual_in_matmul=False)  # fmt: skip
    line = scoring_path_report(load_scoring_head(padded, cpu)[0], padded)
    assert line.startswith("scoring one order: compute float32, rows padded, up to 4096 tokens and 64 rows")
    assert "attention sdpa" in line and "last layer at all positions" in line
    assert line.endswith("residual added after them")
