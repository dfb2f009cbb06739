"""`resnets check`: is a finished run's validation error where the committed results put it?"""

from __future__ import annotations

import json

from ..experiments.check import DEFAULT_TOLERANCE, check_run


def register(sub) -> None:
    p = sub.add_parser(
        "check", help="compare a finished run with committed results of the same net",
        description="Compare the final validation error of RUN_DIR (a `resnets train` run "
                    "directory: config.json + metrics.jsonl) with the committed runs of the "
                    "same net in an experiment directory (summary.json + run directories), "
                    "e.g. results/paper-cifar. The interval is mean +- 2 std over the "
                    "committed seeds, or the single committed seed's error +- --tolerance. "
                    "Prints the versions and hardware of both sides and the config fields "
                    "that differ. Exit status: 0 inside, 1 outside, 2 not comparable "
                    "(another model, recipe or data/split, or an unfinished run). Data is "
                    "compared by the fingerprints the runs recorded (the same images at "
                    "another path are comparable), by file name for runs without one.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="your finished run directory")
    p.add_argument("--against", required=True, metavar="EXPERIMENT_DIR",
                   help="committed experiment directory, e.g. results/paper-cifar")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="points of validation error either side of a single committed seed's "
                        f"error (default {DEFAULT_TOLERANCE})")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the verdict")
    p.set_defaults(func=run)


def run(args) -> int:
    result = check_run(args.run_dir, args.against, tolerance=args.tolerance)
    for line in result.details:
        print(line)
    print(f"{result.verdict}: {result.reason}")
    if args.json:
        print(json.dumps({"status": result.status, "verdict": result.verdict,
                          "reason": result.reason, **result.record}))
    return result.status
