"""The paper's CIFAR experiments: which nets each one trains and how its table reads.

Every experiment trains each of its nets once per seed (``<label>-seed<s>`` run directories)
and reports per net: n, mean +- std, best and worst of the error, beside the paper's number.
Errors are those of the final (last-iteration) weights, the paper's protocol; `best`
checkpoints are chosen on validation data only and are never what a table reports.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ..analysis.curves import describe_setups, plot_panels, read_metrics
from ..data import describe_data
from ..errors import UserError
from ..models import UNITS
from . import paper
from .runner import PRESETS, Experiment, Variant

PROTOCOL_NOTE = ("Errors of the final (last-iteration) weights. Validation error: images held "
                 "out of the training set ('-' when trained on all images), never test data "
                 "and never used to pick weights.")


def setup_note(rows: list[dict]) -> str:
    """What the rows' runs trained on and how long, from each run's own config: one sentence
    when they agree, else one per run. Runs not started are left out while any has."""
    started = [r for r in rows if r["iterations"]] or rows
    return describe_setups({r["label"]: r["setup"] for r in started})


PAPER_TABLE6_NOTE = ("The paper's column: its CIFAR-10 test error, of nets trained on all 50k "
                     "training images (the paper held 5k of them out only to choose the "
                     "schedule).")


def test_column_note(rows: list[dict]) -> str:
    """What the test-error column measures: the paper's Table 6 protocol only when every net
    was trained on all the training images (``--val-split 0 --test``)."""
    tested = [r for r in rows if r.get("test_error") is not None]
    if tested and all(r.get("trained_on_all") for r in tested):
        return ("Test error: the source's test split, nets trained on all its training "
                "images: the paper's Table 6 protocol.")
    return ("Test error: the source's test split, of nets trained without their held-out "
            "validation images, so not the paper's protocol (its Table 6 nets were trained on "
            "all 50k images; holding 5k out only chose the schedule): `resnets experiment "
            "table6 --val-split 0 --test` runs that protocol.")


# Depths each experiment trains when --depths is not given, per preset: the paper's, or ones
# that 2 CPU cores finish in minutes.
DEFAULT_DEPTHS: dict[str, dict[str, tuple[int, ...]]] = {
    "table6": {"paper": (20, 32, 44, 56, 110), "cpu-mini": (20, 32)},
    "degradation": {"paper": (20, 32, 44, 56), "cpu-mini": (20, 56)},
    "shortcuts": {"paper": (32,), "cpu-mini": (20,)},
    "preact": {"paper": (110,), "cpu-mini": (20,)},
}


def _depths(spec: str | None, default: tuple[int, ...]) -> list[int]:
    if not spec:
        return list(default)
    try:
        return [int(d) for d in spec.split(",")]
    except ValueError:
        raise UserError(f"--depths must be comma-separated integers, got {spec!r}.") from None


def _depth(model: str) -> int:
    return int("".join(c for c in model if c.isdigit()))


def parse_seeds(spec: str | int) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``"0,4,7"`` (or ``"5,"``) means exactly those."""
    text = str(spec).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds takes a count N (seeds 0..N-1) or distinct non-negative "
                        f"seeds separated by commas, e.g. 3 or 0,1,2; got {spec!r}.")
    return seeds


def _seeded(label: str, model: str, seeds: str | int, **kw) -> list[Variant]:
    return [Variant(f"{label}-seed{s}", model, seed=s, **kw) for s in parse_seeds(seeds)]


# ------------------------------------------------------------------------------ statistics
def error_stats(values: list[float | None]) -> dict | None:
    """n, mean, std (None for one run), best and worst of errors given as fractions."""
    xs = [100 * v for v in values if v is not None]
    if not xs:
        return None
    return {"n": len(xs), "mean": statistics.mean(xs),
            "std": statistics.stdev(xs) if len(xs) > 1 else None,
            "best": min(xs), "worst": max(xs)}


