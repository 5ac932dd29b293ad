"""Frames over a child's pipes: the only place bytes move between a pipe and the codec.

Outgoing frames are queued without waiting and flushed once per turn of the event loop
as a single write, so answers that finish together cost one syscall, and an idle frame
goes out at once. The queue needs no bound of its own: the engine link never has more
than max-inflight requests out, so it holds at most that many frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from flow_bridge.protocol import Codec, Event


class Transport:
    def __init__(self, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader, codec: Codec):
        self.codec = codec
        self._stdin = stdin
        self._stdout = stdout
        self._queue: list[bytes] = []
        self._flush_scheduled = False
        self._closed = False

    def send(self, event: Event) -> None:
        """Encode and queue one frame (raises LocalProtocolError if it cannot be framed)."""
        self.send_frame(self.codec.send(event))

    def send_frame(self, frame: bytes) -> None:
        if self._closed:
            return
        self._queue.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
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
        """Feed stdout to the codec until end of input; protocol errors propagate."""
        read = self._stdout.read
        receive = self.codec.receive_data
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
