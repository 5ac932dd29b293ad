"""The Windows side of the platform seam: job objects, Ctrl-Break, console signals, PATHEXT.

How a child's group works here, against what POSIX does:

- a group is a Job Object. The child starts suspended (CREATE_SUSPENDED), is put in a
  job of its own, and only then resumed, so every process it ever starts is in the job
  from its first instruction. The job is made with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE and
  only the bridge holds its handle: when the bridge exits or is killed, Windows closes
  the handle and ends everything in the job. That is the POSIX watchdog's work, done by
  the kernel;
- a graceful stop is CTRL_BREAK_EVENT to the child's console process group (it starts
  with CREATE_NEW_PROCESS_GROUP, so the event reaches it and not the bridge);
- a kill is TerminateJobObject, the whole tree at once; a child that could not be put
  in a job (Windows before 8 cannot nest jobs) is ended alone with TerminateProcess;
- stop signals are SIGINT (Ctrl-C) and SIGBREAK (Ctrl-Break, and the console closing):
  asyncio has no add_signal_handler on Windows, so `signal.signal` handlers hand them to
  the event loop with call_soon_threadsafe;
- start checks read no `#!` line (Windows has none): the command is looked up as cmd.exe
  does, in the current folder and then on PATH with the extensions of PATHEXT, and must
  be a file CreateProcess can start (.exe, .com, .bat, .cmd).

Every Win32 call goes through `WinAPI`, so this module imports and is tested on any
system with a fake; `_win32.Kernel32` is the real one, loaded on first use on Windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ntpath
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ._holder import Holder

logger = logging.getLogger("flow_bridge.child")

# Win32 process creation flags (WinBase.h; subprocess names the first only on Windows).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_SUSPENDED = 0x00000004
# The exit status a killed child reports: what Popen.kill uses on Windows (TerminateProcess(h, 1)).
KILLED_EXIT_CODE = 1

if sys.platform == "win32":
    # Ctrl-C, and Ctrl-Break, which the C runtime also raises for the console closing.
    STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGBREAK)
else:  # this module is imported off Windows only by its tests, which pass their own signals
    STOP_SIGNALS = (signal.SIGINT,)

# What CreateProcess starts by itself (.bat and .cmd through cmd.exe); anything else needs an
# interpreter named in the command, since flow-bridge uses no file associations.
STARTABLE = (".EXE", ".COM", ".BAT", ".CMD")
# Windows' own PATHEXT when the variable is unset.
DEFAULT_PATHEXT = ".COM;.EXE;.BAT;.CMD"
# The interpreters a Windows package's Command names, and how each takes its script.
_SCRIPT_AFTER = {"python": None, "python3": None, "pythonw": None, "py": None, "node": None, "java": "-jar"}
# What to suggest for a script Windows cannot start directly, by its extension.
_INTERPRETER_FOR = {".PY": "python", ".JS": "node", ".JAR": "java -jar", ".PS1": "powershell -File", ".SH": "bash"}


# --- the Win32 calls, and the groups made of them -------------------------------------------


class WinAPI(Protocol):
    """The Win32 calls the groups make; each raises OSError when Windows refuses."""

    def create_job(self) -> int:
        """A new Job Object, set to end its processes when its last handle is closed."""
        ...

    def open_process(self, pid: int) -> int:
        """A handle to the process, with the rights to put it in a job and to end it."""
        ...

    def assign(self, job: int, process: int) -> None: ...

    def resume(self, pid: int) -> None:
        """Resume the threads of a process started with CREATE_SUSPENDED."""
        ...

    def ctrl_break(self, pid: int) -> None:
        """CTRL_BREAK_EVENT to the console process group that pid leads."""
        ...

    def terminate_job(self, job: int, code: int) -> None: ...

    def terminate_process(self, process: int, code: int) -> None: ...

    def close(self, handle: int) -> None: ...


def _real_api() -> WinAPI:
    if sys.platform == "win32":
        from ._win32 import Kernel32

        return Kernel32()
    raise OSError("the Win32 process calls exist only on Windows")


@dataclass(slots=True)
class _Group:
    process: int  # our own handle: a kill never goes through a pid that may have been reused
    job: int | None  # None when the child could not be put in a job of its own


class JobGroups:
    """Each child's group is a Job Object that dies with the bridge."""

    def __init__(self, api: Callable[[], WinAPI] = _real_api) -> None:
        self._make_api = api
        self._api: WinAPI | None = None
        self._groups: dict[int, _Group] = {}
        self._lock = threading.Lock()
        self._warned = False

    @property
    def api(self) -> WinAPI:
        if self._api is None:
            self._api = self._make_api()
        return self._api

    def adopt(self, pid: int) -> None:
        """Put a child started with spawn_options() (so still suspended) in its own job, then resume it.

        Raises OSError when it cannot be resumed; it is terminated then."""
        api = self.api
        process = api.open_process(pid)
        job: int | None = None
        try:
            job = api.create_job()
            api.assign(job, process)
        except OSError as exc:
            if job is not None:
                api.close(job)
                job = None
            self._warn_once(pid, exc)
        try:
            api.resume(pid)
        except OSError:
            with contextlib.suppress(OSError):
                api.terminate_process(process, KILLED_EXIT_CODE)
            for handle in (job, process):
                if handle is not None:
                    api.close(handle)
            raise
        with self._lock:
            self._groups[pid] = _Group(process, job)

    def _warn_once(self, pid: int, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "handler pid %d could not be put in a job object (%s): if flow-bridge is killed, what it "
                "started may outlive it, and a stop ends the handler alone, not what it started "
                "(Windows before 8 cannot nest jobs)", pid, exc,
            )

    def stop(self, pid: int) -> None:
        """Ask the group to stop: Ctrl-Break, which a console program ends on by default."""
        if pid not in self._groups:
            return
        try:
            self.api.ctrl_break(pid)
        except OSError as exc:
            # No console shared with the child (flow-bridge itself started without one):
            # the stop is then the end of stdin alone, and the kill after the grace.
            logger.debug("Ctrl-Break to handler pid %d failed: %s", pid, exc)

    def kill(self, pid: int) -> None:
        """End every process of the group now."""
        group = self._groups.get(pid)
        if group is None:
            return
        with contextlib.suppress(OSError):  # all gone already: Windows refuses, nothing to do
            if group.job is not None:
                self.api.terminate_job(group.job, KILLED_EXIT_CODE)
            else:
                self.api.terminate_process(group.process, KILLED_EXIT_CODE)

    def release(self, pid: int) -> None:
        """End what is left of the group and let go of its handles (closing the job ends it too)."""
        self.kill(pid)
        with self._lock:
            group = self._groups.pop(pid, None)
        if group is None:
            return
        for handle in (group.job, group.process):
            if handle is not None:
                with contextlib.suppress(OSError):
                    self.api.close(handle)

    @property
    def pids(self) -> list[int]:
        return list(self._groups)


