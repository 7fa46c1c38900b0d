"""Helpers the readers share: open files with clear errors, check columns, clean text, drop rows by reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from arena_assets.readers.schema import CANONICAL_COLUMNS, DropReason, ReaderError

TEXT_COLUMNS: tuple[str, str, str] = ("prompt", "response_a", "response_b")
ColumnKind = Literal["text", "id", "bool"]
_KIND_WORDS: dict[str, str] = {
    "text": "strings",
    "id": "strings or integers",
    "bool": "booleans (true/false)",
}


def as_paths(paths: Path | str | Sequence[Path | str]) -> list[Path]:
    """One path or several, as a non-empty list of Paths."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise ValueError("no files given: pass at least one path")
    return [Path(p) for p in items]


def check_file(path: Path) -> None:
    """Raise ReaderError unless `path` is an existing, non-empty file."""
    if not path.exists():
        raise ReaderError(
            path, "file not found", "Check the path (raw files live under data/raw/, see README)."
        )
    if path.is_dir():
        raise ReaderError(path, "is a directory, not a file", f"Pass the files inside it, e.g. {path}/*.")
    if path.stat().st_size == 0:
        raise ReaderError(path, "file is empty (0 bytes)", "Download or export the file again.")


def _arrow_kind_ok(kind: ColumnKind, typ: pa.DataType) -> bool:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_null(typ):  # a column of nulls only: rows are judged one by one
        return True
    is_text = pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)
    if kind == "text":
        return is_text
    if kind == "id":
        return is_text or pa.types.is_integer(typ)
    return pa.types.is_boolean(typ)


def require_columns(path: Path, present: Sequence[str], required: Sequence[str], source: str) -> None:
    """Raise ReaderError listing every required column the file lacks."""
    missing = [c for c in required if c not in present]
    if missing:
        raise ReaderError(
            path,
            f"missing column(s) {', '.join(map(repr, missing))}; expected columns {', '.join(required)}"
            f" (found {', '.join(map(str, present))})",
            f"Check that this is a {source} file (DESIGN.md §2) or pick the matching --source.",
        )


