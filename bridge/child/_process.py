"""Child processes: start one in its own process group, drain its stderr, end it.

The bottom layer. It knows about pipes and process groups and nothing about frames.
How a group is made, stopped and ended, and what a command must look like to start, is
the platform seam's business (`_platform`: POSIX or Windows); nothing here sends a signal.
Starting goes through a `Spawner` so tests can swap how processes are made.
Closing is idempotent and always ends with the whole group gone, grandchildren included.

A child is dead when its process exits (`Process.wait`), not when its pipes close: a
grandchild that left the group can hold them forever. Such a holder is found, named and
killed by `settle_output` (Linux). Every group is also made the platform's to end if the
bridge dies without doing so, even by SIGKILL (a watchdog on POSIX, a job on Windows).

Pipes are asyncio streams rather than anyio's wrappers: every task crosses them twice,
and the bridge runs on asyncio anyway because grpc.aio does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import anyio

from flow_bridge.core import MAX_LINE, OUTPUT_AFTER_EXIT, TAIL_LINES, TERM_GRACE

from ._platform import (
    CAN_FIND_HOLDERS,
    RUN_ENV,
    Holder,
    adopt,
    command_problem,
    end_holders,
    explain_start_error,
    file_problem,
    kill_group,
    pipe_holders,
    pipe_inode,
    release_group,
    resolve_command,
    spawn_options,
    stop_then_kill,
)

logger = logging.getLogger("flow_bridge.child")
# The handler's own output (its stderr lines and log frames) goes here, apart from the
# bridge's messages, so that `call` can show it alone.
handler_logger = logging.getLogger("flow_bridge.handler")

# How long closing a child's stdin may wait for bytes still buffered for it.
STDIN_CLOSE_WAIT = 0.5


class StartError(Exception):
    """The handler could not be started or did not complete the handshake."""


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended: `code` for a normal exit, `signal` when a signal killed it."""

    code: int | None
    signal: int | None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        if returncode < 0:
            return cls(code=None, signal=-returncode)
        return cls(code=returncode, signal=None)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"was killed by signal {self.signal} ({name})"
        return f"exited with status {self.code}"


