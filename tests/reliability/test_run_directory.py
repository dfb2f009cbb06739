"""A run directory belongs to one run: a new run never silently replaces an old one, two
processes never train into one directory, and a crash at any step of a checkpoint rotation
leaves the newest complete checkpoint where --resume auto finds it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from resnets.checkpoint import (
    BEST,
    LAST,
    PREVIOUS,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    temp_name,
)
from resnets.errors import UserError
from resnets.train.loop import Trainer
from resnets.train.rundir import find_resume_checkpoint, remove_stale_temporaries, rotate_and_save


def _files(run) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}


def _rows(run) -> list[tuple[str, int]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["iteration"]) for r in rows]


# ------------------------------------------------------------------ a run is never replaced

def test_training_into_a_run_without_resume_is_refused(cli, tiny_train_args, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    before = _files(run)
    message = cli.error(*tiny_train_args(run))
    assert f"--out {run} already holds files (" in message and LAST in message
    assert "--resume auto" in message and "--overwrite" in message
    assert _files(run) == before


def test_overwrite_clears_the_run_and_starts_a_new_one(cli, tiny_train_args, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    (run / "notes.txt").write_text("mine")  # not a file of the run: kept
    code, out, err = cli(*tiny_train_args(run, "--iterations", "1", "--overwrite"))
    assert code == 0, err
    # One run only: the old rows are gone, and no previous checkpoint from the old run remains.
    assert _rows(run) == [("segment", 0), ("train", 1)]
    assert read_checkpoint(run / LAST).iteration == 1 and not (run / PREVIOUS).exists()
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_together_are_refused(cli, tiny_train_args, tmp_path):
    message = cli.error(*tiny_train_args(tmp_path / "run", "--resume", "auto", "--overwrite"))
    assert "--resume and --overwrite exclude each other" in message


def test_resume_auto_in_an_empty_directory_starts_the_run(tiny_config, tmp_path):
    (tmp_path / "run").mkdir()
    trainer = Trainer(tiny_config(iterations=1), tmp_path / "run", resume="auto", quiet=True)
    assert trainer.resumed_from is None and trainer.fit().iteration == 1


def test_every_checkpoint_weights_only_is_not_a_fresh_start(tiny_config, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    model, meta = load_checkpoint(run / LAST)
    for name in (LAST, PREVIOUS):
        save_checkpoint(run / name, model=model, meta={**meta, "kind": "weights"})
    with pytest.raises(UserError, match=r"none can be resumed \(last.safetensors: weights only"):
        Trainer(tiny_config(), run, resume="auto")


# ------------------------------------------------------------------ one process per directory

HOLD = """
import sys, time
from pathlib import Path
from resnets.train.loop import RunLock
lock = RunLock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def test_a_locked_directory_is_refused_until_its_holder_exits(tiny_config, tmp_path, spawn):
    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / "hold.py").write_text(HOLD)
    child = spawn(["hold.py", str(out)], tmp_path / "hold.log")
    child.wait_until(lambda: "locked" in child.output(), "the child took the lock")
    with pytest.raises(UserError) as info:
        Trainer(tiny_config(iterations=1), out, quiet=True)
    assert f"--out {out} is in use: another training process (PID {child.proc.pid})" in str(
        info.value)
    child.stop()
    # The lock file stays behind, but the dead holder's lock went with it.
    assert (out / ".lock").exists()
    assert Trainer(tiny_config(iterations=1), out, quiet=True).fit().iteration == 1


def test_the_lock_lives_as_long_as_the_trainer_in_one_process(tiny_config, tmp_path):
    out = tmp_path / "run"
    first = Trainer(tiny_config(iterations=1), out, quiet=True)
    with pytest.raises(UserError, match=f"PID {os.getpid()}"):
        Trainer(tiny_config(iterations=1), out, resume="auto")
    first.fit()  # releases the lock when it ends
    again = Trainer(tiny_config(iterations=2), out, resume="auto", quiet=True)
    assert again.iteration == 1


def test_only_temporaries_of_this_or_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        names = [temp_name(LAST), temp_name(LAST, dead_pid), temp_name(BEST, dead_pid),
                 f".{LAST}.new", temp_name(LAST, live.pid)]
        for name in names:
            (tmp_path / name).write_bytes(b"partial")
        removed = sorted(p.name for p in remove_stale_temporaries(tmp_path))
        assert removed == sorted(names[:4])
        assert [p.name for p in tmp_path.iterdir()] == [temp_name(LAST, live.pid)]
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------ a crash inside a rotation

class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` (or OSError) clean-up runs."""


@pytest.fixture
def small_pair():
    import torch

    from resnets import create_model

    torch.manual_seed(0)
    model = create_model("resnet8")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    return model, opt


META = {"kind": "training", "model": "resnet8", "model_kwargs": {"num_classes": 10},
        "classes": [f"c{i}" for i in range(10)], "config": {"model": "resnet8"},
        "metrics": {"train": {}, "val": {}},
        "train_state": {"in_warmup": False, "nonfinite_in_row": 0, "nonfinite_total": 0,
                        "best_val_error": None, "elapsed_s": 0.0}}


def _save(run_dir, model, opt, iteration):
    import torch

    window = {k: torch.tensor(0) for k in ("loss", "wrong", "seen", "steps")}
    rotate_and_save(run_dir, model=model, optimizer=opt, meta={**META, "iteration": iteration},
                    extra=window)


@pytest.mark.parametrize("kill_at", range(4))
def test_a_kill_at_each_step_of_a_rotation_keeps_the_newest(tmp_path, monkeypatch, small_pair,
                                                           kill_at):
    model, opt = small_pair
    for it in (10, 20):
        _save(tmp_path, model, opt, it)
    steps = []

    def killing(real):
        def call(*args, **kwargs):
            steps.append(real.__name__)
            if len(steps) - 1 == kill_at:
                raise Killed
            return real(*args, **kwargs)
        return call

    # The steps after the new file is fsynced: link, rename to previous, rename to last, and
    # the directory's fsync.
    monkeypatch.setattr(os, "link", killing(os.link))
    monkeypatch.setattr(os, "replace", killing(os.replace))
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (killing(fsync)(fd) if steps else fsync(fd)))
    with pytest.raises(Killed):
        _save(tmp_path, model, opt, 30)
    monkeypatch.undo()
    assert steps[kill_at] == ["link", "replace", "replace", "fsync"][kill_at]
    ckpt, path = find_resume_checkpoint(tmp_path)
    assert ckpt.iteration == 30
    assert read_checkpoint(tmp_path / LAST).iteration in (20, 30)  # last is never missing
    assert read_checkpoint(tmp_path / PREVIOUS).iteration in (10, 20)


def test_a_full_disk_during_the_write_keeps_every_checkpoint(tmp_path, monkeypatch, small_pair):
    import errno

    model, opt = small_pair
    for it in (10, 20):
        _save(tmp_path, model, opt, it)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError) as info:
        _save(tmp_path, model, opt, 30)
    monkeypatch.undo()
    assert (f"could not write checkpoint {tmp_path / LAST} in {tmp_path} (No space left on "
            f"device); {tmp_path / LAST} still holds the previous checkpoint.") in str(info.value)
    assert read_checkpoint(tmp_path / LAST).iteration == 20
    assert read_checkpoint(tmp_path / PREVIOUS).iteration == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST, PREVIOUS]
