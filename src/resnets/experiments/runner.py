"""Run one of the paper's CIFAR experiments: a list of training runs plus a summary.

Each variant trains into ``OUT/<label>/`` through the normal `Trainer` (same checkpoints, same
resume), so an interrupted experiment continues where it stopped and finished runs are reused.
The summary (``summary.json``, ``table.md`` and figures) is written at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..analysis.curves import describe_setup, read_metrics, read_run_record, segment_devices
from ..checkpoint import (
    FINAL,
    LAST,
    PREVIOUS,
    Checkpoint,
    build_model,
    read_newest,
    save_checkpoint,
)
from ..config import TrainConfig, rescale_milestones, resolve_config
from ..data import data_fingerprint, load_image_set
from ..errors import UserError
from ..eval.checkpoint_eval import evaluate_checkpoint
from ..models import count_params, create_model
from ..train.loop import Trainer
from ..train.rundir import RunLock
from ..version import versions
from .parallel import Job, log_path, run_jobs


class ExperimentStopped(UserError):
    """A signal stopped the experiment; everything trained so far is saved."""

# Presets: the paper's full schedule (a GPU job), and one that shows the phenomenon on 2 CPU
# cores in minutes: a fixed 10k-image subset, 2k validation images, a short step schedule.
PRESETS: dict[str, dict] = {
    "paper": {},
    "cpu-mini": {"train_subset": 10000, "val_split": 2000, "iterations": 800,
                 "milestones": [600], "eval_every": 200, "save_every": 200, "log_every": 50},
}


@dataclass(frozen=True)
class Variant:
    label: str  # run directory name and legend entry
    model: str  # registered model name
    model_kwargs: dict = field(default_factory=dict)
    seed: int = 0
    group: str = ""  # panel / table group (e.g. "plain" or "residual")


@dataclass
class Experiment:
    name: str
    title: str
    variants: list[Variant]
    summarize: Callable[[list[dict], dict], tuple[str, list[Path]]]  # rows -> markdown, figures
    finalize: bool = False  # finished runs keep weights only (final + best), not training state


def variant_config(v: Variant, base: dict) -> TrainConfig:
    base = dict(base)
    return resolve_config(base.pop("recipe", "cifar10-paper"),
                          **{**base, "model": v.model, "model_kwargs": v.model_kwargs,
                             "seed": v.seed})


def variant_row(v: Variant, cfg: TrainConfig, run_dir: Path, ckpt: Checkpoint | None,
                fingerprint: dict | None = None) -> dict:
    """A run's numbers so far (``ckpt``: its newest record): final ones when it finished,
    progress when it did not. Its errors are the ones logged by training (validation: at its
    last evaluation, in the run's precision), the one number per net that tables, reports and
    the shipped weights give. ``data_fingerprint`` is what the run recorded, else
    ``fingerprint`` (the experiment's data now, for runs from before fingerprints), marked by
    ``data_fingerprint_recorded``."""
    rows = read_metrics(run_dir)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    devices = segment_devices(rows)
    record = read_run_record(run_dir)
    return {
        "label": v.label, "group": v.group, "model": v.model, "model_kwargs": v.model_kwargs,
        "seed": v.seed, "run_dir": v.label,
        "params": count_params(create_model(v.model, **v.model_kwargs)),
        "iterations": ckpt.iteration if ckpt else 0,
        "target_iterations": cfg.iterations,
        "finished": bool(ckpt) and ckpt.iteration >= cfg.iterations,
        "train_error": train[-1]["train_error"] if train else None,
        "val_error": val[-1]["val_error"] if val else None,
        "best_val_error": min((r["val_error"] for r in val), default=None),
        "wall_s": ckpt.meta["train_state"]["elapsed_s"] if ckpt else 0.0,
        "device": ckpt.meta["device"] if ckpt else None,
        "devices": devices or ([ckpt.meta["device"]] if ckpt else []),
        # the run's data and schedule from its own config.json (from the options before it
        # started), so that tables describe what ran, not the recipe
        "setup": describe_setup(record["config"], record["run"]) if record
        else describe_setup(cfg.to_dict()),
        "data_fingerprint": (ckpt and ckpt.meta.get("data_fingerprint")) or fingerprint,
        "data_fingerprint_recorded": bool(ckpt and ckpt.meta.get("data_fingerprint")),
    }


def current_fingerprint(cfg: TrainConfig) -> dict | None:
    """The fingerprint of ``cfg``'s data as it is now (decoded-cache hit: under a second), for
    runs that predate fingerprints; None where it cannot be read here (nothing downloaded)."""
    try:
        data = load_image_set(cfg.data, split="train", cache_dir=cfg.cache_dir, download=False,
                              skip_bad_images=cfg.skip_bad_images)
    except UserError:
        return None
    return data_fingerprint(data)


def _finished(newest: tuple[Path, Checkpoint] | None, cfg: TrainConfig) -> bool:
    return newest is not None and newest[1].iteration >= cfg.iterations


def finalize_run(run_dir: Path, iterations: int, newest: tuple[Path, Checkpoint] | None
                 ) -> Path | None:
    """Keep a run that reached ``iterations`` lean: its last weights (``newest``, as
    `read_newest` gives it) become ``final.safetensors`` (weights only) and the training-state
    files (weights + optimizer + RNG) are removed. ``best`` stays."""
    if newest is None or newest[0].name != LAST or newest[1].iteration < iterations:
        return None  # unfinished, or finalized already
    ckpt = newest[1]
    model = build_model(ckpt.meta)
    model.load_state_dict(ckpt.model_state, strict=True)
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "format_version",
                                                            "versions")}
    path = save_checkpoint(run_dir / FINAL, model=model, meta={**meta, "kind": "weights"})
    for name in (LAST, PREVIOUS):
        (run_dir / name).unlink(missing_ok=True)
    return path


def run_experiment(exp: Experiment, *, out: Path, preset: str, overrides: dict,
                   quiet: bool = False, parallel: int = 1, train: bool = True,
                   test: bool = False) -> dict:
    """Train every variant not yet finished (``parallel`` at a time), then summarise.

    ``train=False`` only summarises what the run directories hold (finished or not).
    ``test=True`` also measures every finished net's final weights on the test split of the
    data (the paper's final protocol: choose the schedule on 45k/5k, then train on all 50k
    with ``val_split=0`` and report test error); the source must have a test split."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: use {' or '.join(PRESETS)}.")
    if parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {parallel}.")
    out.mkdir(parents=True, exist_ok=True)
    given = {k: v for k, v in overrides.items() if v is not None}
    base = {**PRESETS[preset], **given}
    preset_its = PRESETS[preset].get("iterations")
    if "iterations" in given and "milestones" not in given and preset_its:
        # A longer or shorter preset keeps its schedule's shape (lr drop at 75%).
        base["milestones"] = rescale_milestones(PRESETS[preset]["milestones"], preset_its,
                                                given["iterations"])
    configs = {v.label: variant_config(v, base) for v in exp.variants}
    start = time.time()
    # Each run's newest checkpoint is read once here and once more after it trains.
    newest = {v.label: read_newest(out / v.label) for v in exp.variants}
    todo = [v for v in exp.variants if not _finished(newest[v.label], configs[v.label])]
    stopped = False
    if train and todo:
        # Held while training: two runners cannot share the directory, and `resnets stop`
        # finds the runner here and stops it before it could start the next net.
        lock = RunLock(out)
        try:
            stopped = _train(exp, todo, configs, out, quiet, parallel)
        finally:
            lock.release()
        newest.update({v.label: read_newest(out / v.label) for v in todo})
    if exp.finalize:
        for v in exp.variants:
            final = finalize_run(out / v.label, configs[v.label].iterations, newest[v.label])
            if final:
                newest[v.label] = (final, newest[v.label][1])
    # Every variant reads the same data (only model and seed differ): one fingerprint serves
    # all the runs that did not record theirs.
    legacy = [v for v in exp.variants if newest[v.label]
              and "data_fingerprint" not in newest[v.label][1].meta]
    legacy_fp = current_fingerprint(configs[legacy[0].label]) if legacy else None
    rows = [variant_row(v, configs[v.label], out / v.label,
                        newest[v.label] and newest[v.label][1], legacy_fp)
            for v in exp.variants]
    if test:
        for row in rows:
            row["test_error"] = _test_error(newest[row["label"]][0], configs[row["label"]]) \
                if row["finished"] else None
            # The paper's test column is of nets trained on every training image.
            row["trained_on_all"] = configs[row["label"]].val_split == 0
    summary = {"experiment": exp.name, "title": exp.title, "preset": preset,
               "settings": base, "rows": rows, "versions": versions(),
               "wall_s": time.time() - start, "complete": all(r["finished"] for r in rows)}
    table, figures = exp.summarize(rows, summary)
    summary["figures"] = [f.name for f in figures]
    (out / "table.md").write_text(table)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)
    if stopped:
        raise ExperimentStopped(f"stopped before every run finished; the finished and stopped "
                                f"runs are saved in {out}. Run the same command again to "
                                f"continue.")
    return summary


