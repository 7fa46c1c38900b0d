"""Parquet rows in, encoded judge prompts out: the dataset side of training and scoring."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arena_assets.ranker.prompt import PromptTemplate
from arena_assets.readers.schema import WINNERS

PAIR_COLUMNS: tuple[str, ...] = ("prompt", "response_a", "response_b")
_SPACE = re.compile(r"\s+")


@dataclass
class EncodedRows:
    """Token ids of each row's judge prompt, with truncation facts for reporting."""

    input_ids: list[list[int]]
    truncated: np.ndarray  # bool [N]
    full_lengths: np.ndarray  # int [N], before truncation

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def length_report(self) -> dict[str, float]:
        """Token-length percentiles (before truncation) and the truncation rate."""
        if len(self.input_ids) == 0:
            return {}
        p50, p90, p99 = np.percentile(self.full_lengths, [50, 90, 99])
        return {
            "tokens_p50": float(p50),
            "tokens_p90": float(p90),
            "tokens_p99": float(p99),
            "tokens_max": float(self.full_lengths.max()),
            "truncation_rate": float(self.truncated.mean()),
        }


def normalise(text: pd.Series) -> pd.Series:
    """Lower-cased, whitespace-collapsed text: the key for duplicates, the split and leakage."""
    return text.fillna("").astype(str).str.lower().map(lambda s: _SPACE.sub(" ", s).strip())


