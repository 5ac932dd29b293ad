"""Process groups, signals and leftover processes: the one platform seam.

Everything that depends on how the operating system groups and ends processes lives here,
so that a Windows port (issue 16) has one module to replace. What each part needs:

- process groups and `killpg`: POSIX (Linux, macOS, the BSDs);
- the watchdog that ends our groups when the bridge is killed: POSIX (a pipe's end of input);
- finding a process that left its group (setsid) but still holds one of our pipes: Linux
  only (it reads /proc); elsewhere such a process is not found, and outlives its task.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass

logger = logging.getLogger("flow_bridge.child")

_WATCHDOG_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_watchdog.py")
# The environment the watchdog needs: enough to start the interpreter, nothing of ours.
_WATCHDOG_ENV_KEYS = ("PATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")
# How long an exiting bridge waits for its watchdog to finish (it has nothing left to end then).
WATCHDOG_EXIT_WAIT = 2.0
# Whether pipe_holders can see who holds a pipe: it reads /proc/PID/fd links.
CAN_FIND_HOLDERS = sys.platform.startswith("linux")
# A command line in a warning is cut here: it is there to name the process, not to log data.
MAX_COMMAND_TEXT = 200


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Send sig to a process group; a group that is gone (or was never ours) is no error."""
    if pgid <= 1:
        return  # 0 is our own group and 1 is init: never a child's
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --- the watchdog ------------------------------------------------------------------------


class GroupWatchdog:
    """Tells a helper process which groups are ours, so they die with the bridge.

    The helper (`_watchdog.py`) runs in its own session and holds the read end of a pipe
    whose write end only this process has. If the bridge dies in any way, even by SIGKILL,
    the helper sees end of input and ends every group still listed. Started on first use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._broken = False

    def watch(self, pgid: int) -> None:
        self._write(b"+%d\n" % pgid)

    def forget(self, pgid: int) -> None:
        self._write(b"-%d\n" % pgid)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _write(self, line: bytes) -> None:
        with self._lock:
            fd = self._start()
            if fd is None:
                return
            try:
                os.write(fd, line)  # one short line: a single atomic pipe write
            except BlockingIOError:
                # The helper does not read (stopped?): never block the event loop on it.
                self._fail("its input is full")
            except OSError as exc:
                self._fail(exc.strerror or str(exc))

    def _start(self) -> int | None:
        if self._fd is not None or self._broken:
            return self._fd
        if os.name != "posix":
            self._broken = True
            return None
        env = {key: os.environ[key] for key in _WATCHDOG_ENV_KEYS if key in os.environ}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", _WATCHDOG_SCRIPT, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=None,
                env=env,
                start_new_session=True,  # a Ctrl-C or a group kill aimed at the bridge spares it
            )
        except OSError as exc:
            self._fail(f"it could not be started: {exc}")
            return None
        assert self._process.stdin is not None
        self._fd = self._process.stdin.fileno()
        os.set_blocking(self._fd, False)
        atexit.register(self.close)
        return self._fd

    def _fail(self, why: str) -> None:
        if not self._broken:
            logger.warning(
                "the process-group watchdog stopped working (%s): if flow-bridge is killed with SIGKILL, "
                "its handlers may outlive it until they see end of input",
                why,
            )
        self._broken = True
        self._fd = None

    def close(self) -> None:
        """End the watchdog: it sees end of input and ends whatever groups are still listed."""
        with self._lock:
            process, self._process, self._fd = self._process, None, None
            self._broken = True
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(WATCHDOG_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


WATCHDOG = GroupWatchdog()


# --- processes that left their group ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holder:
    """A process outside the child's group that holds one of the child's pipes."""

    pid: int
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})"


def pipe_inode(fd: int) -> int | None:
    """The inode that names this pipe in /proc/*/fd (`pipe:[inode]`), the same at both ends."""
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read(4 * MAX_COMMAND_TEXT)
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return text if len(text) <= MAX_COMMAND_TEXT else text[:MAX_COMMAND_TEXT] + "..."


def _holds(pid: int, targets: set[str]) -> bool:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False  # gone, or not ours to look at
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") in targets:
                return True
        except OSError:
            continue
    return False


def pipe_holders(inodes: Iterable[int]) -> list[Holder]:
    """Other processes that hold any of these pipes (Linux; [] where /proc has no fd links)."""
    targets = {f"pipe:[{inode}]" for inode in inodes}
    if not targets or not CAN_FIND_HOLDERS:
        return []
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        if _holds(int(entry), targets):
            found.append(Holder(int(entry), _command_of(int(entry))))
    return found


def end_holders(holders: Iterable[Holder], inodes: Iterable[int]) -> None:
    """SIGKILL each holder, and the group it leads if it made one (setsid does).

    Each is checked again just before the signal, through a pidfd where there is one, so a
    pid that was reused in between is never hit.
    """
    targets = {f"pipe:[{inode}]" for inode in inodes}
    for holder in holders:
        pidfd = _pidfd(holder.pid)
        try:
            if not _holds(holder.pid, targets):
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(holder.pid) == holder.pid:
                    kill_group(holder.pid)
            if pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                with contextlib.suppress(OSError):
                    os.kill(holder.pid, signal.SIGKILL)
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd
