"""Training curves in the style of the paper's Fig. 6: training error dashed, validation solid."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (train, val and segment records), in order.

    The one reader of that file. A line that is not a complete record is skipped: the last
    line of a process killed mid-write, or of a full disk, is torn, and a run must still be
    resumable, plottable and reportable.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("kind"), str) and isinstance(
                row.get("iteration"), int | float):
            rows.append(row)
    return rows


def segment_devices(rows: list[dict]) -> list[str]:
    """The distinct machines a run trained on, in order, from its segment records (one per
    stretch of training) as `read_metrics` returns them."""
    return list(dict.fromkeys(r["device"] for r in rows if r["kind"] == "segment"
                              and "device" in r))


def read_run_record(run_dir: str | Path) -> dict | None:
    """A run's ``config.json`` record (``config``: the resolved options, ``run``: what ran,
    e.g. image counts), or None before the run has started."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def describe_setup(config: dict, run: dict | None = None) -> str:
    """The data and schedule of one run, in words, from its own record: ``config`` (the
    resolved options) and ``run`` (what ran; its image counts win over the options when given),
    so that a table or report never describes a run by its recipe's defaults."""
    run = run or {}
    val = run.get("val_images", config["val_split"])
    train = run.get("train_images")
    if train is None:  # not started: the options say how many, not the data's size
        train = (f"{config['train_subset']:,}" if config.get("train_subset")
                 else "the rest of the" if val else "all the")
    else:
        train = f"{train:,}"
    data = (f"trained on {train} images, validated on {val:,} held out of the training set"
            if val else f"trained on {train} images, no validation split")
    steps = ", ".join(f"{m:,}" for m in config.get("milestones") or [])
    schedule = (f"{config['iterations']:,} iterations of batch {config['batch_size']}, lr "
                f"{config['lr']:g}" + (f", times {config['gamma']:g} at {steps}" if steps else "")
                + (f", after a warm-up at {config['warmup_lr']:g}" if config.get("warmup_lr")
                   else ""))
    return f"{data}; {schedule}"


def describe_setups(setups: dict[str, str]) -> str:
    """Several runs' `describe_setup` texts (by run label) as sentences: one when they agree."""
    if len(set(setups.values())) == 1:
        return f"Every run: {next(iter(setups.values()))}."
    return " ".join(f"{label}: {setup}." for label, setup in setups.items())


def draw_panel(ax, runs: dict[str, list[dict]], title: str) -> None:
    """Draw several runs' curves (rows as `read_metrics` returns them) on one matplotlib axis:
    training error dashed, validation error solid, one color per run."""
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i}"
        train = [(r["iteration"], 100 * r["train_error"]) for r in rows if r["kind"] == "train"]
        val = [(r["iteration"], 100 * r["val_error"]) for r in rows if r["kind"] == "val"]
        # a series of one point (a run shorter than its eval_every validates once) draws no
        # line, so each point is also a marker then
        if train:
            ax.plot(*zip(*train, strict=True), "--", color=color, lw=1, label=f"{label} train",
                    marker="o" if len(train) == 1 else None)
        if val:
            ax.plot(*zip(*val, strict=True), "-", color=color, lw=2, label=f"{label} val",
                    marker="o" if len(val) == 1 else None)
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a run stopped before its first log line has none
        ax.legend(fontsize=8)


def plot_panels(panels: dict[str, dict[str, list[dict]]], path: str | Path,
                title: str = "") -> Path:
    """One axis per panel (e.g. plain | ResNet, as Fig. 6), each with several runs' curves;
    training error dashed, validation error solid. Returns the PNG path."""
    # matplotlib is imported when a figure is drawn: it must pick its headless backend
    # before pyplot loads, and the cost stays out of every `import resnets`
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=120,
                             squeeze=False, sharey=True)
    for ax, (name, runs) in zip(axes[0], panels.items(), strict=True):
        draw_panel(ax, runs, name)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    return plot_panels({f"{cfg['model']} (dashed: train, solid: validation)":
                        {cfg["model"]: read_metrics(run_dir)}}, run_dir / "curves.png")
