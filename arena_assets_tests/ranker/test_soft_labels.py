"""Stage 2's dataset: human rows at fixed confidence, the stage-1 teacher's logits on the open-model pairs,
no pair that shares a validation prompt, and non-finite teacher logits counted, not hidden."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arena_assets.assets import layout
from arena_assets.ranker.artifacts import LOGIT_COLUMNS, MANIFEST_NAME, STAGE2_NAME
from arena_assets.ranker.config import Stage2DatasetConfig
from arena_assets.ranker.data import check_swap_pairs, normalise, teacher_logits
from arena_assets.ranker.evaluation import swap_averaged_logits
from arena_assets.ranker.soft_labels import build_stage2_dataset
from arena_assets_tests.demo_graph import DemoRun
from arena_assets_tests.ranker.conftest import PairFiles

CONFIDENCE = 0.95  # the Stage2DatasetConfig default the asset uses


@pytest.mark.slow
def test_stage2_dataset_holds_human_and_stage1_rows(demo_run: DemoRun) -> None:
    settings = demo_run.settings
    dataset = pd.read_parquet(layout.stage2_path(settings))
    human_rows = len(pd.read_parquet(layout.hard_label_paths(settings)[0]))
    validation = pd.read_parquet(layout.hard_label_paths(settings)[1])
    open_pairs = pd.read_parquet(layout.rows_path(settings, "open_model_pairs"))
    kept = open_pairs[~normalise(open_pairs["prompt"]).isin(set(normalise(validation["prompt"])))]
    check_swap_pairs(dataset, layout.stage2_path(settings))
    counts = dataset["label_source"].value_counts().to_dict()
    assert counts == {"human": human_rows, "stage1": 2 * len(kept)}
    # Teacher-labelled rows are a large share of the set: stage 2 has something to learn from them.
    assert counts["stage1"] > 0.6 * counts["human"]

    teacher = np.stack(dataset["teacher_logits"].to_list())
    human = (dataset["label_source"] == "human").to_numpy()
    b_won = (dataset["winner"] == "model_b").to_numpy()
    high, low = math.log(CONFIDENCE), math.log(1 - CONFIDENCE)
    expected = np.where(b_won[human, None], [low, high], [high, low])
    np.testing.assert_allclose(teacher[human], expected, rtol=1e-6)

    logits = pd.read_parquet(layout.logits_path(settings, "open_model_soft_logits")).set_index("id")
    logits = logits.loc[kept["id"].astype(str)]
    averaged = swap_averaged_logits(logits[list(LOGIT_COLUMNS[:2])].to_numpy(),
                                    logits[list(LOGIT_COLUMNS[2:])].to_numpy())
    stage1_teacher = teacher[~human]
    np.testing.assert_allclose(stage1_teacher[0::2], averaged, rtol=1e-6)
    np.testing.assert_allclose(stage1_teacher[1::2], averaged[:, ::-1], rtol=1e-6)  # the swap row's letters
    winners = dataset.loc[~human, "winner"].to_numpy()[0::2]
    assert (winners == np.where(averaged[:, 1] > averaged[:, 0], "model_b", "model_a")).all()


@pytest.mark.slow
def test_open_pairs_on_a_validation_prompt_are_left_out(demo_run: DemoRun) -> None:
    settings = demo_run.settings
    validation_prompts = set(normalise(pd.read_parquet(layout.hard_label_paths(settings)[1])["prompt"]))
    open_pairs = pd.read_parquet(layout.rows_path(settings, "open_model_pairs"))
    leaked = int(normalise(open_pairs["prompt"]).isin(validation_prompts).sum())
    dataset = pd.read_parquet(layout.stage2_path(settings))

    assert not normalise(dataset["prompt"]).isin(validation_prompts).any()
    assert demo_run.metadata("stage2_dataset")["open_pairs_excluded_validation_prompt"] == leaked
    manifest = json.loads((layout.asset_dir(settings, "stage2_dataset") / MANIFEST_NAME).read_text())
    assert manifest["counts"]["open_pairs_excluded_validation_prompt"] == leaked


def test_a_validation_prompt_in_the_open_pairs_is_excluded_and_counted(
    small_files: PairFiles, tmp_path: Path
) -> None:
    open_pairs = pd.read_parquet(small_files.open_pairs).head(4).copy()
    open_pairs.loc[1, "prompt"] = "  " + pd.read_parquet(small_files.validation)["prompt"].iloc[0].upper()
    config = _stage2_config(small_files, open_pairs, tmp_path)

    counts = build_stage2_dataset(config)

    assert counts["open_pairs_excluded_validation_prompt"] == 1 and counts["stage1_rows"] == 2 * 3


def test_nonfinite_teacher_logits_are_counted_and_refused_by_the_trainer(
    small_files: PairFiles, tmp_path: Path
) -> None:
    open_pairs = pd.read_parquet(small_files.open_pairs).head(4)
    config = _stage2_config(small_files, open_pairs, tmp_path, nan_row=2)

    counts = build_stage2_dataset(config)

    assert counts["nonfinite_teacher_rows"] == 2  # the row and its swap
    path = Path(config.output_dir) / STAGE2_NAME
    with pytest.raises(ValueError, match="teacher_logits.*does not hold two finite numbers"):
        teacher_logits(pd.read_parquet(path), path)


def _stage2_config(files: PairFiles, open_pairs: pd.DataFrame, tmp_path: Path,
                   nan_row: int | None = None) -> Stage2DatasetConfig:
    """Open pairs and made-up teacher logits for them (NaN in `nan_row`), as the stage-2 builder reads."""
    rng = np.random.default_rng(0)
    logits = pd.DataFrame(rng.normal(size=(len(open_pairs), 4)), columns=list(LOGIT_COLUMNS))
    if nan_row is not None:
        logits.loc[nan_row, "a_logit"] = float("nan")
    logits.insert(0, "id", open_pairs["id"].astype(str).to_numpy())
    open_pairs.to_parquet(tmp_path / "open.parquet", index=False)
    logits.to_parquet(tmp_path / "logits.parquet", index=False)
    return Stage2DatasetConfig(
        hard_label_train_path=str(files.train), soft_logits_path=str(tmp_path / "logits.parquet"),
        open_pairs_path=str(tmp_path / "open.parquet"), validation_path=str(files.validation),
        output_dir=str(tmp_path / "stage2"),
    )
