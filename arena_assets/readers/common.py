"""Helpers the readers share: open files with clear errors, check columns, clean text, drop rows by reason."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from arena_assets.readers.schema import CANONICAL_COLUMNS, DropReason, ReaderError

TEXT_COLUMNS: tuple[str, str, str] = ("prompt", "response_a", "response_b")
ColumnKind = Literal["text", "id", "bool"]
_KIND_WORDS: dict[str, str] = {"text": "strings", "id": "strings or integers", "bool": "booleans"}


def as_paths(paths: Path | str | Sequence[Path | str]) -> list[Path]:
    """One path or several, as a non-empty list of Paths."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise ValueError("no files given: pass at least one path")
    return [Path(p) for p in items]


def check_file(path: Path) -> None:
    """Raise ReaderError unless `path` is an existing, non-empty file."""
    if not path.exists():
        raise ReaderError(path, "file not found", "Check the path (raw files live under data/raw/).")
    if path.is_dir():
        raise ReaderError(path, "is a directory, not a file", f"Pass the files inside it, e.g. {path}/*.")
    if path.stat().st_size == 0:
        raise ReaderError(path, "file is empty (0 bytes)", "Download or export the file again.")


def _arrow_kind_ok(kind: ColumnKind, typ: pa.DataType) -> bool:
    """Whether a parquet column of type `typ` can hold values of `kind`."""
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
            f"Check that this is a {source} file (README, 'Data': the expected columns) "
            "or pick the matching --source.",
        )


def read_parquet(
    path: Path,
    required: Mapping[str, ColumnKind],
    source: str,
    optional: Mapping[str, ColumnKind] | None = None,
    notes: Counter[str] | None = None,
) -> pd.DataFrame:
    """Read the required (and present optional) columns of a parquet file, checking names and types.

    Text that is not valid UTF-8 (parquet does not check it) would fail a later step with an error naming
    no file or row: such values are repaired (each bad byte becomes U+FFFD) and the rows counted in
    `notes["invalid_utf8_repaired"]`.
    """
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
    wanted = dict(required) | {c: k for c, k in (optional or {}).items() if c in schema.names}
    for column, kind in wanted.items():
        typ = schema.field(column).type
        if not _arrow_kind_ok(kind, typ):
            raise ReaderError(
                path,
                f"has type {typ}, expected {_KIND_WORDS[kind]}",
                f"Write {column!r} as {_KIND_WORDS[kind]} (README, 'Data', lists the {source} layout).",
                column=column,
            )
    try:
        table = pq.read_table(path, columns=list(wanted))
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(path, f"cannot read the data ({exc})", "Download or export it again.") from exc
    table, repaired = _repair_utf8(table, [c for c, k in wanted.items() if k == "text"])
    if notes is not None and repaired:
        notes["invalid_utf8_repaired"] += repaired
    frame = table.to_pandas()
    require_rows(path, frame)
    return frame


def _repair_utf8(table: pa.Table, columns: Sequence[str]) -> tuple[pa.Table, int]:
    """`table` with invalid UTF-8 in the string `columns` replaced (U+FFFD), and how many rows had any."""
    bad_rows: set[int] = set()
    for name in columns:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        fixed = []
        for row, raw in enumerate(column.cast(pa.large_binary()).to_pylist()):
            try:
                fixed.append(None if raw is None else raw.decode("utf-8"))
            except UnicodeDecodeError:
                fixed.append(raw.decode("utf-8", "replace"))
                bad_rows.add(row)
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(fixed, pa.string()))
    return table, len(bad_rows)


def _non_utf8_line(path: Path) -> tuple[int, str]:
    """Line number (1-based) and reason of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, f"byte 0x{data[exc.start]:02x}: {exc.reason}"
    return 0, "unknown"


def _csv_header(path: Path) -> list[str]:
    """Column names from the first line (a UTF-8 BOM is skipped)."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh), [])


