"""Frames over a child's pipes: the only place bytes move between a pipe and the codec.

Outgoing frames are queued without waiting and written by one writer task, which
joins everything queued since its last write into a single write. Under load that turns
many small writes into few large ones; when idle, a frame goes out at once.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc

from flow_bridge.protocol import Codec, Event


class Transport:
    def __init__(self, stdin: anyio.abc.ByteSendStream, stdout: anyio.abc.ByteReceiveStream, codec: Codec):
        self.codec = codec
        self._stdin = stdin
        self._stdout = stdout
        self._queue: list[bytes] = []
        self._wake = anyio.Event()
        self._closed = False

    def send(self, event: Event) -> None:
        """Encode and queue one frame (raises LocalProtocolError if it cannot be framed)."""
        self.send_frame(self.codec.send(event))

    def send_frame(self, frame: bytes) -> None:
        if self._closed:
            return
        self._queue.append(frame)
        self._wake.set()

    async def run_writer(self) -> None:
        """Write queued frames until the pipe breaks or the task is cancelled."""
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if not self._queue:  # already written by the previous round
                    continue
                data = b"".join(self._queue) if len(self._queue) > 1 else self._queue[0]
                self._queue.clear()
                await self._stdin.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            # The child closed stdin or died; its exit is reported by whoever waits on it.
            self._closed = True

    async def run_reader(self, on_events: Callable[[list[Event]], None]) -> None:
        """Feed stdout to the codec until end of input; protocol errors propagate."""
        try:
            async for chunk in self._stdout:
                events = self.codec.receive_data(chunk)
                if events:
                    on_events(events)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        self.codec.receive_data(b"")

    def close(self) -> None:
        self._closed = True
