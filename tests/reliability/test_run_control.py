"""`resnets status`, `stop` and `snapshot` act on the processes that hold runs under a
directory, found by the PIDs in the runs' locks, and on nothing else."""

from __future__ import annotations

import pytest

from resnets.analysis.curves import read_metrics
from resnets.checkpoint import read_checkpoint
from resnets.errors import UserError
from resnets.train.control import find_runs, lock_holder, run_status, snapshot, stop
from resnets.train.rundir import SNAPSHOT_REQUEST

LONG = ("--iterations", "100000", "--save-every", "100000", "--log-every", "1")


def start_run(spawn, tiny_train_args, out):
    """A long tiny run in ``out``, returned once it holds its lock and has logged a step."""
    out.parent.mkdir(parents=True, exist_ok=True)
    child = spawn(["-m", "resnets", *tiny_train_args(out, *LONG)], out.parent / f"{out.name}.log")
    child.wait_until(lambda: lock_holder(out) == child.proc.pid
                     and any(r["kind"] == "train" for r in read_metrics(out)),
                     f"{out} held and logging")
    return child


def test_stop_signals_only_the_runs_under_the_directory(spawn, tiny_train_args, tmp_path):
    mine = start_run(spawn, tiny_train_args, tmp_path / "experiment" / "net-seed0")
    other = start_run(spawn, tiny_train_args, tmp_path / "elsewhere" / "net-seed0")
    try:
        stopped = stop(tmp_path / "experiment", timeout=120)
        assert [(s.directory, s.pid, s.done) for s in stopped] == [
            (str(tmp_path / "experiment" / "net-seed0"), mine.proc.pid, True)]
        assert mine.wait(60) == 128 + 15  # SIGTERM: saved, then exited
        saved = read_checkpoint(tmp_path / "experiment" / "net-seed0" / "last.safetensors")
        assert saved.iteration == stopped[0].saved_iteration > 0
        assert other.proc.poll() is None  # the run in the other folder goes on, untouched
        assert lock_holder(tmp_path / "elsewhere" / "net-seed0") == other.proc.pid
        status = run_status(tmp_path / "experiment" / "net-seed0")
        assert (status.state, status.pid, status.saved_iteration) == (
            "stopped", None, saved.iteration)
        assert status.iteration >= saved.iteration and status.iterations == 100000
    finally:
        stop(tmp_path / "elsewhere", timeout=120)
    assert other.wait(60) == 128 + 15


def test_status_of_a_running_run(spawn, tiny_train_args, tmp_path):
    out = tmp_path / "run"
    child = start_run(spawn, tiny_train_args, out)
    try:
        child.wait_until(lambda: sum(r["kind"] == "train" for r in read_metrics(out)) > 3,
                         "a few logged steps")
        status = run_status(out)
        assert (status.state, status.pid, status.iterations) == ("running", child.proc.pid,
                                                                 100000)
        assert status.saved_iteration is None  # no checkpoint yet at save-every 100000
        assert status.images_per_s > 0 and status.eta_s > 0
        assert 0 <= status.train_error <= 1 and status.val_error is None  # --val-split 0
    finally:
        stop(out, timeout=120)


def test_snapshot_saves_a_running_run_without_stopping_it(spawn, tiny_train_args, tmp_path):
    out = tmp_path / "experiment" / "net-seed0"
    child = start_run(spawn, tiny_train_args, out)
    try:
        first = snapshot(tmp_path / "experiment", timeout=120)
        assert [(s.directory, s.pid, s.done) for s in first] == [(str(out), child.proc.pid,
                                                                  True)]
        assert read_checkpoint(out / "last.safetensors").iteration == first[0].saved_iteration
        assert first[0].saved_iteration > 0 and not (out / SNAPSHOT_REQUEST).exists()
        child.wait_until(lambda: run_status(out).iteration > first[0].saved_iteration + 2,
                         "training going on after the snapshot")
        second = snapshot(out, timeout=120)  # the run directory itself works too
        assert second[0].done and second[0].saved_iteration > first[0].saved_iteration
        assert child.proc.poll() is None
        assert "snapshot: saved iteration" in child.output()
    finally:
        stop(out, timeout=120)


def test_stop_also_stops_the_experiment_runner_holding_the_directory(spawn, tmp_path):
    """A runner holds OUT/.lock while it trains, so that it cannot start the next net after
    its running ones were stopped."""
    exp = tmp_path / "experiment"
    (exp / "net-seed0").mkdir(parents=True)
    (exp / "net-seed0" / "config.json").write_text("{}")
    holder = spawn(["-c", "import sys, time; from pathlib import Path; "
                          "from resnets.train.rundir import RunLock; "
                          "lock = RunLock(Path(sys.argv[1])); time.sleep(300)", str(exp)],
                   tmp_path / "runner.log")
    holder.wait_until(lambda: lock_holder(exp) == holder.proc.pid, "the runner's lock")
    stopped = stop(exp, timeout=60)
    assert [(s.directory, s.pid, s.done) for s in stopped] == [(str(exp), holder.proc.pid,
                                                                True)]
    assert holder.wait(30) == -15


def test_nothing_to_stop_or_snapshot_in_a_finished_run(trained, cli):
    assert stop(trained) == [] and snapshot(trained) == []
    code, out, _ = cli("status", trained)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["run", "iteration", "saved"]
    assert row.split()[1:5] == ["2", "/", "2", "2"] and row.endswith("finished")
    code, out, _ = cli("stop", trained)
    assert code == 0 and out.startswith("nothing to stop")


def test_a_folder_without_runs_is_refused_with_what_is_expected(tmp_path):
    with pytest.raises(UserError, match="holds no runs: a run directory has config.json"):
        find_runs(tmp_path)
    with pytest.raises(UserError, match="is not a folder"):
        find_runs(tmp_path / "missing")


def test_runs_of_an_experiment_are_found_in_order(tmp_path):
    for name in ("b-seed0", "a-seed0", "a-seed1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("")
    (tmp_path / "figures").mkdir()
    assert [p.name for p in find_runs(tmp_path)] == ["a-seed0", "a-seed1", "b-seed0"]
