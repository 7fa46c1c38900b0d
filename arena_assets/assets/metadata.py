"""Metadata a person reads in the UI: tables of drops, language mix, label balance, artifact facts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from arena_assets.ranker.artifacts import directory_size_bytes
from arena_assets.readers.schema import DropReason


def count_table(counts: Mapping[str, int], *, key: str, total: int | None = None) -> dg.TableMetadataValue:
    """A two- or three-column table of counts (and shares of `total`), largest first."""
    columns = [dg.TableColumn(key, "string"), dg.TableColumn("rows", "int")]
    if total:
        columns.append(dg.TableColumn("share", "float"))
    records = []
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        values: dict[str, Any] = {key: str(name), "rows": int(n)}
        if total:
            values["share"] = round(n / total, 4)
        records.append(dg.TableRecord(values))
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def drop_metadata(drops: Mapping[str, int]) -> dict[str, Any]:
    """Each drop reason as a number (so it plots) plus the table of all reasons."""
    full = {reason.value: int(drops.get(reason.value, 0)) for reason in DropReason}
    return {
        "rows_dropped": sum(full.values()),
        **{f"dropped_{reason}": n for reason, n in full.items()},
        "drops_by_reason": count_table(full, key="reason"),
    }


def language_mix(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """Rows per language (null as 'unknown')."""
    counts = frame["language"].fillna("unknown").value_counts().to_dict()
    return count_table(counts, key="language", total=len(frame))


def label_balance(frame: pd.DataFrame) -> dict[str, Any]:
    """Share of rows where B won (0.5 is balanced)."""
    labelled = frame["winner"].isin(["model_a", "model_b"])
    share_b = float((frame.loc[labelled, "winner"] == "model_b").mean()) if labelled.any() else float("nan")
    return {"label_share_b": share_b}


def artifact_metadata(path: Path) -> dict[str, Any]:
    """Where the artifact lies and how big it is."""
    path = Path(path)
    size = directory_size_bytes(path) if path.is_dir() else path.stat().st_size
    return {"path": dg.MetadataValue.path(str(path)), "size_mb": round(size / 2**20, 3)}


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """The frame's columns and dtypes for `dagster/column_schema`."""
    return dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in frame.dtypes.items()])


def metrics_table(groups: Mapping[str, Mapping[str, float]], *, key: str) -> dg.TableMetadataValue:
    """Rows, accuracy (both orders averaged) and log loss per group, largest group first."""
    columns = [
        dg.TableColumn(key, "string"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("accuracy", "float"),
        dg.TableColumn("log_loss", "float"),
    ]
    records = [
        dg.TableRecord(
            {
                key: name,
                "rows": int(m["rows"]),
                "accuracy": round(m["accuracy_tta"], 4),
                "log_loss": round(m["log_loss_tta"], 4),
            }
        )
        for name, m in sorted(groups.items(), key=lambda kv: (-kv[1]["rows"], kv[0]))
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))