def read_pairs(path: str | Path, required: tuple[str, ...] = PAIR_COLUMNS) -> pd.DataFrame:
    """Read a parquet of pairs and check the columns the ranker needs."""
    frame = pd.read_parquet(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame.reset_index(drop=True)


def encode_rows(
    template: PromptTemplate,
    prompts: list[str],
    responses_a: list[str],
    responses_b: list[str],
    *,
    max_length: int,
    rebalance: bool,
    chunk_rows: int = 4096,
) -> EncodedRows:
    """Encode every (prompt, A, B) triple with the judge prompt and middle-cut truncation.

    Fields are tokenized in batched calls of `chunk_rows` rows (the fast tokenizer's parallel path).
    """
    encoded = []
    for start in range(0, len(prompts), chunk_rows):
        end = start + chunk_rows
        texts = [*prompts[start:end], *responses_a[start:end], *responses_b[start:end]]
        ids = template.tokenize_fields(texts)
        n = len(ids) // 3
        encoded.extend(
            template.encode_ids(
                ids[i], ids[n + i], ids[2 * n + i], max_length=max_length, rebalance=rebalance
            )
            for i in range(n)
        )
    return EncodedRows(
        input_ids=[e.input_ids for e in encoded],
        truncated=np.array([e.truncated for e in encoded], dtype=bool),
        full_lengths=np.array([e.full_length for e in encoded], dtype=np.int64),
    )


def encode_frame(
    template: PromptTemplate, frame: pd.DataFrame, *, max_length: int, rebalance: bool, swapped: bool = False
) -> EncodedRows:
    """Encode a frame's pairs; `swapped` shows response_b as A and response_a as B."""
    a, b = ("response_b", "response_a") if swapped else ("response_a", "response_b")
    return encode_rows(
        template,
        frame["prompt"].astype(str).tolist(),
        frame[a].astype(str).tolist(),
        frame[b].astype(str).tolist(),
        max_length=max_length,
        rebalance=rebalance,
    )


def hard_labels(frame: pd.DataFrame, path: str | Path = "<frame>") -> np.ndarray:
    """0 where response A won, 1 where B won; every row must have a winner."""
    winners = frame["winner"]
    bad = ~winners.isin(WINNERS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{path}: column 'winner' row {row} is {winners.iloc[row]!r}; expected model_a/model_b"
        )
    return (winners == "model_b").to_numpy().astype(np.int64)


def teacher_logit_array(frame: pd.DataFrame) -> np.ndarray:
    """The `teacher_logits` column as [N, 2] float64 (NaN where a row does not hold two numbers)."""
    def two(value: object) -> np.ndarray:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
        return array if array.shape == (2,) else np.full(2, np.nan)

    if len(frame) == 0:
        return np.zeros((0, 2))
    return np.stack(frame["teacher_logits"].map(two).to_list())


def nonfinite_teacher_rows(frame: pd.DataFrame) -> np.ndarray:
    """Bool [N]: rows whose teacher logits are not two finite numbers."""
    return ~np.isfinite(teacher_logit_array(frame)).all(axis=1)


def teacher_logits(frame: pd.DataFrame, path: str | Path = "<frame>") -> np.ndarray:
    """Teacher logits [N, 2] from the `teacher_logits` column; every value must be finite."""
    if "teacher_logits" not in frame.columns:
        raise ValueError(f"{path}: soft-label training needs a 'teacher_logits' column (the stage-2 dataset)")
    bad = nonfinite_teacher_rows(frame)
    if bad.any():
        raise ValueError(
            f"{path}: column 'teacher_logits' row {int(np.flatnonzero(bad)[0])} does not hold two finite "
            f"numbers ({int(bad.sum())} rows); rebuild the stage-2 dataset"
        )
    return teacher_logit_array(frame).astype(np.float32)


def broken_swap_pairs(frame: pd.DataFrame) -> np.ndarray:
    """Bool per pair (rows 2k, 2k+1): the second row is not the A/B swap of the first.

    A swap shares the pair_id, comes second (`is_swapped`), shows the responses exchanged and, where the
    rows have winners, flips the winner. The frame must have an even number of rows.
    """
    first, second = frame.iloc[0::2].reset_index(drop=True), frame.iloc[1::2].reset_index(drop=True)
    broken = (
        (first["pair_id"].to_numpy() != second["pair_id"].to_numpy())
        | first["is_swapped"].to_numpy().astype(bool)
        | ~second["is_swapped"].to_numpy().astype(bool)
        | (first["response_a"].to_numpy() != second["response_b"].to_numpy())
        | (first["response_b"].to_numpy() != second["response_a"].to_numpy())
    )
    if "winner" in frame.columns:
        labelled = first["winner"].isin(WINNERS).to_numpy()
        broken |= labelled & (first["winner"].to_numpy() == second["winner"].to_numpy())
    return broken


def check_swap_pairs(frame: pd.DataFrame, path: str | Path = "<frame>") -> None:
    """Rows 2k and 2k+1 must be a row and its A/B swap (`broken_swap_pairs`)."""
    if len(frame) % 2:
        raise ValueError(f"{path}: {len(frame)} rows; training rows come in swap pairs (even count)")
    broken = broken_swap_pairs(frame)
    if broken.any():
        row = 2 * int(np.flatnonzero(broken)[0])
        raise ValueError(
            f"{path}: rows {row} and {row + 1} are not a row and its A/B swap (one pair_id, responses "
            f"exchanged, winner flipped); {int(broken.sum())} broken pairs"
        )


def interleave_swaps(frame: pd.DataFrame, teacher: np.ndarray | None = None) -> pd.DataFrame:
    """Each row followed by its A/B swap: responses, models and winner swapped, `is_swapped` set.

    With `teacher` logits [N, 2], a `teacher_logits` column is added, its two values swapped on swap rows.
    """
    original = frame.assign(is_swapped=False)
    swapped = frame.assign(
        response_a=frame["response_b"],
        response_b=frame["response_a"],
        model_a=frame["model_b"],
        model_b=frame["model_a"],
        winner=frame["winner"].map({"model_a": "model_b", "model_b": "model_a"}),
        is_swapped=True,
    )
    if teacher is not None:
        original["teacher_logits"] = list(teacher)
        swapped["teacher_logits"] = list(teacher[:, ::-1].copy())
    order = np.arange(len(frame))
    both = pd.concat([original.assign(_order=order * 2), swapped.assign(_order=order * 2 + 1)])
    return both.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
