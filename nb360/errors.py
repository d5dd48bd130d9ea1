"""Errors that nb360 reports to users as one line, without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["NB360Error", "UsageError", "DataError", "one_line", "run_command"]


class NB360Error(Exception):
    """Base class of errors whose message alone tells the user what went wrong."""

    exit_code = 1


class UsageError(NB360Error):
    """Bad command-line input: an unknown name, an inapplicable pair, a malformed option."""

    exit_code = 2


class DataError(NB360Error):
    """Missing, corrupt or malformed data files."""

    exit_code = 1


def one_line(err: NB360Error) -> str:
    """The error's message on one line.

    An error raised in a DataLoader worker comes back re-raised by PyTorch with the
    worker's traceback in its message; its original message is the last line, after
    the ``module.Class:`` prefix of the traceback.
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(err).__name__
    last = lines[-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


def run_command(action: Callable[[], object]) -> int:
    """Run a command-line action: exit status 0, or the error's one line on stderr and its exit status."""
    try:
        action()
    except NB360Error as err:
        print(f"nb360: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    return 0