def mean_std(st: dict | None) -> str:
    """``7.10 ± 0.20`` for several runs; one run has no spread and says so: ``7.10 (n = 1)``."""
    if st is None:
        return "-"
    if st["n"] == 1:
        return f"{st['mean']:.2f} (n = 1)"
    return f"{st['mean']:.2f} ± {st['std']:.2f}"


def best_of(st: dict | None) -> str:
    """The paper's ResNet-110 format: ``best (mean ± std)``."""
    if st is None:
        return "-"
    if st["n"] == 1:
        return f"{st['best']:.2f} (n = 1)"
    return f"{st['best']:.2f} ({st['mean']:.2f} ± {st['std']:.2f})"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def group_rows(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    return groups


STAT_HEADER = "n | val error mean ± std (%) | best | worst | best (mean ± std)"


def stat_cells(rs: list[dict], key: str = "val_error") -> str:
    st = error_stats([r[key] for r in rs])
    if st is None:
        return "0 | - | - | - | -"
    return (f"{st['n']} | {mean_std(st)} | {st['best']:.2f} | {st['worst']:.2f} | "
            f"{best_of(st)}")


def _table(header: str, lines: list[str], rows: list[dict], note: str = PROTOCOL_NOTE) -> str:
    cols = header.count("|") - 1
    return "\n".join([f"{note} {setup_note(rows)}", "", header, "|" + "---|" * cols,
                      *lines]) + "\n"


# ----------------------------------------------------------------------------- experiments
def table6(depths: str | None, seeds: str | int, preset: str = "paper") -> Experiment:
    ds = _depths(depths, DEFAULT_DEPTHS["table6"][preset])
    variants = [v for d in ds for v in _seeded(f"resnet{d}", f"resnet{d}", seeds, group=str(d))]

    def summarize(rows, summary):
        groups = group_rows(rows)
        lines = [f"| {d} | {groups[str(d)][0]['params'] / 1e6:.2f} | "
                 f"{paper.TABLE6_PARAMS_M.get(d, '-')} | {paper.TABLE6_ERROR.get(d, '-')} | "
                 f"{stat_cells(groups[str(d)])} |" for d in ds]
        summary["paper"] = {"test_error": paper.TABLE6_ERROR, "params_m": paper.TABLE6_PARAMS_M}
        summary["stats"] = {str(d): error_stats([r["val_error"] for r in groups[str(d)]])
                            for d in ds}
        header = (f"| depth | params (M) | paper params (M) | paper test error (%) | "
                  f"{STAT_HEADER} |")
        note = f"{PROTOCOL_NOTE} {PAPER_TABLE6_NOTE}"
        if any(r.get("test_error") is not None for r in rows):
            # The paper's protocol only where every net trained on all images.
            note = f"{note} {test_column_note(rows)}"
            summary["test_stats"] = {str(d): error_stats([r.get("test_error")
                                                          for r in groups[str(d)]]) for d in ds}
            lines = [f"{line} {mean_std(summary['test_stats'][str(d)])} |"
                     for line, d in zip(lines, ds, strict=True)]
            header += " our test error mean ± std (%) |"
        return _table(header, lines, rows, note), []

    return Experiment("table6", "Table 6: CIFAR-10 error of ResNets by depth", variants,
                      summarize)


def degradation(depths: str | None, seeds: str | int, out: Path,
                preset: str = "paper") -> Experiment:
    ds = _depths(depths, DEFAULT_DEPTHS["degradation"][preset])
    variants = [v for kind in ("plain", "resnet") for d in ds
                for v in _seeded(f"{kind}{d}", f"{kind}{d}", seeds, group=f"{kind}{d}")]

    def summarize(rows, summary):
        panels = {"plain": {}, "ResNet": {}}
        for r in rows:
            panel = "plain" if r["model"].startswith("plain") else "ResNet"
            panels[panel][r["label"]] = read_metrics(out / r["run_dir"])
        fig = plot_panels(panels, out / "degradation.png",
                          title="CIFAR-10 (dashed: training error, solid: validation error)")
        lines = []
        for model, rs in group_rows(rows).items():
            train, val = (error_stats([r[k] for r in rs]) for k in ("train_error", "val_error"))
            lines.append(f"| {model} | {_depth(model)} | {rs[0]['params'] / 1e6:.2f} | "
                         f"{len(rs)} | {mean_std(train)} | {mean_std(val)} |")
        summary["checks"] = degradation_checks(rows, ds)
        summary["paper_claim"] = paper.DEGRADATION_CLAIM
        lines.append("")
        lines += [f"- {c['claim']}: **{'yes' if c['holds'] else 'no'}** ({c['detail']})"
                  for c in summary["checks"]]
        header = ("| net | depth | params (M) | n | final train error (%) | "
                  "final val error (%) |")
        return _table(header, lines, rows), [fig]

    return Experiment("degradation", "Fig. 6: the degradation problem, plain vs residual",
                      variants, summarize)


def degradation_checks(rows: list[dict], depths: list[int]) -> list[dict]:
    """The paper's Fig. 6 statements, on the mean final training error of each net."""
    err = {model: statistics.mean(r["train_error"] for r in rs)
           for model, rs in group_rows([{**r, "group": r["model"]} for r in rows]).items()}
    lo, hi = min(depths), max(depths)
    p_lo, p_hi, r_lo, r_hi = (err[f"plain{lo}"], err[f"plain{hi}"], err[f"resnet{lo}"],
                              err[f"resnet{hi}"])
    return [
        {"claim": f"plain-{hi} trains to a higher training error than plain-{lo}",
         "holds": p_hi > p_lo, "detail": f"{100 * p_hi:.2f}% vs {100 * p_lo:.2f}%"},
        {"claim": f"resnet-{hi} does not train worse than resnet-{lo}",
         "holds": r_hi <= r_lo + 0.01,
         "detail": f"{100 * r_hi:.2f}% vs {100 * r_lo:.2f}% (1 point tolerance)"},
        {"claim": f"resnet-{hi} trains better than plain-{hi}",
         "holds": r_hi < p_hi, "detail": f"{100 * r_hi:.2f}% vs {100 * p_hi:.2f}%"},
    ]


def shortcuts(depths: str | None, seeds: str | int, preset: str = "paper") -> Experiment:
    d = _depths(depths, DEFAULT_DEPTHS["shortcuts"][preset])[0]
    variants = [v for opt in ("A", "B", "C")
                for v in _seeded(f"resnet{d}-{opt}", f"resnet{d}", seeds,
                                 model_kwargs={"shortcut": opt}, group=opt)]
    variants += _seeded(f"plain{d}", f"plain{d}", seeds, group="plain")

    def summarize(rows, summary):
        lines = []
        for opt, rs in group_rows(rows).items():
            train = error_stats([r["train_error"] for r in rs])
            lines.append(f"| {opt} | {rs[0]['params']:,} | {mean_std(train)} | "
                         f"{stat_cells(rs)} | {paper.SHORTCUT_IMAGENET[opt][0]} |")
        header = (f"| shortcut | params | final train error (%) | {STAT_HEADER} | "
                  f"paper ResNet-34 ImageNet top-1 (%) |")
        return _table(header, lines, rows), []

    return Experiment("shortcuts", f"Shortcut options A/B/C and plain on CIFAR resnet{d}",
                      variants, summarize)


def preact(depths: str | None, seeds: str | int, preset: str = "paper") -> Experiment:
    d = _depths(depths, DEFAULT_DEPTHS["preact"][preset])[0]
    variants = [v for u in UNITS for v in _seeded(f"resnet{d}-{u}", f"resnet{d}", seeds,
                                                  model_kwargs={"unit": u}, group=u)]

    def summarize(rows, summary):
        lines = [f"| {unit} | {stat_cells(rs)} | {paper.PREACT_ERROR[unit][110]} | "
                 f"{paper.PREACT_ERROR[unit][164]} |" for unit, rs in group_rows(rows).items()]
        header = f"| unit | {STAT_HEADER} | paper ResNet-110 (%) | paper ResNet-164 (%) |"
        return _table(header, lines, rows), []

    return Experiment("preact", f"Residual-unit variants (1603.05027) on CIFAR resnet{d}",
                      variants, summarize)


# The full-schedule reproduction, in the order the runs are worth having: Fig. 6's four nets
# first (20 and 56, plain and residual), then the rest of Table 6; the last four are GPU jobs.
PAPER_CIFAR_NETS = ("resnet20", "plain20", "resnet56", "plain56", "resnet32", "resnet44",
                    "resnet110", "plain32", "plain44", "plain110")
PAPER_CIFAR_CPU_NETS = PAPER_CIFAR_NETS[:6]


def paper_cifar(nets: str | None, seeds: str | int, out: Path) -> Experiment:
    names = PAPER_CIFAR_CPU_NETS if not nets else tuple(n.strip() for n in nets.split(","))
    unknown = [n for n in names if n not in PAPER_CIFAR_NETS]
    if unknown:
        raise UserError(f"paper-cifar trains {', '.join(PAPER_CIFAR_NETS)}; not "
                        f"{', '.join(unknown)}.")
    variants = [v for n in names for v in _seeded(n, n, seeds, group=n)]

    def summarize(rows, summary):
        return paper_cifar_summary(rows, summary, out)

    return Experiment("paper-cifar", "The paper's CIFAR-10 nets at the full schedule",
                      variants, summarize, finalize=True)


def paper_cifar_summary(rows: list[dict], summary: dict, out: Path) -> tuple[str, list[Path]]:
    lines = [
        "Validation error: final (last-iteration) weights on the images held out of the "
        "shared JPEG training set (never trained on, never used to choose weights), as "
        "logged by training at its last evaluation, in the run's precision (bf16 on CPUs with "
        "AMX): the one number per net that the shipped weights (`val_error`) and the README "
        "give; `resnets eval` in fp32 may differ by a few images. The paper's column is its "
        "CIFAR-10 *test* error on the original images, of nets trained on all 50k training "
        "images (the shared data has no test split, so ours hold validation images out). "
        "Absolute errors "
        "are not comparable: JPEG quality ~75 costs a net trained on the original images "
        "about 10.7 points (akamaster's ResNet-20: 8.27% on the original test set, 18.97% on "
        "its JPEGs), and a ResNet-20 trained and tested on JPEGs errs 3.7 points above the "
        "paper (resnets' ResNet-20: 12.43% on unseen test JPEGs, paper 8.75%); the orderings "
        f"below are. {setup_note(rows)}",
        "",
        data_line(rows),
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


def data_line(rows: list[dict]) -> str:
    """What the runs trained on, by the fingerprints in their rows (`variant_row`)."""
    found = {r["data_fingerprint"]["sha256"]: r["data_fingerprint"] for r in rows
             if r.get("data_fingerprint")}
    if not found:
        return "Data: no fingerprint (no run has started, or the data is not readable here)."
    legacy = [r["label"] for r in rows if r.get("data_fingerprint")
              and not r.get("data_fingerprint_recorded")]
    note = (f" ({', '.join(legacy)}: from before fingerprints, so the data's fingerprint as "
            f"it is now)") if legacy else ""
    return "Data: " + "; ".join(describe_data(fp) for fp in found.values()) + note + "."


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


def build(name: str, *, depths: str | None, seeds: str | int, out: Path,
          preset: str = "paper") -> Experiment:
    """Experiment ``name``; ``depths`` (for paper-cifar: nets) None: its defaults for
    ``preset``."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: use {' or '.join(PRESETS)}.")
    if name == "table6":
        return table6(depths, seeds, preset)
    if name == "degradation":
        return degradation(depths, seeds, out, preset)
    if name == "shortcuts":
        return shortcuts(depths, seeds, preset)
    if name == "preact":
        return preact(depths, seeds, preset)
    if name == "paper-cifar":
        return paper_cifar(depths, seeds, out)
    raise UserError(f"unknown experiment {name!r}")
