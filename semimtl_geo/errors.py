"""Errors a user can cause, reported by the CLI as one sentence without a traceback."""


class UserError(Exception):
    """A mistake the user can fix (missing file, bad config key, wrong band count...).

    The message must be one sentence that says what is wrong and what to do.
    The command-line entry point prints it to stderr and exits with status 1.
    """
