"""The run directory: lock it, refuse to overwrite a run, find the checkpoint to resume, keep
``last`` and ``previous`` in step, and clear what killed writers left behind.

A run directory holds ``last.safetensors`` (the newest training checkpoint), ``previous``
(the one before), ``best`` (the best validation error's weights), config.json, metrics.jsonl,
tensorboard/ and curves.png; ``.lock`` while a trainer writes into it; and, after a crash, a
writer's temporary ``.last.safetensors.PID.new``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import warnings
import weakref
from pathlib import Path

from ..analysis.curves import read_metrics
from ..checkpoint import (
    BEST,
    LAST,
    PREVIOUS,
    Checkpoint,
    atomic_write_bytes,
    checkpoint_bytes,
    fsync_dir,
    parse_temp_name,
    read_checkpoint,
    temp_name,
    write_durable,
    write_error,
)
from ..errors import CheckpointError, UserError, printable
from .distributed import DistEnv, broadcast_object

# What a run writes into its directory: `--overwrite` deletes these (and nothing else).
RUN_FILES = (LAST, PREVIOUS, BEST, "config.json", "metrics.jsonl", "curves.png", "tensorboard")
LOCK = ".lock"
# The trainer saves `last` at its next step when this file appears in its run directory,
# then deletes it: a snapshot of a running run that git can commit, without stopping it
# (`resnets snapshot`).
SNAPSHOT_REQUEST = ".snapshot-request"


class RunLock:
    """An exclusive lock on a run directory (``flock`` on ``OUT/.lock``), so that two trainers
    never write into one run. The kernel drops it when the holder exits or is killed, so a
    stale lock file never blocks; the file records the holder's PID for the error message."""

    def __init__(self, out: Path):
        path = out / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"--out {out} is in use: another training process (PID {holder}) "
                            f"holds its lock {path}. Two runs in one directory would overwrite "
                            f"each other's checkpoints; wait for that process to end (or stop "
                            f"it), or choose another --out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        # Closing the descriptor releases the lock: on release(), or when this object is
        # collected (a Trainer that is dropped without fit()).
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        self._finalizer()


def snapshot_requested(run_dir: Path) -> bool:
    """Whether someone asked the trainer of ``run_dir`` for a snapshot (one stat per step)."""
    return (run_dir / SNAPSHOT_REQUEST).exists()


def snapshot_taken(run_dir: Path) -> None:
    (run_dir / SNAPSHOT_REQUEST).unlink(missing_ok=True)


def prepare_out_dir(out: Path, *, resume: str | None = None, overwrite: bool = False) -> RunLock:
    """Create ``out``, lock it, and make sure a new run destroys no earlier one: a directory
    that holds files is refused unless the run resumes or ``overwrite`` clears the run's files.
    Returns the lock (held until released)."""
    try:
        str(out).encode("utf-8")  # TensorBoard and the JSON records write the path as UTF-8
    except UnicodeEncodeError:
        raise UserError(f"--out {printable(out)} is not a UTF-8 path (a byte shown as \\xNN "
                        f"is not UTF-8 text): rename the folder or choose another --out, e.g. "
                        f"--out runs/my-run.") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out)
    except OSError as e:
        raise UserError(f"cannot write to --out {out} ({e.strerror}). Choose a directory you "
                        f"can write to, e.g. --out runs/my-run.") from None
    try:
        if resume is None:
            entries = sorted(p.name for p in out.iterdir()
                             if p.name != LOCK and parse_temp_name(p.name) is None)
            if entries and not overwrite:
                raise UserError(
                    f"--out {out} already holds files ({', '.join(entries[:6])}"
                    f"{', ...' if len(entries) > 6 else ''}); a new run would overwrite them. "
                    f"Continue that run with --resume auto, replace it with --overwrite "
                    f"(deletes its checkpoints and metrics), or choose another --out.")
            if overwrite:
                for name in RUN_FILES:
                    path = out / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
                remove_stale_temporaries(out)
    except BaseException:
        lock.release()
        raise
    return lock


# --------------------------------------------------------------------- opening a run
def open_run(out: Path, dist: DistEnv, *, resume: str | None,
             overwrite: bool) -> tuple[RunLock | None, Checkpoint | None, Path | None]:
    """Lock ``out`` and read the checkpoint to resume: ``(lock, checkpoint, its path)``.

    Rank 0 alone locks the directory and picks the checkpoint (it may finish a rotation a
    killed writer left); the other ranks then read the same file. A refusal on rank 0 is
    raised on every rank."""
    if resume is not None and overwrite:
        raise UserError("--resume and --overwrite exclude each other: --resume continues "
                        "the run in --out, --overwrite deletes it. Give one of them.")
    lock, ckpt, path, failure = None, None, None, None
    if dist.is_main:
        try:
            lock = prepare_out_dir(out, resume=resume, overwrite=overwrite)
            ckpt, path = pick_checkpoint(out, resume)
            remove_stale_temporaries(out)
            if resume == "auto" and ckpt is None:
                truncate_metrics(out, 0)  # killed before its first save: start it over
        except UserError as e:
            failure = e
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    message = broadcast_object(None if failure is None else str(failure), dist)
    if failure is not None:
        if lock is not None:
            lock.release()
        raise failure
    if message is not None:
        raise UserError(message)
    path = broadcast_object(path, dist)
    if not dist.is_main:
        ckpt = read_checkpoint(path) if path else None
    return lock, ckpt, path


