"""The training loop: one code path for CPU and GPU, one process or many (DDP).

Exact resume by construction: every batch is a pure function of (seed, epoch, index) (see
`resnets.train.data`), so the data state is just the iteration counter; the model,
optimizer, schedule state, metric accumulators and RNGs live in the checkpoint.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import signal
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..device import cpu_model
from ..errors import CheckpointError, UserError, printable
from ..eval.evaluate import evaluate
from ..models import create_model, model_info
from ..serve.weights import load_state_dict_for_model, read_state_dict
from .checkpoint import (
    BEST,
    LAST,
    PREVIOUS,
    Checkpoint,
    check_finite,
    find_resume_checkpoint,
    parse_temp_name,
    promote_to_last,
    read_checkpoint,
    remove_stale_temporaries,
    restore_rng,
    rotate_and_save,
    save_checkpoint,
)
from .config import TrainConfig
from .data import build_train_data
from .distributed import DistEnv, all_reduce_, barrier, broadcast_object, init_distributed
from .precision import choose as choose_precision
from .precision import native_bf16
from .schedule import lr_at, warmup_should_end

# Options that may change between a run and its resumption; anything else must match.
RESUMABLE_CHANGES = {"iterations", "milestones", "log_every", "eval_every", "save_every",
                     "device", "compile", "max_nonfinite", "cache_dir", "data", "recipe"}


class TrainingStopped(Exception):
    """Raised inside the loop to leave it after a checkpoint has been written."""

    def __init__(self, reason: str, exit_code: int):
        super().__init__(reason)
        self.exit_code = exit_code


class NonFiniteLoss(UserError):
    """Too many non-finite losses in a row; the last good state was saved."""


@dataclass
class RunResult:
    iteration: int
    stopped: str | None  # None when the schedule finished, else why it stopped early
    exit_code: int
    final: dict  # last train / val metrics


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for but no CUDA device is available "
                        f"(torch {torch.__version__}). Use --device cpu or --device auto.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None


def _probe_size(cfg: TrainConfig) -> tuple[int, int, int]:
    """The training input size: the family's, or the folder pipeline's crop."""
    c, h, w = model_info(cfg.model).input_size
    return (c, cfg.crop_size, cfg.crop_size) if h != 32 else (c, h, w)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# What a run writes into its directory: `--overwrite` deletes these (and nothing else).
RUN_FILES = (LAST, PREVIOUS, BEST, "config.json", "metrics.jsonl", "curves.png", "tensorboard")
LOCK = ".lock"


class RunLock:
    """An exclusive lock on a run directory (``flock`` on ``OUT/.lock``), so that two trainers
    never write into one run. The kernel drops it when the holder exits or is killed, so a
    stale lock file never blocks; the file records the holder's PID for the error message."""

    def __init__(self, out: Path):
        import fcntl

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


