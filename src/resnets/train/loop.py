"""The training loop for the CIFAR recipes: one code path for CPU and GPU.

Exact resume by construction: every batch is a pure function of (seed, epoch, index) (see
`resnets.data.device_loader`), so the data state is just the iteration counter; the model,
optimizer, warm-up flag, metric accumulators and RNGs live in the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DeviceLoader, Normalization, load_image_set, split_indices
from ..errors import CheckpointError, UserError
from ..eval.evaluate import evaluate
from ..models import create_model, model_info
from .checkpoint import (
    BEST,
    Checkpoint,
    find_resume_checkpoint,
    read_checkpoint,
    restore_rng,
    rotate_and_save,
    save_checkpoint,
)
from .config import TrainConfig
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


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast + channels_last is the fast path on ``device``.

    True on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX), where oneDNN runs bf16
    convolutions in channels_last several times faster than fp32 NCHW (see benchmarks/).
    """
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to --out {out} ({e.strerror}). Choose a directory you "
                        f"can write to, e.g. --out runs/my-run.") from None
    return out


class Trainer:
    """Train ``cfg.model`` on the CIFAR-style data of ``cfg.data`` into ``out_dir``."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, *,
                 resume: str | None = None, quiet: bool = False):
        self.out = prepare_out_dir(Path(out_dir))
        ckpt = self._find_resume(resume)
        if ckpt is not None:
            cfg = self._merge_resumed_config(ckpt.meta["config"], cfg)
        self.cfg = cfg
        self.quiet = quiet
        self.device = resolve_device(cfg.device)
        fast = fast_bf16(self.device)
        self.amp_dtype = torch.bfloat16 if cfg.precision == "bf16" or (
            cfg.precision == "auto" and fast) else None
        self.channels_last = fast if cfg.channels_last is None else cfg.channels_last
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.seed)
        model_info(cfg.model)  # unknown names fail here, before data loading
        self._build_data()
        try:
            self.model = create_model(cfg.model, num_classes=len(self.classes),
                                      **cfg.model_kwargs)
        except (TypeError, ValueError) as e:  # bad model_kwargs from the flags or the recipe
            raise UserError(f"cannot build {cfg.model} with {cfg.model_kwargs}: {e}. Fix "
                            f"--shortcut / --unit or the recipe's model_kwargs.") from None
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # The compiled wrapper is used for steps only; checkpoints always see self.model.
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr,
                                         momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.buffers = list(self.model.buffers())
        self.buffer_backup = [b.clone() for b in self.buffers]
        self.iteration = 0
        self.in_warmup = cfg.warmup_lr is not None
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

    # ----------------------------------------------------------------------- setup
    def _find_resume(self, resume: str | None) -> Checkpoint | None:
        self.resumed_from: Path | None = None
        if resume is None:
            return None
        if resume == "auto":
            found = find_resume_checkpoint(self.out)
            if found is None:
                return None  # nothing to resume: start fresh
            ckpt, path = found
        else:
            path = Path(resume)
            ckpt = read_checkpoint(path)
            if ckpt.optimizer_state is None:
                raise UserError(f"{path} holds weights only (no optimizer state), so it cannot "
                                f"be resumed. Resume from last.safetensors of the run.")
        self.resumed_from = path
        return ckpt

    @staticmethod
    def _merge_resumed_config(stored: dict, cfg: TrainConfig) -> TrainConfig:
        current = cfg.to_dict()
        differ = sorted(k for k in stored if k not in RESUMABLE_CHANGES
                        and stored[k] != current.get(k))
        if differ:
            details = "; ".join(f"{k}: checkpoint {stored[k]!r}, now {current.get(k)!r}"
                                for k in differ)
            raise UserError(f"cannot resume: these options differ from the checkpoint's run "
                            f"({details}). Use the original options, or a new --out "
                            f"directory for a new run.")
        merged = {**stored, **{k: current[k] for k in RESUMABLE_CHANGES}}
        return TrainConfig.from_dict(merged)

    def _build_data(self) -> None:
        cfg = self.cfg
        data = load_image_set(cfg.data, split="train", cache_dir=cfg.cache_dir,
                              skip_bad_images=cfg.skip_bad_images)
        n = len(data.labels)
        if cfg.val_split >= n:
            raise UserError(f"--val-split {cfg.val_split} leaves no training images: the data "
                            f"({data.source}) holds only {n}.")
        train_idx, val_idx = split_indices(n, cfg.val_split, cfg.seed)
        if cfg.train_subset is not None and cfg.train_subset < len(train_idx):
            # A fixed, seeded subset: the same images for every run with this seed.
            g = torch.Generator().manual_seed(cfg.seed + 1)
            pick = torch.randperm(len(train_idx), generator=g)[: cfg.train_subset]
            train_idx = train_idx[pick.sort().values]
        self.classes = list(data.classes)
        self.skipped_images = list(data.skipped)  # unreadable files left out (--skip-bad-images)
        train_images, train_labels = data.images[train_idx], data.labels[train_idx]
        self.normalization = Normalization.fit(train_images, cfg.normalization)
        self.train_loader = DeviceLoader(
            train_images, train_labels, batch_size=cfg.batch_size, device=self.device,
            normalization=self.normalization, train=True, seed=cfg.seed, pad=cfg.pad,
            flip=cfg.flip, channels_last=self.channels_last)
        self.val_loader = None
        if len(val_idx):
            self.val_loader = DeviceLoader(
                data.images[val_idx], data.labels[val_idx], batch_size=max(cfg.batch_size, 500),
                device=self.device, normalization=self.normalization, train=False,
                channels_last=self.channels_last)
        self.data_source = data.source
        self.num_train, self.num_val = len(train_idx), len(val_idx)

    def _reset_window(self) -> None:
        z = torch.zeros((), device=self.device if hasattr(self, "device") else "cpu")
        self.window = {"loss": z.clone().double(), "wrong": z.clone().long(),
                       "seen": z.clone().long(), "steps": z.clone().long()}
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
            "image_size": [3, 32, 32],
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "metrics": {"train": self.last_train, "val": self.last_val},
            "device": device_name(self.device),
            "data_source": self.data_source,
            "train_state": {
                "in_warmup": self.in_warmup,
                "nonfinite_in_row": self.nonfinite_in_row,
                "nonfinite_total": self.nonfinite_total,
                "best_val_error": None if math.isinf(self.best_val_error)
                else self.best_val_error,
                "elapsed_s": self.elapsed,
            },
        }

    def save(self) -> Path:
        return rotate_and_save(self.out, model=self.model, meta=self._meta(),
                               optimizer=self.optimizer, extra=self.window, include_rng=True)

    def _restore(self, ckpt: Checkpoint) -> None:
        if list(ckpt.meta["classes"]) != self.classes:
            # Same count but other names would train on silently permuted labels.
            raise CheckpointError(
                f"cannot resume from {self.resumed_from}: its classes "
                f"({', '.join(ckpt.meta['classes'])}) differ from those of {self.data_source} "
                f"({', '.join(self.classes)}). Resume with the run's original --data, or start "
                f"a new run in another --out directory.")
        self.model.load_state_dict(ckpt.model_state, strict=True)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        st = ckpt.meta["train_state"]
        self.iteration = ckpt.iteration
        self.in_warmup = st["in_warmup"]
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
        self._truncate_metrics(self.iteration)

    def _truncate_metrics(self, iteration: int) -> None:
        """Drop log lines written after the checkpoint: the resumed run writes them again."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # blank, or torn by a process killed while writing it
            if row["iteration"] <= iteration:
                keep.append(line)
        path.write_text("".join(line + "\n" for line in keep))

    # ------------------------------------------------------------------- the loop
    def lr(self) -> float:
        c = self.cfg
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
        # One scalar sync per step buys the guarantee that a NaN never reaches the weights.
        if not torch.isfinite(loss).item():
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
        seen = int(self.window["seen"].item())  # the host sync that logging needs
        now = time.perf_counter()
        dt = now - self.window_start
        row = {
            "kind": "train",
            "iteration": self.iteration,
            "epoch": self.iteration / len(self.train_loader),
            "lr": self.lr(),
            "train_loss": self.window["loss"].item() / seen if seen else float("nan"),
            "train_error": self.window["wrong"].item() / seen if seen else float("nan"),
            "img_per_s": self.window_images / dt if dt > 0 else 0.0,
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
        if self.val_loader is None:
            return None
        res = evaluate(self.step_model, self.val_loader.epoch_batches(0), len(self.classes),
                       autocast_dtype=self.amp_dtype)
        row = {"kind": "val", "iteration": self.iteration, "val_loss": res["loss"],
               "val_error": res["top1_error"], "val_top5_error": res["top5_error"],
               "elapsed_s": self.elapsed}
        self.last_val = row
        if res["top1_error"] < self.best_val_error:
            self.best_val_error = res["top1_error"]
            save_checkpoint(self.out / BEST, model=self.model,
                            meta={**self._meta(), "kind": "weights"})
        return row

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_signal = signum

    def fit(self) -> RunResult:
        """Run to ``cfg.iterations`` (or until a signal); returns how it ended."""
        from .progress import RunLogger

        cfg = self.cfg
        logger = RunLogger(self.out, cfg, start=self.iteration, quiet=self.quiet,
                           describe=self.describe())
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        stopped, code = None, 0
        if self.resumed_from is not None:
            logger.message(f"resumed from {self.resumed_from} at iteration {self.iteration}")
        if self.skipped_images:
            logger.message(f"skipped {len(self.skipped_images)} unreadable image file(s) "
                           f"(--skip-bad-images), e.g. {self.skipped_images[0]}; all are "
                           f"listed in {self.out / 'config.json'}")
        self.window_start, self.window_images = time.perf_counter(), 0
        self.model.train()
        try:
            while self.iteration < cfg.iterations:
                epoch, start = divmod(self.iteration, len(self.train_loader))
                for x, y in self.train_loader.epoch_batches(epoch, start):
                    t0 = time.perf_counter()
                    self.train_step(x, y)
                    self.elapsed += time.perf_counter() - t0
                    it = self.iteration
                    done = it >= cfg.iterations
                    if it % cfg.log_every == 0 or done:
                        logger.log(self.log_window())
                    if it % cfg.eval_every == 0 or done:
                        row = self.validate()
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
        except TrainingStopped as e:
            stopped, code = str(e), e.exit_code
            logger.message(
                f"{stopped}: stopped at iteration {self.iteration} after saving "
                f"{self.out / 'last.safetensors'}. Resume with the same command plus "
                f"--resume auto (or --resume {self.out / 'last.safetensors'}).")
        except NonFiniteLoss:
            self.save()
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            logger.close(finished=stopped is None)
        return RunResult(self.iteration, stopped, code,
                         {"train": self.last_train, "val": self.last_val})

    def describe(self) -> dict:
        return {
            "model": self.cfg.model,
            "device": device_name(self.device),
            "precision": "bf16" if self.amp_dtype is not None else "fp32",
            "channels_last": self.channels_last,
            "train_images": self.num_train,
            "val_images": self.num_val,
            "steps_per_epoch": len(self.train_loader),
            "data_source": self.data_source,
            "skipped_images": len(self.skipped_images),
            "skipped_files": self.skipped_images,
            "classes": self.classes,
            "normalization": self.normalization.kind,
        }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
