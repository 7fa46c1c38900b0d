"""Validation metrics from A/B logits: accuracy, log loss, calibration, with and without swap averaging."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from arena_assets.ranker.data import encode_frame, hard_labels
from arena_assets.ranker.prompt import PromptTemplate


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


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Gap between confidence and accuracy, averaged over equal-width confidence bins."""
    p = prob_b(logits)
    confidence = np.maximum(p, 1 - p)
    correct = ((p > 0.5).astype(np.int64) == labels).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(error)


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


@torch.no_grad()
def evaluate_pairs(
    head: torch.nn.Module,
    tokenizer: Any,
    template: PromptTemplate,
    frame: pd.DataFrame,
    *,
    max_length: int,
    rebalance: bool,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Score labelled pairs in both orders with a letter head and return `pair_metrics`."""
    from arena_assets.ranker.scorer import score_sequences

    labels = hard_labels(frame)
    both = []
    for swapped in (False, True):
        encoded = encode_frame(template, frame, max_length=max_length, rebalance=rebalance, swapped=swapped)
        both.append(
            score_sequences(
                head,
                encoded.input_ids,
                pad_token_id=tokenizer.pad_token_id,
                token_budget=batch_size * max_length,
                max_batch_rows=batch_size,
                device=device,
            )
        )
    return pair_metrics(both[0], both[1], labels)
