"""Compare a finished run with committed results for the same net and recipe (`resnets check`).

The committed side is an experiment directory (`resnets experiment`): ``summary.json`` whose
``rows`` give each run's ``model``, ``seed``, final ``val_error`` and ``finished`` flag, and a
run directory per row (``run_dir``) whose ``config.json`` holds the resolved config, the run
record and the versions. The user's side is one run directory of `resnets train`
(``config.json`` + ``metrics.jsonl``); its final validation error is the last ``val`` row at
the configured number of iterations.

The verdict:

- ``inside`` (0): the final validation error lies in the committed interval: mean +- 2 std
  over the committed seeds of that net, or, with a single committed seed, its error +- a
  stated tolerance (1.5 points by default), since one run gives no spread to measure;
- ``outside`` (1): it does not;
- ``not comparable`` (2): another model, recipe (optimisation, schedule, augmentation) or data
  / held-out split, an unfinished run, or no finished committed run of the net.

Fields that only change speed or bookkeeping (device, precision, workers, seed, logging
intervals, ...) may differ; they are listed with the versions and hardware of both sides,
because they explain small differences.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analysis.curves import read_metrics, segment_devices
from ..data import describe_data, same_images
from ..errors import UserError

__all__ = ["DEFAULT_TOLERANCE", "INSIDE", "NOT_COMPARABLE", "OUTSIDE", "Check", "check_run"]

INSIDE, OUTSIDE, NOT_COMPARABLE = 0, 1, 2
DEFAULT_TOLERANCE = 1.5  # points of validation error, for a single committed seed

# Config fields that decide which net is trained.
MODEL_FIELDS = ("model", "model_kwargs")
# Fields that decide which images are trained on and held out. `data` is compared by the
# fingerprint of the images both runs recorded (the same archive sits at different paths on
# different machines, and another dataset may sit at the same path); runs from before
# fingerprints are compared by the data's file or folder name.
DATA_FIELDS = ("data", "val_split", "train_subset", "skip_bad_images", "num_classes")
# Speed switches and bookkeeping: free to differ (listed, never judged).
FREE_FIELDS = ("recipe", "cache_dir", "workers", "pipeline", "device", "precision",
               "channels_last", "compile", "deterministic", "seed", "log_every",
               "eval_every", "save_every", "max_nonfinite")
# Every other field (lr, schedule, batch size, augmentation, init, ...) is the recipe.


@dataclass
class Check:
    """The outcome of `check_run`: ``status`` (INSIDE, OUTSIDE, NOT_COMPARABLE), a one-line
    ``reason``, and the details printed before it."""

    status: int
    reason: str
    details: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)  # numbers for --json

    @property
    def verdict(self) -> str:
        return {INSIDE: "inside", OUTSIDE: "outside", NOT_COMPARABLE: "not comparable"}[
            self.status]


def _read_json(path: Path, what: str) -> dict:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: {what}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON ({e}): {what}") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} holds a JSON {type(record).__name__}, not an object: {what}")
    return record


def _run_record(run_dir: Path) -> dict:
    record = _read_json(run_dir / "config.json",
                        "a run directory of `resnets train` holds config.json (with "
                        "\"config\", \"run\" and \"versions\") and metrics.jsonl.")
    if not isinstance(record.get("config"), dict):
        raise UserError(f"{run_dir / 'config.json'} has no \"config\" object; it was not "
                        f"written by `resnets train`.")
    return record


def _data_name(data: Any) -> str:
    return "CIFAR-10 (torchvision download)" if data is None else Path(str(data)).name


def _differences(mine: dict, theirs: dict, fingerprints: tuple[dict | None, dict | None]
                 ) -> list[tuple[str, Any, Any]]:
    """``(field, mine, theirs)`` for each config field whose values differ; ``data`` by the
    images' fingerprints when both runs recorded one (then shown by description), else by
    name. A field only one side records is not compared (another package version)."""
    out = []
    mine_fp, their_fp = fingerprints
    for key in sorted(set(mine) & set(theirs)):
        a, b = mine[key], theirs[key]
        if key == "data" and mine_fp and their_fp:
            if not same_images(mine_fp, their_fp):
                out.append((key, describe_data(mine_fp), describe_data(their_fp)))
            continue
        if key == "data":
            a, b = _data_name(a), _data_name(b)
        if a != b:
            out.append((key, mine[key], theirs[key]))
    return out


def _fingerprint(record: dict, row: dict | None = None) -> dict | None:
    """The data fingerprint a run recorded in config.json, else the one its experiment
    summary row gives (runs from before fingerprints, measured when the summary was built)."""
    fp = (record.get("run") or {}).get("data_fingerprint")
    return fp or (row or {}).get("data_fingerprint")


def _kind(key: str) -> str:
    if key in MODEL_FIELDS:
        return "model"
    if key in DATA_FIELDS:
        return "data/split"
    return "free" if key in FREE_FIELDS else "recipe"


def final_val_error(run_dir: Path, iterations: int) -> float | None:
    """The last validation error logged at ``iterations`` (the run's end), or None."""
    rows = [r for r in read_metrics(run_dir)
            if r["kind"] == "val" and r["iteration"] == iterations and "val_error" in r]
    return float(rows[-1]["val_error"]) if rows else None


def _last_train_error(run_dir: Path) -> str:
    rows = [r for r in read_metrics(run_dir) if r["kind"] == "train" and "train_error" in r]
    return _pct(rows[-1]["train_error"]) if rows else "?"


def _versions(record: dict, devices: list[str]) -> dict[str, str]:
    v = record.get("versions") or {}
    run = record.get("run") or {}
    device = ", ".join(devices) or run.get("device") or "not recorded"
    return {"torch": v.get("torch", "?"), "torchvision": v.get("torchvision", "?"),
            "device": device}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def check_run(run_dir: str | Path, against: str | Path, *,
              tolerance: float = DEFAULT_TOLERANCE) -> Check:
    """Compare the finished run in ``run_dir`` with the committed runs of the same net in
    the experiment directory ``against``; ``tolerance`` (points of validation error) is the
    half-width of the interval when only one seed is committed. See the module docstring."""
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise UserError(f"--tolerance must be a positive number of points of validation "
                        f"error, got {tolerance}.")
    run_dir, against = Path(run_dir), Path(against)
    mine = _run_record(run_dir)
    cfg = mine["config"]
    summary = _read_json(against / "summary.json",
                         "--against takes an experiment directory of `resnets experiment` "
                         "(summary.json with \"rows\", and one run directory per row).")
    rows = summary.get("rows")
    if not isinstance(rows, list):
        raise UserError(f"{against / 'summary.json'} has no \"rows\" list; it was not written "
                        f"by `resnets experiment`.")
    model = cfg.get("model")
    details: list[str] = []

    def verdict(status: int, reason: str, **record) -> Check:
        return Check(status, reason, details, record)

    # The committed runs of that net.
    same = [r for r in rows if isinstance(r, dict) and r.get("model") == model]
    done = [r for r in same if r.get("finished") and r.get("val_error") is not None]
    if not done:
        have = sorted({str(r.get("model")) for r in rows if isinstance(r, dict)})
        why = (f"{len(same)} run(s) of {model} there, none finished with a validation error"
               if same else f"it holds {', '.join(have) or 'no runs'}")
        return verdict(NOT_COMPARABLE, f"no finished committed run of {model} in {against} "
                       f"({why}).")
    theirs = [_run_record(against / str(r.get("run_dir") or r.get("label"))) for r in done]
    details.append(f"your run {run_dir}: {model}, seed {cfg.get('seed')}, "
                   f"{cfg.get('iterations')} iterations")
    details.append(f"committed {against}: {len(done)} finished run(s) of {model}, seeds "
                   f"{', '.join(str(r.get('seed')) for r in done)}")

    # Both sides: versions and hardware.
    user_devices = segment_devices(read_metrics(run_dir))
    committed_devices = list(dict.fromkeys(d for r in done for d in r.get("devices") or []))
    ours, ref = _versions(mine, user_devices), _versions(theirs[0], committed_devices)
    for r in theirs[1:]:
        for key in ("torch", "torchvision"):
            other = _versions(r, [])[key]
            if other not in ref[key].split(" / "):
                ref[key] += f" / {other}"
    width = max(len(v) for v in ours.values()) + 2
    details.append(f"{'':<12} {'yours':<{width}} committed")
    for key in ("torch", "torchvision", "device"):
        details.append(f"{key:<12} {ours[key]:<{width}} {ref[key]}")

    # Config fields that differ from any committed seed's config, shown with every committed
    # value (a committed seed-0 run's seed is "0 vs 0, 1, 2", not "0 vs 1"); the data by its
    # fingerprint where both sides recorded one.
    mine_fp = _fingerprint(mine)
    their_fps = [_fingerprint(record, row) for record, row in zip(theirs, done, strict=True)]
    if mine_fp and all(their_fps):
        details.append(f"data compared by fingerprint: yours {describe_data(mine_fp)}; "
                       f"committed {describe_data(their_fps[0])}")
    else:
        who = "your run" if not mine_fp else "a committed run"
        details.append(f"data compared by file name only: {who} recorded no data fingerprint "
                       f"(written before resnets recorded them)")
    differing: dict[str, Any] = {}
    for record, fp in zip(theirs, their_fps, strict=True):
        for key, a, _ in _differences(cfg, record["config"], (mine_fp, fp)):
            differing.setdefault(key, a)

    def committed(record: dict, fp: dict | None, key: str) -> str:
        if key == "data" and mine_fp and fp:
            return json.dumps(describe_data(fp))
        return json.dumps(record["config"][key])

    diffs: dict[str, tuple[Any, str]] = {
        key: (a, ", ".join(dict.fromkeys(committed(r, fp, key)
                                         for r, fp in zip(theirs, their_fps, strict=True)
                                         if key in r["config"])))
        for key, a in sorted(differing.items())}
    if diffs:
        details.append("config fields that differ (yours vs committed):")
        for key, (a, b) in diffs.items():
            details.append(f"  {key}: {json.dumps(a)} vs {b} ({_kind(key)})")
    else:
        details.append("config fields that differ: none")
    blocking = [k for k in diffs if _kind(k) != "free"]
    if blocking:
        kinds = sorted({_kind(k) for k in blocking})
        shown = ", ".join(f"{k} {json.dumps(diffs[k][0])} vs {diffs[k][1]}" for k in blocking)
        return verdict(NOT_COMPARABLE, f"different {' and '.join(kinds)}: {shown}; the "
                       f"committed {model} runs are not a reference for this run.",
                       differing=blocking)

    # The user's run: finished, with a final validation error.
    iterations = cfg.get("iterations")
    error = final_val_error(run_dir, iterations) if isinstance(iterations, int) else None
    if error is None:
        val = [r for r in read_metrics(run_dir) if r["kind"] == "val"]
        at = f"its last is at iteration {val[-1]['iteration']}" if val else "it has none"
        return verdict(NOT_COMPARABLE, f"{run_dir} has no validation row at its final "
                       f"iteration {iterations} ({at}): let the run finish (with a val split) "
                       f"before checking it.")

    # The committed interval.
    errors = [float(r["val_error"]) for r in done]
    seeds = [r.get("seed") for r in done]
    mean = statistics.fmean(errors)
    if len(errors) >= 2:
        half = 2 * statistics.stdev(errors)
        rule = (f"mean +- 2 std over {len(errors)} committed seeds "
                f"({', '.join(str(s) for s in seeds)}: "
                f"{', '.join(_pct(e) for e in errors)})")
    else:
        half = tolerance / 100
        rule = (f"one committed seed ({seeds[0]}: {_pct(errors[0])}), so its error +- "
                f"{tolerance:g} points (--tolerance)")
    lo, hi = mean - half, mean + half
    details.append(f"committed interval [{_pct(lo)}, {_pct(hi)}]: {rule}")
    committed_train = [_pct(r["train_error"]) for r in done
                       if isinstance(r.get("train_error"), int | float)]
    details.append(f"your final val error {_pct(error)} (last train error "
                   f"{_last_train_error(run_dir)}; committed: "
                   f"{', '.join(committed_train) or 'not recorded'})")
    record = {"val_error": error, "interval": [lo, hi], "committed": errors,
              "seeds": seeds, "rule": "2std" if len(errors) >= 2 else "tolerance"}
    where = f"final val error {_pct(error)}"
    if lo <= error <= hi:
        return verdict(INSIDE, f"{where} is inside the committed interval "
                       f"[{_pct(lo)}, {_pct(hi)}] of {model}.", **record)
    side = "above" if error > hi else "below"
    return verdict(OUTSIDE, f"{where} is {side} the committed interval "
                   f"[{_pct(lo)}, {_pct(hi)}] of {model}.", **record)
