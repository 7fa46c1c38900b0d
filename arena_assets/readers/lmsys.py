"""Reader for the LMSYS arena CSVs (`lmsys_55k` train.csv and the `lmsys_33k` files of the same layout).

`prompt`, `response_a` and `response_b` each hold a JSON list of turns (elements may be null); the label is
the one-hot `winner_model_a` / `winner_model_b` / `winner_tie`. Drops, each row counted once under the
first that applies:
  bad_label: the one-hot is not exactly one 1 among 0/1 values (or has a blank);
  tie: winner_tie is 1 (kept with winner null when keep_ties=True);
  json_parse_error: a text field is not a JSON list of strings/nulls;
  multi_turn_policy: more than one turn under MultiTurnPolicy.DROP;
  null_text: a field is blank, `[]`, or has only null turns (in the turns the policy uses);
  empty_text: a field's turns are all whitespace;
  identical_responses, duplicate: as in every reader (duplicate = repeated id or repeated text; first kept).
Multi-turn policy: JOIN keeps the non-null, non-blank turns in order, separated by a blank line; FIRST keeps
the first turn. When the prompt and the two responses have different turn counts only the turns all three
share are used (a response to a missing prompt turn cannot be judged); such kept rows are counted in
notes["turn_count_mismatch"], kept rows of several turns in notes["multi_turn"]. Turns with unpaired UTF-16
surrogates (which no parquet writer accepts) are repaired to U+FFFD and counted in
notes["surrogates_replaced"]. `language` is null: the files have none.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from arena_assets.readers.common import (
    TEXT_COLUMNS,
    as_paths,
    clean_text,
    drop_unusable_text,
    drop_where,
    ids_as_str,
    read_csv,
    to_canonical,
)
from arena_assets.readers.schema import DropReason, MultiTurnPolicy, ReaderError, ReadResult

LABEL_COLUMNS: tuple[str, str, str] = ("winner_model_a", "winner_model_b", "winner_tie")
COLUMNS: tuple[str, ...] = ("id", "model_a", "model_b", *TEXT_COLUMNS, *LABEL_COLUMNS)
TURN_SEPARATOR = "\n\n"
_BAD = object()  # marks a field that is not a JSON list of strings/nulls


def parse_turns(cell: object, notes: Counter[str]) -> list[str | None] | None | object:
    """A JSON list of turns, None for a blank field, or _BAD when it is not a list of strings/nulls."""
    if not isinstance(cell, str):
        return None
    try:
        turns = json.loads(cell)
    except ValueError:
        return _BAD
    if not isinstance(turns, list) or not all(t is None or isinstance(t, str) for t in turns):
        return _BAD
    # Only a \uD800-\uDFFF escape can put half a surrogate pair into a string (which no parquet writer
    # accepts); looking for the escape first spares encoding every turn of 57k rows.
    if "\\ud" in cell or "\\uD" in cell:
        turns = [_utf8_safe(t, notes) if t is not None else None for t in turns]
    return turns


def _one_hot(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """The label columns as numbers; a column with no number at all is the wrong type (ReaderError)."""
    out = pd.DataFrame(index=frame.index)
    for column in LABEL_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().all() and frame[column].notna().any():
            raise ReaderError(
                path,
                f"holds no numbers (first value {frame[column].dropna().iloc[0]!r})",
                "LMSYS labels are one-hot 0/1 in winner_model_a, winner_model_b and winner_tie.",
                column=column,
            )
        out[column] = values
    return out


def _winner(labels: pd.DataFrame) -> pd.Series:
    """'model_a', 'model_b', 'tie', or null where the one-hot is invalid."""
    valid = labels.isin([0, 1]).all(axis=1) & labels.sum(axis=1).eq(1)
    winner = pd.Series(None, index=labels.index, dtype="str")
    winner[valid & labels["winner_model_a"].eq(1)] = "model_a"
    winner[valid & labels["winner_model_b"].eq(1)] = "model_b"
    winner[valid & labels["winner_tie"].eq(1)] = "tie"
    return winner


def _utf8_safe(text: str, notes: Counter[str]) -> str:
    """`text`, with unpaired surrogates replaced by U+FFFD (counted in notes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        notes["surrogates_replaced"] += 1
        # Through UTF-16 with surrogatepass, a lone surrogate decodes as one U+FFFD.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _flatten(turns: list[str | None], policy: MultiTurnPolicy) -> str | None:
    """One field's text under the policy: None when no turn has text, "" when all are whitespace."""
    if policy is MultiTurnPolicy.FIRST:
        turns = turns[:1]
    present = [t for t in turns if t is not None]
    if not present:
        return None
    return TURN_SEPARATOR.join(t for t in present if t.strip())


def _read_file(path: Path, source: str) -> pd.DataFrame:
    frame = read_csv(path, COLUMNS, source)
    frame["id"] = ids_as_str(path, frame["id"])
    frame["winner"] = _winner(_one_hot(path, frame))
    return frame


def read_lmsys(
    paths: Path | Sequence[Path],
    *,
    source: str = "lmsys_55k",
    multi_turn: MultiTurnPolicy | str = MultiTurnPolicy.JOIN,
    keep_ties: bool = False,
) -> ReadResult:
    """Read LMSYS-layout CSV file(s) into the canonical frame, dropping unusable rows by reason."""
    files = as_paths(paths)
    policy = MultiTurnPolicy(multi_turn)
    frame = pd.concat([_read_file(p, source) for p in files], ignore_index=True)
    rows_read = len(frame)
    drops: Counter[str] = Counter()
    notes: Counter[str] = Counter()

    frame = drop_where(frame, frame["winner"].isna(), DropReason.BAD_LABEL, drops)
    tie = frame["winner"].eq("tie")
    if keep_ties:
        frame.loc[tie, "winner"] = None
    else:
        frame = drop_where(frame, tie, DropReason.TIE, drops)

    parsed = {c: [parse_turns(v, notes) for v in frame[c].tolist()] for c in TEXT_COLUMNS}
    rows = list(zip(*parsed.values(), strict=True))
    bad = pd.Series([any(f is _BAD for f in row) for row in rows], index=frame.index, dtype=bool)
    frame = drop_where(frame, bad, DropReason.JSON_PARSE_ERROR, drops)
    rows = [row for row, b in zip(rows, bad, strict=True) if not b]

    # Turns all three fields share; a blank field (None) counts as no turns and becomes null_text below.
    lengths = [[len(f) for f in row if f is not None] for row in rows]
    shared = [min(n, default=0) for n in lengths]
    mismatch = pd.Series([len(set(n)) > 1 for n in lengths], index=frame.index, dtype=bool)
    multi = pd.Series([n > 1 for n in shared], index=frame.index, dtype=bool)
    if policy is MultiTurnPolicy.DROP:
        frame = drop_where(frame, multi, DropReason.MULTI_TURN_POLICY, drops)
        rows = [row for row, m in zip(rows, multi, strict=True) if not m]
        shared = [n for n, m in zip(shared, multi, strict=True) if not m]
    for i, column in enumerate(TEXT_COLUMNS):
        texts = [
            None if row[i] is None else _flatten(row[i][:n], policy)
            for row, n in zip(rows, shared, strict=True)
        ]
        frame[column] = clean_text(pd.Series(texts, index=frame.index, dtype="str"))

    frame = drop_unusable_text(frame, drops)
    notes["multi_turn"] = int(multi.loc[frame.index].sum())
    notes["turn_count_mismatch"] = int(mismatch.loc[frame.index].sum())
    return ReadResult(to_canonical(frame, source), files, rows_read, drops, +notes)
