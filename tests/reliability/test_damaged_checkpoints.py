"""Truncated, empty and unsafe checkpoints through the CLI: a clear error naming the file, and
--resume auto falls back to the previous complete checkpoint. No pickle is ever run."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest

from resnets.checkpoint import LAST, PREVIOUS, read_checkpoint


@pytest.mark.parametrize("keep", [0, 0.5], ids=["zero-byte", "half"])
def test_eval_of_a_truncated_checkpoint_names_the_file(cli, trained, tmp_path, keep):
    data = (trained / LAST).read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: int(len(data) * keep)])
    message = cli.error("eval", "--checkpoint", bad, "--device", "cpu")
    assert f"checkpoint {bad} is unreadable ({bad.stat().st_size} bytes;" in message
    assert "It may be truncated" in message and "previous.safetensors" in message


def test_eval_of_a_directory_lists_its_checkpoints(cli, trained):
    message = cli.error("eval", "--checkpoint", trained, "--device", "cpu")
    assert (f"checkpoint {trained} is a directory, not a file (it holds {LAST}, {PREVIOUS}). "
            f"Give the path of one checkpoint file, e.g. {trained / LAST}.") in message


def test_resume_auto_skips_a_truncated_last_checkpoint(cli, tiny_train_args, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    (run / LAST).write_bytes((run / LAST).read_bytes()[:1000])
    with pytest.warns(UserWarning, match=f"skipping damaged checkpoint: checkpoint {run / LAST}"):
        code, out, err = cli(*tiny_train_args(run, "--iterations", "3", "--resume", "auto"))
    assert code == 0, err
    assert f"resumed from {run / PREVIOUS} at iteration 1" in out
    assert read_checkpoint(run / LAST).iteration == 3
    assert read_checkpoint(run / PREVIOUS).iteration == 2


def test_resume_auto_with_every_checkpoint_damaged_stops_and_keeps_the_run(
        cli, tiny_train_args, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    for name in (LAST, PREVIOUS):
        (run / name).write_bytes(b"")

    def files():
        return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}

    before = files()
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        message = cli.error(*tiny_train_args(run, "--resume", "auto"))
    assert (f"cannot resume the run in {run}: it has checkpoints, but none can be resumed "
            f"({LAST}: damaged; {PREVIOUS}: damaged). Nothing was changed.") in message
    assert "--overwrite" in message
    # best.safetensors and the metrics are untouched: nothing restarted over them.
    assert files() == before


class _RunsCode:
    """Unpickling this calls os.system: a checkpoint that runs code when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["evil.pth", "evil.pt", "evil.safetensors", "evil.ckpt"])
@pytest.mark.parametrize("command", ["eval", "train --resume"])
def test_pickled_code_in_a_checkpoint_never_runs(cli, tiny_train_args, tmp_path, name, command):
    marker = tmp_path / "PWNED"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"state_dict": {"w": _RunsCode(marker)}}))
    if command == "eval":
        message = cli.error("eval", "--checkpoint", path, "--device", "cpu")
    else:
        message = cli.error(*tiny_train_args(tmp_path / "run", "--resume", path))
    assert str(path) in message
    if path.suffix in (".pth", ".pt"):
        assert "pickle-based torch file" in message and "load_torch_weights" in message
    else:
        assert "unreadable" in message
    assert not marker.exists()


def test_resume_drops_a_metrics_line_torn_by_a_crash(cli, tiny_train_args, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "iteration": 3, "lr')  # the process died mid-line
    code, out, err = cli(*tiny_train_args(run, "--iterations", "3", "--resume", "auto"))
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # One segment record per stretch of training (where it ran), then the metrics.
    assert [(r["kind"], r["iteration"]) for r in rows] == [
        ("segment", 0), ("train", 2), ("segment", 2), ("train", 3)]
