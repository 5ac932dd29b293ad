"""Exit statuses and the one error style shared by the tool commands.

The tools follow the CLI's own style, which is click's: "Error: ..." on stderr, exit 2 for
a usage or config error (the command line, a config file or the project must change),
exit 1 for something that ran and failed. Raising click's exceptions, rather than
printing and exiting, leaves the formatting to click in every command alike.
"""

from __future__ import annotations

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
    """Stop the command: click prints "Error: message" and exits with `code`."""
    if code == Exit.USAGE:
        raise click.UsageError(message)
    assert code == Exit.FAILED, code
    raise click.ClickException(message)  # click's exit status for it is 1


def warn(message: str) -> None:
    """Say something the user should know, in the same style as click's errors, and go on."""
    click.echo(f"Warning: {message}", err=True)


__all__ = ["Exit", "fail", "warn"]
