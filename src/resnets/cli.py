"""The `resnets` console script: registers the subcommands and dispatches; no logic lives here."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .commands import (
    analyze,
    bench,
    check,
    eval_checkpoints,
    experiment,
    export,
    import_weights,
    models,
    predict,
    report,
    snapshot,
    status,
    stop,
    train,
    weights,
)
from .errors import UserError, printable


def _commands():
    return [models, weights, train, eval_checkpoints, experiment, analyze, report, predict,
            import_weights, export, bench, check, status, stop, snapshot]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnets", description="Deep residual networks (He et al., 2016): build, train, test."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _commands():
        module.register(sub)
    return parser


# OS errors that mean "this path cannot be used as given", not "the program is broken".
_INPUT_OS_ERRORS = (PermissionError, IsADirectoryError, FileNotFoundError, NotADirectoryError)
_OS_ERROR_TEXT = {
    PermissionError: ("permission denied", "give yourself access (chmod / chown) or use a copy "
                                           "you can read and write"),
    IsADirectoryError: ("a folder where a file was expected", "give the file itself"),
    FileNotFoundError: ("no such file or folder", "check the path"),
    NotADirectoryError: ("a file where a folder was expected (a part of the path is a file)",
                         "check the path"),
}


def _user_paths(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """``(absolute path, option, as given)`` for every string of the command line, and for
    the data cache the environment names; an OS error on or below one of them is the user's
    input, not a bug."""
    found = []
    for dest, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v and dest not in ("command", "func"):
                option = "an input" if dest == "inputs" else "--" + dest.replace("_", "-")
                found.append((v, option))
    if os.environ.get("RESNETS_CACHE"):
        found.append((os.environ["RESNETS_CACHE"], "$RESNETS_CACHE"))
    out = []
    for given, option in found:
        full = os.path.expanduser(given)
        for form in {os.path.abspath(full), os.path.realpath(full)}:
            out.append((form, option, given))
    return out


def _snippet(text: str | bytes) -> str:
    """``text`` on one printable line: undecodable bytes as ``\\xNN``, controls escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in printable(text)).strip()


def _input_error(e: BaseException, args: argparse.Namespace) -> str | None:
    """One line for an OS or text-encoding error caused by the user's input; None when it is
    not one (the caller re-raises it)."""
    if isinstance(e, _INPUT_OS_ERRORS):
        for name in (e.filename, e.filename2):
            if not isinstance(name, str | bytes | os.PathLike):
                continue
            full = os.path.abspath(os.fsdecode(name))
            for path, option, given in _user_paths(args):
                if full == path or full.startswith(path.rstrip(os.sep) + os.sep):
                    what, fix = _OS_ERROR_TEXT[type(e)]
                    where = option if full == path else f"in {option} {printable(given)}"
                    return f"{what}, {printable(full)} ({where}): {fix}."
        return None
    if isinstance(e, UnicodeEncodeError) and all(
            0xD800 <= ord(c) <= 0xDFFF for c in e.object[e.start:e.end]):
        # Lone surrogates: bytes of a file or folder name (or of a name read from a file) that
        # are not UTF-8, meeting an output that must be UTF-8.
        context = _snippet(e.object[max(0, e.start - 80):e.end + 40])
        return (f"a file, folder or class name is not UTF-8, '{context}': rename it to UTF-8 "
                f"(e.g. with convmv) and run again.")
    if isinstance(e, UnicodeDecodeError):
        # Text read from a file the user gave (a class list, a recipe, a config) without a
        # reader of its own to name it.
        context = _snippet(e.object[max(0, e.start - 20):e.end + 20])
        return (f"a file given to this command is not UTF-8 text, {e.reason} at byte {e.start} "
                f"('{context}'): save it as UTF-8.")
    return None


def _warning_format(command: str):
    """Warnings as the command prints its errors: one line with the message, without
    Python's file, line number and echo of the source line that warned."""
    def format_warning(message, category, filename, lineno, line=None) -> str:
        return f"resnets {command}: warning: {printable(str(message))}\n"

    return format_warning


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous, warnings.formatwarning = warnings.formatwarning, _warning_format(args.command)
    try:
        return _dispatch(args)
    finally:
        warnings.formatwarning = previous


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        # Bad input: one paragraph the user can act on, no traceback. A path in it that is
        # not UTF-8 is escaped, or printing the error would raise a second one.
        print(f"resnets {args.command}: error: {printable(str(e))}", file=sys.stderr)
        return 2
    except (*_INPUT_OS_ERRORS, UnicodeError) as e:
        # The safety net for input errors that no reader turned into a UserError. Anything
        # else (a path of our own, a bug) keeps its traceback.
        message = _input_error(e, args)
        if message is None:
            raise
        print(f"resnets {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`resnets models | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"resnets {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
