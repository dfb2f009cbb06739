"""A process killed at any point of a checkpoint save leaves the newest complete checkpoint
where --resume auto finds it, ``last`` intact, and a resumed run that ends where a run that was
never killed ends."""

from __future__ import annotations

import signal

import pytest
import torch

from resnets.checkpoint import LAST, PREVIOUS, read_checkpoint, temp_name
from resnets.train.loop import Trainer
from resnets.train.rundir import find_resume_checkpoint

# The child trains towards ITERATIONS, saving at 10 on the way, and hangs inside the save at
# STALL_AT at the chosen point, so that the parent can kill it there.
STALL_AT, ITERATIONS = 20, 30
CHILD = f"""
import json, os, sys, time
from pathlib import Path

from resnets.checkpoint import LAST
from resnets.config import TrainConfig
from resnets.train.loop import Trainer

config, out, where = sys.argv[1:]
trainer = Trainer(TrainConfig.from_dict(json.loads(Path(config).read_text())), out,
                  quiet=True)


def stalling(real, applies):
    def call(*args):
        if trainer.iteration >= {STALL_AT} and applies(*args):
            print("stalled", flush=True)
            time.sleep(600)
        return real(*args)
    return call


if where == "fsync":  # the new file is fully written but neither durable nor renamed
    os.fsync = stalling(os.fsync, lambda fd: True)
elif where == "link":  # about to point previous at the current last
    os.link = stalling(os.link, lambda src, dst: True)
else:  # previous now holds the old last; the new file is not yet renamed to last
    os.replace = stalling(os.replace, lambda src, dst: Path(dst).name == LAST)
trainer.fit()
"""


@pytest.mark.parametrize("where", ["fsync", "link", "rename"])
def test_kill_during_save_resumes_from_the_newest_checkpoint(tiny_config, tmp_path, spawn, where):
    cfg = tiny_config(iterations=ITERATIONS, milestones=[15], val_split=0, precision="fp32")
    (tmp_path / "config.json").write_text(cfg.to_json())
    (tmp_path / "child.py").write_text(CHILD)
    out = tmp_path / "run"
    child = spawn(["child.py", "config.json", str(out), where], tmp_path / "child.log")

    def stalled_mid_save() -> bool:
        return "stalled" in child.output() and any(
            p.name.startswith(f".{LAST}.") for p in out.iterdir())

    child.wait_until(stalled_mid_save, "the child stalled inside its save")
    child.proc.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL

    # last was never moved away; the complete new checkpoint waits in the writer's temporary.
    assert read_checkpoint(out / LAST).iteration == 10
    ckpt, path = find_resume_checkpoint(out)
    assert (ckpt.iteration, path.name) == (STALL_AT, temp_name(LAST, child.proc.pid))

    resumed = Trainer(cfg, out, resume="auto", quiet=True)
    assert (resumed.iteration, resumed.resumed_from) == (STALL_AT, out / LAST)
    # The interrupted rotation was finished, and the dead writer's temporaries are gone.
    assert read_checkpoint(out / LAST).iteration == STALL_AT
    assert read_checkpoint(out / PREVIOUS).iteration == 10
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".lock"]
    # Bitwise comparisons across processes need the child's thread count (conftest.one_thread).
    assert torch.get_num_threads() == 1
    resumed.fit()
    straight = Trainer(cfg, tmp_path / "straight", quiet=True)
    straight.fit()
    assert read_checkpoint(out / LAST).iteration == ITERATIONS
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    s1, s2 = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(s1[i]["momentum_buffer"], s2[i]["momentum_buffer"]) for i in s1)
