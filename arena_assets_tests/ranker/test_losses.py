"""Letter-logit losses against their formulas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from arena_assets.ranker.config import Stage2DatasetConfig
from arena_assets.ranker.losses import hard_label_loss, soft_label_loss
from arena_assets.ranker.soft_labels import human_teacher_logits


def test_hard_label_loss_hand_computed() -> None:
    # logits [2, 0], label A: -log softmax = log(1 + e^-2).
    loss = hard_label_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-6)
    # Same logits, label B: log(1 + e^2).
    loss = hard_label_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(2.0)), abs=1e-6)


def test_hard_label_loss_is_the_row_mean() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2
    assert hard_label_loss(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, abs=1e-6)


def test_hard_label_loss_returns_fp32_from_bf16() -> None:
    loss = hard_label_loss(torch.tensor([[2.0, 0.0]], dtype=torch.bfloat16), torch.tensor([0]))
    assert loss.dtype == torch.float32 and loss.dim() == 0


def test_soft_label_loss_hand_computed() -> None:
    # Teacher logits [0, 0] -> targets (0.5, 0.5); student [2, 0].
    student = torch.tensor([[2.0, 0.0]])
    log_p = torch.log_softmax(student, dim=-1)[0]
    expected = -(0.5 * log_p[0] + 0.5 * log_p[1]).item()
    assert soft_label_loss(student, torch.zeros(1, 2)).item() == pytest.approx(expected, abs=1e-6)


def test_soft_label_loss_equals_hard_loss_for_one_hot_teacher() -> None:
    student = torch.randn(6, 2)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    one_hot_like = torch.nn.functional.one_hot(labels, 2).float() * 100.0  # softmax is one-hot to 1e-43
    torch.testing.assert_close(soft_label_loss(student, one_hot_like), hard_label_loss(student, labels))


def test_temperature_softens_the_targets() -> None:
    student = torch.tensor([[3.0, -1.0], [0.5, 0.0]])
    teacher = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    for temperature in (0.5, 2.0):
        targets = torch.softmax(teacher / temperature, dim=-1)
        expected = -(targets * torch.log_softmax(student, dim=-1)).sum(-1).mean()
        torch.testing.assert_close(soft_label_loss(student, teacher, temperature=temperature), expected)
    # Very high temperature flattens the targets to (0.5, 0.5), whatever the teacher says.
    flat = soft_label_loss(student, torch.zeros(2, 2))
    torch.testing.assert_close(soft_label_loss(student, teacher, temperature=1e6), flat)


def test_soft_label_loss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="temperature"):
        soft_label_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature=0.0)
    with pytest.raises(ValueError, match="differ"):
        soft_label_loss(torch.zeros(2, 2), torch.zeros(1, 2))


def test_human_teacher_logits_softmax_is_exactly_the_confidence() -> None:
    logits = human_teacher_logits(pd.Series(["model_a", "model_b"]), 0.95)
    assert logits.shape == (2, 2) and logits.dtype == np.float32
    torch.testing.assert_close(torch.softmax(torch.from_numpy(logits), dim=-1),
                               torch.tensor([[0.95, 0.05], [0.05, 0.95]]))
    np.testing.assert_allclose(logits[0], [math.log(0.95), math.log(0.05)], rtol=1e-6)


def test_human_teacher_logits_with_another_confidence() -> None:
    logits = human_teacher_logits(pd.Series(["model_b", "model_a", "model_b"]), 0.8)
    expected = torch.tensor([[0.2, 0.8], [0.8, 0.2], [0.2, 0.8]])
    torch.testing.assert_close(torch.softmax(torch.from_numpy(logits), dim=-1), expected)


@pytest.mark.parametrize("confidence", [0.5, 1.0, 1.5])
def test_stage2_config_rejects_degenerate_confidence(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        Stage2DatasetConfig(human_label_confidence=confidence)
