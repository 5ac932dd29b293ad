"""Frames over a child's pipes: the only place bytes move between a pipe and the codec.

A frame is handed to the pipe's transport at once. Deferring it to the end of the loop
turn, to join frames into one write, was measured: requests arrive from gRPC one per
turn, so the deferral batched nothing and only added a hop of latency. The transport
buffers by itself when the pipe is full, and that buffer stays bounded because the
engine link never has more than max-inflight requests out.
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
        self._closed = False

    def send(self, event: Event) -> None:
        """Encode and queue one frame (raises LocalProtocolError if it cannot be framed)."""
        self.send_frame(self.codec.send(event))

    def send_frame(self, frame: bytes) -> None:
        if self._closed:
            return
        if self._stdin.is_closing():
            # The child closed its stdin or died; whoever waits on it reports the exit.
            self._closed = True
            return
        try:
            self._stdin.write(frame)
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
