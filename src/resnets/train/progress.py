"""What a run writes while it trains: config.json, metrics.jsonl, TensorBoard events, a
progress bar (or plain log lines with --quiet), and the error-curve PNG at the end."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..analysis.curves import plot_run
from ..config import TrainConfig
from ..version import versions

ESTIMATE_AFTER = 10  # steps timed before the cost of the whole schedule is printed


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


class RunLogger:
    def __init__(self, out: Path, cfg: TrainConfig, *, start: int, quiet: bool, describe: dict,
                 enabled: bool = True):
        # tensorboard takes seconds to import: only a rank that writes logs pays for it
        from torch.utils.tensorboard import SummaryWriter

        self.enabled = enabled  # False on every DDP rank but 0: those write nothing
        if not enabled:
            return
        self.out = out
        self.cfg = cfg
        self.quiet = quiet
        record = {"config": cfg.to_dict(), "run": describe, "versions": versions()}
        (out / "config.json").write_text(json.dumps(record, indent=2) + "\n")
        path = out / "metrics.jsonl"
        torn = False
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        self.metrics = open(path, "a")  # noqa: SIM115 (closed in close())
        if torn:  # a line cut short by a crash: end it, so the next row stays a line of its own
            self.metrics.write("\n")
        # purge_step drops events a crashed run wrote after its last checkpoint.
        self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start or None)
        # Each stretch of training (start or resume) records where it ran: a long run may
        # continue on other machines, and its metrics should say which part ran where.
        self.metrics.write(json.dumps({"kind": "segment", "iteration": start,
                                       "device": describe["device"],
                                       "precision": describe["precision"],
                                       "precision_choice": describe.get("precision_choice"),
                                       "versions": record["versions"]}) + "\n")
        self.metrics.flush()
        self._first: tuple[int, float] | None = None  # (iteration, time) of the first step seen
        self._estimated = False
        self.bar = None
        if not quiet:
            self.bar = tqdm(total=cfg.iterations, initial=start, unit="it", dynamic_ncols=True,
                            desc=cfg.model, file=sys.stderr)
        self.message(f"training {describe['model']} on {describe['device']} "
                     f"({describe['precision']}, {describe['train_images']} train / "
                     f"{describe['val_images']} val images from {describe['data_source']}); "
                     f"{cfg.iterations} iterations, {describe['steps_per_epoch']} per epoch; "
                     f"writing to {out}")
        if describe.get("precision_choice"):
            self.message(f"precision: {describe['precision_choice']}")
        if describe.get("validation"):
            self.message(f"validation: {describe['validation']['what']}; best checkpoint "
                         f"{describe['best_checkpoint']}")

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, flush=True)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        it = row["iteration"]
        for key, value in row.items():
            if key not in ("kind", "iteration") and isinstance(value, int | float):
                self.tb.add_scalar(f"{row['kind']}/{key}", value, it)
        if self.quiet:
            fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in row.items())
            print(fields, flush=True)

    def advance(self, iteration: int, train: dict, val: dict) -> None:
        if not self.enabled:
            return
        self._estimate(iteration)
        if self.bar is None:
            return
        self.bar.n = iteration
        post = {}
        if train:
            post.update(loss=f"{train['train_loss']:.3f}", err=f"{train['train_error']:.3f}",
                        lr=f"{train['lr']:.3g}", ips=f"{train['img_per_s']:.0f}")
        if val:
            post["val_err"] = f"{val['val_error']:.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(0)

    def _estimate(self, iteration: int) -> None:
        """After the first few steps, say what the whole schedule costs on this device (the
        bar's ETA and the logged img/s only settle later)."""
        if self._first is None:
            self._first = (iteration, time.perf_counter())
            return
        it0, t0 = self._first
        if self._estimated or iteration - it0 < ESTIMATE_AFTER:
            return
        self._estimated = True
        per_step = (time.perf_counter() - t0) / (iteration - it0)
        left = (self.cfg.iterations - iteration) * per_step
        self.message(f"speed after {iteration - it0} steps: "
                     f"{self.cfg.batch_size / per_step:.0f} img/s; the remaining "
                     f"{self.cfg.iterations - iteration} iterations take about "
                     f"{_duration(left)} on this device")

    def close(self, finished: bool) -> None:
        """Close the logs and draw the curves; ``finished``: the schedule ran to its end, and
        only then is "done" printed (not after a stop, a crash or a full disk)."""
        if not self.enabled:
            return
        self.metrics.close()
        self.tb.close()
        if self.bar is not None:
            self.bar.close()

        try:
            png = plot_run(self.out)
        except (OSError, ValueError, KeyError) as e:
            # The figure is a convenience: failing to draw it must not hide how training ended.
            self.message(f"could not draw the training curves in {self.out} ({e}).")
            png = None
        if finished:
            files = "checkpoints, metrics.jsonl, tensorboard/" + (f" and {png.name}" if png else "")
            self.message(f"done: {files} in {self.out}")
