"""Stage 2: the soft-label set from the stage-1 model's scores, and a student trained on it from the base."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arena_assets.ranker.config import ScoreConfig, Stage2DatasetConfig, TrainConfig
from arena_assets.ranker.data import check_swap_pairs
from arena_assets.ranker.evaluation import swap_averaged_logits
from arena_assets.ranker.scorer import OUTPUT_NAME, score
from arena_assets.ranker.soft_labels import build_stage2_dataset
from arena_assets.ranker.trainer import train
from arena_assets_tests.ranker.conftest import PairFiles, TrainedRun

CONFIDENCE = 0.95


@pytest.fixture(scope="module")
def stage2_dataset(
    merged_stage1: Path, hard_label_files: PairFiles, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The merged stage-1 model's logits on the demo open-model pairs, built into the stage-2 parquet."""
    out = tmp_path_factory.mktemp("stage2")
    score(ScoreConfig(model=str(merged_stage1), input_path=str(hard_label_files.open_pairs),
                      output_dir=str(out / "soft_logits"), max_length=384, token_budget=32768))
    build_stage2_dataset(Stage2DatasetConfig(
        hard_label_train_path=str(hard_label_files.train),
        soft_logits_path=str(out / "soft_logits" / OUTPUT_NAME),
        open_pairs_path=str(hard_label_files.open_pairs),
        output_path=str(out / "stage2.parquet"),
        human_label_confidence=CONFIDENCE,
    ))
    return out / "stage2.parquet"


@pytest.mark.slow
def test_stage2_dataset_holds_human_and_stage1_rows(
    stage2_dataset: Path, hard_label_files: PairFiles
) -> None:
    dataset = pd.read_parquet(stage2_dataset)
    human_rows = len(pd.read_parquet(hard_label_files.train))
    open_pairs = pd.read_parquet(hard_label_files.open_pairs)
    check_swap_pairs(dataset, stage2_dataset)
    counts = dataset["label_source"].value_counts().to_dict()
    assert counts == {"human": human_rows, "stage1": 2 * len(open_pairs)} == {"human": 3638, "stage1": 980}

    teacher = np.stack(dataset["teacher_logits"].to_list())
    human = (dataset["label_source"] == "human").to_numpy()
    b_won = (dataset["winner"] == "model_b").to_numpy()
    high, low = math.log(CONFIDENCE), math.log(1 - CONFIDENCE)
    expected = np.where(b_won[human, None], [low, high], [high, low])
    np.testing.assert_allclose(teacher[human], expected, rtol=1e-6)

    stage1 = dataset[~human]
    logits = pd.read_parquet(stage2_dataset.parent / "soft_logits" / OUTPUT_NAME).set_index("id")
    logits = logits.loc[open_pairs["id"].astype(str)]
    averaged = swap_averaged_logits(logits[["a_logit", "b_logit"]].to_numpy(),
                                    logits[["a_logit_swapped", "b_logit_swapped"]].to_numpy())
    stage1_teacher = teacher[~human]
    np.testing.assert_allclose(stage1_teacher[0::2], averaged, rtol=1e-6)
    np.testing.assert_allclose(stage1_teacher[1::2], averaged[:, ::-1], rtol=1e-6)  # the swap row's letters
    assert (stage1["winner"].to_numpy()[0::2] == np.where(averaged[:, 1] > averaged[:, 0], "model_b",
                                                          "model_a")).all()


@pytest.mark.slow
def test_stage2_student_from_the_base_matches_stage1(
    stage2_dataset: Path, stage1_run: TrainedRun, hard_label_files: PairFiles,
    make_train_config: Callable[..., TrainConfig], tmp_path: Path,
) -> None:
    files = PairFiles(stage2_dataset, hard_label_files.validation, hard_label_files.open_pairs)
    # The demo profile's stage 2 (two epochs of the stage-2 dataset), as the stage2_adapter asset runs it.
    config = make_train_config(files, tmp_path / "stage2_adapter", label="soft")
    assert config.backbone == stage1_run.config.backbone  # from the base backbone, not the stage-1 model

    metrics = train(config)

    assert config.epochs == stage1_run.config.epochs == 2
    assert metrics["val_rows"] == stage1_run.metrics["val_rows"]
    stage1, stage2 = stage1_run.metrics["val_accuracy"], metrics["val_accuracy"]
    assert stage2 >= stage1 - 0.02, f"stage 2 validation accuracy {stage2:.4f}, stage 1 {stage1:.4f}"
