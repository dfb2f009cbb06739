"""Learning-rate schedule of the paper: step decay by iteration, with the ResNet-110 warm-up."""

from __future__ import annotations

from collections.abc import Sequence


def lr_at(
    step: int,
    *,
    lr: float,
    milestones: Sequence[int],
    gamma: float = 0.1,
    warmup_lr: float | None = None,
    in_warmup: bool = False,
) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    ``lr * gamma**k`` where k milestones are <= step; ``warmup_lr`` instead while the run is
    still in its warm-up (the paper keeps 0.01 until training error < 80%, then returns to 0.1).
    """
    if in_warmup and warmup_lr is not None:
        return warmup_lr
    passed = sum(1 for m in milestones if step >= m)
    return lr * gamma**passed


def warmup_should_end(
    step: int, train_error: float, *, until_error: float, max_iterations: int
) -> bool:
    """Warm-up ends once the recent training error is below ``until_error`` (or at the cap)."""
    return train_error < until_error or step >= max_iterations
