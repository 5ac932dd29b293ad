"""One handshaken child: request ids, the pending map, dispatch by message type.

Theory of operation. `run()` owns the child's three pipes for the child's whole life.
Which message may come or go when, and for which id, is the protocol's
`Connection(Role.BRIDGE)` to say (the state table every adapter shares): a frame out of
turn, a second ready, a ready naming a version hello did not offer, or an answer for an id
not in flight breaks the protocol like a bad frame does. It writes hello and waits (start
timeout) for ready; `started` is set either way and
`start_error` says what went wrong. Afterwards every request gets an id and a `Pending`
in the map; result and error frames complete it, log frames are logged (and kept for
debug requests). An id stays in the map until the child answers it, even after the
engine was answered with a timeout, so a late answer is expected rather than a protocol
fault. When the child's output ends or breaks the protocol, every pending request is
completed with a crash or protocol failure, the child is ended, and `finished` is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from flow_bridge.core import CRASH, OUTPUT_AFTER_EXIT, PROTOCOL, Failure, LogRecord, Request, now_rfc3339
from flow_bridge.protocol import (
    PROTOCOL_VERSIONS,
    Cancel,
    Connection,
    Error,
    Event,
    Hello,
    Log,
    ProtocolError,
    Ready,
    Result,
    Role,
    Stop,
)

from ._platform import Holder
from ._process import Child, ExitStatus, StartError, handler_logger, settle_output
from ._transport import Transport

logger = logging.getLogger("flow_bridge.session")
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
EXEC_ADVICE = (
    "does it use a flow-bridge adapter (SPEC.md)? For a plain script that reads JSON on stdin, "
    "use exec mode: flow-bridge run --exec -- CMD"
)

BUILD_ADVICE = (
    "it was still building (its stderr says so). Build it once ahead, for example "
    "`./run < /dev/null`, or give it longer with --start-timeout (plugin.start-timeout)"
)
# What a build says on stderr: the examples' and init projects' own "building ..." line, and
# the toolchains' progress lines.
_BUILD_WORDS = ("building", "compiling ", "downloading", "go: downloading", "[info] building")


def _still_building(stderr_tail: str) -> bool:
    """Whether the last stderr lines are a build's, with no sign that it finished."""
    lines = [line.strip().lower() for line in stderr_tail.splitlines() if line.strip()]
    if not lines or any(line.startswith("built in") for line in lines[-2:]):
        return False
    return any(any(word in line for word in _BUILD_WORDS) for line in lines)


