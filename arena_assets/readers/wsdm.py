"""Readers for the WSDM Cup files: `train.parquet` (labelled) and `test.parquet` (every row kept).

Train drops, each row counted once under the first that applies:
  tie (winner starts with "tie"), bad_label (winner null or not model_a/model_b), null_text, empty_text
  (whitespace-only), identical_responses, duplicate (repeated id, or repeated prompt + responses; first kept).
Test drops nothing, because a submission needs every id. Null text becomes "" and odd rows are counted in
`ReadResult.notes` instead: null_text, empty_text, identical_responses, duplicate (content repeated).
A repeated or null test id is a ReaderError, and so is one the submission's integer id column (int64)
cannot hold. Text that is not valid UTF-8 is repaired and counted in notes (invalid_utf8_repaired).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from arena_assets.readers.common import (
    TEXT_COLUMNS,
    ColumnKind,
    as_paths,
    clean_text,
    compare_keys,
    drop_unusable_text,
    drop_where,
    duplicate_mask,
    empty_text_mask,
    identical_responses_mask,
    ids_as_str,
    null_text_mask,
    read_parquet,
    to_canonical,
)
from arena_assets.readers.schema import WINNERS, DropReason, ReaderError, ReadResult

TRAIN_COLUMNS: dict[str, ColumnKind] = {
    "id": "id",
    "prompt": "text",
    "response_a": "text",
    "response_b": "text",
    "winner": "text",
    "model_a": "text",
    "model_b": "text",
    "language": "text",
}
TEST_COLUMNS: dict[str, ColumnKind] = {
    "id": "id",
    "prompt": "text",
    "response_a": "text",
    "response_b": "text",
    "scored": "bool",
}
# The published test file has none of these, but a file that does keeps them (e.g. per-language scores).
TEST_OPTIONAL: dict[str, ColumnKind] = {"model_a": "text", "model_b": "text", "language": "text"}


INT64_MAX = 2**63 - 1


def _read_files(
    files: list[Path], columns: dict[str, ColumnKind], source: str, notes: Counter[str], **kw: object
) -> pd.DataFrame:
    frames = []
    for path in files:
        frame = read_parquet(path, columns, source, notes=notes, **kw)
        frame["id"] = ids_as_str(path, frame["id"])
        frame["_file"] = str(path)
        frame["_row"] = range(len(frame))
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    for column in TEXT_COLUMNS:
        frame[column] = clean_text(frame[column])
    return frame


def read_wsdm_train(paths: Path | Sequence[Path]) -> ReadResult:
    """Read WSDM train parquet file(s) into the canonical frame, dropping unusable rows by reason."""
    files = as_paths(paths)
    notes: Counter[str] = Counter()
    frame = _read_files(files, TRAIN_COLUMNS, "wsdm_train", notes)
    rows_read = len(frame)
    drops: Counter[str] = Counter()
    winner = frame["winner"].astype("str").str.strip()
    frame = drop_where(frame, winner.str.lower().str.startswith("tie").fillna(False), DropReason.TIE, drops)
    frame = drop_where(frame, ~winner.loc[frame.index].isin(WINNERS), DropReason.BAD_LABEL, drops)
    frame["winner"] = winner.loc[frame.index]
    frame = drop_unusable_text(frame, drops)
    return ReadResult(to_canonical(frame, "wsdm_train"), files, rows_read, drops, notes)


def read_wsdm_test(paths: Path | Sequence[Path]) -> ReadResult:
    """Read WSDM test parquet file(s), keeping every row (winner null) plus the `scored` column."""
    files = as_paths(paths)
    notes: Counter[str] = Counter()
    frame = _read_files(files, TEST_COLUMNS, "wsdm_test", notes, optional=TEST_OPTIONAL)
    _check_submission_ids(frame)
    repeated = frame["id"].duplicated(keep="first").to_numpy()
    if repeated.any():
        first = frame.iloc[int(repeated.argmax())]
        raise ReaderError(
            first["_file"],
            f"id {first['id']!r} appears more than once (in the files given)",
            "A submission needs one row per id: remove the repeated rows or pass each test file once.",
            column="id",
            row=int(first["_row"]),
        )
    notes[DropReason.NULL_TEXT.value] = int(null_text_mask(frame).sum())
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].fillna("")
    notes[DropReason.EMPTY_TEXT.value] = int(empty_text_mask(frame).sum()) - notes[DropReason.NULL_TEXT.value]
    keys = compare_keys(frame)
    notes[DropReason.IDENTICAL_RESPONSES.value] = int(identical_responses_mask(keys).sum())
    notes[DropReason.DUPLICATE.value] = int(duplicate_mask(frame, keys, by_id=False).sum())
    frame["winner"] = None
    canonical = to_canonical(frame, "wsdm_test", extra=("scored",))
    return ReadResult(canonical, files, len(frame), Counter(), +notes)


def _check_submission_ids(frame: pd.DataFrame) -> None:
    """Every test id must be an integer that fits the submission's int64 `id` column."""
    digits = frame["id"].str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy()
    fits = [
        bool(ok) and -INT64_MAX - 1 <= int(value) <= INT64_MAX
        for ok, value in zip(digits, frame["id"], strict=True)
    ]
    if not all(fits):
        bad = frame.iloc[fits.index(False)]
        raise ReaderError(
            bad["_file"],
            f"id {bad['id']!r} is not an integer the submission's id column (int64) can hold",
            "The competition scores `id,winner` with the test file's integer ids: pass the published "
            "test.parquet, or write each id as an integer below 2**63.",
            column="id",
            row=int(bad["_row"]),
        )
