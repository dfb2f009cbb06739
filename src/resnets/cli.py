"""The `resnets` console script: registers the subcommands and dispatches; no logic lives here."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def _commands():
    # Imported lazily per command module so `resnets models` does not pay for the trainer.
    from .commands import (
        analyze,
        bench,
        check,
        evaluate,
        experiment,
        export,
        import_weights,
        models,
        predict,
        report,
        train,
        weights,
    )

    return [models, weights, train, evaluate, experiment, analyze, report, predict,
            import_weights, export, bench, check]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnets", description="Deep residual networks (He et al., 2016): build, train, test."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _commands():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        # Bad input: one paragraph the user can act on, no traceback.
        print(f"resnets {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`resnets models | head`): not an error of ours.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"resnets {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
