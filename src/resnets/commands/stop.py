"""`resnets stop`: stop the runs under a directory by their holders' PIDs; each saves first."""

from __future__ import annotations

from ..train.control import stop


def register(sub) -> None:
    p = sub.add_parser(
        "stop", help="stop every run (and experiment runner) under DIR; each saves first",
        description="Send SIGTERM to each process that holds a run directory under DIR (its "
                    "PID is recorded in the run's .lock), and to the experiment runner "
                    "holding DIR itself, then wait until each has saved its checkpoint and "
                    "let go. Processes that hold nothing under DIR are never signalled. The "
                    "same training or experiment command (or `make reproduce`) continues "
                    "the runs exactly. Exit status 1 when one did not stop in time.")
    p.add_argument("directory", metavar="DIR", help="a run or experiment directory")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds to wait for every holder to save and exit (default 600: "
                        "a validation pass may be under way)")
    p.set_defaults(func=run)


def run(args) -> int:
    stopped = stop(args.directory, timeout=args.timeout)
    if not stopped:
        print(f"nothing to stop: no process holds a run under {args.directory}")
        return 0
    for s in stopped:
        saved = "" if s.saved_iteration is None else f", saved at iteration {s.saved_iteration:,}"
        state = "stopped" if s.done else f"still running after {args.timeout:.0f} s"
        print(f"{s.directory}: PID {s.pid} {state}{saved}")
    return 0 if all(s.done for s in stopped) else 1
