"""Errors caused by the user's input. The CLI prints them as one paragraph, without traceback."""


class UserError(Exception):
    """Bad input a user can fix: the message names the file or option, what was expected, and
    the fix."""


class DataError(UserError):
    """A dataset path or file is missing, malformed or unreadable."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, unsafe, or does not match the model or data."""
