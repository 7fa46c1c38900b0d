"""The canonical frame every reader produces, the reasons a row may be dropped, and reader errors."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pandas as pd

CANONICAL_COLUMNS: tuple[str, ...] = (
    "id",
    "source",
    "prompt",
    "response_a",
    "response_b",
    "winner",
    "model_a",
    "model_b",
    "language",
)
WINNERS: tuple[str, str] = ("model_a", "model_b")


class DropReason(StrEnum):
    """Why a reader (or the hard-label builder) left a row out."""

    TIE = "tie"
    NULL_TEXT = "null_text"
    EMPTY_TEXT = "empty_text"
    JSON_PARSE_ERROR = "json_parse_error"
    BAD_LABEL = "bad_label"
    DUPLICATE = "duplicate"
    IDENTICAL_RESPONSES = "identical_responses"
    MULTI_TURN_POLICY = "multi_turn_policy"


class MultiTurnPolicy(StrEnum):
    """What to do with LMSYS conversations of several turns."""

    JOIN = "join"  # turns joined in order, separated by a blank line (default)
    FIRST = "first"  # keep the first turn only
    DROP = "drop"  # drop the row (counted as multi_turn_policy)


class ReaderError(ValueError):
    """A raw file cannot be used; the message names the file, the place and the fix."""

    def __init__(
        self,
        path: Path | str,
        problem: str,
        fix: str,
        *,
        column: str | None = None,
        row: int | str | None = None,
    ) -> None:
        where = str(path)
        if column is not None:
            where += f", column {column!r}"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {problem}. {fix}")
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        self.column = column
        self.row = row


@dataclass
class ReadResult:
    """A reader's output: the canonical frame plus what was dropped and why."""

    frame: pd.DataFrame
    files: list[Path]
    rows_read: int
    drops: Counter[str] = field(default_factory=Counter)
    # Rows kept although odd (a test row with null text, a repaired string), by kind; never dropped rows.
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def rows_kept(self) -> int:
        return len(self.frame)

    def summary(self) -> dict[str, object]:
        """JSON-ready counts, as `arena validate --json` prints them."""
        return {
            "files": [str(p) for p in self.files],
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "drops": {reason.value: int(self.drops.get(reason.value, 0)) for reason in DropReason},
            "notes": {kind: int(n) for kind, n in sorted(self.notes.items()) if n},
        }
