"""Errors caused by the user's input. The CLI prints them as one paragraph, without traceback."""

import os


class UserError(Exception):
    """Bad input a user can fix: the message names the file or option, what was expected, and
    the fix."""


class DataError(UserError):
    """A dataset path or file is missing, malformed or unreadable."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, unsafe, or does not match the model or data."""


def printable(name: str | bytes | os.PathLike) -> str:
    """``name`` as text any UTF-8 stream can print: the bytes of a file name that is not UTF-8
    (which Python decodes to lone surrogates) become ``\\xNN`` escapes, e.g. ``run-\\xff``."""
    text = os.fspath(name)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name decodes to (e.g. from JSON text)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")