def read_csv(path: Path, required: Sequence[str], source: str) -> pd.DataFrame:
    """Read the required columns of a UTF-8 CSV as strings (empty fields null), with clear errors."""
    check_file(path)
    with path.open("rb") as fh:
        if fh.read(4) == b"PAR1":
            raise ReaderError(
                path,
                "is a parquet file, not CSV",
                "Use a parquet source (--source wsdm_train, wsdm_test or open_model) or export it as CSV.",
            )
    not_utf8 = "Re-save the file as UTF-8 CSV (e.g. iconv -f latin1 -t utf-8)."
    try:
        header = _csv_header(path)
    except UnicodeDecodeError as exc:
        line, reason = _non_utf8_line(path)
        raise ReaderError(path, f"not UTF-8 text at line {line} ({reason}); is it a CSV?", not_utf8) from exc
    require_columns(path, header, required, source)
    # pyarrow's parser is ~5x faster than pandas' on the 200 MB LMSYS file. Only empty fields are null: words
    # like "NA" or "null" are real text here.
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in required},
        include_columns=list(required),
        null_values=[""],
        strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(newlines_in_values=True), convert_options=convert
        )
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            line, reason = _non_utf8_line(path)
            raise ReaderError(path, f"not UTF-8 text at line {line} ({reason})", not_utf8) from exc
        raise ReaderError(
            path,
            f"not a readable CSV ({str(exc)[:200]})",
            "Export it again as comma-separated CSV with quoted text fields.",
        ) from exc
    frame = table.to_pandas()
    require_rows(path, frame)
    return frame


def require_rows(path: Path, frame: pd.DataFrame) -> None:
    """Raise ReaderError for a file that has columns but no rows."""
    if frame.empty:
        raise ReaderError(path, "file has no rows", "Download or export the file again.")


def ids_as_str(path: Path, ids: pd.Series) -> pd.Series:
    """Ids as strings; a null id is a ReaderError naming its row (0-based, as pandas reads the file)."""
    null = ids.isna().to_numpy()
    if null.any():
        row = int(null.argmax())
        raise ReaderError(
            path, "id is null", "Every row needs an id; fix or remove this row.", column="id", row=row
        )
    # Integers as their exact digits: through int64 a uint64 id above 2**63 would wrap to a negative one.
    return ids.astype("str").str.strip()


def clean_text(text: pd.Series) -> pd.Series:
    """Text as stored in the canonical frame: Unix line ends, no surrounding whitespace; nulls stay null."""
    text = text.astype("str")
    return text.str.replace("\r\n", "\n", regex=False).str.replace("\r", "\n", regex=False).str.strip()


# Whitespace that differs from one plain space: a run of two or more, or a single tab/newline/etc.
# Matching only these (not every space) keeps the regex cheap; pandas hands this class to pyarrow's RE2,
# whereas `\s+` falls back to Python's re on every row (10x slower on 57k long rows).
_ODD_WHITESPACE = r"[ \t\n\r\f\v]{2,}|[\t\n\r\f\v]"


def compare_key(text: pd.Series) -> pd.Series:
    """Text with each run of ASCII whitespace made one space, to compare responses and find duplicates."""
    return text.astype("str").str.replace(_ODD_WHITESPACE, " ", regex=True).str.strip()


def compare_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """compare_key of prompt, response_a and response_b, same index as `frame`."""
    return pd.DataFrame({c: compare_key(frame[c]) for c in TEXT_COLUMNS}, index=frame.index)


def null_text_mask(frame: pd.DataFrame) -> pd.Series:
    """Rows where the prompt or a response is null."""
    return frame[list(TEXT_COLUMNS)].isna().any(axis=1)


def empty_text_mask(frame: pd.DataFrame) -> pd.Series:
    """Rows where the prompt or a response is empty (after cleaning, so whitespace-only counts)."""
    return pd.concat([frame[c].eq("") for c in TEXT_COLUMNS], axis=1).any(axis=1)


def identical_responses_mask(keys: pd.DataFrame) -> pd.Series:
    """Rows whose two responses are equal once whitespace is normalised (`keys` from compare_keys)."""
    return keys["response_a"].eq(keys["response_b"]).fillna(False)


def duplicate_mask(frame: pd.DataFrame, keys: pd.DataFrame, *, by_id: bool = True) -> pd.Series:
    """Rows repeating an earlier (normalised) prompt + response_a + response_b, or an earlier id."""
    mask = keys.loc[frame.index].duplicated(keep="first")
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
    keys = compare_keys(frame)
    frame = drop_where(frame, identical_responses_mask(keys), DropReason.IDENTICAL_RESPONSES, drops)
    return drop_where(frame, duplicate_mask(frame, keys), DropReason.DUPLICATE, drops)


def to_canonical(frame: pd.DataFrame, source: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The canonical frame: CANONICAL_COLUMNS (as nullable strings) in order, then `extra`, fresh index."""
    out = pd.DataFrame({c: frame.get(c) for c in CANONICAL_COLUMNS}, index=frame.index)
    out["source"] = source
    out = out.astype("str")
    for column in extra:
        out[column] = frame[column]
    return out.reset_index(drop=True)