def _test_error(weights: Path, cfg: TrainConfig) -> float:
    """Top-1 error of a finished run's final weights on the test split of its data."""
    res = evaluate_checkpoint(str(weights), data=cfg.data, split="test", device=cfg.device,
                              cache_dir=cfg.cache_dir)
    return res["top1_error"]


def _train(exp: Experiment, todo: list[Variant], configs: dict, out: Path, quiet: bool,
           parallel: int) -> bool:
    """Train the unfinished variants; True when a signal stopped them early."""
    n = len(exp.variants)
    index = {v.label: i for i, v in enumerate(exp.variants, 1)}
    if parallel == 1:
        for v in todo:
            print(f"[{exp.name} {index[v.label]}/{n}] {v.label}", flush=True)
            result = Trainer(configs[v.label], out / v.label, resume="auto", quiet=quiet).fit()
            if result.stopped:
                return True
        return False
    print(f"[{exp.name}] {len(todo)} of {n} runs to train, {parallel} at a time", flush=True)
    t0 = time.time()
    before = {v.label: _iterations(out / v.label) for v in todo}
    codes = run_jobs([Job(v.label, configs[v.label], out / v.label) for v in todo], parallel)
    images = sum((_iterations(out / v.label) - before[v.label]) * configs[v.label].batch_size
                 for v in todo)
    print(f"[{exp.name}] {images / max(time.time() - t0, 1e-9):.0f} img/s in total over "
          f"{len(codes)} run(s) in {time.time() - t0:.0f} s", flush=True)
    failed = {label: c for label, c in codes.items() if c not in (0, 128 + 15, 128 + 2)}
    if failed:
        print(f"[{exp.name}] failed: " + ", ".join(f"{k} (exit {c}, see {log_path(out / k)})"
                                                   for k, c in failed.items()), flush=True)
    return len(codes) < len(todo) or any(c in (128 + 15, 128 + 2) for c in codes.values())


def _iterations(run_dir: Path) -> int:
    found = read_newest(run_dir)
    return found[1].iteration if found else 0
