"""Frames over a child's pipes: the only place bytes move between a pipe and the protocol.

A frame for an idle child goes out at once, which keeps the one-task round trip short.
A task frame for a child that is already busy waits a little for others: requests arrive
from gRPC one per loop turn, and one pipe write per task (each waking the child to read
one frame, and the bridge to read its one answer) was the largest single cost in the
bridge under load. The wait grows with the requests already in flight at the child,
COALESCE_PER_REQUEST each, up to COALESCE_MAX: a task then waits for company only when
its own round trip is dominated by the queue ahead of it anyway.

Under a steady flood (the engine always has more tasks ready than the bridge has read),
a short wait gathers about two frames, and a longer one gathers many: the child answers
a batch in one write, and the bridge reads it in one go. So when a timed write carried
BATCH_PAYS frames or more, the next waits use COALESCE_PER_REQUEST_BATCHING, until a
timed write carries fewer. At low concurrency batches stay small and the short wait
holds. Frames keep their order: anything sent while task frames wait flushes them first.
The transport buffers by itself when the pipe is full, and that stays bounded because
the engine link never has more than max-inflight requests out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from flow_bridge.protocol import Connection, Event, ProtocolError

# A request behind n in flight at the child waits up to n * COALESCE_PER_REQUEST (at most
# COALESCE_MAX) for others to share its write. Measured at echo 0 ms, C=64, asyncio (same
# run, 3 rounds, CPU ms per task, bridge / Python child): a flat 0.3 ms wait 0.27 / 0.064,
# a flat 2 ms wait 0.21 / 0.033.
COALESCE_PER_REQUEST = 0.00003
COALESCE_MAX = 0.002
# The batching mode (see above). Measured in interleaved runs, 3 rounds each, Rust echo
# child, bridge CPU per task and tasks/s (issue 17): C=64 0.183 -> 0.141 ms and 4837 ->
# 5952/s (Python child: 0.185 -> 0.148 ms); C=16 +4 %; C=8 within noise; C=4 -9 % tasks/s
# (3463 -> 3139), where holding three of four requests leaves the child idle; C=1 never
# waits. 0.1 ms per request seldom reached the mode at C=64, and nor did entering it at 4.
COALESCE_PER_REQUEST_BATCHING = 0.0002
# A frame this big goes at once: what a shared write saves is per write, and copying a big
# frame costs far more than that (1 MiB configs at C=16 waited up to 2 ms in the batching mode).
COALESCE_BELOW = 64 * 1024
BATCH_PAYS = 3


class Transport:
    def __init__(
        self,
        stdin: asyncio.StreamWriter,
        read_stdout_with: Callable[[Callable[[bytes], None]], None],
        connection: Connection,
    ):
        self.connection = connection
        self._stdin = stdin
        self._read_stdout_with = read_stdout_with
        self._closed = False
        self._queue: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._batching = False

    def send(self, event: Event) -> None:
        """Encode and send one frame now (raises LocalProtocolError if it cannot be framed)."""
        self.send_frame(self.connection.send(event))

    def send_frame(self, frame: bytes, *, behind: int = 0) -> None:
        """Send a frame; `behind` requests in flight let it wait briefly to share a write with others."""
        if self._closed:
            return
        self._queue.append(frame)
        if not behind or len(frame) >= COALESCE_BELOW:
            self._flush()
        elif self._timer is None:
            per = COALESCE_PER_REQUEST_BATCHING if self._batching else COALESCE_PER_REQUEST
            self._timer = asyncio.get_running_loop().call_later(min(COALESCE_MAX, behind * per), self._flush_timed)

    def _flush_timed(self) -> None:
        self._batching = len(self._queue) >= BATCH_PAYS
        self._flush()

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
        """Feed stdout to the connection until end of input; protocol errors propagate.

        The bytes come from the pipe's callback, not through a StreamReader and a task
        woken for each read: that saved a loop turn per answer (issue 17)."""
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        receive = self.connection.receive_data

        def on_data(data: bytes) -> None:
            if ended.done():
                return  # a protocol error ended the output, or nobody reads it any more
            try:
                events = receive(data)
                if events:
                    on_events(events)
            except ProtocolError as exc:
                # Frames that came complete before the bad bytes are answers like any other:
                # whether garbage shares their read or comes later must not change the outcome.
                ended.set_exception(exc)  # first: whatever on_events does, reading has ended
                if exc.events:
                    on_events(exc.events)
                return
            except Exception as exc:  # a bug of ours: it leaves run_reader as it would a reader task
                ended.set_exception(exc)
                return
            if not data:
                ended.set_result(None)

        self._read_stdout_with(on_data)
        try:
            await ended
        finally:
            if not ended.done():
                ended.cancel()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