# asyncio's stream buffer limit for the pipes (its own default; our readers use read(n)).
_STREAM_LIMIT = 1 << 16
# When nobody holds the pipes any more, end of output is sure to come: this bounds only a
# reader that is far behind on a loaded machine (a pipe holds at most 1 MiB).
OUTPUT_DRAIN = 5.0


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's pipe protocol, which also says when the process itself has exited, and
    can hand stdout's bytes straight to a callback instead of its StreamReader."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()
        self.on_stdout: Callable[[bytes], None] | None = None

    def read_stdout_with(self, on_data: Callable[[bytes], None]) -> None:
        # What the StreamReader holds already goes first. It has no public way to take
        # its buffer without awaiting, hence _buffer, _eof and _exception (3.11 to 3.13);
        # a read error ends the output as its end does. A full buffer may have paused the
        # pipe: taking the bytes lets it read again.
        reader: Any = self.stdout
        held, ended = bytes(reader._buffer), reader._eof or reader._exception is not None
        reader._buffer.clear()
        reader._maybe_resume_transport()
        self.on_stdout = on_data
        if held:
            on_data(held)
        if ended:
            on_data(b"")

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd == 1 and self.on_stdout is not None:
            self.on_stdout(cast(bytes, data))  # pipes give bytes; the str is for text-mode transports
        else:
            super().pipe_data_received(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        super().pipe_connection_lost(fd, exc)
        if fd == 1 and self.on_stdout is not None:
            self.on_stdout(b"")  # a read error ends the output as its end does

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class Process(asyncio.subprocess.Process):
    """A child process whose wait() returns when it exits, whoever still holds its pipes.

    asyncio's own wait() (Python 3.11) returns only once the process has exited and all
    three pipes are closed, so a grandchild that keeps stdout open (`setsid sleep &`) would
    hide the child's death forever. Here exiting is exiting; the pipes are a separate matter
    (`release_pipes`). The pipes' inodes are noted at start, to find who holds them later.
    """

    def __init__(
        self, transport: asyncio.SubprocessTransport, protocol: _ExitProtocol, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(cast(Any, transport), protocol, loop)
        self._exited = protocol.exited
        self._exit_protocol = protocol
        self._pipes_transport = transport
        self.pipe_inodes: tuple[int, ...] = tuple(
            inode for fd in (0, 1, 2) if (inode := _pipe_inode_of(transport, fd)) is not None
        )

    def read_stdout_with(self, on_data: Callable[[bytes], None]) -> None:
        """From now on, call on_data with stdout's bytes as they arrive, and with b"" at its
        end, with no StreamReader between: a loop turn less per read (issue 17)."""
        self._exit_protocol.read_stdout_with(on_data)

    async def wait(self) -> int:
        await asyncio.shield(self._exited)
        returncode = self.returncode
        assert returncode is not None  # asyncio sets it before it reports the exit
        return returncode

    @property
    def has_exited(self) -> bool:
        return self._exited.done()

    def release_pipes(self) -> None:
        """Close our ends of the three pipes (after the exit: something it started may hold theirs).

        Bytes still buffered for stdin are dropped: a close would wait for a reader that may
        never come. (Only then is abort() safe: a pipe with an empty buffer may be closed already.)"""
        stdin = self._pipes_transport.get_pipe_transport(0)
        if isinstance(stdin, asyncio.WriteTransport) and stdin.get_write_buffer_size() > 0:
            stdin.abort()
        self._pipes_transport.close()

    def end_group(self) -> None:
        """Kill whatever is left of the process group, and stop tracking it."""
        release_group(self.pid)


def _pipe_inode_of(transport: asyncio.SubprocessTransport, fd: int) -> int | None:
    pipe_transport = transport.get_pipe_transport(fd)
    pipe = pipe_transport.get_extra_info("pipe") if pipe_transport is not None else None
    try:
        return pipe_inode(pipe.fileno()) if pipe is not None else None
    except ValueError:  # a child that exited at once: asyncio has closed that pipe already
        return None


class Spawner(Protocol):
    async def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> Process: ...


async def spawn_process(argv: Sequence[str], env: Mapping[str, str]) -> Process:
    """Start argv with three pipes in a process group of its own.

    The platform adopts the group, and ends it if the bridge dies first. The child's
    environment also carries the run's marker (RUN_ENV), which its descendants inherit:
    what leaves the group is still ended with the bridge (POSIX watchdog, Linux)."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitProtocol(_STREAM_LIMIT, loop),
            *resolve_command(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, **RUN_ENV},
            **spawn_options(),
        )
    except OSError as exc:
        raise StartError(explain_start_error(argv[0], exc)) from None
    process = Process(transport, protocol, loop)
    try:
        adopt(process.pid)
    except OSError as exc:  # Windows: it could not be resumed, and was ended
        transport.close()
        raise StartError(f"cannot start {argv[0]}: {exc}") from None
    return process


async def settle_output(process: Process, output_closed: Callable[[], Awaitable[object]], label: str) -> list[Holder]:
    """After `process` exited: see its output pipes closed, ending whatever holds them open.

    What is left of its group is killed first: the process is over, and so is whatever it
    left running there. The output then gets OUTPUT_AFTER_EXIT to close. If it has not,
    who holds the pipes is looked up (Linux):

    - nobody: the reader is merely behind (a loaded machine); it gets OUTPUT_DRAIN more;
    - processes that left the group (setsid): they were started by this process, since
      nothing else could inherit these pipes, and nothing a child or a task started may
      outlive it (SPEC 8). They are named in a warning and killed, with their own groups;
    - where /proc cannot tell, the pipes are simply closed after OUTPUT_AFTER_EXIT.

    `output_closed` returns once the caller's readers saw the end of the pipes. Returns the
    holders that were killed.
    """
    process.end_group()
    with anyio.move_on_after(OUTPUT_AFTER_EXIT):
        await output_closed()
        return []
    holders = await asyncio.to_thread(pipe_holders, process.pipe_inodes) if CAN_FIND_HOLDERS else None
    if holders == []:
        with anyio.move_on_after(OUTPUT_DRAIN):
            await output_closed()
            return []
    if holders:
        logger.warning(
            "%s exited, but %s that it started outside its process group (setsid) still held its "
            "stdout or stderr: killing %s. A handler should not leave processes behind; if it must, "
            "let them close stdin, stdout and stderr",
            label, ", ".join(h.describe() for h in holders), "it" if len(holders) == 1 else "them",
        )
        end_holders(holders, process.pipe_inodes)
    process.release_pipes()
    return holders or []


def check_command(argv: Sequence[str]) -> None:
    """Fail early, with advice, for a command that cannot possibly start."""
    if not argv:
        raise StartError("no handler command given: put it after `--`, as in `flow-bridge run -- ./handler`")
    problem = command_problem(argv)
    if problem is not None:
        raise StartError(problem)


def check_startable(argv: Sequence[str]) -> None:
    """check_command, plus what the file says (POSIX: its #! interpreter, its ELF machine;
    Windows: an interpreter's script is there)."""
    check_command(argv)
    problem = file_problem(argv)
    if problem is not None:
        raise StartError(problem)


def handler_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a handler gets: ours, plus the bridge's interpreter for `run` files."""
    env = dict(os.environ)
    env.setdefault("FLOW_BRIDGE_PYTHON", sys.executable)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a pipe we write to; a reader that already went away is no error."""
    try:
        writer.close()
        await writer.wait_closed()
    except (OSError, RuntimeError):  # uvloop: RuntimeError for a handle already closed
        pass


class LineSplitter:
    """Cuts a byte stream into lines, truncating each to MAX_LINE bytes."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._buffer = bytearray()
        self._dropped = 0  # bytes of the current line that did not fit

    def feed(self, data: bytes) -> None:
        if not data:
            if self._buffer or self._dropped:
                self._emit()
            return
        start = 0
        while True:
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            room = MAX_LINE - len(self._buffer)
            if len(piece) > room:
                self._buffer += piece[:room]
                self._dropped += len(piece) - room
            else:
                self._buffer += piece
            if end < 0:
                return
            self._emit()
            start = end + 1

    def _emit(self) -> None:
        text = self._buffer.decode("utf-8", "replace").rstrip("\r")
        if self._dropped:
            text += f" ... [{self._dropped} more bytes cut]"
        self._buffer.clear()
        self._dropped = 0
        self._on_line(text)


class Child:
    """A started handler process: its pipes, its stderr tail, and how to end it."""

    def __init__(self, process: Process, label: str) -> None:
        self.process = process
        self.pid = process.pid
        self.label = label
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._closed = False

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.process.stdin is not None
        return self.process.stdin

    def _on_line(self, line: str) -> None:
        self.tail.append(line)
        handler_logger.info("[%s] %s", self.label, line)

    async def pump_stderr(self) -> None:
        """Forward stderr to the log line by line until the pipe closes."""
        assert self.process.stderr is not None
        splitter = LineSplitter(self._on_line)
        try:
            while chunk := await self.process.stderr.read(1 << 16):
                splitter.feed(chunk)
        except OSError:
            pass
        splitter.feed(b"")

    def stderr_tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(list(self.tail)[-lines:])

    async def wait(self) -> ExitStatus:
        returncode = await self.process.wait()
        return ExitStatus.from_returncode(returncode)

    async def close_stdin(self) -> None:
        # Bounded: when the child is gone but something it started holds its stdin without
        # reading, the last bytes never drain; release_pipes then drops them.
        with anyio.move_on_after(STDIN_CLOSE_WAIT):
            await close_writer(self.stdin)

    async def close(self, grace: float) -> ExitStatus:
        """End the child: stdin EOF, `grace` seconds, a polite stop, TERM_GRACE, a kill, whole group."""
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self.close_stdin()
                with anyio.move_on_after(grace):
                    await self.process.wait()
                if not self.process.has_exited:
                    await stop_then_kill(self.pid, self.process.wait, TERM_GRACE)
                # Grandchildren may outlive the child itself; they go too.
                self.process.end_group()
                await self.process.wait()
                self.process.release_pipes()
        return ExitStatus.from_returncode(self.process.returncode or 0)

    def kill(self) -> None:
        """Kill the whole group now, without waiting."""
        kill_group(self.pid)
