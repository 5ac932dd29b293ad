"""The frame channel of a handler process: fd juggling and non-blocking pipe I/O.

`protect_stdio` moves the protocol off fd 0 and fd 1 before user code runs (SPEC.md,
section 7.1): frames are read from a private copy of fd 0 and written to a private copy
of fd 1; fd 1 then points at stderr, so `print()` and any sub-process's output land in
the bridge's log, and fd 0 points at /dev/null, so no sub-process can swallow frames.

On Windows the same is done with the C runtime's descriptors (`os.dup`, `os.dup2`, the
frame descriptors kept binary with `msvcrt.setmode`) and with the process's standard
handles (`SetStdHandle`), which is what a sub-process started without explicit stdio
inherits there. The frames are then read on a thread and written with blocking writes:
the proactor loop can watch only pipes opened for overlapped I/O, and the pipes a child
inherits are not.

`Channel` does the asyncio side: bytes from the read fd go through the protocol's
`Connection` (the codec plus the rules of who may send what, when, for which id) to a
callback; frames to send go through it too, are gathered during one turn of the event
loop and written with one call, which keeps the syscall count low when many answers
finish together.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading
from collections.abc import Callable

from flow_bridge.protocol import Connection, Event, Role


def protect_stdio() -> tuple[int, int]:
    """Return (read_fd, write_fd) for frames; leave fd 0 on /dev/null and fd 1 on stderr."""
    sys.stdout.flush()
    read_fd = os.dup(0)
    write_fd = os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if sys.platform == "win32":
        _protect_windows_handles(read_fd, write_fd)
    # fd 1 is now stderr; flush each line so printed text reaches the log promptly.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return read_fd, write_fd


if sys.platform == "win32":
    # GetStdHandle/SetStdHandle's names for the standard handles (WinBase.h: (DWORD)-10, -11).
    _STD_INPUT_HANDLE = -10
    _STD_OUTPUT_HANDLE = -11

    def _protect_windows_handles(read_fd: int, write_fd: int) -> None:
        """Point the process's standard handles where fds 0 and 1 now are, and keep frames binary.

        Python's own subprocess, and any program that asks Windows for "stdout", use the
        standard handle, not fd 1; the C runtime's dup2 may or may not update it."""
        import ctypes
        import msvcrt

        for fd in (read_fd, write_fd):
            msvcrt.setmode(fd, os.O_BINARY)  # no \n -> \r\n inside a frame
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.SetStdHandle.argtypes = [ctypes.c_uint32, ctypes.c_void_p]
        kernel32.SetStdHandle.restype = ctypes.c_int32
        for which, fd in ((_STD_OUTPUT_HANDLE, 1), (_STD_INPUT_HANDLE, 0)):
            if not kernel32.SetStdHandle(which & 0xFFFFFFFF, msvcrt.get_osfhandle(fd)):
                raise ctypes.WinError(ctypes.get_last_error())


def _is_pipe_like(fd: int) -> bool:
    if sys.platform == "win32":
        return False  # not watchable by the proactor loop (see the module's docstring)
    # Only pipes and sockets: epoll refuses regular files and devices such as /dev/null.
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Reader(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def eof_received(self) -> bool:
        self._on_data(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class Channel:
    """Frames in from `read_fd`, frames out to `write_fd`, on the running loop."""

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        on_events: Callable[[list[Event]], None],
        on_failure: Callable[[Exception], None],
    ) -> None:
        self.connection = Connection(Role.CHILD)
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._on_events = on_events
        self._on_failure = on_failure
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._writer: asyncio.WriteTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._closed = False

    async def open(self) -> None:
        if _is_pipe_like(self._read_fd):
            await self._loop.connect_read_pipe(
                lambda: _Reader(self._feed), os.fdopen(self._read_fd, "rb", buffering=0)
            )
        else:
            # A regular file, a device such as /dev/null or a terminal, or any pipe on Windows:
            # read on a daemon thread, never waited for (asyncio.run would join an executor's
            # thread at exit, and a read of a pipe the bridge still holds open does not return).
            threading.Thread(target=self._read_blocking, name="flow-bridge-frames-in", daemon=True).start()
        if _is_pipe_like(self._write_fd):
            self._writer, _ = await self._loop.connect_write_pipe(
                asyncio.Protocol, os.fdopen(self._write_fd, "wb", buffering=0)
            )

    def _read_blocking(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 1 << 16)
            except OSError:
                data = b""  # the pipe broke: the same as its end, for the runner
            try:
                self._loop.call_soon_threadsafe(self._feed, data)
            except RuntimeError:  # the loop is closed: the handler has stopped
                return
            if not data:
                return

    def _feed(self, data: bytes) -> None:
        try:
            events = self.connection.receive_data(data)
        except Exception as exc:  # a ProtocolError, or our own bug: both end the channel
            good = getattr(exc, "events", None)  # frames complete before the bad bytes
            if good:
                self._on_events(good)
            self._on_failure(exc)
            return
        if events:
            self._on_events(events)
            # Flush after the answers this chunk's requests give at once: the tasks just
            # created take their first step in the next loop turn, ahead of this callback,
            # so those answers leave in that turn and in one write, instead of a turn later.
            self._schedule_flush()
        if not data:
            self._on_events([])  # an empty list is how end of input reaches the runner

    def send(self, event: Event) -> None:
        """Queue one frame; safe only on the loop's thread. Raises LocalProtocolError when
        the rules do not allow it now, or it does not fit in a frame (nothing is queued)."""
        self.send_bytes(self.connection.send(event))

    def send_bytes(self, frame: bytes) -> None:
        if self._closed:
            return
        self._outbox.append(frame)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        try:
            if self._writer is not None:
                self._writer.write(data)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._write_fd, view) :]
        except (BrokenPipeError, ConnectionResetError):
            # The bridge is gone; nobody is left to read answers (SPEC 2.5).
            self._closed = True

    async def drain(self) -> None:
        """Wait until every queued frame has been handed to the OS."""
        self._flush()
        if self._writer is None:
            return
        while self._writer.get_write_buffer_size() and not self._writer.is_closing():
            await asyncio.sleep(0.005)
