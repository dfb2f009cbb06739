"""Training curves in the style of the paper's Fig. 6: training error dashed, validation solid."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(runs: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """Plot error (%) against iterations for several runs on one axis; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i}"
        train = [(r["iteration"], 100 * r["train_error"]) for r in rows if r["kind"] == "train"]
        val = [(r["iteration"], 100 * r["val_error"]) for r in rows if r["kind"] == "val"]
        if train:
            ax.plot(*zip(*train, strict=True), "--", color=color, lw=1, label=f"{label} train")
        if val:
            ax.plot(*zip(*val, strict=True), "-", color=color, lw=2, label=f"{label} val")
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    return plot_curves({cfg["model"]: read_metrics(run_dir)}, run_dir / "curves.png",
                       title=f"{cfg['model']} on CIFAR-10 (dashed: train, solid: validation)")