# How long a child that exited (or was killed) may take to be reaped before it is killed again.
EXIT_WAIT = 2.0
KILLED_EXIT_WAIT = 1.0
# After the exit, how long stderr may take to deliver its last lines, which usually say why.
STDERR_AFTER_EXIT = 0.5


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(slots=True, eq=False)
class Pending:
    """One request in flight. Waiting uses a bare future and a loop timer: this runs
    for every task, and costs far less than a cancel scope per wait. Or nobody waits, and
    `on_done` is called with the outcome instead (the supervisor's handle_now)."""

    id: int
    request: Request
    outcome: Result | Error | Failure | None = None
    logs: list[LogRecord] | None = None
    on_done: Callable[[Pending], None] | None = field(default=None, repr=False)
    _future: asyncio.Future[None] | None = field(default=None, repr=False)

    def complete(self, outcome: Result | Error | Failure) -> None:
        if self.outcome is None:
            self.outcome = outcome
            if self._future is not None and not self._future.done():
                self._future.set_result(None)
            if self.on_done is not None:
                self.on_done(self)

    async def wait(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: for as long as it takes) for the outcome; True if it came."""
        if self.outcome is not None:
            return True
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()
        timer = loop.call_later(max(0.0, timeout), _expire, future) if timeout is not None else None
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()
            self._future = None
        return self.outcome is not None


def describe_stray_output(snippet: bytes) -> str:
    """Turn the first bytes of a broken stream into a sentence a user can act on."""
    text = snippet.decode("utf-8", "replace")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if snippet and printable >= 0.8 * len(text):
        return (
            f"the handler wrote text to stdout: {text[:60]!r}. stdout carries frames only; "
            "log to stderr instead (adapters move print() there for you)"
        )
    return f"bytes seen: {snippet[:32].hex(' ')}"


class Session:
    def __init__(
        self,
        child: Child,
        *,
        plugin: str,
        plugin_type: str,
        max_frame: int,
        start_timeout: float,
        bridge_version: str,
    ) -> None:
        self.child = child
        self.label = child.label
        self.connection = Connection(Role.BRIDGE, max_frame)  # hello's limit holds both ways
        self.transport = Transport(child.stdin, child.process.read_stdout_with, self.connection)
        self.hello = Hello(
            protocols=PROTOCOL_VERSIONS,
            plugin=plugin,
            plugin_type=plugin_type,
            max_frame=max_frame,
            bridge=bridge_version,
        )
        self.start_timeout = start_timeout
        self.pending: dict[int, Pending] = {}
        self.ready: Ready | None = None
        self.started = anyio.Event()
        self.finished = anyio.Event()
        self.start_error: StartError | None = None
        self.end: Failure | None = None  # why the session ended, once it has
        self.exit_status: ExitStatus | None = None
        self._next_id = 1
        self.answered = 0  # requests the child answered itself: a sign that it works
        self._broken: ProtocolError | None = None
        self._output_ended = anyio.Event()
        self._handshake_over = anyio.Event()  # ready came, or the output ended first
        self._stopping = False
        self._exited = False  # the child exited and its output did not end with it
        self.escaped: list[Holder] = []  # what held its output, ended when the child ended

    @property
    def load(self) -> int:
        return len(self.pending)

    @property
    def capacity(self) -> int:
        return self.ready.concurrency if self.ready else 0

    @property
    def alive(self) -> bool:
        return (
            self.ready is not None and not self._output_ended.is_set() and not self._exited
            and not self._stopping
        )

    # --- requests ---------------------------------------------------------------

    def submit(self, request: Request, timeout_ms: int) -> Pending:
        """Send one request; raises LocalProtocolError when it cannot be framed."""
        request_id = self._next_id
        self._next_id += 1
        # Fields in SPEC order; the values come typed from protobuf, so no event is built.
        message: dict[str, object] = {"type": "debug" if request.debug else "task", "id": request_id,
                                      "config": request.config, "project_id": request.project_id,
                                      "flow_id": request.flow_id}
        if not request.debug:
            message["job"] = request.job
        message["element_id"] = request.element_id
        message["element_job"] = request.element_job
        message["timeout_ms"] = timeout_ms
        frame = self.connection.send_map(message)
        behind = len(self.pending)  # an idle child gets its task at once (C=1 latency)
        pending = Pending(request_id, request, logs=[] if request.debug else None)
        self.pending[request_id] = pending
        self.transport.send_frame(frame, behind=behind)
        return pending

    def cancel(self, pending: Pending, reason: str = "timeout") -> None:
        # After stop the bridge sends nothing (SPEC 2.5): the grace period ends such a request.
        if pending.id in self.pending:
            self.send(Cancel(id=pending.id, reason=reason))

    def send(self, event: Event) -> None:
        """Send a frame if the state table lets the bridge send it now; drop it otherwise."""
        if not self._output_ended.is_set() and self.connection.may_send(event.TYPE):
            self.transport.send(event)

    def stop(self) -> None:
        """Ask the child to finish what it has and exit (SPEC 2.5)."""
        if not self._stopping:
            self._stopping = True
            self.send(Stop())

    # --- the child's output -------------------------------------------------------

    def _on_events(self, events: list[Event]) -> None:
        # The connection let each event through in its turn, and an answer only for an id in
        # flight: the ids it keeps are those of self.pending, added and removed in step.
        for event in events:
            if isinstance(event, (Result, Error)):
                pending = self.pending.pop(event.id)
                self.answered += 1
                pending.complete(event)
            elif isinstance(event, Log):
                self._on_log(event)
            elif isinstance(event, Ready):
                self.ready = event
                self._handshake_over.set()

    def _on_log(self, event: Log) -> None:
        level = _LOG_LEVELS[event.level]
        pending = self.pending.get(event.id) if event.id is not None else None
        if pending is not None:
            job = pending.request.element_job
            handler_logger.log(level, "[%s] elementJob %s: %s", self.label, job, event.msg,
                               extra={"element_job": job})
            if pending.logs is not None:
                pending.logs.append(LogRecord(event.level, event.msg, event.time or now_rfc3339()))
        else:
            # No request, or one already answered (SPEC 2.3: logged without a request).
            handler_logger.log(level, "[%s] %s", self.label, event.msg)

    async def _read(self) -> None:
        try:
            await self.transport.run_reader(self._on_events)
        except ProtocolError as exc:
            # Cutting a dead child's held pipes may cut a frame short too: that is the exit, not a fault.
            if not (self._exited and exc.kind == "truncated"):
                self._broken = exc
        self._output_ended.set()
        self._handshake_over.set()

    # --- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        """Handshake, serve, and clean up; returns once the child is gone."""
        stderr_done = anyio.Event()

        async def pump() -> None:
            await self.child.pump_stderr()
            stderr_done.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pump)
                tg.start_soon(self._read)
                self.transport.send(self.hello)
                with anyio.move_on_after(self.start_timeout):
                    await self._until(self._handshake_over)
                if self.ready is None:
                    self.start_error = await self._explain_start_failure(stderr_done)
                    self.started.set()
                else:
                    self.started.set()
                    await self._until(self._output_ended)
                    self.end = await self._explain_end(stderr_done)
                    for pending in list(self.pending.values()):
                        pending.complete(self.end)
                    self.pending.clear()
                tg.cancel_scope.cancel()
        finally:
            self.transport.close()
            with anyio.CancelScope(shield=True):
                self.exit_status = await self.child.close(grace=0)
            self.started.set()
            self.finished.set()

    async def _until(self, event: anyio.Event) -> None:
        """Until `event` (the handshake, or the end of output), or the child's exit.

        A child is dead when its process exits, even if something it started still holds its
        stdout (issue 11.4): after the exit, the output gets OUTPUT_AFTER_EXIT to deliver what
        the child wrote before it died, and whoever holds the pipe beyond that is ended."""
        async with anyio.create_task_group() as tg:

            async def on_event() -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            async def on_exit() -> None:
                await self.child.process.wait()
                with anyio.move_on_after(OUTPUT_AFTER_EXIT):
                    await event.wait()
                    return  # on_event ends the wait
                self._exited = True  # not alive: no more requests for it
                with anyio.CancelScope(shield=True):
                    self.escaped = await settle_output(
                        self.child.process, self._output_ended.wait, f"handler {self.label}"
                    )
                # When the pipes had to be cut, a frame cut short is the exit's doing, not a fault.
                self._output_ended.set()
                self._handshake_over.set()
                tg.cancel_scope.cancel()

            tg.start_soon(on_event)
            tg.start_soon(on_exit)

    async def _wait_exit(self, stderr_done: anyio.Event, within: float) -> ExitStatus | None:
        status = None
        with anyio.move_on_after(within):
            status = await self.child.wait()
        with anyio.move_on_after(STDERR_AFTER_EXIT):
            await stderr_done.wait()
        return status

    async def _explain_start_failure(self, stderr_done: anyio.Event) -> StartError:
        if self._broken is not None:
            self.child.kill()
            await self._wait_exit(stderr_done, KILLED_EXIT_WAIT)
            return StartError(
                f"handler {self.label} broke the protocol during the handshake: {self._broken}; "
                f"{describe_stray_output(self._broken.snippet)}. {EXEC_ADVICE}"
            )
        if self._output_ended.is_set():
            status = await self._wait_exit(stderr_done, EXIT_WAIT)
            how = status.describe() if status else "closed its stdout"
            tail = self.child.stderr_tail(10)
            return StartError(
                f"handler {self.label} {how} before completing the handshake"
                + (f"; its last stderr lines:\n{tail}" if tail else "; it wrote nothing to stderr")
            )
        self.child.kill()
        await self._wait_exit(stderr_done, KILLED_EXIT_WAIT)
        tail = self.child.stderr_tail(5)
        advice = BUILD_ADVICE if _still_building(tail) else EXEC_ADVICE
        return StartError(
            f"handler {self.label} did not complete the handshake in {self.start_timeout:g} s: {advice}"
            + (f"\nits last stderr lines:\n{tail}" if tail else "")
        )

    async def _explain_end(self, stderr_done: anyio.Event) -> Failure:
        if self._broken is not None:
            self.child.kill()
            await self._wait_exit(stderr_done, KILLED_EXIT_WAIT)
            advice = describe_stray_output(self._broken.snippet)
            logger.error("handler %s broke the protocol: %s; %s", self.label, self._broken, advice)
            return Failure(PROTOCOL, f"handler broke the protocol: {self._broken}", advice)
        status = await self._wait_exit(stderr_done, EXIT_WAIT)
        if status is None:
            self.child.kill()
            how = "closed its stdout"
        else:
            how = status.describe()
        tail = self.child.stderr_tail()
        if not self._stopping:
            logger.error(
                "handler %s %s%s", self.label, how, f"; last stderr lines:\n{tail}" if tail else ""
            )
        return Failure(CRASH, f"handler {how} while running this task", tail)