class Trainer:
    """Train ``cfg.model`` on ``cfg.data`` into ``out_dir``.

    ``explicit``: the option names the user gave (the CLI passes them). On resume, only those
    may change what the checkpoint's run used; None means every field of ``cfg`` counts.
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, *,
                 resume: str | None = None, overwrite: bool = False, quiet: bool = False,
                 explicit: set[str] | None = None):
        self._lock: RunLock | None = None
        try:
            self._setup(cfg, out_dir, resume, overwrite, quiet, explicit)
        except BaseException:
            self.close()  # a refused or failed start leaves the directory unlocked
            raise

    def close(self) -> None:
        """Release the run directory's lock (`fit` does this when it ends)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _setup(self, cfg, out_dir, resume, overwrite, quiet, explicit) -> None:
        if resume is not None and overwrite:
            raise UserError("--resume and --overwrite exclude each other: --resume continues "
                            "the run in --out, --overwrite deletes it. Give one of them.")
        self.dist: DistEnv = init_distributed(cfg.device)
        self.out = Path(out_dir)
        # Rank 0 alone locks the directory and picks the checkpoint (it may finish a rotation
        # a killed writer left); the other ranks then read the same file.
        ckpt, failure, resume_path = None, None, None
        if self.dist.is_main:
            try:
                self._lock = prepare_out_dir(self.out, resume=resume, overwrite=overwrite)
                ckpt = self._find_resume(resume)
                remove_stale_temporaries(self.out)
                if resume == "auto" and ckpt is None:
                    self._truncate_metrics(0)  # killed before its first save: start it over
                resume_path = self.resumed_from
            except UserError as e:
                failure = e
        message = broadcast_object(None if failure is None else str(failure), self.dist)
        if failure is not None:
            raise failure
        if message is not None:
            raise UserError(message)
        if not self.dist.is_main:
            self.resumed_from = broadcast_object(resume_path, self.dist)
            ckpt = read_checkpoint(self.resumed_from) if self.resumed_from else None
        else:
            broadcast_object(resume_path, self.dist)
        if ckpt is not None:
            cfg = self._merge_resumed_config(ckpt.meta["config"], cfg, explicit)
        self.cfg = cfg
        self.quiet = quiet or not self.dist.is_main
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.sync_bn and self.device.type != "cuda":
            raise UserError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU "
                            "kernel); drop --sync-bn for CPU / gloo runs.")
        if cfg.precision == "auto":  # measured per machine and model; rank 0 decides for all
            choice = choose_precision(self.device, cfg.model, cfg.model_kwargs,
                                      cfg.batch_size // self.dist.world_size,
                                      _probe_size(cfg)) if self.dist.is_main else None
            choice = broadcast_object(choice, self.dist)
            bf16, layout, self.precision_choice = (choice.bf16, choice.channels_last,
                                                   choice.reason)
        else:
            bf16, layout = cfg.precision == "bf16", native_bf16(self.device)
            self.precision_choice = f"--precision {cfg.precision}"
        self.amp_dtype = torch.bfloat16 if bf16 else None
        self.channels_last = layout if cfg.channels_last is None else cfg.channels_last
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.seed)
        model_info(cfg.model)  # unknown names fail here, before data loading
        self.data = build_train_data(cfg, self.device, self.channels_last, self.dist)
        self.classes = self.data.classes
        self.normalization = self.data.normalization
        if cfg.num_classes is not None and cfg.num_classes != len(self.classes):
            raise UserError(f"--num-classes {cfg.num_classes} does not match the "
                            f"{len(self.classes)} class folders of {self.data.source} "
                            f"({', '.join(self.classes[:10])}...). Drop --num-classes, or fix "
                            f"the data.")
        try:
            self.model = create_model(cfg.model, num_classes=len(self.classes),
                                      **cfg.model_kwargs)
        except (TypeError, ValueError) as e:  # bad model_kwargs from the flags or the recipe
            raise UserError(f"cannot build {cfg.model} with {cfg.model_kwargs}: {e}. Fix "
                            f"--shortcut / --unit or the recipe's model_kwargs.") from None
        if cfg.init and ckpt is None:
            self._load_init(cfg.init)
        self._freeze(cfg.freeze)
        if cfg.sync_bn and self.dist.enabled:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # The wrappers (DDP, compile) are used for steps only; checkpoints see self.model.
        self.step_model = self.model
        if self.dist.enabled:
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        if cfg.compile:
            self.step_model = torch.compile(self.step_model)
        self.optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad],
                                         lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.buffers = list(self.model.buffers())
        self.buffer_backup = [b.clone() for b in self.buffers]
        self.iteration = 0
        self.in_warmup = cfg.warmup_lr is not None
        self.plateau = {"drops": 0, "best": None, "bad": 0}  # the plateau schedule's state
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        self.best_val_error = math.inf
        self.elapsed = 0.0
        self.last_train: dict = {}
        self.last_val: dict = {}
        self._reset_window()
        if ckpt is not None:
            self._restore(ckpt)
        self._stop_signal: int | None = None

    @property
    def skipped_images(self) -> list[str]:
        return self.data.skipped

    @property
    def data_source(self) -> str:
        return self.data.source

    @property
    def num_train(self) -> int:
        return self.data.num_train

    @property
    def num_val(self) -> int:
        return self.data.num_val

    def _load_init(self, spec: str) -> None:
        """Start from other weights (fine-tuning): a head of another size is re-initialised."""
        load_state_dict_for_model(self.model, read_state_dict(spec), len(self.classes))

    def _freeze(self, parts: tuple[str, ...]) -> None:
        """Keep the named parts fixed: no gradients, and their BN statistics in eval mode."""
        known = {"stem": ["conv1", "bn1"], **{n: [n] for n in self.model.stage_names}}
        unknown = [p for p in parts if p not in known]
        if unknown:
            raise UserError(f"--freeze {','.join(unknown)}: unknown part; choose from "
                            f"{', '.join(known)}.")
        self.frozen = [getattr(self.model, name) for p in parts for name in known[p]]
        for module in self.frozen:
            module.requires_grad_(False)

    def _train_mode(self) -> None:
        self.model.train()
        for module in getattr(self, "frozen", []):
            module.eval()

    # ----------------------------------------------------------------------- setup
    def _find_resume(self, resume: str | None) -> Checkpoint | None:
        self.resumed_from: Path | None = None
        if resume is None:
            return None
        if resume == "auto":
            found = find_resume_checkpoint(self.out)  # raises when every checkpoint is damaged
            if found is None:
                return None  # the run never saved: start it
            ckpt, path = found
            if path.name != LAST:
                # The newest is previous (last is damaged) or the complete temporary file of
                # a writer killed mid-rotation: make it `last` before training on.
                last = promote_to_last(self.out, path)
                path = path if path.name == PREVIOUS else last
        else:
            path = Path(resume)
            ckpt = read_checkpoint(path)
            if ckpt.optimizer_state is None:
                raise UserError(f"{path} holds weights only (no optimizer state), so it cannot "
                                f"be resumed. Resume from last.safetensors of the run.")
        self.resumed_from = path
        return ckpt

    @staticmethod
    def _merge_resumed_config(stored: dict, cfg: TrainConfig,
                              explicit: set[str] | None = None) -> TrainConfig:
        current = cfg.to_dict()
        given = set(current) if explicit is None else set(explicit)
        differ = sorted(k for k in stored if k not in RESUMABLE_CHANGES and k in given
                        and stored[k] != current.get(k))
        if differ:
            details = "; ".join(f"{k}: checkpoint {stored[k]!r}, now {current.get(k)!r}"
                                for k in differ)
            raise UserError(f"cannot resume: these options differ from the checkpoint's run "
                            f"({details}). Use the original options, or a new --out "
                            f"directory for a new run.")
        merged = {**stored, **{k: current[k] for k in RESUMABLE_CHANGES if k in given}}
        if "iterations" in given and "milestones" not in given:
            merged["milestones"] = stored["milestones"]  # extending a run keeps its schedule
        return TrainConfig.from_dict(merged)

    def _reset_window(self) -> None:
        def zero(dtype):
            return torch.zeros((), dtype=dtype, device=self.device)

        self.window = {"loss": zero(torch.float64), "wrong": zero(torch.int64),
                       "seen": zero(torch.int64), "steps": zero(torch.int64)}
        self.window_start = time.perf_counter()
        self.window_images = 0

    # ------------------------------------------------------------- checkpointing
    def _meta(self) -> dict:
        return {
            "kind": "training",
            "model": self.cfg.model,
            "model_kwargs": {**self.cfg.model_kwargs, "num_classes": len(self.classes)},
            "classes": self.classes,
            "normalization": self.normalization.to_dict(),
            "image_size": self.data.image_size,
            **({"preprocessing": self.data.preprocessing} if self.data.preprocessing else {}),
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "metrics": {"train": self.last_train, "val": self.last_val},
            "device": device_name(self.device),
            "data_source": self.data_source,
            "train_state": {
                "in_warmup": self.in_warmup,
                "plateau": self.plateau,
                "nonfinite_in_row": self.nonfinite_in_row,
                "nonfinite_total": self.nonfinite_total,
                "best_val_error": None if math.isinf(self.best_val_error)
                else self.best_val_error,
                "elapsed_s": self.elapsed,
            },
        }

    def save(self) -> Path | None:
        """Rank 0 writes ``last`` (the others wait, so no rank runs ahead of a checkpoint)."""
        path = None
        if self.dist.enabled and not self.dist.is_main:
            # Every rank holds the same weights: all refuse a non-finite state together
            # (rank 0 inside rotate_and_save), so that none waits for a save that never comes.
            check_finite(self.out / LAST, model=self.model, optimizer=self.optimizer,
                         meta={"iteration": self.iteration})
        if self.dist.is_main:
            path = rotate_and_save(self.out, model=self.model, meta=self._meta(),
                                   optimizer=self.optimizer, extra=self.window,
                                   include_rng=True)
        barrier(self.dist)
        return path

    def _restore(self, ckpt: Checkpoint) -> None:
        if list(ckpt.meta["classes"]) != self.classes:
            # Same count but other names would train on silently permuted labels.
            raise CheckpointError(
                f"cannot resume from {self.resumed_from}: its classes "
                f"({', '.join(ckpt.meta['classes'])}) differ from those of {self.data_source} "
                f"({', '.join(self.classes)}). Resume with the run's original --data, or start "
                f"a new run in another --out directory.")
        self.model.load_state_dict(ckpt.model_state, strict=True)
        try:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        except (ValueError, KeyError, TypeError) as e:  # e.g. other parameter groups
            raise CheckpointError(
                f"cannot resume from {self.resumed_from}: its optimizer state does not fit the "
                f"model's trainable parameters ({e}). Resume with the run's original options "
                f"(--freeze), or start a new run in another --out directory.") from None
        st = ckpt.meta["train_state"]
        self.iteration = ckpt.iteration
        self.in_warmup = st["in_warmup"]
        self.plateau = st.get("plateau", self.plateau)
        self.nonfinite_in_row = st["nonfinite_in_row"]
        self.nonfinite_total = st["nonfinite_total"]
        self.best_val_error = st["best_val_error"] if st["best_val_error"] is not None \
            else math.inf
        self.elapsed = st["elapsed_s"]
        self.last_train = ckpt.meta["metrics"]["train"]
        self.last_val = ckpt.meta["metrics"]["val"]
        self.window = {k: v.to(self.device) for k, v in ckpt.extra.items()}
        if ckpt.rng is not None:
            restore_rng(ckpt.rng)
        if self.dist.is_main:
            self._truncate_metrics(self.iteration)

    def _truncate_metrics(self, iteration: int) -> None:
        """Drop log lines written after the checkpoint: the resumed run writes them again."""
        from ..analysis.curves import read_metrics

        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        keep = [row for row in read_metrics(self.out) if row["iteration"] <= iteration]
        path.write_text("".join(json.dumps(row) + "\n" for row in keep))

    # ------------------------------------------------------------------- the loop
    def lr(self) -> float:
        c = self.cfg
        if c.schedule == "plateau":
            base = c.lr * c.gamma ** self.plateau["drops"]
            return c.warmup_lr if self.in_warmup and c.warmup_lr is not None else base
        return lr_at(self.iteration, lr=c.lr, milestones=c.milestones, gamma=c.gamma,
                     warmup_lr=c.warmup_lr, in_warmup=self.in_warmup)

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of one batch (a seam for tests that inject faults)."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits = self.step_model(x)
        logits = logits.float()
        return F.cross_entropy(logits, y), logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # BN running statistics change in the forward pass; keep a copy to undo a bad step.
        torch._foreach_copy_(self.buffer_backup, self.buffers)
        loss, logits = self.compute_loss(x, y)
        # One scalar sync per step buys the guarantee that a NaN never reaches the weights;
        # under DDP the ranks agree on it (and on a pending stop signal) in the same message.
        flags = torch.stack([(~torch.isfinite(loss.detach())).float(),
                             torch.tensor(float(self._stop_signal is not None),
                                          device=loss.device)])
        flags = all_reduce_(flags, self.dist).tolist()
        if flags[1] and self._stop_signal is None:
            self._stop_signal = signal.SIGTERM  # another rank was told to stop
        if flags[0]:
            torch._foreach_copy_(self.buffers, self.buffer_backup)
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_in_row += 1
            self.nonfinite_total += 1
            self.iteration += 1
            if self.nonfinite_in_row >= self.cfg.max_nonfinite:
                raise NonFiniteLoss(
                    f"the loss was non-finite for {self.nonfinite_in_row} steps in a row (up to "
                    f"iteration {self.iteration}); those steps were skipped and the last good "
                    f"weights saved in {self.out / 'last.safetensors'}. Lower --lr, add a "
                    f"warm-up (--warmup-lr), or check the data for corrupt images.")
            return
        self.nonfinite_in_row = 0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        w = self.window
        w["loss"] += loss.detach().double() * y.numel()
        w["wrong"] += (logits.detach().argmax(1) != y).sum()
        w["seen"] += y.numel()
        w["steps"] += 1
        self.window_images += y.numel()
        self.iteration += 1

    def log_window(self) -> dict:
        names = sorted(self.window)  # one collective for all counters, same order on all ranks
        summed = all_reduce_(torch.stack([self.window[k].double() for k in names]), self.dist)
        totals = dict(zip(names, summed, strict=True))
        seen = int(totals["seen"].item())  # the host sync that logging needs
        now = time.perf_counter()
        dt = now - self.window_start
        row = {
            "kind": "train",
            "iteration": self.iteration,
            "epoch": self.iteration / self.data.steps_per_epoch,
            "lr": self.lr(),
            "train_loss": totals["loss"].item() / seen if seen else float("nan"),
            "train_error": totals["wrong"].item() / seen if seen else float("nan"),
            "img_per_s": self.window_images * self.dist.world_size / dt if dt > 0 else 0.0,
            "elapsed_s": self.elapsed,
            "nonfinite_total": self.nonfinite_total,
        }
        if self.in_warmup and seen and warmup_should_end(
                self.iteration, row["train_error"], until_error=self.cfg.warmup_until_error,
                max_iterations=self.cfg.warmup_max_iterations):
            self.in_warmup = False
            row["warmup_ended"] = True
        self.last_train = row
        self._reset_window()
        return row

    def validate(self) -> dict | None:
        """Rank 0 measures the validation split; every rank receives the result."""
        row = None
        batches = self.data.val_batches()
        if batches is not None:
            res = evaluate(self.model, batches, len(self.classes), autocast_dtype=self.amp_dtype)
            row = {"kind": "val", "iteration": self.iteration, "val_loss": res["loss"],
                   "val_error": res["top1_error"], "val_top5_error": res["top5_error"],
                   "elapsed_s": self.elapsed}
        row = broadcast_object(row, self.dist)
        if row is None:
            return None
        self.last_val = row
        self._plateau_step(row["val_error"])
        if row["val_error"] < self.best_val_error:
            self.best_val_error = row["val_error"]
            if self.dist.is_main:
                save_checkpoint(self.out / BEST, model=self.model,
                                meta={**self._meta(), "kind": "weights"})
        return row

    def _plateau_step(self, val_error: float) -> None:
        """Plateau schedule: divide lr by 1/gamma after ``plateau_patience`` evaluations
        without an improvement larger than ``plateau_threshold``."""
        p, c = self.plateau, self.cfg
        if c.schedule != "plateau":
            return
        if p["best"] is None or val_error < p["best"] - c.plateau_threshold:
            p["best"], p["bad"] = val_error, 0
        else:
            p["bad"] += 1
            if p["bad"] >= c.plateau_patience:
                p["drops"], p["bad"] = p["drops"] + 1, 0

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_signal = signum

    def fit(self) -> RunResult:
        """Run to ``cfg.iterations`` (or until a signal); returns how it ended."""
        from .progress import RunLogger

        cfg = self.cfg
        if self._lock is None and self.dist.is_main:  # fit() again after it released the lock
            self._lock = RunLock(self.out)
        try:
            logger = RunLogger(self.out, cfg, start=self.iteration, quiet=self.quiet,
                               describe=self.describe(), enabled=self.dist.is_main)
        except BaseException:
            self.close()
            raise
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        stopped, code, finished = None, 0, False
        if self.resumed_from is not None:
            logger.message(f"resumed from {self.resumed_from} at iteration {self.iteration}")
        if self.skipped_images:
            logger.message(f"skipped {len(self.skipped_images)} unreadable image file(s) "
                           f"(--skip-bad-images), e.g. {self.skipped_images[0]}; all are "
                           f"listed in {self.out / 'config.json'}")
        self.window_start, self.window_images = time.perf_counter(), 0
        self._train_mode()
        try:
            while self.iteration < cfg.iterations:
                epoch, start = divmod(self.iteration, self.data.steps_per_epoch)
                for x, y in self.data.train_batches(epoch, start):
                    t0 = time.perf_counter()
                    self.train_step(x, y)
                    self.elapsed += time.perf_counter() - t0
                    it = self.iteration
                    done = it >= cfg.iterations
                    if it % cfg.log_every == 0 or done:
                        logger.log(self.log_window())
                    if it % cfg.eval_every == 0 or done:
                        row = self.validate()
                        self._train_mode()
                        if row:
                            logger.log(row)
                    if it % cfg.save_every == 0 or done:
                        self.save()
                    logger.advance(it, self.last_train, self.last_val)
                    if self._stop_signal is not None:
                        self.save()
                        name = signal.Signals(self._stop_signal).name
                        raise TrainingStopped(name, 128 + self._stop_signal)
                    if done:
                        break
            finished = True
        except TrainingStopped as e:
            stopped, code = str(e), e.exit_code
            logger.message(
                f"{stopped}: stopped at iteration {self.iteration} after saving "
                f"{self.out / 'last.safetensors'}. Resume with the same command plus "
                f"--resume auto (or --resume {self.out / 'last.safetensors'}); `make train` "
                f"and `make reproduce` resume by themselves.")
        except NonFiniteLoss:
            self.save()
            raise
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserError(f"cannot write to the run directory {self.out} ({e.strerror}); "
                            f"training stopped at iteration {self.iteration}, and the last "
                            f"checkpoint written there is kept. Free space on that disk and "
                            f"continue with --resume auto.") from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            try:
                # "done" only after the schedule finished: not after a stop or an error.
                logger.close(finished=finished)
            finally:
                self.close()
        return RunResult(self.iteration, stopped, code,
                         {"train": self.last_train, "val": self.last_val})

    def describe(self) -> dict:
        return {
            "model": self.cfg.model,
            "device": device_name(self.device),
            "precision": "bf16" if self.amp_dtype is not None else "fp32",
            "precision_choice": self.precision_choice,
            "channels_last": self.channels_last,
            "train_images": self.num_train,
            "val_images": self.num_val,
            "steps_per_epoch": self.data.steps_per_epoch,
            "pipeline": type(self.data).__name__,
            "world_size": self.dist.world_size,
            "global_batch": self.cfg.batch_size,
            "per_rank_batch": self.cfg.batch_size // self.dist.world_size,
            "lr_for_global_batch": self.cfg.lr,
            "frozen": list(self.cfg.freeze),
            "init": self.cfg.init,
            "data_source": self.data_source,
            "skipped_images": len(self.skipped_images),
            "skipped_files": self.skipped_images,
            "classes": self.classes,
            "normalization": self.normalization.kind,
        }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
