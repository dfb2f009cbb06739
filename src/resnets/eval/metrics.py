"""Classification metrics: small pure functions on tensors, and `evaluate`, which runs a model
over batches and sums them (top-1 / top-5 error, loss, per-class accuracy, confusion)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..device import autocast


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Number of samples whose label is among the ``k`` highest scores (a 0-d tensor)."""
    k = min(k, logits.shape[1])
    topk = logits.topk(k, dim=1).indices  # (B, k)
    return (topk == labels[:, None]).any(dim=1).sum()


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Accuracy of each true class (NaN for a class without samples)."""
    totals = confusion.sum(dim=1).double()
    return confusion.diag().double() / totals


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Errors are fractions in [0, 1]. Accumulates on the device; one host sync at the end."""
    was_training = model.training
    model.eval()
    n = 0
    loss_sum = top1 = top5 = None
    confusion = None
    for x, y in batches:
        with autocast(x.device, autocast_dtype):
            logits = model(x)
        logits = logits.float()
        batch = (F.cross_entropy(logits, y, reduction="sum"), topk_correct(logits, y, 1),
                 topk_correct(logits, y, 5),
                 confusion_matrix(logits.argmax(1), y, num_classes))
        if loss_sum is None:
            loss_sum, top1, top5, confusion = batch
        else:
            loss_sum, top1, top5 = loss_sum + batch[0], top1 + batch[1], top5 + batch[2]
            confusion += batch[3]
        n += y.numel()
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluate() got no samples")
    confusion = confusion.cpu()
    return {
        "n": n,
        "loss": loss_sum.item() / n,
        "top1_error": 1.0 - top1.item() / n,
        "top5_error": 1.0 - top5.item() / n,
        "per_class_accuracy": per_class_accuracy(confusion).tolist(),
        "confusion": confusion.tolist(),
    }
