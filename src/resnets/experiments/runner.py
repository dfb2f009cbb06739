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
from ..train.checkpoint import LAST, read_checkpoint, versions
from ..train.config import TrainConfig, resolve_config
from ..train.loop import Trainer
from . import paper

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


def _depths(spec: str | None, default: tuple[int, ...]) -> list[int]:
    if not spec:
        return list(default)
    try:
        return [int(d) for d in spec.split(",")]
    except ValueError:
        raise UserError(f"--depths must be comma-separated integers, got {spec!r}.") from None


def run_variant(v: Variant, base: dict, out: Path, quiet: bool) -> dict:
    """Train one variant (or reuse its finished run) and return its final numbers."""
    cfg = resolve_config(base.pop("recipe", "cifar10-paper"),
                         **{**base, "model": v.model, "model_kwargs": v.model_kwargs,
                            "seed": v.seed})
    run_dir = out / v.label
    if not _finished(run_dir, cfg):
        Trainer(cfg, run_dir, resume="auto", quiet=quiet).fit()
    rows = read_metrics(run_dir)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    ckpt = read_checkpoint(run_dir / LAST)
    return {
        "label": v.label, "group": v.group, "model": v.model, "model_kwargs": v.model_kwargs,
        "seed": v.seed, "run_dir": v.label,
        "params": count_params(create_model(v.model, **v.model_kwargs)),
        "iterations": ckpt.iteration,
        "train_error": train[-1]["train_error"] if train else None,
        "val_error": val[-1]["val_error"] if val else None,
        "best_val_error": min((r["val_error"] for r in val), default=None),
        "wall_s": ckpt.meta["train_state"]["elapsed_s"],
        "device": ckpt.meta["device"],
    }


def _finished(run_dir: Path, cfg: TrainConfig) -> bool:
    if not (run_dir / LAST).exists():
        return False
    try:
        return read_checkpoint(run_dir / LAST).iteration >= cfg.iterations
    except UserError:
        return False


def run_experiment(exp: Experiment, *, out: Path, preset: str, overrides: dict,
                   quiet: bool = False) -> dict:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: use {' or '.join(PRESETS)}.")
    out.mkdir(parents=True, exist_ok=True)
    given = {k: v for k, v in overrides.items() if v is not None}
    base = {**PRESETS[preset], **given}
    preset_its = PRESETS[preset].get("iterations")
    if "iterations" in given and "milestones" not in given and preset_its:
        # A longer or shorter preset keeps its schedule's shape (lr drop at 75%).
        base["milestones"] = [round(m * given["iterations"] / preset_its)
                              for m in PRESETS[preset]["milestones"]]
    start = time.time()
    rows = []
    for i, v in enumerate(exp.variants, 1):
        print(f"[{exp.name} {i}/{len(exp.variants)}] {v.label}", flush=True)
        rows.append(run_variant(v, dict(base), out, quiet))
    summary = {"experiment": exp.name, "title": exp.title, "preset": preset,
               "settings": base, "rows": rows, "versions": versions(),
               "wall_s": time.time() - start}
    table, figures = exp.summarize(rows, summary)
    summary["figures"] = [f.name for f in figures]
    (out / "table.md").write_text(table)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)
    return summary


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


def build(name: str, *, depths: str | None, seeds: int, out: Path) -> Experiment:
    if name == "table6":
        return table6(depths, seeds)
    if name == "degradation":
        return degradation(depths, seeds, out)
    if name == "shortcuts":
        return shortcuts(depths, seeds)
    if name == "preact":
        return preact(depths, seeds)
    raise UserError(f"unknown experiment {name!r}")
