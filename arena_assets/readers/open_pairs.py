"""Reader for the open-model pair files (v1, v2, v3, ... parquet): prompts with two responses, no label.

Ids: the files number their rows independently, so when any id appears in more than one of the files read
together, every id is namespaced by its file's stem (`v2:123`); otherwise ids are kept as they are. An id
repeated after that (within one file, or the same file passed twice) is a duplicate.
Drops, each row counted once under the first that applies: null_text, empty_text (whitespace-only),
identical_responses, duplicate (repeated id, or repeated prompt + responses across all files; first kept).
The canonical winner is null; the stage-1 model labels these rows with soft logits later.
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
    drop_unusable_text,
    ids_as_str,
    read_parquet,
    to_canonical,
)
from arena_assets.readers.schema import ReadResult

SOURCE = "open_model"
COLUMNS: dict[str, ColumnKind] = {
    "id": "id",
    "prompt": "text",
    "response_a": "text",
    "response_b": "text",
    "model_a": "text",
    "model_b": "text",
    "language": "text",
}


def namespace_ids(frames: list[pd.DataFrame], files: list[Path]) -> None:
    """Prefix every id with its file's stem when ids collide between files (in place)."""
    # Each file's distinct ids once: any repeat left in the concatenation is an id shared by two files.
    distinct = pd.concat([pd.Series(frame["id"].unique()) for frame in frames], ignore_index=True)
    if distinct.duplicated().any():
        for frame, path in zip(frames, files, strict=True):
            frame["id"] = path.stem + ":" + frame["id"]


def read_open_pairs(paths: Path | Sequence[Path]) -> ReadResult:
    """Read open-model pair parquet file(s) into the canonical frame (winner null), dropping by reason."""
    files = as_paths(paths)
    frames = []
    notes: Counter[str] = Counter()
    for path in files:
        frame = read_parquet(path, COLUMNS, SOURCE, notes=notes)
        frame["id"] = ids_as_str(path, frame["id"])
        frames.append(frame)
    namespace_ids(frames, files)
    frame = pd.concat(frames, ignore_index=True)
    rows_read = len(frame)
    for column in TEXT_COLUMNS:
        frame[column] = clean_text(frame[column])
    drops: Counter[str] = Counter()
    frame = drop_unusable_text(frame, drops)
    return ReadResult(to_canonical(frame, SOURCE), files, rows_read, drops, notes)
