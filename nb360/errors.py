"""Errors that nb360 reports to users as one line, without a traceback."""

from __future__ import annotations

__all__ = ["NB360Error", "UsageError", "DataError"]


class NB360Error(Exception):
    """Base class of errors whose message alone tells the user what went wrong."""

    exit_code = 1


class UsageError(NB360Error):
    """Bad command-line input: an unknown name, an inapplicable pair, a malformed option."""

    exit_code = 2


class DataError(NB360Error):
    """Missing, corrupt or malformed data files."""

    exit_code = 1
