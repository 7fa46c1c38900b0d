"""Losses over the two letter logits: hard-label cross-entropy (stage 1) and soft cross-entropy (stage 2).

Column 0 is " A", column 1 is " B"; label 0 means A won.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of letter logits [B, 2] against labels [B] (0 = A, 1 = B) -> scalar."""
    return F.cross_entropy(logits.float(), labels.long())


def soft_label_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """Mean over rows of -sum softmax(teacher / T) * log_softmax(logits); [B, 2], [B, 2] -> scalar.

    Only the teacher is tempered: the student is trained to match the softened targets at T=1, as the
    5th-place recipe's stage 2 did.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if logits.shape != teacher_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and teacher {tuple(teacher_logits.shape)} differ")
    targets = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()
