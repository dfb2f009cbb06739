"""A run says "done" only when its schedule finished; a full disk or a non-finite stop ends
with an error that names the run directory, and the previous checkpoint stays intact."""

from __future__ import annotations

import errno
import math
import os
import stat

import pytest

from resnets.checkpoint import LAST, read_checkpoint
from resnets.errors import UserError
from resnets.train import progress
from resnets.train.loop import NonFiniteLoss, Trainer


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_saving_is_a_clear_error_and_no_done(cli, tiny_train_args, tmp_path,
                                                               monkeypatch):
    run = tmp_path / "run"
    fsync = os.fsync
    # The first checkpoint fits on the disk; the second one does not.
    monkeypatch.setattr(os, "fsync", lambda fd: _disk_full() if (
        (run / LAST).exists() and stat.S_ISREG(os.fstat(fd).st_mode)) else fsync(fd))
    code, out, err = cli(*tiny_train_args(run))
    monkeypatch.undo()
    assert code == 2
    assert (f"resnets train: error: could not write checkpoint {run / LAST} in {run} (No space "
            f"left on device); {run / LAST} still holds the previous checkpoint.") in err
    assert "done:" not in out + err
    assert read_checkpoint(run / LAST).iteration == 1
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".lock"]


def test_a_full_disk_while_logging_names_the_run_directory(tiny_config, tmp_path, monkeypatch,
                                                           capsys):
    log = progress.RunLogger.log

    def log_until_full(self, row):
        if row["iteration"] > 5:
            _disk_full()
        log(self, row)

    monkeypatch.setattr(progress.RunLogger, "log", log_until_full)
    run = Trainer(tiny_config(iterations=20, val_split=0), tmp_path / "run", quiet=True)
    with pytest.raises(UserError, match=f"cannot write to the run directory {tmp_path / 'run'} "
                                        f"\\(No space left on device\\); training stopped at "
                                        f"iteration 10"):
        run.fit()
    assert "done:" not in capsys.readouterr().out


def test_a_nonfinite_stop_is_not_reported_as_done(tiny_config, tmp_path, capsys):
    run = Trainer(tiny_config(max_nonfinite=2), tmp_path / "run", quiet=True)
    compute = run.compute_loss
    run.compute_loss = lambda x, y: ((lambda loss, logits: (
        loss * math.nan if run.iteration >= 3 else loss, logits))(*compute(x, y)))
    with pytest.raises(NonFiniteLoss):
        run.fit()
    assert "done:" not in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "run" / LAST).iteration == 5


def test_a_finished_run_says_done(tiny_config, tmp_path, capsys):
    Trainer(tiny_config(iterations=5, val_split=0), tmp_path / "run", quiet=True).fit()
    assert (f"done: checkpoints, metrics.jsonl, tensorboard/ and curves.png in "
            f"{tmp_path / 'run'}") in capsys.readouterr().out
