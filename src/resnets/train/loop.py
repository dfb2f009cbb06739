"""The training loop: one code path for CPU and GPU, one process or many (DDP).

Exact resume by construction: every batch is a pure function of (seed, epoch, index) (see
`resnets.train.data`), so the data state is just the iteration counter; the model, optimizer,
schedule, train state, metric window and RNGs live in the checkpoint.

A `Trainer` is built in the order a run needs its parts (run directory and resumed
checkpoint, config, device and precision, data, model, optimizer, then the small stateful
parts: `LRSchedule`, `TrainState`, `MetricWindow`, `NonFiniteGuard`); `fit` then runs
`train_step` until the schedule ends, logging, validating and saving on the way.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import BEST, LAST, Checkpoint, check_finite, restore_rng, save_checkpoint
from ..config import TrainConfig, kept_milestones_note, merge_resumed_config
from ..data import describe_data, same_images
from ..device import autocast, device_name
from ..errors import CheckpointError, UserError
from ..eval.metrics import evaluate
from ..models import model_info
from .build import (
    build_model,
    freeze,
    place,
    run_device,
    run_precision,
    seed_everything,
    train_mode,
)
from .data import build_train_data
from .distributed import barrier, broadcast_object, init_distributed
from .progress import RunLogger
from .rundir import (
    RunLock,
    open_run,
    rotate_and_save,
    snapshot_requested,
    snapshot_taken,
    truncate_metrics,
)
from .schedule import LRSchedule
from .state import MetricWindow, NonFiniteGuard, NonFiniteLoss, TrainState


class TrainingStopped(Exception):
    """Raised inside the loop to leave it after a checkpoint has been written."""

    def __init__(self, reason: str, exit_code: int):
        super().__init__(reason)
        self.exit_code = exit_code


@dataclass
class RunResult:
    iteration: int
    stopped: str | None  # None when the schedule finished, else why it stopped early
    exit_code: int
    final: dict  # last train / val metrics


class Trainer:
    """Train ``cfg.model`` on ``cfg.data`` into ``out_dir``.

    ``resume``: None (a new run), "auto" (the newest checkpoint in ``out_dir``) or a path.
    ``explicit``: the option names the user gave (the CLI passes them). On resume, only those
    may change what the checkpoint's run used; None means every field of ``cfg`` counts.
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, *,
                 resume: str | None = None, overwrite: bool = False, quiet: bool = False,
                 explicit: set[str] | None = None):
        self._lock: RunLock | None = None
        try:
            self._setup(cfg, Path(out_dir), resume, overwrite, quiet, explicit)
        except BaseException:
            self.close()  # a refused or failed start leaves the directory unlocked
            raise

    def close(self) -> None:
        """Release the run directory's lock (`fit` does this when it ends)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _setup(self, cfg: TrainConfig, out: Path, resume: str | None, overwrite: bool,
               quiet: bool, explicit: set[str] | None) -> None:
        self.dist = init_distributed(cfg.device)
        self.out = out
        self._lock, ckpt, self.resumed_from = open_run(out, self.dist, resume=resume,
                                                       overwrite=overwrite)
        self.notes: list[str] = []  # what the run chose for the user, for its first lines
        if ckpt is not None:
            stored = ckpt.meta["config"]
            cfg = merge_resumed_config(stored, cfg, explicit)
            note = kept_milestones_note(stored, cfg, explicit)
            self.notes += [note] if note else []
        self.cfg = cfg
        self.quiet = quiet or not self.dist.is_main

        self.device = run_device(cfg, self.dist)
        precision = run_precision(cfg, self.device, self.dist)
        self.amp_dtype, self.channels_last = precision.amp_dtype, precision.channels_last
        self.precision_choice = precision.reason
        if cfg.deterministic:
            # cuBLAS is only deterministic with a fixed workspace, set before its first call.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.seed)
        model_info(cfg.model)  # unknown names fail here, before data loading

        # A resumed run keeps the options it ran with: defaults are fitted to the data once.
        self.data = build_train_data(cfg, self.device, self.channels_last, self.dist,
                                     given=explicit if ckpt is None else None)
        self.cfg = cfg = self.data.cfg
        self.notes += self.data.notes
        if cfg.num_classes is not None and cfg.num_classes != len(self.classes):
            raise UserError(f"--num-classes {cfg.num_classes} does not match the "
                            f"{len(self.classes)} class folders of {self.data.source} "
                            f"({', '.join(self.classes[:10])}...). Drop --num-classes, or fix "
                            f"the data.")

        model = build_model(cfg, len(self.classes), load_init=ckpt is None)
        self.frozen = freeze(model, cfg.freeze)
        # The wrappers (DDP, compile) run the steps only; checkpoints see self.model.
        self.model, self.step_model = place(model, cfg, self.dist, self.device,
                                            self.channels_last)
        self.optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad],
                                         lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)

        self.schedule = LRSchedule.from_config(cfg)
        self.state = TrainState()
        self.window = MetricWindow(self.device, self.dist)
        self.guard = NonFiniteGuard(self.model, self.dist, cfg.max_nonfinite)
        if ckpt is not None:
            self._restore(ckpt)
        self._stop_signal: int | None = None
        self._snapshot = False  # every rank agreed to save at the end of this step

    # ---------------------------------------------------------------- what it is
    @property
    def iteration(self) -> int:
        return self.state.iteration

    @property
    def nonfinite_total(self) -> int:
        return self.guard.total

    @property
    def classes(self) -> list[str]:
        return self.data.classes

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

    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.schedule.lr(self.iteration)

    def describe(self) -> dict:
        """What runs where, for config.json and the log."""
        cfg = self.cfg
        return {
            "model": cfg.model,
            "device": device_name(self.device),
            "precision": "bf16" if self.amp_dtype is not None else "fp32",
            "precision_choice": self.precision_choice,
            "channels_last": self.channels_last,
            "train_images": self.num_train,
            "val_images": self.num_val,
            "steps_per_epoch": self.data.steps_per_epoch,
            "pipeline": type(self.data).__name__,
            "world_size": self.dist.world_size,
            "global_batch": cfg.batch_size,
            "per_rank_batch": cfg.batch_size // self.dist.world_size,
            "lr_for_global_batch": cfg.lr,
            "frozen": list(cfg.freeze),
            "init": cfg.init,
            "data_source": self.data_source,
            "skipped_images": len(self.skipped_images),
            "skipped_files": self.skipped_images,
            "classes": self.classes,
            "normalization": self.data.normalization.kind,
            "validation": self.data.validation,
            "best_checkpoint": (
                "none (no validation images)" if self.data.validation is None else
                "kept (lowest error on these images, held out of training)" if self.keeps_best
                else "not kept (these are the images results are reported on: report the "
                     "final weights)"),
            "data_fingerprint": self.data.fingerprint,
            "chosen": self.notes,
        }

    # ------------------------------------------------------------- checkpointing
    def _meta(self) -> dict:
        """The checkpoint record: what the model is, and where the run is."""
        state = self.state.record(self.schedule, self.guard)
        return {
            "kind": "training",
            "model": self.cfg.model,
            "model_kwargs": {**self.cfg.model_kwargs, "num_classes": len(self.classes)},
            "classes": self.classes,
            "normalization": self.data.normalization.to_dict(),
            "image_size": self.data.image_size,
            **({"preprocessing": self.data.preprocessing} if self.data.preprocessing else {}),
            "config": self.cfg.to_dict(),
            "iteration": state["iteration"],
            "metrics": state["metrics"],
            "device": device_name(self.device),
            "data_source": self.data_source,
            **({"data_fingerprint": self.data.fingerprint} if self.data.fingerprint else {}),
            "train_state": state["train_state"],
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
                                   optimizer=self.optimizer, extra=self.window.state_dict(),
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
        recorded = ckpt.meta.get("data_fingerprint")
        if recorded and self.data.fingerprint and not same_images(recorded,
                                                                  self.data.fingerprint):
            # Other images (or another order) would move the held-out split mid-run.
            raise CheckpointError(
                f"cannot resume from {self.resumed_from}: its run trained on "
                f"{describe_data(recorded)}, but --data {self.cfg.data} holds "
                f"{describe_data(self.data.fingerprint)}; the held-out split would change "
                f"mid-run. Resume with the run's original --data, or start a new run in "
                f"another --out directory.")
        self.model.load_state_dict(ckpt.model_state, strict=True)
        try:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        except (ValueError, KeyError, TypeError) as e:  # e.g. other parameter groups
            raise CheckpointError(
                f"cannot resume from {self.resumed_from}: its optimizer state does not fit the "
                f"model's trainable parameters ({e}). Resume with the run's original options "
                f"(--freeze), or start a new run in another --out directory.") from None
        self.state.load_record(ckpt.meta, self.schedule, self.guard)
        self.window.load_state_dict(ckpt.extra)
        if ckpt.rng is not None:
            restore_rng(ckpt.rng)
        if self.dist.is_main:
            truncate_metrics(self.out, self.iteration)

    # ------------------------------------------------------------------ one step
    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of one batch (a seam for tests that inject faults)."""
        with autocast(self.device, self.amp_dtype):
            logits = self.step_model(x)
        logits = logits.float()
        return F.cross_entropy(logits, y), logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One SGD step on one batch, or none where the loss is not finite on some rank."""
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.guard.keep_buffers()
        loss, logits = self.compute_loss(x, y)
        nonfinite, stop, self._snapshot = self.guard.check(
            loss, stop_requested=self._stop_signal is not None,
            snapshot_requested=self.dist.is_main and snapshot_requested(self.out))
        if stop and self._stop_signal is None:
            self._stop_signal = signal.SIGTERM  # another rank was told to stop
        self.optimizer.zero_grad(set_to_none=True)
        self.state.iteration += 1
        if nonfinite:
            self.guard.skip(self.iteration, self.out / LAST)
            return
        self.guard.passed()
        loss.backward()
        self.optimizer.step()
        self.window.add(loss, logits, y)

    # ---------------------------------------------------- what happens between steps
    def log_window(self) -> dict:
        """The metrics.jsonl row of the training window that ends now."""
        stats, seen = self.window.summarize()
        row = {"kind": "train", "iteration": self.iteration,
               "epoch": self.iteration / self.data.steps_per_epoch, "lr": self.lr(), **stats,
               "elapsed_s": self.state.elapsed_s, "nonfinite_total": self.guard.total}
        if seen and self.schedule.observe_train_error(self.iteration, row["train_error"]):
            row["warmup_ended"] = True
        self.state.last_train = row
        return row

    @property
    def keeps_best(self) -> bool:
        """Whether a new lowest validation error writes ``best``: only where the validation
        images were held out of the training images. Weights chosen on the data's own val
        split would be scored on the very images that chose them: such runs report their
        final weights only (the plateau schedule still reads that split, as the paper did)."""
        return bool(self.data.validation and self.data.validation["held_out_of_training"])

    def validate(self) -> dict | None:
        """Rank 0 measures the validation split; every rank receives the result. A new best
        error writes ``best`` (weights only, with ``selected_on``: the images that chose it)
        where `keeps_best`."""
        row = None
        batches = self.data.val_batches()
        if batches is not None:
            res = evaluate(self.model, batches, len(self.classes), autocast_dtype=self.amp_dtype)
            row = {"kind": "val", "iteration": self.iteration, "val_loss": res["loss"],
                   "val_error": res["top1_error"], "val_top5_error": res["top5_error"],
                   "elapsed_s": self.state.elapsed_s}
        row = broadcast_object(row, self.dist)
        if row is None:
            return None
        self.state.last_val = row
        self.schedule.observe_val_error(row["val_error"])
        if row["val_error"] < self.state.best_val_error:
            self.state.best_val_error = row["val_error"]
            if self.dist.is_main and self.keeps_best:
                save_checkpoint(self.out / BEST, model=self.model,
                                meta={**self._meta(), "kind": "weights",
                                      "selected_on": self.data.validation})
        return row

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_signal = signum

    # ------------------------------------------------------------------- the run
    def fit(self) -> RunResult:
        """Run to ``cfg.iterations`` (or until a signal); returns how it ended."""
        if self._lock is None and self.dist.is_main:  # fit() again after it released the lock
            self._lock = RunLock(self.out)
        try:
            logger = RunLogger(self.out, self.cfg, start=self.iteration, quiet=self.quiet,
                               describe=self.describe(), enabled=self.dist.is_main)
        except BaseException:
            self.close()
            raise
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        stopped, code, finished = None, 0, False
        if self.resumed_from is not None:
            logger.message(f"resumed from {self.resumed_from} at iteration {self.iteration}")
        for note in self.notes:
            logger.message(note)
        if self.skipped_images:
            logger.message(f"skipped {len(self.skipped_images)} unreadable image file(s) "
                           f"(--skip-bad-images), e.g. {self.skipped_images[0]}; all are "
                           f"listed in {self.out / 'config.json'}")
        try:
            self._train(logger)
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
                         {"train": self.state.last_train, "val": self.state.last_val})

    def _train(self, logger: RunLogger) -> None:
        """Steps until ``cfg.iterations``; logs, validates and saves at their intervals (and
        at the end); raises `TrainingStopped` after saving when a signal came."""
        cfg = self.cfg
        self.window.start_clock()
        train_mode(self.model, self.frozen)
        while self.iteration < cfg.iterations:
            epoch, start = divmod(self.iteration, self.data.steps_per_epoch)
            for x, y in self.data.train_batches(epoch, start):
                t0 = time.perf_counter()
                self.train_step(x, y)
                self.state.elapsed_s += time.perf_counter() - t0
                it = self.iteration
                done = it >= cfg.iterations
                if it % cfg.log_every == 0 or done:
                    logger.log(self.log_window())
                if it % cfg.eval_every == 0 or done:
                    row = self.validate()
                    train_mode(self.model, self.frozen)
                    if row:
                        logger.log(row)
                if it % cfg.save_every == 0 or done or self._snapshot:
                    self.save()
                if self._snapshot and self.dist.is_main:
                    snapshot_taken(self.out)
                    logger.message(f"snapshot: saved iteration {it} to {self.out / LAST} "
                                   f"on request; training goes on")
                logger.advance(it, self.state.last_train, self.state.last_val)
                if self._stop_signal is not None:
                    self.save()
                    name = signal.Signals(self._stop_signal).name
                    raise TrainingStopped(name, 128 + self._stop_signal)
                if done:
                    return
