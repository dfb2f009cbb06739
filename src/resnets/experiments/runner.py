"""Run one of the paper's CIFAR experiments: a list of training runs plus a summary.

Each variant trains into ``OUT/<label>/`` through the normal `Trainer` (same checkpoints, same
resume), so an interrupted experiment continues where it stopped and finished runs are reused.
The summary (``summary.json``, ``table.md`` and figures) is written at the end.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..analysis.curves import plot_panels, read_metrics
from ..errors import UserError
from ..models import count_params, create_model
from ..train.checkpoint import (
    FINAL,
    LAST,
    PREVIOUS,
    build_model,
    read_checkpoint,
    save_checkpoint,
    versions,
)
from ..train.config import TrainConfig, resolve_config
from ..train.loop import Trainer
from . import paper
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


def _depths(spec: str | None, default: tuple[int, ...]) -> list[int]:
    if not spec:
        return list(default)
    try:
        return [int(d) for d in spec.split(",")]
    except ValueError:
        raise UserError(f"--depths must be comma-separated integers, got {spec!r}.") from None


def variant_config(v: Variant, base: dict) -> TrainConfig:
    base = dict(base)
    return resolve_config(base.pop("recipe", "cifar10-paper"),
                          **{**base, "model": v.model, "model_kwargs": v.model_kwargs,
                             "seed": v.seed})


def variant_row(v: Variant, cfg: TrainConfig, run_dir: Path) -> dict:
    """A run's numbers so far: final ones when it finished, progress when it did not."""
    rows = read_metrics(run_dir)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    ckpt = _newest_state(run_dir)
    devices = list(dict.fromkeys(r["device"] for r in rows if r["kind"] == "segment"))
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
    }


def _newest_state(run_dir: Path):
    """The run's newest checkpoint: the final weights of a finished run, else ``last``."""
    for name in (FINAL, LAST):
        try:
            return read_checkpoint(run_dir / name)
        except UserError:
            continue
    return None


def _finished(run_dir: Path, cfg: TrainConfig) -> bool:
    ckpt = _newest_state(run_dir)
    return ckpt is not None and ckpt.iteration >= cfg.iterations


def finalize_run(run_dir: Path, iterations: int) -> Path | None:
    """Keep a run that reached ``iterations`` lean: its last weights become
    ``final.safetensors`` (weights only) and the training-state files (weights + optimizer +
    RNG) are removed. ``best`` stays."""
    last = run_dir / LAST
    if not last.exists():
        return None
    ckpt = read_checkpoint(last)
    if ckpt.iteration < iterations:
        return None
    model = build_model(ckpt.meta)
    model.load_state_dict(ckpt.model_state, strict=True)
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "format_version",
                                                            "versions")}
    path = save_checkpoint(run_dir / FINAL, model=model, meta={**meta, "kind": "weights"})
    for name in (LAST, PREVIOUS):
        (run_dir / name).unlink(missing_ok=True)
    return path


def run_experiment(exp: Experiment, *, out: Path, preset: str, overrides: dict,
                   quiet: bool = False, parallel: int = 1, train: bool = True) -> dict:
    """Train every variant not yet finished (``parallel`` at a time), then summarise.

    ``train=False`` only summarises what the run directories hold (finished or not)."""
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
        base["milestones"] = [round(m * given["iterations"] / preset_its)
                              for m in PRESETS[preset]["milestones"]]
    configs = {v.label: variant_config(v, base) for v in exp.variants}
    start = time.time()
    todo = [v for v in exp.variants if not _finished(out / v.label, configs[v.label])]
    stopped = False
    if train and todo:
        stopped = _train(exp, todo, configs, out, quiet, parallel)
    if exp.finalize:
        for v in exp.variants:
            finalize_run(out / v.label, configs[v.label].iterations)
    rows = [variant_row(v, configs[v.label], out / v.label) for v in exp.variants]
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
    ckpt = _newest_state(run_dir)
    return ckpt.iteration if ckpt else 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.stdev(values):.2f}"


