"""Helpers for reading what the CLI printed in tests."""

import re

_LOGGING_ERROR = re.compile(r"--- Logging error ---.*?Arguments: [^\n]*\n", re.S)


def without_logging_errors(err: str) -> str:
    """Drop "--- Logging error ---" reports from captured stderr.

    Lightning attaches a log handler to the stderr of the first test that trains; later
    tests capture stderr into new streams, and the handler writing to the closed one makes
    the logging module print such a report (with a traceback of its own). That is
    pytest's capture, not output of semimtl-geo.
    """
    return _LOGGING_ERROR.sub("", err)
