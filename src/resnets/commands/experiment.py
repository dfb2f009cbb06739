"""`resnets experiment NAME`: one of the paper's CIFAR experiments, trained and summarised."""

from __future__ import annotations

from pathlib import Path

from ..experiments.catalog import build
from ..experiments.parallel import default_parallel
from ..experiments.runner import ExperimentStopped, run_experiment
from .train import add_option

# The training options an experiment may override (the rest come from its preset), with
# what the flag adds to the option's help.
OVERRIDES = {
    "data": "(default: none)",
    "device": "(default: auto)",
    "iterations": "(default: the preset's; milestones move with it)",
    "val_split": "(default: the preset's; paper 5000); with --test, 0 is the paper's final "
                 "Table 6 protocol",
    "cache_dir": "(default: none)",
}


def register(sub) -> None:
    p = sub.add_parser(
        "experiment", help="run one of the paper's CIFAR experiments",
        description="Train every net of an experiment into OUT/<run>/ (finished runs are "
                    "reused, stopped ones resumed) and write summary.json, table.md and "
                    "figures. --preset paper is the full 64k-iteration schedule (a GPU job); "
                    "--preset cpu-mini trains 800 iterations on a fixed 10k-image subset "
                    "with 2k validation images, enough to show each phenomenon on a CPU. "
                    "paper-cifar is the full-schedule reproduction of Fig. 6 and Table 6 "
                    "(`make reproduce`): finished nets keep final and best weights only. "
                    "SIGTERM or Ctrl-C stops every run after it saves; the same command "
                    "continues.")
    p.add_argument("name", choices=["table6", "degradation", "shortcuts", "preact",
                                    "paper-cifar"])
    p.add_argument("--out", required=True, help="experiment directory")
    p.add_argument("--preset", choices=["paper", "cpu-mini"], default="paper")
    p.add_argument("--depths", default=None,
                   help="comma-separated depths (default: the experiment's for the preset, "
                        "catalog.DEFAULT_DEPTHS)")
    p.add_argument("--nets", default=None,
                   help="paper-cifar: comma-separated nets (default: resnet20, plain20, "
                        "resnet56, plain56, resnet32, resnet44)")
    p.add_argument("--parallel", type=int, default=None,
                   help="runs trained at once, one process each (CPU threads are split "
                        "between them). Default: 1 on a CPU; on a GPU as many as its free "
                        "memory holds (2 GiB per run)")
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing: rebuild summary.json, table.md and figures from the "
                        "run directories as they are")
    p.add_argument("--seeds", default="1",
                   help="runs per net: a count N (seeds 0..N-1) or a list such as 0,1,2 "
                        "(tables: n, mean ± std, best, worst; default 1)")
    for name, default in OVERRIDES.items():  # as `resnets train` spells them
        add_option(p, name, default)
    p.add_argument("--test", action="store_true",
                   help="also measure every finished net's final weights on the test split "
                        "of --data (the official release, or a folder with test/); the table "
                        "gets a test-error column")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.out)
    depths = args.nets if args.name == "paper-cifar" else args.depths
    exp = build(args.name, depths=depths, seeds=args.seeds, out=out, preset=args.preset)
    overrides = {name: getattr(args, name) for name in OVERRIDES}
    try:
        run_experiment(exp, out=out, preset=args.preset, overrides=overrides, quiet=args.quiet,
                       parallel=args.parallel or default_parallel(args.device or "auto",
                                                                  len(exp.variants)),
                       train=not args.summary_only, test=args.test)
    except ExperimentStopped as e:
        print(f"resnets experiment: {e}")
        return 0  # a requested stop with everything saved is not a failure
    return 0