# ------------------------------------------------------------------------ experiments
def table6(depths: str | None, seeds: int) -> Experiment:
    ds = _depths(depths, (20, 32, 44, 56, 110))
    variants = [Variant(f"resnet{d}-seed{s}", f"resnet{d}", seed=s, group=str(d))
                for d in ds for s in range(seeds)]

    def summarize(rows, summary):
        lines = ["| depth | params (M) | paper params (M) | paper test error (%) | "
                 "our val error (%) | runs |", "|---|---|---|---|---|---|"]
        for d in ds:
            rs = [r for r in rows if r["group"] == str(d)]
            errs = [r["val_error"] for r in rs if r["val_error"] is not None]
            ref_params = paper.TABLE6_PARAMS_M.get(d, "-")
            ref_error = paper.TABLE6_ERROR.get(d, "-")
            lines.append(f"| {d} | {rs[0]['params'] / 1e6:.2f} | {ref_params} | {ref_error} | "
                         f"{_mean_std(errs) if errs else '-'} | {len(rs)} |")
        summary["paper"] = {"test_error": paper.TABLE6_ERROR, "params_m": paper.TABLE6_PARAMS_M}
        return "\n".join(lines) + "\n", []

    return Experiment("table6", "Table 6: CIFAR-10 error of ResNets by depth", variants,
                      summarize)


def degradation(depths: str | None, seeds: int, out: Path) -> Experiment:
    ds = _depths(depths, (20, 56))
    variants = [Variant(f"{kind}{d}", f"{kind}{d}", group="plain" if kind == "plain"
                        else "residual") for kind in ("plain", "resnet") for d in ds]

    def summarize(rows, summary):
        panels = {
            "plain": {r["label"]: read_metrics(out / r["run_dir"]) for r in rows
                      if r["group"] == "plain"},
            "ResNet": {r["label"]: read_metrics(out / r["run_dir"]) for r in rows
                       if r["group"] == "residual"},
        }
        fig = plot_panels(panels, out / "degradation.png",
                          title="CIFAR-10 (dashed: training error, solid: validation error)")
        lines = ["| net | depth | params (M) | final train error (%) | final val error (%) |",
                 "|---|---|---|---|---|"]
        for r in rows:
            depth = int("".join(c for c in r["model"] if c.isdigit()))
            lines.append(f"| {r['label']} | {depth} | {r['params'] / 1e6:.2f} | "
                         f"{_pct(r['train_error'])} | {_pct(r['val_error'])} |")
        summary["checks"] = degradation_checks(rows, ds)
        summary["paper_claim"] = paper.DEGRADATION_CLAIM
        lines.append("")
        lines += [f"- {c['claim']}: **{'yes' if c['holds'] else 'no'}** ({c['detail']})"
                  for c in summary["checks"]]
        return "\n".join(lines) + "\n", [fig]

    return Experiment("degradation", "Fig. 6: the degradation problem, plain vs residual",
                      variants, summarize)


def degradation_checks(rows: list[dict], depths: list[int]) -> list[dict]:
    """The paper's Fig. 6 statements, evaluated on our final training errors."""
    err = {r["label"]: r["train_error"] for r in rows}
    lo, hi = min(depths), max(depths)
    checks = []
    p_lo, p_hi, r_lo, r_hi = (err[f"plain{lo}"], err[f"plain{hi}"], err[f"resnet{lo}"],
                              err[f"resnet{hi}"])
    checks.append({"claim": f"plain-{hi} trains to a higher training error than plain-{lo}",
                   "holds": p_hi > p_lo, "detail": f"{100 * p_hi:.2f}% vs {100 * p_lo:.2f}%"})
    checks.append({"claim": f"resnet-{hi} does not train worse than resnet-{lo}",
                   "holds": r_hi <= r_lo + 0.01,
                   "detail": f"{100 * r_hi:.2f}% vs {100 * r_lo:.2f}% (1 point tolerance)"})
    checks.append({"claim": f"resnet-{hi} trains better than plain-{hi}",
                   "holds": r_hi < p_hi, "detail": f"{100 * r_hi:.2f}% vs {100 * p_hi:.2f}%"})
    return checks


