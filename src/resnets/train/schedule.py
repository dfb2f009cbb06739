"""Learning-rate schedule of the paper: step decay by iteration, with the ResNet-110 warm-up;
or, instead of the steps, a drop whenever the validation error stops improving (plateau).

`LRSchedule` holds the whole rule and its state (warm-up, plateau counters); `lr_at` (the step
rule as a pure function) and `warmup_should_end` are its pieces for tests and plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import TrainConfig


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
    schedule = LRSchedule(lr=lr, milestones=milestones, gamma=gamma, warmup_lr=warmup_lr)
    schedule.in_warmup = in_warmup
    return schedule.lr(step)


def warmup_should_end(
    step: int, train_error: float, *, until_error: float, max_iterations: int
) -> bool:
    """Warm-up ends once the recent training error is below ``until_error`` (or at the cap)."""
    return train_error < until_error or step >= max_iterations


class LRSchedule:
    """The learning rate of every step, and what it learns from the errors seen so far.

    ``kind="steps"``: ``lr * gamma**k`` after k ``milestones``. ``kind="plateau"``:
    ``lr * gamma**drops``, one more drop after ``patience`` validations without an improvement
    larger than ``threshold``. Either way ``warmup_lr`` (when given) is used until the training
    error falls below ``warmup_until_error`` (or at ``warmup_max_iterations``).

    State (``state_dict``, the checkpoint's ``train_state`` keys):
    ``{"in_warmup": bool, "plateau": {"drops": int, "best": float | None, "bad": int}}``.
    """

    def __init__(self, *, lr: float, milestones: Sequence[int] = (), gamma: float = 0.1,
                 kind: str = "steps", patience: int = 3, threshold: float = 1e-3,
                 warmup_lr: float | None = None, warmup_until_error: float = 0.8,
                 warmup_max_iterations: int = 2000):
        self.base_lr, self.milestones, self.gamma, self.kind = lr, tuple(milestones), gamma, kind
        self.patience, self.threshold = patience, threshold
        self.warmup_lr = warmup_lr
        self.warmup_until_error, self.warmup_max_iterations = (warmup_until_error,
                                                               warmup_max_iterations)
        self.in_warmup = warmup_lr is not None
        self.plateau: dict[str, Any] = {"drops": 0, "best": None, "bad": 0}

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> LRSchedule:
        return cls(lr=cfg.lr, milestones=cfg.milestones, gamma=cfg.gamma, kind=cfg.schedule,
                   patience=cfg.plateau_patience, threshold=cfg.plateau_threshold,
                   warmup_lr=cfg.warmup_lr, warmup_until_error=cfg.warmup_until_error,
                   warmup_max_iterations=cfg.warmup_max_iterations)

    def lr(self, iteration: int) -> float:
        """The learning rate of optimizer step ``iteration`` (0-based)."""
        if self.in_warmup and self.warmup_lr is not None:
            return self.warmup_lr
        return self.base_lr * self.gamma ** self.decays(iteration)

    def decays(self, iteration: int) -> int:
        """How many times the rate has been multiplied by ``gamma`` at ``iteration``."""
        if self.kind == "plateau":
            return self.plateau["drops"]
        return sum(1 for m in self.milestones if iteration >= m)

    def observe_train_error(self, iteration: int, error: float) -> bool:
        """A logged training error; True when it ends the warm-up (now)."""
        if self.in_warmup and warmup_should_end(iteration, error,
                                                until_error=self.warmup_until_error,
                                                max_iterations=self.warmup_max_iterations):
            self.in_warmup = False
            return True
        return False

    def observe_val_error(self, error: float) -> None:
        """A validation error: the plateau schedule counts evaluations without improvement."""
        if self.kind != "plateau":
            return
        p = self.plateau
        if p["best"] is None or error < p["best"] - self.threshold:
            p["best"], p["bad"] = error, 0
        else:
            p["bad"] += 1
            if p["bad"] >= self.patience:
                p["drops"], p["bad"] = p["drops"] + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"in_warmup": self.in_warmup, "plateau": dict(self.plateau)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.in_warmup = state["in_warmup"]
        # Records from before the plateau schedule have no "plateau": its start state.
        self.plateau = dict(state.get("plateau", self.plateau))
