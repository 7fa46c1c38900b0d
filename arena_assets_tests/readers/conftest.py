"""Fixtures writing tiny raw files (parquet, CSV) into tmp_path with pandas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

Rows = list[dict[str, Any]]


@pytest.fixture
def write_parquet(tmp_path: Path) -> Callable[[str, Rows | pd.DataFrame], Path]:
    """Write rows (or a frame) as tmp_path/<name> parquet and return the path."""

    def write(name: str, rows: Rows | pd.DataFrame) -> Path:
        path = tmp_path / name
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        frame.to_parquet(path, index=False)
        return path

    return write


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[[str, Rows | pd.DataFrame], Path]:
    """Write rows (or a frame) as a UTF-8 CSV tmp_path/<name> and return the path."""

    def write(name: str, rows: Rows | pd.DataFrame) -> Path:
        path = tmp_path / name
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        frame.to_csv(path, index=False, encoding="utf-8")
        return path

    return write