def shortcuts(depths: str | None, seeds: int) -> Experiment:
    d = _depths(depths, (32,))[0]
    variants = [Variant(f"resnet{d}-{opt}", f"resnet{d}", {"shortcut": opt}, group=opt)
                for opt in ("A", "B", "C")] + [Variant(f"plain{d}", f"plain{d}", group="plain")]

    def summarize(rows, summary):
        lines = ["| shortcut | params | final train error (%) | val error (%) | "
                 "paper ResNet-34 ImageNet top-1 (%) |", "|---|---|---|---|---|"]
        for r in rows:
            ref = paper.SHORTCUT_IMAGENET[r["group"]][0]
            lines.append(f"| {r['group']} | {r['params']:,} | {_pct(r['train_error'])} | "
                         f"{_pct(r['val_error'])} | {ref} |")
        return "\n".join(lines) + "\n", []

    return Experiment("shortcuts", f"Shortcut options A/B/C and plain on CIFAR resnet{d}",
                      variants, summarize)


def preact(depths: str | None, seeds: int) -> Experiment:
    from ..models import UNITS

    d = _depths(depths, (110,))[0]
    variants = [Variant(f"resnet{d}-{u}", f"resnet{d}", {"unit": u}, group=u) for u in UNITS]

    def summarize(rows, summary):
        lines = ["| unit | our val error (%) | paper ResNet-110 (%) | paper ResNet-164 (%) |",
                 "|---|---|---|---|"]
        for r in rows:
            ref = paper.PREACT_ERROR[r["group"]]
            lines.append(f"| {r['group']} | {_pct(r['val_error'])} | {ref[110]} | {ref[164]} |")
        return "\n".join(lines) + "\n", []

    return Experiment("preact", f"Residual-unit variants (1603.05027) on CIFAR resnet{d}",
                      variants, summarize)


# The full-schedule reproduction, in the order the runs are worth having: Fig. 6's four nets
# first (20 and 56, plain and residual), then the rest of Table 6; the last four are GPU jobs.
PAPER_CIFAR_NETS = ("resnet20", "plain20", "resnet56", "plain56", "resnet32", "resnet44",
                    "resnet110", "plain32", "plain44", "plain110")
PAPER_CIFAR_CPU_NETS = PAPER_CIFAR_NETS[:6]


def paper_cifar(nets: str | None, seeds: int, out: Path) -> Experiment:
    names = PAPER_CIFAR_CPU_NETS if not nets else tuple(n.strip() for n in nets.split(","))
    unknown = [n for n in names if n not in PAPER_CIFAR_NETS]
    if unknown:
        raise UserError(f"paper-cifar trains {', '.join(PAPER_CIFAR_NETS)}; not "
                        f"{', '.join(unknown)}.")
    variants = [Variant(f"{n}-seed{s}", n, seed=s, group=n) for n in names
                for s in range(seeds)]

    def summarize(rows, summary):
        return paper_cifar_summary(rows, summary, out)

    return Experiment("paper-cifar", "The paper's CIFAR-10 nets at the full schedule",
                      variants, summarize, finalize=True)


def _depth(model: str) -> int:
    return int("".join(c for c in model if c.isdigit()))


