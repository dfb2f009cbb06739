"""`resnets snapshot`: running runs save their state now and train on, ready for a commit."""

from __future__ import annotations

from ..train.control import snapshot


def register(sub) -> None:
    p = sub.add_parser(
        "snapshot", help="make every running run under DIR save its state now, without "
                         "stopping it",
        description="Ask each run under DIR that a process is training to write its "
                    "checkpoint (last.safetensors) at its next step and go on training; wait "
                    "until each has. The run directories then hold a state that git can "
                    "commit and a fresh clone resumes exactly (`make reproduce-commit` "
                    "does this). Exit status 1 when a run did not save in time (a trainer "
                    "started by an older resnets does not take requests).")
    p.add_argument("directory", metavar="DIR", help="a run or experiment directory")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for the saves (default 300: a validation pass may "
                        "be under way)")
    p.set_defaults(func=run)


def run(args) -> int:
    taken = snapshot(args.directory, timeout=args.timeout)
    if not taken:
        print(f"nothing running under {args.directory}: its files are the newest state")
        return 0
    for s in taken:
        state = (f"saved at iteration {s.saved_iteration:,}" if s.done else
                 f"did not save within {args.timeout:.0f} s; its newest checkpoint is at "
                 f"iteration {s.saved_iteration}")
        print(f"{s.directory} (PID {s.pid}): {state}")
    return 0 if all(s.done for s in taken) else 1
