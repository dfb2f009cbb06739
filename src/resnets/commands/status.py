"""`resnets status`: how far each run under a directory is, how fast, and who holds it."""

from __future__ import annotations

import json

from ..train.control import find_runs, run_status


def register(sub) -> None:
    p = sub.add_parser(
        "status", help="iteration, speed, ETA, errors and holder of each run under DIR",
        description="For a run directory (the --out of `resnets train`) or each run in an "
                    "experiment directory (e.g. results/paper-cifar): iteration of the "
                    "schedule, the newest checkpoint's iteration, images/s of the training "
                    "steps over the last stretch, ETA at that speed, the last training and "
                    "validation error, and whether a process holds it (its PID), it is "
                    "stopped, or it is finished. Reads the run's files; changes nothing.")
    p.add_argument("directory", metavar="DIR", help="a run or experiment directory")
    p.add_argument("--json", action="store_true", help="one JSON line per run instead")
    p.set_defaults(func=run)


def run(args) -> int:
    runs = find_runs(args.directory)
    statuses = [run_status(r) for r in runs]
    if args.json:
        for s in statuses:
            print(json.dumps(s.to_dict()))
        return 0
    rows = [("run", "iteration", "saved", "img/s", "ETA", "train err", "val err", "state")]
    for s in statuses:
        name = s.run if len(runs) == 1 else s.run[len(str(args.directory)):].lstrip("/")
        rows.append((
            name, f"{s.iteration:,} / {s.iterations:,}",
            "-" if s.saved_iteration is None else f"{s.saved_iteration:,}",
            "-" if s.images_per_s is None else f"{s.images_per_s:.0f}",
            "-" if s.eta_s is None else _duration(s.eta_s),
            _percent(s.train_error),
            "-" if s.val_error is None else f"{_percent(s.val_error)} @{s.val_iteration:,}",
            f"running (PID {s.pid})" if s.state == "running" and s.pid else s.state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min"
