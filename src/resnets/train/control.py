"""Runs seen from outside: which process holds each run, how far it is, and stopping or
snapshotting it by that process's id (never by a name pattern, which on a shared machine
signals other people's processes too).

A directory holds runs when it is one (``config.json`` or ``metrics.jsonl``) or has them in its
subfolders (an experiment: ``OUT/<net>-seed<s>/``). The holder of a run is the process that
holds its ``.lock`` (`rundir.RunLock`, which records its PID); an experiment runner holds the
experiment directory's ``.lock`` the same way, so that stopping an experiment stops the
runner before it could start the next net.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..analysis.curves import read_metrics
from ..checkpoint import read_newest
from ..errors import UserError
from .rundir import LOCK, SNAPSHOT_REQUEST

RATE_ROWS = 10  # training-log rows (50 iterations each by default) that the speed spans


def lock_holder(directory: Path) -> int | None:
    """The PID of the process holding ``directory/.lock``, or None when nobody holds it.

    Probes with a shared, non-blocking flock that is dropped at once: it cannot succeed while
    a trainer holds its exclusive lock."""
    path = directory / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1  # held, by an unrecorded process
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def is_run(directory: Path) -> bool:
    return (directory / "config.json").is_file() or (directory / "metrics.jsonl").is_file()


def find_runs(root: str | os.PathLike) -> list[Path]:
    """``root`` itself when it is a run, else the runs in its subfolders (two levels deep),
    sorted by path. A missing or empty ``root`` is a `UserError`."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: give a run directory (the --out of "
                        f"`resnets train`) or an experiment directory such as "
                        f"results/paper-cifar.")
    if is_run(root):
        return [root]
    runs = sorted(p.parent for pattern in ("*/config.json", "*/*/config.json",
                                           "*/metrics.jsonl", "*/*/metrics.jsonl")
                  for p in root.glob(pattern))
    runs = list(dict.fromkeys(runs))
    if not runs:
        raise UserError(f"{root} holds no runs: a run directory has config.json and "
                        f"metrics.jsonl (written by `resnets train --out DIR`); an experiment "
                        f"directory has them in its subfolders.")
    return runs


@dataclass
class RunStatus:
    run: str  # the run directory, as found under the root
    state: str  # running | stopped | finished | not started
    pid: int | None  # the holder's PID while running
    iteration: int
    iterations: int  # the schedule's total
    saved_iteration: int | None  # the newest checkpoint's (what a resume starts from)
    images_per_s: float | None  # training speed over the last stretch of the current segment
    eta_s: float | None  # the remaining iterations at that speed
    train_error: float | None
    val_error: float | None
    val_iteration: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def run_status(run_dir: Path) -> RunStatus:
    """How far ``run_dir`` is, how fast it went lately and who holds it, from its files."""
    rows = read_metrics(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())["config"]
        total, batch = int(config["iterations"]), int(config["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        total, batch = 0, 0
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val" and "val_error" in r]
    newest = read_newest(run_dir)
    saved = newest[1].iteration if newest else None
    iteration = max(int(train[-1]["iteration"]) if train else 0, saved or 0)
    pid = lock_holder(run_dir)
    if pid is not None:
        state = "running"
    elif total and max(iteration, saved or 0) >= total:
        state = "finished"
    elif train or saved:
        state = "stopped"
    else:
        state = "not started"
    rate = _recent_rate(rows, batch)
    eta = (total - iteration) * batch / rate if rate and state == "running" else None
    return RunStatus(
        run=str(run_dir), state=state, pid=pid if pid and pid > 0 else None,
        iteration=iteration, iterations=total, saved_iteration=saved, images_per_s=rate,
        eta_s=eta, train_error=train[-1].get("train_error") if train else None,
        val_error=val[-1]["val_error"] if val else None,
        val_iteration=int(val[-1]["iteration"]) if val else None)


def _recent_rate(rows: list[dict], batch: int) -> float | None:
    """Images per second of training steps over the last `RATE_ROWS` log rows of the newest
    segment (``elapsed_s`` counts training steps only, so validation does not dilute it)."""
    segment_start = max((i for i, r in enumerate(rows) if r["kind"] == "segment"), default=-1)
    recent = [r for r in rows[segment_start + 1:]
              if r["kind"] == "train" and isinstance(r.get("elapsed_s"), int | float)]
    recent = recent[-(RATE_ROWS + 1):]
    if len(recent) < 2 or not batch:
        return None
    steps = recent[-1]["iteration"] - recent[0]["iteration"]
    seconds = recent[-1]["elapsed_s"] - recent[0]["elapsed_s"]
    return steps * batch / seconds if steps > 0 and seconds > 0 else None


# ------------------------------------------------------------------ acting on holders
def _holders(root: Path, runs: list[Path]) -> dict[Path, int]:
    """Held directories under ``root`` (experiment runners first, then runs) -> PID."""
    held = {}
    for directory in [root, *(p for p in runs if p != root)]:
        pid = lock_holder(directory)
        if pid is not None:
            held[directory] = pid
    return held


@dataclass
class Outcome:
    """What became of one held directory after a stop or a snapshot request."""
    directory: str
    pid: int
    saved_iteration: int | None  # its newest checkpoint afterwards (None: none written)
    done: bool  # it stopped (stop) or saved (snapshot) within the timeout


def _wait(directories, pending: Callable[[Path], bool], timeout: float,
          poll: float) -> set[Path]:
    """Poll until ``pending`` is false for every directory or ``timeout`` seconds pass; the
    directories still pending then."""
    deadline = time.monotonic() + timeout
    waiting = set(directories)
    while waiting and time.monotonic() < deadline:
        waiting = {d for d in waiting if pending(d)}
        if waiting:
            time.sleep(poll)
    return waiting


def _outcome(directory: Path, pid: int, waiting: set[Path]) -> Outcome:
    newest = read_newest(directory) if is_run(directory) else None
    return Outcome(str(directory), pid, newest[1].iteration if newest else None,
                   directory not in waiting)


def stop(root: str | os.PathLike, *, timeout: float = 600, poll: float = 0.2) -> list[Outcome]:
    """SIGTERM every process holding a run (or the experiment) under ``root``, then wait until
    each has saved and released its lock. Processes elsewhere are never signalled."""
    root = Path(root)
    held = _holders(root, find_runs(root))
    for pid in dict.fromkeys(held.values()):  # a one-process experiment holds both locks
        if pid > 0:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass  # ended on its own since
    waiting = _wait(held, lambda d: lock_holder(d) is not None, timeout, poll)
    return [_outcome(directory, pid, waiting) for directory, pid in held.items()]


def snapshot(root: str | os.PathLike, *, timeout: float = 300,
             poll: float = 0.2) -> list[Outcome]:
    """Ask every running run under ``root`` to save its state now and keep training; wait
    until each has. Then the run directories hold a consistent state that git can commit
    (``last`` is replaced atomically; log rows after it are dropped on resume)."""
    root = Path(root)
    running = {d: p for d, p in _holders(root, find_runs(root)).items() if is_run(d)}
    for directory in running:
        (directory / SNAPSHOT_REQUEST).touch()
    # Done when the trainer has taken the request, or is gone (it saved when it stopped).
    waiting = _wait(running, lambda d: (d / SNAPSHOT_REQUEST).exists()
                    and lock_holder(d) is not None, timeout, poll)
    for directory in waiting:  # an older trainer that does not take requests: withdraw it
        (directory / SNAPSHOT_REQUEST).unlink(missing_ok=True)
    return [_outcome(directory, pid, waiting) for directory, pid in running.items()]
