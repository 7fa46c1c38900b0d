"""Metrics from A/B letter logits (accuracy, log loss, calibration, with and without swap averaging) and the
evaluation report: pure functions of logits and rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arena_assets.ranker.artifacts import LOGIT_COLUMNS
from arena_assets.ranker.data import hard_labels

WSDM_SOURCE = "wsdm_train"  # the `source` of rows from the competition's own training file


def prob_b(logits: np.ndarray) -> np.ndarray:
    """P(B wins) from logits [N, 2] (softmax over the two letters)."""
    logits = np.asarray(logits, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))


def swap_averaged_logits(logits: np.ndarray, swapped_logits: np.ndarray) -> np.ndarray:
    """Average of both orders, the swapped order's letters flipped back: [N, 2]."""
    return 0.5 * (np.asarray(logits) + np.asarray(swapped_logits)[:, ::-1])


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose larger logit is the label (0 = A, 1 = B)."""
    return float(((prob_b(logits) > 0.5).astype(np.int64) == labels).mean())


def log_loss(logits: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the labels."""
    p = np.clip(prob_b(logits), eps, 1 - eps)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


def calibration_bins(
    logits: np.ndarray, labels: np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, rows) in each of `bins` equal-width confidence bins over [0.5, 1]."""
    p = prob_b(logits)
    confidence = np.maximum(p, 1 - p)
    correct = ((p > 0.5).astype(np.int64) == labels).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        rows = int(mask.sum())
        out.append(
            (
                float(confidence[mask].mean()) if rows else 0.0,
                float(correct[mask].mean()) if rows else 0.0,
                rows,
            )
        )
    return out


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Gap between confidence and accuracy, averaged over equal-width confidence bins."""
    total = max(len(labels), 1)
    return float(sum(rows / total * abs(c - a) for c, a, rows in calibration_bins(logits, labels, bins)))


def pair_metrics(logits: np.ndarray, swapped_logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of the original order and of the swap-averaged (test-time augmented) logits."""
    averaged = swap_averaged_logits(logits, swapped_logits)
    return {
        "accuracy": accuracy(logits, labels),
        "log_loss": log_loss(logits, labels),
        "accuracy_tta": accuracy(averaged, labels),
        "log_loss_tta": log_loss(averaged, labels),
        "calibration_error": expected_calibration_error(averaged, labels),
        "rows": float(len(labels)),
    }


def _breakdown(
    rows: pd.DataFrame, column: str, logits: np.ndarray, swapped: np.ndarray, labels: np.ndarray
) -> dict[str, dict[str, float]]:
    """`pair_metrics` for each value of `column` (null as 'unknown')."""
    keys = rows[column].fillna("unknown").astype(str)
    return {
        str(value): pair_metrics(logits[index], swapped[index], labels[index])
        for value, index in keys.groupby(keys).indices.items()
    }


def evaluation_report(rows: pd.DataFrame, logits: np.ndarray, swapped: np.ndarray) -> dict[str, Any]:
    """Metrics of labelled pairs overall, on WSDM rows alone (the distribution the competition scores),
    per language and per source. `logits`/`swapped` [N, 2] are the two orders' letter logits of `rows`."""
    labels = hard_labels(rows)
    report: dict[str, Any] = {**pair_metrics(logits, swapped, labels)}
    report["calibration_bins"] = calibration_bins(swap_averaged_logits(logits, swapped), labels)
    wsdm = (rows["source"] == WSDM_SOURCE).to_numpy() if "source" in rows else np.zeros(len(rows), bool)
    if wsdm.any():
        wsdm_metrics = pair_metrics(logits[wsdm], swapped[wsdm], labels[wsdm])
        report.update({f"wsdm_{k}": v for k, v in wsdm_metrics.items()})
    report["per_language"] = _breakdown(rows, "language", logits, swapped, labels)
    if "source" in rows:
        report["per_source"] = _breakdown(rows, "source", logits, swapped, labels)
    return report


def read_logits(path: str | Path, ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The scorer's logits of both orders ([N, 2] each) for the rows with these ids, in their order."""
    frame = pd.read_parquet(path).set_index("id")
    missing = ~ids.astype(str).isin(frame.index)
    if missing.any():
        raise ValueError(
            f"{path}: no logits for {int(missing.sum())} row(s), e.g. id {ids[missing].iloc[0]!r}"
        )
    aligned = frame.loc[ids.astype(str)]
    return aligned[list(LOGIT_COLUMNS[:2])].to_numpy(), aligned[list(LOGIT_COLUMNS[2:])].to_numpy()
