"""The small parts of a run that carry state from step to step and into its checkpoint:
where the run is (`TrainState`), the training metrics since the last log line
(`MetricWindow`), and the guard against non-finite losses (`NonFiniteGuard`).

Each saves and restores itself; together with the schedule's they make the checkpoint's
``iteration``, ``metrics``, ``train_state`` and ``extra.*`` entries.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint.schema import WINDOW_KEYS
from ..errors import UserError
from .distributed import DistEnv, all_reduce_
from .schedule import LRSchedule


class NonFiniteLoss(UserError):
    """Too many non-finite losses in a row; the last good state was saved."""


@dataclass
class TrainState:
    """Where a run is: steps taken, training time, best validation error, last metrics.

    `record` writes, and `load_record` reads, the checkpoint record's ``"iteration"``,
    ``"metrics": {"train": row, "val": row}`` and ``"train_state"``, which holds the
    schedule's and the guard's state and ``"best_val_error"`` (None before the first
    validation) and ``"elapsed_s"``.
    """

    iteration: int = 0  # optimizer steps taken (skipped non-finite steps count)
    elapsed_s: float = 0.0  # seconds spent in training steps, over every segment of the run
    best_val_error: float = math.inf
    last_train: dict = field(default_factory=dict)  # the last metrics.jsonl rows
    last_val: dict = field(default_factory=dict)

    def record(self, schedule: LRSchedule, guard: NonFiniteGuard) -> dict[str, Any]:
        best = None if math.isinf(self.best_val_error) else self.best_val_error
        return {
            "iteration": self.iteration,
            "metrics": {"train": self.last_train, "val": self.last_val},
            "train_state": {**schedule.state_dict(), **guard.state_dict(),
                            "best_val_error": best, "elapsed_s": self.elapsed_s},
        }

    def load_record(self, meta: dict[str, Any], schedule: LRSchedule,
                    guard: NonFiniteGuard) -> None:
        st = meta["train_state"]
        schedule.load_state_dict(st)
        guard.load_state_dict(st)
        self.iteration = int(meta.get("iteration", 0))
        self.elapsed_s = st["elapsed_s"]
        self.best_val_error = math.inf if st["best_val_error"] is None else st["best_val_error"]
        self.last_train = meta["metrics"]["train"]
        self.last_val = meta["metrics"]["val"]


class MetricWindow:
    """Training loss and error since the last log line, summed on the device so that a step
    costs no host sync; `summarize` sums them over the ranks in one collective.

    State (``state_dict``, the checkpoint's ``extra.*`` tensors, 0-d): ``loss`` (float64, the
    summed per-image loss), ``wrong`` (int64, misclassified images), ``seen`` (int64, images),
    ``steps`` (int64). A resumed run thus logs the same first line as an unbroken one.
    """

    def __init__(self, device: torch.device, dist: DistEnv):
        self.device, self.dist = device, dist
        self.reset()

    def reset(self) -> None:
        self.sums = {k: torch.zeros((), dtype=torch.float64 if k == "loss" else torch.int64,
                                    device=self.device) for k in WINDOW_KEYS}
        self.start_clock()

    def start_clock(self) -> None:
        """Time img/s from now (this process's images only; the sums stay)."""
        self.start, self.images = time.perf_counter(), 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        s = self.sums
        s["loss"] += loss.detach().double() * y.numel()
        s["wrong"] += (logits.detach().argmax(1) != y).sum()
        s["seen"] += y.numel()
        s["steps"] += 1
        self.images += y.numel()

    def summarize(self) -> tuple[dict[str, float], int]:
        """``({"train_loss", "train_error", "img_per_s"}, images seen by all ranks)``, then a
        new window."""
        names = sorted(self.sums)  # one collective for all counters, same order on all ranks
        summed = all_reduce_(torch.stack([self.sums[k].double() for k in names]), self.dist)
        totals = dict(zip(names, summed, strict=True))
        seen = int(totals["seen"].item())  # the host sync that logging needs
        dt = time.perf_counter() - self.start
        stats = {
            "train_loss": totals["loss"].item() / seen if seen else float("nan"),
            "train_error": totals["wrong"].item() / seen if seen else float("nan"),
            "img_per_s": self.images * self.dist.world_size / dt if dt > 0 else 0.0,
        }
        self.reset()
        return stats, seen

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.sums

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sums = {k: v.to(self.device) for k, v in tensors.items()}


class NonFiniteGuard:
    """Keeps a NaN or inf loss from reaching the weights: such a step is skipped, with the BN
    running statistics its forward pass changed put back; after ``max_in_row`` in a row,
    training stops with `NonFiniteLoss`.

    State (``state_dict``, in the checkpoint's ``train_state``):
    ``{"nonfinite_in_row": int, "nonfinite_total": int}``.
    """

    def __init__(self, model: nn.Module, dist: DistEnv, max_in_row: int):
        self.buffers = list(model.buffers())
        self.backup = [b.clone() for b in self.buffers]
        self.dist, self.max_in_row = dist, max_in_row
        self.in_row = self.total = 0

    def keep_buffers(self) -> None:
        """Copy the BN statistics before the forward pass that may spoil them."""
        torch._foreach_copy_(self.backup, self.buffers)

    def check(self, loss: torch.Tensor, stop_requested: bool,
              snapshot_requested: bool = False) -> tuple[bool, bool, bool]:
        """``(loss non-finite on some rank, stop requested on some rank, snapshot requested
        on some rank)``.

        One scalar sync per step buys the guarantee that a NaN never reaches the weights;
        under DDP the ranks agree on it (and on a pending stop or snapshot) in the same
        message, so that every rank takes part in the save that follows."""
        flags = torch.stack([(~torch.isfinite(loss.detach())).float(),
                             torch.tensor(float(stop_requested), device=loss.device),
                             torch.tensor(float(snapshot_requested), device=loss.device)])
        nonfinite, stop, snapshot = all_reduce_(flags, self.dist).tolist()
        return bool(nonfinite), bool(stop), bool(snapshot)

    def skip(self, iteration: int, last: Path) -> None:
        """Undo the skipped step's BN update and count it; raise after too many in a row."""
        torch._foreach_copy_(self.buffers, self.backup)
        self.in_row += 1
        self.total += 1
        if self.in_row >= self.max_in_row:
            raise NonFiniteLoss(
                f"the loss was non-finite for {self.in_row} steps in a row (up to "
                f"iteration {iteration}); those steps were skipped and the last good "
                f"weights saved in {last}. Lower --lr, add a warm-up (--warmup-lr), or check "
                f"the data for corrupt images.")

    def passed(self) -> None:
        self.in_row = 0

    def state_dict(self) -> dict[str, int]:
        return {"nonfinite_in_row": self.in_row, "nonfinite_total": self.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.in_row, self.total = state["nonfinite_in_row"], state["nonfinite_total"]
