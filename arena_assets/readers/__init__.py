"""Readers that validate each raw source and normalise it to the canonical frame (see schema.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from arena_assets.readers.lmsys import read_lmsys
from arena_assets.readers.open_pairs import read_open_pairs
from arena_assets.readers.schema import ReaderError, ReadResult
from arena_assets.readers.wsdm import read_wsdm_test, read_wsdm_train

Reader = Callable[..., ReadResult]


def read_lmsys_55k(paths: Path | Sequence[Path], **kw: Any) -> ReadResult:
    """Read the LMSYS 55k train.csv (keywords as read_lmsys)."""
    return read_lmsys(paths, source="lmsys_55k", **kw)


def read_lmsys_33k(paths: Path | Sequence[Path], **kw: Any) -> ReadResult:
    """Read the additional 33k CSV(s) in the LMSYS layout (keywords as read_lmsys)."""
    return read_lmsys(paths, source="lmsys_33k", **kw)


READERS: dict[str, Reader] = {
    "wsdm_train": read_wsdm_train,
    "wsdm_test": read_wsdm_test,
    "lmsys_55k": read_lmsys_55k,
    "lmsys_33k": read_lmsys_33k,
    "open_model": read_open_pairs,
}
# Sources whose reader takes `multi_turn` and `keep_ties`.
LMSYS_SOURCES: frozenset[str] = frozenset({"lmsys_55k", "lmsys_33k"})


def read_source(source: str, paths: Path | Sequence[Path], **kw: Any) -> ReadResult:
    """Read `paths` with the reader of `source` (a key of READERS); keywords go to that reader."""
    try:
        reader = READERS[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r}; known sources: {', '.join(READERS)}") from None
    return reader(paths, **kw)


__all__ = [
    "LMSYS_SOURCES",
    "READERS",
    "ReadResult",
    "ReaderError",
    "read_lmsys",
    "read_lmsys_33k",
    "read_lmsys_55k",
    "read_open_pairs",
    "read_source",
    "read_wsdm_test",
    "read_wsdm_train",
]