def paper_cifar_summary(rows: list[dict], summary: dict, out: Path) -> tuple[str, list[Path]]:
    lines = [
        "Validation error: final (64k-iteration) weights on the 5k images held out of the "
        "shared JPEG training set (45k/5k split, never trained on); the paper's column is its "
        "CIFAR-10 *test* error on the original images. Absolute errors are not comparable "
        "(JPEG quality ~75 costs about ten points); the orderings below are.",
        "",
        "| net | params (M) | paper test error (%) | our val error (%) | our train error (%) "
        "| iterations | device(s) | train time (h) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper_err = paper.TABLE6_ERROR.get(_depth(r["model"]), "-") \
            if r["model"].startswith("resnet") else "-"
        its = f"{r['iterations']}" + ("" if r["finished"] else
                                      f" of {r['target_iterations']} (in progress)")
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f} | {paper_err} | "
                     f"{_pct(r['val_error'])} | {_pct(r['train_error'])} | {its} | "
                     f"{'; '.join(r['devices']) or '-'} | {r['wall_s'] / 3600:.2f} |")
    checks = ordering_checks([r for r in rows if r["finished"]])
    summary["checks"] = checks
    summary["paper"] = {"test_error": paper.TABLE6_ERROR}
    lines.append("")
    if checks:
        lines += [f"- {c['claim']}: **{'yes' if c['holds'] else 'no'}** ({c['detail']})"
                  for c in checks]
    else:
        lines.append("- No pair of finished runs yet: the paper's orderings are checked when "
                     "both nets of a pair have finished.")
    figures = []
    fig6 = {"plain": {}, "ResNet": {}}
    for r in rows:
        if r["iterations"]:
            panel = "plain" if r["model"].startswith("plain") else "ResNet"
            fig6[panel][r["label"]] = read_metrics(out / r["run_dir"])
    if fig6["plain"] or fig6["ResNet"]:
        figures.append(plot_panels(
            {k: v for k, v in fig6.items() if v}, out / "degradation.png",
            title="CIFAR-10, full schedule (dashed: training error, solid: validation error)"))
    return "\n".join(lines) + "\n", figures


def ordering_checks(finished: list[dict]) -> list[dict]:
    """The paper's orderings (Fig. 6, Table 6) on finished runs: deeper plain nets train and
    validate worse, deeper ResNets better, and each ResNet beats its plain twin."""
    by_model: dict[str, list[dict]] = {}
    for r in finished:
        by_model.setdefault(r["model"], []).append(r)

    def mean(model: str, key: str) -> float | None:
        vals = [r[key] for r in by_model.get(model, []) if r[key] is not None]
        return statistics.mean(vals) if vals else None

    checks = []

    def check(claim: str, a: str, b: str, key: str) -> None:
        x, y = mean(a, key), mean(b, key)
        if x is not None and y is not None:
            what = "training" if key == "train_error" else "validation"
            checks.append({"claim": claim.format(what=what), "holds": x < y,
                           "detail": f"{a} {100 * x:.2f}% vs {b} {100 * y:.2f}%"})

    plain = sorted(_depth(m) for m in by_model if m.startswith("plain"))
    res = sorted(_depth(m) for m in by_model if m.startswith("resnet"))
    for key in ("train_error", "val_error"):
        for lo, hi in zip(plain, plain[1:], strict=False):  # consecutive finished depths
            check(f"plain-{hi} has a higher {{what}} error than plain-{lo}",
                  f"plain{lo}", f"plain{hi}", key)
        for lo, hi in zip(res, res[1:], strict=False):
            check(f"ResNet-{hi} has a lower {{what}} error than ResNet-{lo}",
                  f"resnet{hi}", f"resnet{lo}", key)
        for d in sorted(set(plain) & set(res)):
            check(f"ResNet-{d} has a lower {{what}} error than plain-{d}",
                  f"resnet{d}", f"plain{d}", key)
    return checks


def build(name: str, *, depths: str | None, seeds: int, out: Path) -> Experiment:
    if name == "table6":
        return table6(depths, seeds)
    if name == "degradation":
        return degradation(depths, seeds, out)
    if name == "shortcuts":
        return shortcuts(depths, seeds)
    if name == "preact":
        return preact(depths, seeds)
    if name == "paper-cifar":
        return paper_cifar(depths, seeds, out)
    raise UserError(f"unknown experiment {name!r}")
