"""A checkpoint written by an earlier version (commit b954736) keeps resuming.

`fixtures/b954736-plateau-it27.safetensors` is the `last.safetensors` of a tiny run stopped by
SIGTERM at iteration 27 of 40, written by `fixtures/make_resume_fixture.py` with the code of
b954736: plateau schedule after a warm-up, one lr drop so far, and two steps in the metric
window. Its `train_state`, metric window, optimizer and RNG state must load into today's
trainer unchanged and give the same weights as a run that was never stopped: bit for bit on
the CPU class that wrote it (a 2-core Xeon with AMX), and within float noise elsewhere, where
the first 27 steps of the unbroken run use other kernels than the fixture's did.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from resnets.checkpoint import LAST, read_checkpoint
from resnets.device import device_name
from resnets.train.loop import Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "b954736-plateau-it27.safetensors"
# The options the fixture's run used (besides tiny_config's); data paths are resumable.
OPTIONS = dict(precision="fp32", channels_last=False, schedule="plateau", plateau_patience=1,
               warmup_lr=0.02)


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "old-run"
    run.mkdir()
    shutil.copyfile(FIXTURE, run / LAST)
    return run


def _same_cpu_as_fixture() -> bool:
    """Whether this CPU runs the fixture's fp32 kernels: same model name, threads and AMX."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return (read_checkpoint(FIXTURE).meta["device"] == device_name(torch.device("cpu"))
            and "amx_tile" in flags)


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed_s")}
            for r in rows if r["kind"] != "segment"]


def test_old_checkpoint_resumes_to_the_same_weights_as_an_unbroken_run(tiny_config, tmp_path,
                                                                       one_thread):
    run = _run_dir(tmp_path)
    resumed = Trainer(tiny_config(**OPTIONS), run, resume="auto", quiet=True)
    assert resumed.iteration == 27
    result = resumed.fit()
    assert (result.iteration, result.stopped, result.exit_code) == (40, None, 0)

    unbroken = Trainer(tiny_config(**OPTIONS), tmp_path / "unbroken", quiet=True)
    unbroken.fit()
    exact = _same_cpu_as_fixture()
    for (k, a), b in zip(unbroken.model.state_dict().items(),
                         resumed.model.state_dict().values(), strict=True):
        if exact or not a.is_floating_point():
            assert torch.equal(a, b), k
        else:  # another CPU's rounding over 27 steps: ~1% of a tensor's norm, a wrong restore ~100%
            assert (a - b).norm() <= 0.05 * a.norm() + 1e-3, (k, (a - b).norm() / a.norm())
    # The resumed part logs what the unbroken run logged after iteration 27: the same rows,
    # schedule and lr exactly; losses and errors exactly on the fixture's CPU class.
    resumed_rows = _metrics(run)
    unbroken_rows = [r for r in _metrics(tmp_path / "unbroken") if r["iteration"] > 27]
    if exact:
        assert resumed_rows == unbroken_rows
    else:
        assert [(r["kind"], r["iteration"], r.get("lr"), r.get("epoch")) for r in resumed_rows] \
            == [(r["kind"], r["iteration"], r.get("lr"), r.get("epoch")) for r in unbroken_rows]
        for r, u in zip(resumed_rows, unbroken_rows, strict=True):
            for key in ("train_loss", "val_loss"):
                if key in r:
                    assert abs(r[key] - u[key]) <= 0.1 * u[key] + 0.01, (r, u)
    last = read_checkpoint(run / LAST)
    assert last.meta["train_state"]["plateau"]["drops"] >= 1


def test_old_checkpoint_state_round_trips(tiny_config, tmp_path):
    old = read_checkpoint(FIXTURE)
    run = _run_dir(tmp_path)
    trainer = Trainer(tiny_config(**OPTIONS), run, resume="auto", quiet=True)
    try:
        trainer.save()  # restore, then save without a step in between
    finally:
        trainer.close()
    new = read_checkpoint(run / LAST)
    assert new.meta["train_state"] == old.meta["train_state"]
    assert list(new.meta["train_state"]) == list(old.meta["train_state"])  # same key order
    assert new.meta["metrics"] == old.meta["metrics"]
    assert new.iteration == old.iteration == 27
    assert new.extra.keys() == old.extra.keys()
    for k, t in old.extra.items():
        assert new.extra[k].dtype == t.dtype and torch.equal(new.extra[k], t), k
    for k, t in old.model_state.items():
        assert torch.equal(new.model_state[k], t), k
    assert new.optimizer_state["param_groups"] == old.optimizer_state["param_groups"]
    for i, st in old.optimizer_state["state"].items():
        assert torch.equal(new.optimizer_state["state"][i]["momentum_buffer"],
                           st["momentum_buffer"])
    assert new.rng["json"] == old.rng["json"]
    for k, t in old.rng["tensors"].items():
        assert torch.equal(new.rng["tensors"][k], t), k