def read_parquet(
    path: Path, required: Mapping[str, ColumnKind], source: str, optional: Mapping[str, ColumnKind] = {}
) -> pd.DataFrame:
    """Read the required (and present optional) columns of a parquet file, checking names and types."""
    check_file(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        with path.open("rb") as fh:
            looks_text = b"\0" not in fh.read(4096)
        hint = " It looks like text/CSV: LMSYS CSVs belong to --source lmsys_55k or lmsys_33k."
        hint = hint if looks_text else ""
        raise ReaderError(
            path, f"not a parquet file ({exc})", f"Pass the published .parquet file.{hint}"
        ) from exc
    require_columns(path, schema.names, list(required), source)
    wanted = dict(required) | {c: k for c, k in optional.items() if c in schema.names}
    for column, kind in wanted.items():
        typ = schema.field(column).type
        if not _arrow_kind_ok(kind, typ):
            raise ReaderError(
                path,
                f"has type {typ}, expected {_KIND_WORDS[kind]}",
                f"Write {column!r} as {_KIND_WORDS[kind]} (see DESIGN.md §2 for the {source} layout).",
                column=column,
            )
    try:
        frame = pd.read_parquet(path, columns=list(wanted))
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(
            path, f"cannot read the data ({exc})", "Download or export the file again."
        ) from exc
    require_rows(path, frame)
    return frame


def _non_utf8_line(path: Path) -> tuple[int, str]:
    """Line number (1-based) and reason of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, f"byte 0x{data[exc.start]:02x}: {exc.reason}"
    return 0, "unknown"


def read_csv(path: Path, required: Sequence[str], source: str) -> pd.DataFrame:
    """Read a UTF-8 CSV as strings (empty fields are null), checking encoding, shape and column names."""
    check_file(path)
    with path.open("rb") as fh:
        if fh.read(4) == b"PAR1":
            raise ReaderError(
                path,
                "is a parquet file, not CSV",
                "Use a parquet source (--source wsdm_train, wsdm_test or open_model) or export it as CSV.",
            )
    try:
        # Only empty fields are null: the default NA words ("NA", "null", "None") are real text here.
        frame = pd.read_csv(path, dtype=str, encoding="utf-8", keep_default_na=False, na_values=[""])
    except UnicodeDecodeError as exc:
        line, reason = _non_utf8_line(path)
        raise ReaderError(
            path,
            f"not UTF-8 text at line {line} ({reason}); is it a CSV at all?",
            "Re-save the file as UTF-8 CSV (e.g. iconv -f latin1 -t utf-8).",
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ReaderError(
            path,
            f"not a readable CSV ({str(exc).strip().splitlines()[-1]})",
            "Export it again as comma-separated CSV with quoted text fields.",
        ) from exc
    require_columns(path, list(frame.columns), required, source)
    require_rows(path, frame)
    return frame


def require_rows(path: Path, frame: pd.DataFrame) -> None:
    """Raise ReaderError for a file that has columns but no rows."""
    if frame.empty:
        raise ReaderError(
            path, "file has no rows", "Download or export the file again; it holds only a header."
        )


def ids_as_str(path: Path, ids: pd.Series) -> pd.Series:
    """Ids as strings; a null id is a ReaderError naming its row (0-based, as pandas reads the file)."""
    null = ids.isna().to_numpy()
    if null.any():
        row = int(null.argmax())
        raise ReaderError(
            path, "id is null", "Every row needs an id; fix or remove this row.", column="id", row=row
        )
    if pd.api.types.is_integer_dtype(ids):
        return ids.astype("int64").astype("str")
    return ids.astype("str").str.strip()


def clean_text(text: pd.Series) -> pd.Series:
    """Text as stored in the canonical frame: Unix line ends, no surrounding whitespace; nulls stay null."""
    text = text.astype("str")
    return text.str.replace("\r\n", "\n", regex=False).str.replace("\r", "\n", regex=False).str.strip()


def compare_key(text: pd.Series) -> pd.Series:
    """Text with runs of whitespace collapsed, to compare responses and find duplicate rows."""
    return text.astype("str").str.replace(r"\s+", " ", regex=True).str.strip()


def null_text_mask(frame: pd.DataFrame) -> pd.Series:
    """Rows where the prompt or a response is null."""
    return frame[list(TEXT_COLUMNS)].isna().any(axis=1)


def empty_text_mask(frame: pd.DataFrame) -> pd.Series:
    """Rows where the prompt or a response is empty (after cleaning, so whitespace-only counts)."""
    return pd.concat([frame[c].eq("") for c in TEXT_COLUMNS], axis=1).any(axis=1)


def identical_responses_mask(frame: pd.DataFrame) -> pd.Series:
    """Rows whose two responses are equal once whitespace is normalised."""
    return compare_key(frame["response_a"]).eq(compare_key(frame["response_b"])).fillna(False)


def duplicate_mask(frame: pd.DataFrame, *, by_id: bool = True) -> pd.Series:
    """Rows repeating an earlier id or an earlier (prompt, response_a, response_b) after normalising."""
    keys = pd.DataFrame({c: compare_key(frame[c]) for c in TEXT_COLUMNS}, index=frame.index)
    mask = keys.duplicated(keep="first")
    return mask | frame["id"].duplicated(keep="first") if by_id else mask


def drop_where(frame: pd.DataFrame, mask: pd.Series, reason: DropReason, drops: Counter[str]) -> pd.DataFrame:
    """Remove the rows in `mask` and count them under `reason`."""
    mask = mask.astype(bool)
    drops[reason.value] += int(mask.sum())
    return frame.loc[~mask]


def drop_unusable_text(frame: pd.DataFrame, drops: Counter[str]) -> pd.DataFrame:
    """Drop null, empty, identical-response and duplicate rows, in that order, counting each once."""
    frame = drop_where(frame, null_text_mask(frame), DropReason.NULL_TEXT, drops)
    frame = drop_where(frame, empty_text_mask(frame), DropReason.EMPTY_TEXT, drops)
    frame = drop_where(frame, identical_responses_mask(frame), DropReason.IDENTICAL_RESPONSES, drops)
    return drop_where(frame, duplicate_mask(frame), DropReason.DUPLICATE, drops)


def to_canonical(frame: pd.DataFrame, source: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The canonical frame: CANONICAL_COLUMNS (as nullable strings) in order, then `extra`, fresh index."""
    out = pd.DataFrame(index=frame.index)
    for column in CANONICAL_COLUMNS:
        if column == "source":
            out[column] = source
        elif column in frame:
            out[column] = frame[column]
        else:
            out[column] = None
        out[column] = out[column].astype("str")
    for column in extra:
        out[column] = frame[column]
    return out.reset_index(drop=True)