GROUPS = JobGroups()


def spawn_options() -> dict[str, Any]:
    """A console process group of its own (for Ctrl-Break), suspended until it is in its job."""
    return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_SUSPENDED}


# --- stop signals ------------------------------------------------------------------------------


def open_stop_signals() -> contextlib.AbstractContextManager[AsyncIterator[int]]:
    """STOP_SIGNALS as they arrive, handed from Python's signal handlers to the running loop."""
    return handoff_signals(STOP_SIGNALS)


def _deliver(send: MemoryObjectSendStream[int], signum: int) -> None:
    with contextlib.suppress(anyio.ClosedResourceError):  # the receiver was closed meanwhile
        send.send_nowait(signum)


@contextlib.contextmanager
def handoff_signals(signals: Iterable[int]) -> Iterator[AsyncIterator[int]]:
    """Install handlers for `signals` that pass each one to the loop; the old ones come back at exit.

    A Python signal handler runs on the main thread between two bytecodes, possibly in the
    middle of the loop's own code, so it may only schedule: call_soon_threadsafe is the loop
    method that is safe from there, and it wakes a loop that waits for I/O."""
    loop = asyncio.get_running_loop()
    send, receive = anyio.create_memory_object_stream[int](math.inf)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(_deliver, send, signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        with send, receive:
            yield receive
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


# --- start checks --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WinHost:
    """What the start checks read of the machine: the environment, the folder, the files."""

    environ: Mapping[str, str]
    cwd: str
    is_file: Callable[[str], bool]
    is_dir: Callable[[str], bool]


def _real_host() -> WinHost:
    return WinHost(os.environ, os.getcwd(), os.path.isfile, os.path.isdir)


def _pathext(host: WinHost) -> list[str]:
    return [ext.upper() for ext in (host.environ.get("PATHEXT") or DEFAULT_PATHEXT).split(";") if ext]


def _has_folder(command: str) -> bool:
    return "\\" in command or "/" in command or bool(ntpath.splitdrive(command)[0])


def resolve(command: str, host: WinHost) -> str | None:
    """The file `command` names, looked up as cmd.exe does: its path, else the current folder,
    then PATH; a name without one of PATHEXT's extensions is tried with each of them first."""
    extensions = _pathext(host)
    names = [command] if ntpath.splitext(command)[1].upper() in extensions else [
        command + ext.lower() for ext in extensions] + [command]
    if _has_folder(command):
        folders = [host.cwd]
    else:
        folders = [host.cwd] + [entry.strip('"') for entry in host.environ.get("PATH", "").split(";") if entry]
    for folder in folders:
        for name in names:
            path = ntpath.normpath(ntpath.join(folder, name))
            if host.is_file(path):
                return path
    return None


def resolve_command(argv: Sequence[str], host: WinHost | None = None) -> list[str]:
    """argv with its program as a full path, so that Windows starts what the checks looked at.

    (CreateProcess's own search would try the bridge's interpreter folder before the current
    one and PATH, and append only .exe.)"""
    found = resolve(argv[0], host or _real_host())
    return [found, *argv[1:]] if found is not None else list(argv)


def explain_missing(command: str, host: WinHost | None = None) -> str:
    host = host or _real_host()
    if _has_folder(command):
        return f"{command}: no such file (the path is resolved from {host.cwd})"
    return (f"{command}: not found in {host.cwd} nor on PATH (tried with the extensions of PATHEXT, "
            f"{';'.join(_pathext(host))}); install it, or give its path")


def _not_startable(command: str, found: str, host: WinHost) -> str:
    extension = ntpath.splitext(found)[1].upper()
    if ntpath.basename(found).lower() == "run" and not extension:
        return (f"{command} is the sh script that Linux starts, and Windows has no sh: start the handler "
                "as the Windows package's Command does (`python handler.py`, `node handler.js`, "
                "`handler.exe`, `java -jar handler.jar`)")
    interpreter = _INTERPRETER_FOR.get(extension, "its interpreter")
    what = f"its extension {extension}" if extension else "a file without an extension"
    return (f"{command}: Windows starts only {', '.join(STARTABLE)} files by themselves, not {what} "
            f"(there are no `#!` lines on Windows, and flow-bridge uses no file associations); name "
            f"the interpreter first: `{interpreter} {command}`")


def command_problem(argv: Sequence[str], host: WinHost | None = None) -> str | None:
    """Why argv[0] cannot start on Windows (missing, a folder, not a program), or None."""
    host = host or _real_host()
    command = argv[0]
    found = resolve(command, host)
    if found is None:
        if host.is_dir(ntpath.join(host.cwd, command)):
            return f"{command} is a folder; name the program inside it"
        return explain_missing(command, host)
    if ntpath.splitext(found)[1].upper() not in STARTABLE:
        return _not_startable(command, found, host)
    return None


def script_of(argv: Sequence[str]) -> str | None:
    """The script an interpreter command runs (`python handler.py`, `java -jar handler.jar`), if any."""
    interpreter = ntpath.splitext(ntpath.basename(argv[0]))[0].lower()
    if interpreter not in _SCRIPT_AFTER:
        return None
    flag = _SCRIPT_AFTER[interpreter]
    rest = list(argv[1:])
    if flag is not None:
        return rest[rest.index(flag) + 1] if flag in rest[:-1] else None
    return rest[0] if rest and not rest[0].startswith("-") else None


def file_problem(argv: Sequence[str], host: WinHost | None = None) -> str | None:
    """For an interpreter command, whether its script is there (Windows reads no `#!` lines)."""
    host = host or _real_host()
    script = script_of(argv)
    if script is None or host.is_file(ntpath.normpath(ntpath.join(host.cwd, script))):
        return None
    return f"{script}: no such file in {host.cwd}, which is where {argv[0]} looks for it"


# Win32 errors CreateProcess reports (winerror.h).
_ERROR_FILE_NOT_FOUND, _ERROR_PATH_NOT_FOUND, _ERROR_ACCESS_DENIED = 2, 3, 5
_ERROR_FILENAME_EXCED_RANGE, _ERROR_BAD_EXE_FORMAT, _ERROR_EXE_MACHINE_TYPE_MISMATCH = 206, 193, 216


def explain_start_error(command: str, exc: OSError) -> str:
    """What a failed CreateProcess means, and what to do about it."""
    code = getattr(exc, "winerror", None)
    if isinstance(exc, FileNotFoundError) or code in (_ERROR_FILE_NOT_FOUND, _ERROR_PATH_NOT_FOUND):
        return explain_missing(command)
    if code in (_ERROR_BAD_EXE_FORMAT, _ERROR_EXE_MACHINE_TYPE_MISMATCH):
        return (f"{command} is not a program this Windows can run: it is built for another system or "
                "architecture, or it is a script (name its interpreter first)")
    if isinstance(exc, PermissionError) or code == _ERROR_ACCESS_DENIED:
        return f"{command}: Windows denied starting it (access denied); check its permissions"
    if code == _ERROR_FILENAME_EXCED_RANGE:
        return (f"cannot start {command}: its command line is longer than Windows allows (32,767 "
                "characters); pass less on it")
    return f"cannot start {command}: {exc.strerror or exc}"


# --- leftover processes --------------------------------------------------------------------------
# Nothing a child starts can leave its job (the job allows no breakaway), so ending the
# job closes every pipe: there is no holder to look for.

CAN_FIND_HOLDERS = False


def pipe_inode(fd: int) -> int | None:
    return None


def pipe_holders(inodes: Iterable[int]) -> list[Holder]:
    return []


def end_holders(holders: Iterable[Holder], inodes: Iterable[int]) -> None:
    return None
