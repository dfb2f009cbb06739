"""The trainer's small stateful parts on their own: the schedule, the train state, the metric
window and the non-finite guard, each with the state it writes into a checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from resnets.train.distributed import DistEnv
from resnets.train.schedule import LRSchedule, lr_at
from resnets.train.state import (
    WINDOW_KEYS,
    MetricWindow,
    NonFiniteGuard,
    NonFiniteLoss,
    TrainState,
)

ONE = DistEnv()


def test_step_schedule_is_lr_at_with_its_warmup():
    s = LRSchedule(lr=0.1, milestones=(30, 60), gamma=0.1, warmup_lr=0.01,
                   warmup_until_error=0.8, warmup_max_iterations=100)
    assert s.lr(0) == 0.01 and s.in_warmup
    assert not s.observe_train_error(10, 0.85)
    assert s.observe_train_error(20, 0.5) and not s.in_warmup
    assert not s.observe_train_error(25, 0.1)  # ends once
    for it in (0, 29, 30, 59, 60, 99):
        assert s.lr(it) == lr_at(it, lr=0.1, milestones=(30, 60), gamma=0.1)
    s.observe_val_error(0.9)  # the step schedule ignores validation
    assert s.state_dict() == {"in_warmup": False, "plateau": {"drops": 0, "best": None, "bad": 0}}


def test_plateau_schedule_drops_after_patience_and_keeps_the_warmup_rule():
    s = LRSchedule(lr=0.1, gamma=0.5, kind="plateau", patience=2, threshold=0.01,
                   warmup_lr=0.02)
    assert s.lr(5) == 0.02  # the warm-up applies to the plateau schedule too
    s.observe_train_error(5, 0.1)
    assert s.lr(5) == 0.1
    for err in (0.5, 0.495, 0.4, 0.41, 0.42):  # 0.495 is within the threshold: no progress
        s.observe_val_error(err)
    assert s.plateau == {"drops": 1, "best": 0.4, "bad": 0}
    assert s.lr(10**6) == 0.1 * 0.5


def test_schedule_state_round_trips_and_accepts_records_without_plateau():
    s = LRSchedule(lr=0.1, kind="plateau", patience=1, warmup_lr=0.01)
    s.observe_val_error(0.5)
    s.observe_val_error(0.6)
    again = LRSchedule(lr=0.1, kind="plateau", patience=1, warmup_lr=0.01)
    again.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert again.state_dict() == s.state_dict() and again.lr(0) == s.lr(0)
    old = LRSchedule(lr=0.1)
    old.load_state_dict({"in_warmup": False})
    assert old.plateau == {"drops": 0, "best": None, "bad": 0}


def test_train_state_record_has_the_checkpoint_keys_and_round_trips():
    schedule, guard = LRSchedule(lr=0.1), NonFiniteGuard(nn.BatchNorm2d(2), ONE, 5)
    state = TrainState()
    record = state.record(schedule, guard)
    assert record["iteration"] == 0 and record["metrics"] == {"train": {}, "val": {}}
    assert list(record["train_state"]) == ["in_warmup", "plateau", "nonfinite_in_row",
                                           "nonfinite_total", "best_val_error", "elapsed_s"]
    assert record["train_state"]["best_val_error"] is None  # never validated: no number
    state = TrainState(iteration=7, elapsed_s=1.5, best_val_error=0.25,
                       last_train={"kind": "train", "iteration": 5},
                       last_val={"kind": "val", "iteration": 5})
    guard.in_row, guard.total = 1, 3
    record = json.loads(json.dumps(state.record(schedule, guard)))
    restored, schedule2 = TrainState(), LRSchedule(lr=0.1)
    guard2 = NonFiniteGuard(nn.BatchNorm2d(2), ONE, 5)
    restored.load_record(record, schedule2, guard2)
    assert restored == state and (guard2.in_row, guard2.total) == (1, 3)
    assert restored.record(schedule2, guard2) == record


def test_metric_window_sums_on_the_device_and_starts_over():
    w = MetricWindow(torch.device("cpu"), ONE)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    w.add(torch.tensor(0.5), logits, torch.tensor([0, 1, 1]))
    w.add(torch.tensor(1.0), logits[:1], torch.tensor([1]))
    state = w.state_dict()
    assert set(state) == set(WINDOW_KEYS)
    assert [state[k].dtype for k in WINDOW_KEYS] == [torch.float64] + [torch.int64] * 3
    assert (state["seen"].item(), state["wrong"].item(), state["steps"].item()) == (4, 2, 2)
    again = MetricWindow(torch.device("cpu"), ONE)
    again.load_state_dict({k: v.clone() for k, v in state.items()})
    stats, seen = again.summarize()
    assert seen == 4 and stats["train_loss"] == pytest.approx((0.5 * 3 + 1.0) / 4)
    assert stats["train_error"] == 0.5 and list(stats) == ["train_loss", "train_error",
                                                           "img_per_s"]
    stats, seen = again.summarize()  # a new, empty window
    assert seen == 0 and math.isnan(stats["train_loss"])


def test_guard_undoes_the_bn_update_and_stops_after_max_in_row(tmp_path):
    bn = nn.BatchNorm1d(3)
    guard = NonFiniteGuard(bn, ONE, max_in_row=2)
    guard.keep_buffers()
    bn(torch.randn(8, 3) + 5)  # a forward pass moves the running mean
    assert guard.check(torch.tensor(math.nan), stop_requested=False) == (True, False, False)
    assert guard.check(torch.tensor(1.0), stop_requested=True) == (False, True, False)
    assert guard.check(torch.tensor(1.0), False, snapshot_requested=True) == (False, False, True)
    guard.skip(1, tmp_path / "last.safetensors")
    assert torch.equal(bn.running_mean, torch.zeros(3))
    guard.passed()
    guard.skip(3, tmp_path / "last.safetensors")
    with pytest.raises(NonFiniteLoss, match="non-finite for 2 steps in a row .up to iteration 4"):
        guard.skip(4, tmp_path / "last.safetensors")
    assert guard.state_dict() == {"nonfinite_in_row": 2, "nonfinite_total": 3}