def pick_checkpoint(out: Path, resume: str | None) -> tuple[Checkpoint | None, Path | None]:
    """The checkpoint ``--resume`` names (``auto``: the newest complete one in ``out``)."""
    if resume is None:
        return None, None
    if resume == "auto":
        found = find_resume_checkpoint(out)  # raises when every checkpoint is damaged
        if found is None:
            return None, None  # the run never saved: start it
        ckpt, path = found
        if path.name != LAST:
            # The newest is previous (last is damaged) or the complete temporary file of
            # a writer killed mid-rotation: make it `last` before training on.
            last = promote_to_last(out, path)
            path = path if path.name == PREVIOUS else last
        return ckpt, path
    path = Path(resume)
    ckpt = read_checkpoint(path)
    if ckpt.optimizer_state is None:
        raise UserError(f"{path} holds weights only (no optimizer state), so it cannot "
                        f"be resumed. Resume from last.safetensors of the run.")
    return ckpt, path


def truncate_metrics(out: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint: the resumed run writes them again."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return
    keep = [row for row in read_metrics(out) if row["iteration"] <= iteration]
    path.write_text("".join(json.dumps(row) + "\n" for row in keep))


# ----------------------------------------------------------------- last and previous
def rotate_and_save(run_dir: str | os.PathLike, **kwargs) -> Path:
    """Save ``last`` and keep the one before as ``previous``, so that at every instant the
    newest complete checkpoint lies under a name `find_resume_checkpoint` reads:

    1. write the new checkpoint to this process's temporary file and fsync it;
    2. point ``previous`` at the current ``last`` (hard link, then rename over ``previous``):
       ``last`` itself is never moved away;
    3. rename the temporary file over ``last``.

    A crash before 3 leaves the new checkpoint complete in its temporary file (resume reads
    it), and ``last`` untouched; an error while writing (a full disk) leaves every earlier file
    as it was.
    """
    run_dir = Path(run_dir)
    last, previous = run_dir / LAST, run_dir / PREVIOUS
    new = run_dir / temp_name(LAST)
    data = checkpoint_bytes(last, **kwargs)
    try:
        write_durable(new, data)
    except OSError as e:
        new.unlink(missing_ok=True)
        kept = (f"{last} still holds the previous checkpoint." if last.exists()
                else "no checkpoint was written.")
        raise write_error(last, e, kept) from None
    # From here on `new` is complete: an error must not delete it.
    try:
        if last.exists():
            link = run_dir / temp_name(PREVIOUS)
            link.unlink(missing_ok=True)
            try:
                os.link(last, link)
            except OSError:  # a file system without hard links: copy instead
                write_durable(link, last.read_bytes())
            os.replace(link, previous)
        os.replace(new, last)
        fsync_dir(run_dir)
    except OSError as e:
        kept = (f"the new checkpoint is complete in {new}, which --resume auto reads."
                if new.exists() else f"{last} holds the new checkpoint.")
        raise write_error(last, e, kept) from None
    return last


def _resume_candidates(run_dir: Path) -> list[Path]:
    """``last``, ``previous`` and every temporary ``last`` a killed writer left behind."""
    temps = sorted(p for p in run_dir.glob(f".{LAST}*")
                   if (parse_temp_name(p.name) or ("",))[0] == LAST)
    return [run_dir / LAST, run_dir / PREVIOUS, *temps]


def find_resume_checkpoint(run_dir: str | os.PathLike) -> tuple[Checkpoint, Path] | None:
    """The newest complete training checkpoint in ``run_dir``, or None where the run has none.

    Damaged ``last`` / ``previous`` files are skipped with a warning, partial temporary files
    silently; if checkpoints exist but none can be resumed, that is a `CheckpointError`
    (starting over would overwrite the run).
    """
    run_dir = Path(run_dir)
    best: tuple[Checkpoint, Path] | None = None
    unusable: list[str] = []
    for path in _resume_candidates(run_dir):
        if not path.is_file():
            continue
        temporary = path.name not in (LAST, PREVIOUS)
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            if not temporary:
                warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
                unusable.append(f"{path.name}: damaged")
            continue
        if ckpt.optimizer_state is None:
            if not temporary:
                unusable.append(f"{path.name}: weights only, no training state")
            continue
        if best is None or ckpt.iteration > best[0].iteration:
            best = (ckpt, path)
    if best is None and unusable:
        raise CheckpointError(
            f"cannot resume the run in {run_dir}: it has checkpoints, but none can be resumed "
            f"({'; '.join(unusable)}). Nothing was changed. Resume from a copy you trust with "
            f"--resume PATH, or start the run over with --overwrite (which deletes its files).")
    return best


def promote_to_last(run_dir: str | os.PathLike, path: Path) -> Path:
    """Finish the rotation a killed writer left at ``path`` (a complete temporary ``last``):
    the old ``last`` becomes ``previous`` and ``path`` becomes ``last``."""
    run_dir = Path(run_dir)
    last, previous = run_dir / LAST, run_dir / PREVIOUS
    if path == last:
        return last
    if last.exists() and path.name != PREVIOUS:
        link = run_dir / temp_name(PREVIOUS)
        link.unlink(missing_ok=True)
        try:
            os.link(last, link)
        except OSError:
            write_durable(link, last.read_bytes())
        os.replace(link, previous)
    if path.name == PREVIOUS:  # last is damaged: a copy of previous takes its place
        atomic_write_bytes(last, path.read_bytes())
    else:
        os.replace(path, last)
        fsync_dir(run_dir)
    return last


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of checkpoint writers that were killed mid-save: this
    process's own and those of processes that no longer exist (never a live writer's)."""
    stale = []
    for p in Path(run_dir).iterdir():
        parsed = parse_temp_name(p.name)
        if parsed is None or not p.is_file():
            continue
        pid = parsed[1]
        if pid is None or pid == os.getpid() or not _alive(pid):
            p.unlink(missing_ok=True)
            stale.append(p)
    return stale
