"""NaN never becomes "the last good state": hyperparameters that would produce it are refused
before training starts, and a checkpoint whose weights, BN statistics or momenta hold NaN or
inf is never written, so that the file on disk stays the last finite one."""

from __future__ import annotations

import math
import re

import pytest
import torch

from resnets.checkpoint import LAST, PREVIOUS, NonFiniteCheckpoint, read_checkpoint
from resnets.config import TrainConfig
from resnets.errors import UserError
from resnets.train.loop import Trainer

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(("option", "value", "fragment"), [
    ("lr", NAN, "lr must be a finite number, got nan"),
    ("momentum", NAN, "momentum must be a finite number, got nan"),
    ("momentum", 1.5, "momentum must be in [0, 1), got 1.5"),
    ("weight_decay", INF, "weight_decay must be a finite number, got inf"),
    ("warmup_lr", NAN, "warmup_lr must be a finite number, got nan"),
    ("warmup_lr", -0.01, "warmup_lr must be positive"),
    ("gamma", NAN, "gamma must be a finite number, got nan"),
    ("gamma", 0.0, "gamma must be in (0, 1], got 0.0"),
    ("plateau_threshold", NAN, "plateau_threshold must be a finite number, got nan"),
    ("plateau_threshold", -1.0, "plateau_threshold must be >= 0"),
    ("plateau_patience", 0, "plateau_patience must be >= 1"),
    ("warmup_until_error", NAN, "warmup_until_error must be a finite number"),
    ("warmup_until_error", 2.0, "warmup_until_error must be in [0, 1]"),
    ("lighting", NAN, "lighting must be a finite number"),
    ("iterations", 10.5, "iterations must be a whole number, got 10.5"),
    ("batch_size", "128", "batch_size must be a whole number, got '128'"),
    ("milestones", ["a"], "milestones must hold whole numbers"),
    ("milestones", 5, "milestones must be a list, got 5"),
    ("model_kwargs", [1], "model_kwargs must be a table"),
])
def test_every_hyperparameter_is_checked_up_front(option, value, fragment):
    with pytest.raises(UserError, match=f"invalid training option: {re.escape(fragment)}"):
        TrainConfig.from_dict({option: value})


@pytest.mark.parametrize(("flag", "value"), [("--momentum", "nan"), ("--weight-decay", "inf"),
                                             ("--warmup-lr", "nan"), ("--lr", "inf")])
def test_nonfinite_flags_stop_the_cli_before_training(cli, tiny_train_args, tmp_path, flag,
                                                      value):
    message = cli.error(*tiny_train_args(tmp_path / "run", flag, value))
    assert f"must be a finite number, got {value}" in message
    assert not (tmp_path / "run").exists()


def _poison_after(run: Trainer, iteration: int, tensor) -> None:
    step = run.train_step

    def step_then_poison(x, y):
        step(x, y)
        if run.iteration == iteration:
            with torch.no_grad():
                tensor(run).fill_(math.nan)

    run.train_step = step_then_poison


@pytest.mark.parametrize("part", ["bn_running_var", "conv_weight", "momentum"])
def test_nonfinite_state_is_never_saved(tiny_config, tmp_path, capsys, part):
    cfg = tiny_config(iterations=20, milestones=[], val_split=0, save_every=5, log_every=5)
    run = Trainer(cfg, tmp_path / "run", quiet=True)
    tensors = {
        "bn_running_var": lambda r: r.model.bn1.running_var,
        "conv_weight": lambda r: r.model.conv1.weight,
        "momentum": lambda r: r.optimizer.state[r.model.conv1.weight]["momentum_buffer"],
    }
    _poison_after(run, 12, tensors[part])
    with pytest.raises(NonFiniteCheckpoint) as info:
        run.fit()
    message = str(info.value)
    assert f"refusing to write {tmp_path / 'run' / LAST} at iteration 15" in message
    assert f"Nothing was written; the previous checkpoint in {tmp_path / 'run'} is kept" in message
    # The files on disk are the last finite ones, and no "done" was claimed.
    last, previous = read_checkpoint(tmp_path / "run" / LAST), read_checkpoint(
        tmp_path / "run" / PREVIOUS)
    assert (last.iteration, previous.iteration) == (10, 5)
    assert all(torch.isfinite(t).all() for t in last.model_state.values()
               if t.is_floating_point())
    assert "done:" not in capsys.readouterr().out
