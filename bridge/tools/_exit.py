"""Exit statuses and the one error style shared by the tool commands.

Every command says what went wrong on stderr as `flow-bridge: <message>`, as the CLI's
own commands do, and exits with one of three statuses so that scripts can tell "fix the
command line or the project" from "it ran, and something failed".
"""

from __future__ import annotations

import sys
from enum import IntEnum
from typing import NoReturn

import click


class Exit(IntEnum):
    OK = 0
    # A task, a check, a build or a start failed: the command itself was fine.
    FAILED = 1
    # The command line, a config file or the project is wrong; the message says what to change.
    USAGE = 2


def fail(message: str, code: Exit) -> NoReturn:
    """Print `flow-bridge: message` on stderr and exit with `code`."""
    click.echo(f"flow-bridge: {message}", err=True)
    sys.exit(int(code))


def warn(message: str) -> None:
    """Print `flow-bridge: warning: message` on stderr and go on."""
    click.echo(f"flow-bridge: warning: {message}", err=True)


__all__ = ["Exit", "fail", "warn"]
