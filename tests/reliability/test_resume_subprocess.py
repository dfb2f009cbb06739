"""A real `resnets train` process stopped by SIGKILL (between saves) or SIGTERM (mid-run) and
resumed with --resume auto ends bitwise identical to one that ran straight through: weights,
optimizer state, RNG and metric accumulators, the best checkpoint and metrics.jsonl (CPU,
--deterministic, fp32)."""

from __future__ import annotations

import json
import re
import signal

import pytest
import torch

from resnets.checkpoint import BEST, LAST, read_checkpoint
from resnets.train.rundir import find_resume_checkpoint

ITERATIONS = 100  # 12 steps per epoch; the milestones rescale to 50 and 75
STOP_AFTER = 20  # stop once a checkpoint at or past this iteration exists
TIMING = {"img_per_s", "elapsed_s"}  # wall-clock fields, never reproducible


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("decoded")


def train_argv(color_folder, cache, out, *extra: str) -> list[str]:
    return ["-m", "resnets", "train", "--model", "resnet8", "--data", str(color_folder),
            "--cache-dir", str(cache), "--out", str(out), "--iterations", str(ITERATIONS),
            "--batch-size", "16", "--val-split", "40", "--lr", "0.05", "--log-every", "5",
            "--eval-every", "25", "--save-every", "10", "--device", "cpu", "--precision", "fp32",
            "--deterministic", "--quiet", *extra]


@pytest.fixture(scope="module")
def uninterrupted(color_folder, cache, tmp_path_factory, spawn):
    """The run directory of the same training, never stopped."""
    out = tmp_path_factory.mktemp("straight") / "run"
    child = spawn(train_argv(color_folder, cache, out), out.parent / "train.log")
    assert child.wait() == 0, child.output()
    return out


def metric_rows(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows if r["kind"] != "segment"]


def assert_tensors_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"{what}: {key}"


def assert_same_run(expected, actual) -> None:
    want, got = read_checkpoint(expected / LAST), read_checkpoint(actual / LAST)
    assert want.iteration == got.iteration == ITERATIONS
    assert_tensors_equal(want.model_state, got.model_state, "weights")
    assert want.optimizer_state["param_groups"] == got.optimizer_state["param_groups"]
    assert want.optimizer_state["state"].keys() == got.optimizer_state["state"].keys()
    for idx, state in want.optimizer_state["state"].items():
        assert_tensors_equal(state, got.optimizer_state["state"][idx], f"optimizer state {idx}")
    assert_tensors_equal(want.extra, got.extra, "metric accumulators")
    assert_tensors_equal(want.rng["tensors"], got.rng["tensors"], "RNG state")
    assert want.rng["json"] == got.rng["json"]
    untimed = [{k: v for k, v in c.meta["train_state"].items() if k != "elapsed_s"}
               for c in (want, got)]
    assert untimed[0] == untimed[1]
    assert_tensors_equal(read_checkpoint(expected / BEST).model_state,
                         read_checkpoint(actual / BEST).model_state, "best weights")
    assert metric_rows(expected) == metric_rows(actual)


def resume(color_folder, cache, out, spawn, checkpoint, iteration: int) -> None:
    """Run the same command plus --resume auto to the end; it must start at ``iteration``."""
    child = spawn(train_argv(color_folder, cache, out, "--resume", "auto"),
                  out.parent / "resume.log")
    assert child.wait() == 0, child.output()
    assert f"resumed from {checkpoint} at iteration {iteration}" in child.output()


def test_sigkill_between_saves_then_resume_is_bitwise_identical(
        uninterrupted, color_folder, cache, tmp_path, spawn):
    out = tmp_path / "run"
    child = spawn(train_argv(color_folder, cache, out), tmp_path / "train.log")
    child.wait_for_checkpoint(out / LAST, STOP_AFTER)
    child.proc.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    found = find_resume_checkpoint(out)
    assert found is not None
    ckpt, path = found  # last.safetensors, or previous.safetensors after a mid-rotation kill
    # Really interrupted between periodic saves (no signal handler ran to save on the way out).
    assert STOP_AFTER <= ckpt.iteration < ITERATIONS and ckpt.iteration % 10 == 0
    resume(color_folder, cache, out, spawn, path, ckpt.iteration)
    assert_same_run(uninterrupted, out)


def test_sigterm_mid_run_saves_explains_and_resumes_bitwise_identical(
        uninterrupted, color_folder, cache, tmp_path, spawn):
    out = tmp_path / "run"
    child = spawn(train_argv(color_folder, cache, out), tmp_path / "train.log")
    child.wait_for_checkpoint(out / LAST, STOP_AFTER)  # the signal handler is installed
    child.proc.send_signal(signal.SIGTERM)
    assert child.wait() == 128 + signal.SIGTERM == 143, child.output()
    message = re.search(r"SIGTERM: stopped at iteration (\d+) after saving (\S+)\. (.*)",
                        child.output())
    assert message, child.output()
    stopped_at = int(message[1])
    assert STOP_AFTER <= stopped_at < ITERATIONS
    assert message[2] == str(out / LAST) and "--resume auto" in message[3]
    # The signal's own save holds the exact stopping point, not the last periodic one.
    assert read_checkpoint(out / LAST).iteration == stopped_at
    resume(color_folder, cache, out, spawn, out / LAST, stopped_at)
    assert_same_run(uninterrupted, out)
