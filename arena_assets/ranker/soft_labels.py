"""The stage-2 dataset: human labels as confident teacher logits plus stage-1 logits on open-model pairs.

    python -m arena_assets.ranker.soft_labels --config stage2.json

One parquet (the 5th-place recipe's "240k parquet") with the canonical columns, `pair_id`, `is_swapped`,
`label_source` ("human" | "stage1") and `teacher_logits` (two floats per row); every row is followed by
its A/B swap with the teacher logits swapped too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arena_assets.ranker.artifacts import (
    LOGIT_COLUMNS,
    STAGE2_NAME,
    atomic_directory,
    file_sha256,
    write_manifest,
)
from arena_assets.ranker.cli_args import parse_config
from arena_assets.ranker.config import Stage2DatasetConfig, config_to_dict
from arena_assets.ranker.data import (
    check_swap_pairs,
    interleave_swaps,
    nonfinite_teacher_rows,
    normalise,
    read_pairs,
)
from arena_assets.ranker.evaluation import prob_b, swap_averaged_logits
from arena_assets.readers.schema import CANONICAL_COLUMNS


def human_teacher_logits(winner: pd.Series, confidence: float) -> np.ndarray:
    """[N, 2] logits whose softmax gives the winner `confidence` and the loser the rest."""
    high, low = math.log(confidence), math.log(1.0 - confidence)
    b_won = (winner == "model_b").to_numpy()
    return np.where(b_won[:, None], [low, high], [high, low]).astype(np.float32)


def build_stage2_dataset(config: Stage2DatasetConfig) -> dict[str, Any]:
    """Write the stage-2 parquet and its manifest into `output_dir`; returns counts for the report.

    Rows whose teacher logits are not finite (a broken teacher) are written and counted in
    `nonfinite_teacher_rows`, so the Dagster check on this dataset fails with the count; the trainer refuses
    such a file too.
    """
    human = read_pairs(config.hard_label_train_path)
    check_swap_pairs(human, config.hard_label_train_path)
    human = human.assign(
        label_source="human",
        teacher_logits=list(human_teacher_logits(human["winner"], config.human_label_confidence)),
    )
    pairs = read_pairs(config.open_pairs_path, required=("id", "prompt", "response_a", "response_b"))
    # Teacher labels on a validation prompt would let stage 2 learn the validation answers.
    leaked = np.zeros(len(pairs), dtype=bool)
    if config.validation_path:
        validation_prompts = set(normalise(read_pairs(config.validation_path)["prompt"]))
        leaked = normalise(pairs["prompt"]).isin(validation_prompts).to_numpy()
        pairs = pairs[~leaked].reset_index(drop=True)
    scored = pd.read_parquet(config.soft_logits_path)
    merged = pairs.assign(id=pairs["id"].astype(str)).merge(
        scored, on="id", how="left", validate="one_to_one", indicator=True
    )
    missing = merged["_merge"] != "both"
    if missing.any():
        raise ValueError(
            f"{config.soft_logits_path}: no logits for {int(missing.sum())} open-model row(s), "
            f"e.g. id {merged.loc[missing, 'id'].iloc[0]!r}; score the open-model pairs again"
        )
    logits = swap_averaged_logits(
        merged[list(LOGIT_COLUMNS[:2])].to_numpy(), merged[list(LOGIT_COLUMNS[2:])].to_numpy()
    )
    open_rows = merged[[c for c in CANONICAL_COLUMNS if c in merged.columns]].copy()
    open_rows["winner"] = np.where(logits[:, 1] > logits[:, 0], "model_b", "model_a")
    open_rows["pair_id"] = "open:" + open_rows["id"].astype(str)
    open_rows["label_source"] = "stage1"
    open_rows = interleave_swaps(open_rows, logits.astype(np.float32))
    columns = [*CANONICAL_COLUMNS, "pair_id", "is_swapped", "label_source", "teacher_logits"]
    dataset = pd.concat(
        [human.reindex(columns=columns), open_rows.reindex(columns=columns)], ignore_index=True
    )
    dataset["teacher_logits"] = dataset["teacher_logits"].map(lambda v: [float(x) for x in v])
    p_b = prob_b(logits)
    counts = {
        "rows": len(dataset),
        "human_rows": len(human),
        "stage1_rows": len(open_rows),
        "open_pairs_excluded_validation_prompt": int(leaked.sum()),
        "nonfinite_teacher_rows": int(nonfinite_teacher_rows(dataset).sum()),
        "teacher_confidence_mean": float(np.nanmean(np.maximum(p_b, 1 - p_b))) if len(p_b) else float("nan"),
    }
    inputs = {
        name: file_sha256(Path(path))
        for name, path in (
            ("hard_label_train", config.hard_label_train_path),
            ("soft_logits", config.soft_logits_path),
            ("open_pairs", config.open_pairs_path),
            ("validation", config.validation_path),
        )
        if path
    }
    with atomic_directory(Path(config.output_dir)) as tmp:
        dataset.to_parquet(tmp / STAGE2_NAME, index=False)
        write_manifest(tmp, config=config_to_dict(config), inputs=inputs, extra={"counts": counts})
    return counts


def main(argv: list[str] | None = None) -> None:
    print(build_stage2_dataset(parse_config(Stage2DatasetConfig, argv, description=__doc__)))


if __name__ == "__main__":
    main()
