"""Classification metrics as small pure functions on tensors."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Number of samples whose label is among the ``k`` highest scores (a 0-d tensor)."""
    k = min(k, logits.shape[1])
    topk = logits.topk(k, dim=1).indices  # (B, k)
    return (topk == labels[:, None]).any(dim=1).sum()


def topk_error(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is not among the top ``k`` scores, in [0, 1]."""
    return 1.0 - topk_correct(logits, labels, k).item() / labels.numel()


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Accuracy of each true class (NaN for a class without samples)."""
    totals = confusion.sum(dim=1).double()
    return confusion.diag().double() / totals
