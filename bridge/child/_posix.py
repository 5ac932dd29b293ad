"""The POSIX side of the platform seam: process groups, signals, the watchdog, `#!` checks.

Only `_platform` imports this module, and only where sys.platform is not win32 (the
assert below also tells mypy's `--platform win32` run to skip it). What each part needs:

- process groups and `killpg`: POSIX (Linux, macOS, the BSDs);
- the watchdog that ends our groups when the bridge is killed: POSIX (a pipe's end of input);
  and every process that carries the run's marker variable (RUN_ENV), inside the groups or
  not: Linux only (it reads /proc/PID/environ);
- finding a process that left its group (setsid) but still holds one of our pipes: Linux
  only (it reads /proc); elsewhere such a process is not found, and outlives its task.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import anyio

from ._holder import Holder

# Only `_platform` imports this module, and never on Windows; mypy reads this assert as
# "skip the rest of the module" in its `--platform win32` run.
assert sys.platform != "win32", "the POSIX platform module was imported on Windows"

logger = logging.getLogger("flow_bridge.child")

# Each one asks the bridge to drain; SIGHUP too, as a closed terminal or a service manager's
# reload should not drop the tasks in flight.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_WATCHDOG_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_watchdog.py")
# The environment the watchdog needs: enough to start the interpreter, nothing of ours.
_WATCHDOG_ENV_KEYS = ("PATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")
# How long an exiting bridge waits for its watchdog to finish (it has nothing left to end then).
WATCHDOG_EXIT_WAIT = 2.0
# Every child gets this variable, with a value new for each bridge process, and its
# descendants inherit it: the watchdog ends whatever carries it once the bridge is gone,
# also what left the child's process group (Linux; see _watchdog.py).
RUN_MARKER = "FLOW_BRIDGE_RUN"
RUN_ENV = {RUN_MARKER: secrets.token_hex(8)}
# Whether pipe_holders can see who holds a pipe: it reads /proc/PID/fd links.
CAN_FIND_HOLDERS = sys.platform.startswith("linux")
# A command line in a warning is cut here: it is there to name the process, not to log data.
MAX_COMMAND_TEXT = 200


# --- starting, stopping and ending a child's group ----------------------------------------


def spawn_options() -> dict[str, Any]:
    """What subprocess needs to start a child in a process group of its own (a new session)."""
    return {"start_new_session": True}


def resolve_command(argv: Sequence[str]) -> list[str]:
    """The command as exec gets it: the kernel and PATH find the program, as they always did."""
    return list(argv)


def open_stop_signals() -> AbstractContextManager[AsyncIterator[int]]:
    """STOP_SIGNALS as they arrive, through the event loop's own signal handling."""
    return anyio.open_signal_receiver(*STOP_SIGNALS)


def _signal_group(pgid: int, sig: int) -> None:
    if pgid <= 1:
        return  # 0 is our own group and 1 is init: never a child's
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # a group that is gone (or was never ours) is no error


class PosixGroups:
    """A child's group is the session it leads; its pgid is its pid."""

    def adopt(self, pid: int) -> None:
        WATCHDOG.watch(pid)

    def stop(self, pid: int) -> None:
        _signal_group(pid, signal.SIGTERM)

    def kill(self, pid: int) -> None:
        _signal_group(pid, signal.SIGKILL)

    def release(self, pid: int) -> None:
        _signal_group(pid, signal.SIGKILL)
        WATCHDOG.forget(pid)


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
        env = {key: os.environ[key] for key in _WATCHDOG_ENV_KEYS if key in os.environ}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", _WATCHDOG_SCRIPT, str(os.getpid()),
                 f"{RUN_MARKER}={RUN_ENV[RUN_MARKER]}"],
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
GROUPS = PosixGroups()


# --- processes that left their group ---------------------------------------------------------


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
                    _signal_group(holder.pid, signal.SIGKILL)
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


# --- start checks: the file, its `#!` line, its ELF machine -----------------------------------

_ELF_MACHINES = {0x03: "x86", 0x3E: "x86_64", 0x28: "arm", 0xB7: "aarch64", 0xF3: "riscv", 0x08: "mips"}
_HOST_MACHINES = {"x86_64": 0x3E, "amd64": 0x3E, "aarch64": 0xB7, "arm64": 0xB7, "i686": 0x03, "i386": 0x03}


def explain_missing(command: str) -> str:
    if os.sep in command:
        if os.path.exists(command):
            # The file is there, so what is missing is the interpreter its #! line names.
            with open(command, "rb") as fh:
                first = fh.readline(200).decode("utf-8", "replace").strip()
            if first.startswith("#!"):
                return f"{command}: its interpreter line `{first}` names a program that does not exist"
        return f"{command}: no such file (the path is resolved from {os.getcwd()})"
    return f"{command}: command not found on PATH; give a path such as ./{command}"


def explain_start_error(command: str, exc: OSError) -> str:
    """What a failed exec means, and what to do about it."""
    if isinstance(exc, FileNotFoundError):
        return explain_missing(command)
    if isinstance(exc, PermissionError):
        return (f"{command} is not executable: run `chmod +x {command}`, or name its interpreter "
                f"first (`-- python3 {command}`)")
    if exc.errno == errno.ENOEXEC:
        return (f"{command} cannot be executed (exec format error): it is built for another "
                "architecture, or it is a script without a `#!` line")
    if exc.errno == errno.E2BIG:
        return (f"cannot start {command}: its arguments and environment are too large for the system "
                "(E2BIG); pass less through the environment")
    return f"cannot start {command}: {exc.strerror}"


def command_problem(argv: Sequence[str]) -> str | None:
    """Why argv[0] cannot possibly start (missing, a directory, not executable), or None."""
    command = argv[0]
    if os.sep not in command:
        return explain_missing(command) if shutil.which(command) is None else None
    if not os.path.exists(command):
        return explain_missing(command)
    if os.path.isdir(command):
        return f"{command} is a directory; name the executable inside it (often {command}/run)"
    if not os.access(command, os.X_OK):
        return f"{command} is not executable: run `chmod +x {command}`, or name its interpreter first"
    return None


def file_problem(argv: Sequence[str]) -> str | None:
    """What the file itself says against starting: its `#!` interpreter, its ELF machine."""
    path = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        parts = line.split()
        if not parts:
            return f"{argv[0]}: its `#!` line names no interpreter"
        interpreter = parts[0]
        if os.path.basename(interpreter) == "env" and len(parts) > 1:
            program = next((p for p in parts[1:] if not p.startswith("-")), "")
            if program and shutil.which(program) is None:
                return f"{argv[0]}: its interpreter line `#!{line}` names {program}, which is not on PATH"
        elif not os.access(interpreter, os.X_OK):
            return f"{argv[0]}: its interpreter line `#!{line}` names a program that does not exist"
    elif head.startswith(b"\x7fELF") and len(head) > 20:
        machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
        host = _HOST_MACHINES.get(platform.machine().lower())
        if host is not None and machine != host:
            built = _ELF_MACHINES.get(machine, f"machine {machine:#x}")
            return f"{argv[0]} is built for {built}, but this machine is {platform.machine()}: rebuild it for this one"
    return None
