"""Frames over a child's pipes: the only place bytes move between a pipe and the protocol.

A frame for an idle child goes out at once, which keeps the one-task round trip short.
A task frame for a child that is already busy waits up to COALESCE seconds for others:
requests arrive from gRPC one per loop turn, and one pipe write per task (each waking
the child to read one frame) was the largest single cost in the bridge under load
(28 % of its samples). Frames keep their order: anything sent while task frames wait
flushes them first. The transport buffers by itself when the pipe is full, and that
stays bounded because the engine link never has more than max-inflight requests out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from flow_bridge.protocol import Connection, Event

# Short against any task's own latency under load, long enough to gather a burst.
COALESCE = 0.0003


class Transport:
    def __init__(self, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader, connection: Connection):
        self.connection = connection
        self._stdin = stdin
        self._stdout = stdout
        self._closed = False
        self._queue: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def send(self, event: Event) -> None:
        """Encode and send one frame now (raises LocalProtocolError if it cannot be framed)."""
        self.send_frame(self.connection.send(event))

    def send_frame(self, frame: bytes, *, gather: bool = False) -> None:
        """Send a frame; with `gather`, let it wait briefly to share a write with others."""
        if self._closed:
            return
        self._queue.append(frame)
        if not gather:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(COALESCE, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._queue or self._closed:
            return
        data = b"".join(self._queue) if len(self._queue) > 1 else self._queue[0]
        self._queue.clear()
        if self._stdin.is_closing():
            # The child closed its stdin or died; whoever waits on it reports the exit.
            self._closed = True
            return
        try:
            self._stdin.write(data)
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            self._closed = True

    async def run_reader(self, on_events: Callable[[list[Event]], None]) -> None:
        """Feed stdout to the connection until end of input; protocol errors propagate."""
        read = self._stdout.read
        receive = self.connection.receive_data
        try:
            while data := await read(1 << 16):
                events = receive(data)
                if events:
                    on_events(events)
        except OSError:
            pass
        receive(b"")

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
