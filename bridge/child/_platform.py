"""The one platform seam: everything that depends on how the operating system starts,
groups, stops and signals processes, and how it is told what to start.

The rest of the bridge asks this module, never `os.killpg`, a signal number or a Win32
call itself. The implementation is chosen once, here, by sys.platform:

- `_posix`: process groups (a new session per child), SIGTERM then SIGKILL to the group,
  a watchdog process that ends the groups when the bridge is gone, and on Linux every
  process that carries the run's marker variable (RUN_ENV, given to every child), stop signals through
  the event loop (SIGTERM, SIGINT, SIGHUP), `#!` and ELF start checks, and the lookup of
  processes that left the group but hold its pipes (Linux);
- `_windows`: a Job Object per child (started suspended, resumed once it is in the job;
  the job dies with the bridge's handle), Ctrl-Break then TerminateJobObject, SIGINT and
  SIGBREAK handed to the loop from `signal.signal` handlers, PATHEXT start checks.

Both offer the same names with the same meaning, and mypy checks each against its own
platform (`.ci/mypy-win32.sh` for Windows).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from ._holder import Holder as Holder

if sys.platform == "win32":
    # A child's job object holds its descendants too (they inherit it): no marker is needed.
    RUN_ENV: dict[str, str] = {}
    from ._windows import CAN_FIND_HOLDERS as CAN_FIND_HOLDERS
    from ._windows import GROUPS as GROUPS
    from ._windows import STOP_SIGNALS as STOP_SIGNALS
    from ._windows import command_problem as command_problem
    from ._windows import end_holders as end_holders
    from ._windows import explain_missing as explain_missing
    from ._windows import explain_start_error as explain_start_error
    from ._windows import file_problem as file_problem
    from ._windows import open_stop_signals as open_stop_signals
    from ._windows import pipe_holders as pipe_holders
    from ._windows import pipe_inode as pipe_inode
    from ._windows import resolve_command as resolve_command
    from ._windows import spawn_options as spawn_options
else:
    from ._posix import CAN_FIND_HOLDERS as CAN_FIND_HOLDERS
    from ._posix import GROUPS as GROUPS
    from ._posix import RUN_ENV as RUN_ENV
    from ._posix import STOP_SIGNALS as STOP_SIGNALS
    from ._posix import WATCHDOG as WATCHDOG
    from ._posix import command_problem as command_problem
    from ._posix import end_holders as end_holders
    from ._posix import explain_missing as explain_missing
    from ._posix import explain_start_error as explain_start_error
    from ._posix import file_problem as file_problem
    from ._posix import open_stop_signals as open_stop_signals
    from ._posix import pipe_holders as pipe_holders
    from ._posix import pipe_inode as pipe_inode
    from ._posix import resolve_command as resolve_command
    from ._posix import spawn_options as spawn_options


class Groups(Protocol):
    """A child's process group, named by the child's pid, as each platform keeps it."""

    def adopt(self, pid: int) -> None:
        """The child was just started with spawn_options(): make its group ours (and run it)."""
        ...

    def stop(self, pid: int) -> None:
        """Ask every process of the group to stop (SIGTERM; Ctrl-Break)."""
        ...

    def kill(self, pid: int) -> None:
        """End every process of the group now (SIGKILL; TerminateJobObject)."""
        ...

    def release(self, pid: int) -> None:
        """Kill what is left and stop tracking the group; a second call does nothing more."""
        ...


def adopt(pid: int) -> None:
    GROUPS.adopt(pid)


def stop_group(pid: int) -> None:
    GROUPS.stop(pid)


def kill_group(pid: int) -> None:
    GROUPS.kill(pid)


def release_group(pid: int) -> None:
    GROUPS.release(pid)


async def stop_then_kill(
    pid: int, exited: Callable[[], Awaitable[object]], grace: float, groups: Groups = GROUPS
) -> None:
    """Ask the group to stop, give the child `grace` seconds to exit, then kill the group.

    The group is killed even when the child exited in time: what it started goes too."""
    groups.stop(pid)
    with anyio.move_on_after(grace):
        await exited()
    groups.kill(pid)


def on_stop_signals(handler: Callable[[int, Any], None]) -> None:
    """Point every stop signal at a plain handler, for the moments after the event loop ended
    (the loop's own watch, open_stop_signals, is gone by then). Main thread only."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def ignore_stop_signals() -> None:
    """Ignore every stop signal: for a process that is already on its way out."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
