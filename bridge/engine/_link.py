"""One plugin's side of the engine's gRPC interface: register, answer, reconnect.

Theory of operation. A service's plugins share one `EngineChannel` (`_channel`): one
gRPC channel, one heartbeat. Each plugin has a `PluginLink`: while the channel is
connected it opens Register with its own hex `name`/`mode` metadata and serves it until it
breaks; then it alone waits for the channel and opens it again, while the other plugins'
streams go on. DebugStream lives inside that plugin's connection on a schedule of its own:
when it ends, fails, or the engine does not have it (UNIMPLEMENTED: engines older than
late 2023), it is opened again after a backoff, and Register never notices. Its slots,
outboxes and handler are its own, so one plugin's crash loop, hang or oversize answer
costs the others nothing.

Requests are handed to a `RequestHandler`, and outlive any one connection. A request the
handler can take at once (`handle_now`: a free child) goes with no task of its own, and
its answer comes back through a callback; the others get a task that awaits `handle()`.
Before reading each task the Register reader takes a slot (at most `max_inflight`, and
no more than the children can take); while no slot is free it does not read, so gRPC's
flow control pushes back on the engine. Debug requests have an allowance of their own,
DEBUG_SLOTS, so that a waiting DebugStream reader never holds a task's slot.

Every answer is serialized once, and its size checked against what the engine takes
(`_limits`), before it goes to an outbox per stream; one writer per stream writes it.
An answer whose write failed stays in the outbox and goes out on the next stream, unless
it is older than REDELIVER_TTL or failed REDELIVER_MAX times. Answers written in the
RESEND_WINDOW before a stream broke go out again too, at most as many as the stream can
have in flight: the engine may have lost them with the stream, and a repeated elementJob
is the lesser harm.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import grpc
import grpc.aio

from flow_bridge.core import TOO_LARGE, UNAVAILABLE, Answer, Request, Settings, failure, internal_error, metrics
from flow_bridge.protocol import engine_pb2 as pb

from ._channel import EngineChannel, hex_metadata
from ._limits import (
    Unfit,
    answer_limit,
    answer_too_large,
    engine_limit,
    refit,
    request_limit,
    request_reader,
    request_too_large,
    request_unreadable,
    response_bytes,
)

logger = logging.getLogger("flow_bridge.engine")

REDELIVER_TTL = 600.0
REDELIVER_MAX = 5
# gRPC reports a write done once the message is handed to the transport, not when the
# engine has read it; answers written this shortly before a stream broke are sent again.
RESEND_WINDOW = 0.5
# Debug requests come from a person pressing "debug" in the flow editor, one at a time;
# two lets the next one be read while one runs. They never take a task's slot.
DEBUG_SLOTS = 2
# DebugStream is opened again after it ends or fails: first after DEBUG_RETRY_START
# seconds, doubling up to the retry interval. One that served a request, or stayed up
# DEBUG_HEALTHY seconds, starts the backoff afresh.
DEBUG_RETRY_START = 1.0
DEBUG_HEALTHY = 60.0
# A connection that breaks sooner than this was refused rather than lost: back off.
REFUSED_WITHIN = 2.0
# A Register stream counts as accepted once the engine sent its first message (or headers),
# or once it stayed open this long. Neither the flow engine nor the stand-in sends headers
# before the first task, but a server without the method (any other gRPC service) refuses
# the call in one round trip, trailers only: 0.5 s is many round trips of any network an
# engine is reached over. Tasks are read meanwhile; only the "registered" state waits.
ACCEPT_WAIT = 0.5
# The Register refusal that says the port is not the flow engine's.
NOT_AN_ENGINE = "UNIMPLEMENTED"
# On close, how long the engine may take to read what was written before the streams go.
CLOSE_FLUSH = 1.0
# After a second signal, how long answers may take to reach the engine before the bridge exits.
HURRIED_FLUSH = 1.0


class RequestHandler(Protocol):
    async def handle(self, request: Request) -> Answer: ...

    def handle_now(self, request: Request, on_answer: Callable[[Answer], None]) -> bool:
        """Take the request without a task, if that can be done now (True: on_answer gets its answer)."""

    def notify_state(self, connected: bool) -> None: ...


@dataclass(slots=True)
class _Outgoing:
    message: Any  # the serialized response, as it goes on the wire
    element_job: str
    created: float
    failures: int = 0


class Outbox:
    """Answers waiting for a stream to carry them, oldest first."""

    def __init__(self, kind: str, resend_limit: int = 64) -> None:
        self.kind = kind
        self.items: collections.deque[_Outgoing] = collections.deque()
        self.writing = 0  # items taken by a writer whose write has not completed yet
        # What a break may have lost: bounded by what can be in flight, not by throughput.
        self.recent: collections.deque[tuple[float, _Outgoing]] = collections.deque(maxlen=max(1, resend_limit))
        self._wake: asyncio.Future[None] | None = None

    def put(self, item: _Outgoing, *, front: bool = False) -> None:
        if front:
            self.items.appendleft(item)
        else:
            self.items.append(item)
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def get(self) -> _Outgoing:
        while not self.items:
            if self._wake is None:
                self._wake = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._wake)
        return self.items.popleft()

    def written(self, item: _Outgoing) -> None:
        self.recent.append((time.monotonic(), item))

    def take_refused(self, limit: int) -> list[_Outgoing]:
        """The answers written lately that are over `limit`: the engine cannot have taken them."""
        refused = [item for _, item in self.recent if len(item.message) > limit]
        if refused:
            kept = [(when, item) for when, item in self.recent if len(item.message) <= limit]
            self.recent.clear()
            self.recent.extend(kept)
        return refused

    def requeue_recent(self) -> int:
        """After a stream broke: put back what it may not have delivered, oldest first."""
        now = time.monotonic()
        fresh = [item for when, item in self.recent if now - when <= RESEND_WINDOW]
        self.recent.clear()
        for item in reversed(fresh):
            self.put(item, front=True)
        return len(fresh)

    @property
    def empty(self) -> bool:
        return not self.items and not self.writing

    def expire(self) -> None:
        """Drop answers too old or too often failed to be worth sending (logged, never silent)."""
        now = time.monotonic()
        keep: collections.deque[_Outgoing] = collections.deque()
        for item in self.items:
            if now - item.created <= REDELIVER_TTL and item.failures < REDELIVER_MAX:
                keep.append(item)
            else:
                logger.error(
                    "dropping the %s answer for elementJob %s: undeliverable for %.0f s after %d failed writes",
                    self.kind, item.element_job, now - item.created, item.failures,
                    extra={"element_job": item.element_job},
                )
        self.items = keep


# How much of a failed request's info goes into its warning line: enough to tell the cause.
FAILURE_INFO_LOGGED = 300


class _PluginLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """The engine logger, naming the plugin when the service has more than one."""

    def __init__(self, link: PluginLink) -> None:
        super().__init__(logger, {})
        self.link = link

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        if self.link.channel.shared:
            return f"plugin {self.link.name}: {msg}", kwargs
        return msg, kwargs


class PluginLink:
    """One plugin's streams, slots and outboxes on the service's shared `EngineChannel`."""

    def __init__(self, settings: Settings, handler: RequestHandler, slots: int, channel: EngineChannel) -> None:
        if not settings.name:
            raise ValueError("PluginLink needs the plugin name resolved (see flow_bridge.gateway)")
        self.settings = settings
        self.name: str = settings.name
        self.mode: str = settings.type or "service"
        self.handler = handler
        self.channel = channel
        self.log = _PluginLog(self)
        self.metadata = hex_metadata(self.name, self.mode)
        self.answer_limit = answer_limit(settings.max_frame)
        self.request_limit = request_limit(settings.max_frame)
        # asyncio's own primitives on the per-task path: grpc.aio ties us to asyncio, and
        # they cost a fraction of anyio's portable ones.
        task_slots = max(1, slots)
        self.slots = {False: asyncio.Semaphore(task_slots), True: asyncio.Semaphore(DEBUG_SLOTS)}
        self._tasks: set[asyncio.Task[None]] = set()
        self.outboxes = {False: Outbox("flow", task_slots), True: Outbox("debug", DEBUG_SLOTS)}
        self.inflight: dict[int, Request] = {}
        self._began: dict[int, float] = {}  # when each request in flight was read, for its latency
        self._next_token = 0
        self._registrations = 0
        self.draining = False
        self.connected = False
        self._idle = asyncio.Event()  # set while nothing is in flight
        self._idle.set()
        self.closing = False
        self._calls: dict[bool, Any] = {}  # the open Register and DebugStream calls
        self._connection_scope: anyio.CancelScope | None = None
        self._debug_state = ""  # the last DebugStream state logged, so each change is logged once
        self._register_state = ""  # likewise for Register refusals that say "not the engine"
        self._first_read = anyio.Event()  # set by the first task read on the current Register stream
        self._debug_served = 0  # debug requests read, across streams
        channel.add(self)

    # --- the serve loop, inside the channel's connection ------------------------------

    async def serve(self, channel: EngineChannel) -> None:
        """Register, serve, and register again after a break, until close() or the channel's connection ends."""
        attempt = 0
        while not self.closing:
            if attempt and not await channel.wait_reachable(attempt):
                attempt += 1
                continue
            started = time.monotonic()
            reason, registered = await self._serve_connection()
            if self.closing:
                return
            attempt += 1
            if not registered and reason.startswith(f"Register stream failed: {NOT_AN_ENGINE}"):
                # Not the engine at all: nothing is lost and nothing will change soon, so one
                # plain message (again only after a change) and the retry interval between tries.
                if self._register_state != NOT_AN_ENGINE:
                    self._register_state = NOT_AN_ENGINE
                    self.log.error(
                        "the server at %s answers gRPC but has no engine.PluginService/Register: is this "
                        "the flow engine's port? (%s); trying again every %g s",
                        self.settings.target, reason, self.settings.retry_interval,
                    )
                else:
                    self.log.debug("still no engine.PluginService/Register at %s", self.settings.target)
                await anyio.sleep(self.settings.retry_interval)
                continue
            self._register_state = ""
            self.log.warning("engine connection lost: %s; reconnecting", reason)
            if time.monotonic() - started < REFUSED_WITHIN:
                # Reachable but refusing our streams: do not spin.
                await anyio.sleep(min(self.settings.retry_interval, 0.2 * 2 ** min(attempt, 8)))
            else:
                attempt = 1

    def _open(self, debug: bool) -> Any:
        method, request_class = ("DebugStream", pb.DebugRequest) if debug else ("Register", pb.FlowRequest)
        return self.channel.open_stream(method, request_reader(request_class, self.request_limit), self.metadata)

    async def _serve_connection(self) -> tuple[str, bool]:
        """Serve one Register stream until it breaks: why it ended, and whether the engine accepted it.

        The stream's tasks are read from the start, but the plugin is "registered" (logged,
        in the metrics, told to the handler) only once the engine accepted the stream
        (`_accepted`); until then nothing is written on it, so answers waiting to go out again
        are not spent on a server that is no engine, and no DebugStream is opened."""
        flow_call = self._calls[False] = self._open(debug=False)
        lost: list[str] = []
        registered = False

        def lose(reason: str) -> None:
            if not lost:
                lost.append(reason)
            scope.cancel()

        try:
            with anyio.CancelScope() as scope:
                self._connection_scope = scope
                self._first_read = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._reader, flow_call, False, lose)
                    refusal = await self._accepted(flow_call)
                    if refusal is not None:
                        lose(refusal)
                        return lost[0], False
                    registered = self.connected = True
                    self._registrations += 1
                    metrics.engine_state(self.name, True, reconnect=self._registrations > 1)
                    self.log.info("registered with the engine at %s as %r (%s)",
                                  self.settings.target, self.name, self.mode)
                    self._register_state = ""
                    self.handler.notify_state(True)
                    for outbox in self.outboxes.values():
                        outbox.expire()
                    tg.start_soon(self._writer, flow_call, self.outboxes[False], lose)
                    tg.start_soon(self._debug_streams)
        finally:
            # Also when the channel ends the connection (health checks) and cancels us.
            self._connection_scope = None
            self._calls.pop(False, None)
            metrics.engine_state(self.name, False, lost[0] if lost else "closed")
            if registered:
                self.connected = False
                self._end_stream(flow_call, self.outboxes[False])
                self.handler.notify_state(False)
            else:
                flow_call.cancel()  # nothing was written on it: nothing to send again
        return (lost[0] if lost else "closed"), registered

    async def _accepted(self, call: Any) -> str | None:
        """None once the engine has taken the Register stream; else why it refused it.

        grpc.aio's wait_for_connection() returns as soon as our headers are out, so it says
        nothing about the method; and a refusal's trailers-only answer may show its (empty)
        headers a moment before its status, so headers do not prove it either. A server
        without the method ends the call at once (UNIMPLEMENTED). Accepted is therefore: a
        first task came, or the call was still open ACCEPT_WAIT seconds after our headers
        went out (a channel still connecting must not make a refusal look like acceptance)."""
        try:
            await call.wait_for_connection()
        except grpc.aio.AioRpcError:
            pass  # refused already: the code below says how
        async with anyio.create_task_group() as tg:

            async def ended() -> None:
                await call.code()
                tg.cancel_scope.cancel()

            async def task_came() -> None:
                await self._first_read.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(ended)
            tg.start_soon(task_came)
            await anyio.sleep(ACCEPT_WAIT)
            tg.cancel_scope.cancel()
        if self._first_read.is_set() or not call.done():
            return None
        code = await call.code()
        if code == grpc.StatusCode.OK:
            return "the engine closed the Register stream"
        return f"Register stream failed: {code.name}: {await call.details()}"

    def _end_stream(self, call: Any, outbox: Outbox) -> None:
        """After a stream ended: what it may have lost goes out again (unless we are closing)."""
        if not self.closing:
            resent = outbox.requeue_recent()
            metrics.answers_resent(self.name, resent)
            if resent:
                self.log.info("%d %s answers written just before the break go out again", resent, outbox.kind)
        call.cancel()

    # --- DebugStream, on its own schedule ---------------------------------------------

    async def _debug_streams(self) -> None:
        """Keep a DebugStream open beside Register; its failures never end the connection."""
        delay = DEBUG_RETRY_START
        while True:
            opened, served_before = time.monotonic(), self._debug_served
            reason = await self._serve_debug_stream()
            if self.closing:
                return
            if self._debug_served > served_before or time.monotonic() - opened >= DEBUG_HEALTHY:
                delay = DEBUG_RETRY_START
            self._debug_changed(reason, delay)
            await anyio.sleep(delay)
            delay = min(max(self.settings.retry_interval, DEBUG_RETRY_START), delay * 2)

    async def _serve_debug_stream(self) -> str:
        call = self._calls[True] = self._open(debug=True)
        lost: list[str] = []

        def lose(reason: str) -> None:
            if not lost:
                lost.append(reason)
            scope.cancel()

        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._reader, call, True, lose)
                    tg.start_soon(self._writer, call, self.outboxes[True], lose)
        finally:
            self._calls.pop(True, None)
            self._end_stream(call, self.outboxes[True])
        return lost[0] if lost else "ended"

    def _debug_changed(self, reason: str, delay: float) -> None:
        """Log a DebugStream failure once per kind of failure, not once per retry."""
        code = re.search(r"stream failed: ([A-Z_]+)", reason)
        state = code.group(1) if code else reason
        if state == self._debug_state:
            self.log.debug("DebugStream still unavailable (%s); again in %g s", reason, delay)
            return
        self._debug_state = state
        if state == "UNIMPLEMENTED":
            self.log.warning(
                "the engine does not offer DebugStream (UNIMPLEMENTED: an engine older than late 2023?); "
                "tasks are served, debug requests are not; asking again every %g s at most",
                max(self.settings.retry_interval, DEBUG_RETRY_START),
            )
        else:
            self.log.warning("DebugStream lost (%s); tasks are unaffected; opening it again in %g s", reason, delay)

    def _debug_works(self) -> None:
        self._debug_served += 1
        if self._debug_state:
            self.log.info("DebugStream works again")
            self._debug_state = ""

    # --- reading, answering, writing ----------------------------------------------------

    async def _reader(self, call: Any, debug: bool, lose: Callable[[str], None]) -> None:
        kind = "DebugStream" if debug else "Register"
        slots = self.slots[debug]
        while True:
            await slots.acquire()
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as exc:
                slots.release()
                self._check_refused(exc)
                lose(f"{kind} stream failed: {exc.code().name}: {exc.details()}")
                return
            except BaseException:
                slots.release()
                raise
            if message is grpc.aio.EOF:
                slots.release()
                lose(f"the engine closed the {kind} stream")
                return
            if debug:
                self._debug_works()
            elif not self._first_read.is_set():
                self._first_read.set()  # the engine sent a task: it took the stream (_accepted)
            if isinstance(message, Unfit) or message is None:
                unfit = self._unfit(message, debug)
                if unfit is None:
                    slots.release()
                else:
                    self._start(*unfit)
                continue
            self._start(
                Request(
                    debug=debug,
                    element_job=message.elementJob,
                    config=message.config,
                    project_id=message.projectId,
                    flow_id=message.flowId,
                    job="" if debug else message.job,
                    element_id=message.elementId,
                )
            )

    def _unfit(self, message: Unfit | None, debug: bool) -> tuple[Request, Answer] | None:
        """The request and its error answer, when its elementJob is known; else log it and go on."""
        what = "DebugRequest" if debug else "FlowRequest"
        if message is None or message.element_job is None:
            self.log.error(
                "the engine sent a %s that cannot be read (%s) and has no readable elementJob: skipped, "
                "the engine times it out", what, f"{message.size} bytes" if message else "no message",
            )
            return None
        request = Request(debug=debug, element_job=message.element_job)
        if message.too_large:
            self.log.warning(
                "the engine's %s for elementJob %s is %d bytes, over the limit of %d: answering it as too large",
                what, message.element_job, message.size, self.request_limit,
                extra={"element_job": message.element_job},
            )
            return request, request_too_large(request, message.size, self.request_limit)
        self.log.error("the engine's %s for elementJob %s cannot be read: answering it as a bad request",
                       what, message.element_job, extra={"element_job": message.element_job})
        return request, request_unreadable(request, message.size)

    def _start(self, request: Request, answer: Answer | None = None) -> None:
        token = self._next_token
        self._next_token += 1
        self.inflight[token] = request
        self._began[token] = time.monotonic()
        metrics.request_started(self.name)
        self._idle.clear()
        if answer is None and not self.draining:
            try:
                if self.handler.handle_now(request, lambda answer: self._answered(token, request, answer)):
                    return
            except Exception as exc:  # a bug of ours must cost this task only, never the stream
                answer = self._internal_error(request, exc)
        self._spawn(self._process(token, request, answer))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("internal error while answering a request", exc_info=task.exception())

    async def _process(self, token: int, request: Request, answer: Answer | None) -> None:
        """Get the request answered (unless `answer` is given already), then queue the answer."""
        if answer is None:
            answer = await self._ask_handler(request)
        data: bytes | None = response_bytes(request, answer)
        kind, info = str(answer.kind), answer.info
        if data is not None and len(data) > self.answer_limit:
            size = len(data)
            data, kind = await self._fit(request, answer, size), TOO_LARGE
            info = f"answer of {size} bytes, over the engine's limit of {self.answer_limit}"
        self._conclude(token, request, data, kind, info)

    def _answered(self, token: int, request: Request, answer: Answer) -> None:
        """The handler's answer, from handle_now: _process without a task, unless it needs _fit."""
        if token not in self.inflight:
            return  # drain() answered it already: nothing to log, fit or send
        try:
            data = response_bytes(request, answer)
            if data is not None and len(data) > self.answer_limit:
                self._spawn(self._process(token, request, answer))  # _fit works in a thread
                return
            self._conclude(token, request, data, str(answer.kind), answer.info)
        except Exception as exc:  # a bug of ours must still cost only this one task
            self._spawn(self._process(token, request, self._internal_error(request, exc)))

    def _conclude(self, token: int, request: Request, data: bytes | None, kind: str, info: str) -> None:
        if kind:
            # Once per failed request, whatever failed it, so that an operator can search the
            # log by elementJob or kind (the handler's own error message included).
            self.log.warning(
                "%s elementJob %s failed [%s]: %s", "debug request" if request.debug else "task",
                request.element_job, kind, info[:FAILURE_INFO_LOGGED],
                extra={"element_job": request.element_job, "kind": kind},
            )
        self._finish(token, request, data, kind)

    async def _ask_handler(self, request: Request) -> Answer:
        if self.draining:
            return failure(UNAVAILABLE, "handler unavailable: the bridge is shutting down")
        try:
            return await self.handler.handle(request)
        except Exception as exc:  # a bug of ours must still cost only this one task
            return self._internal_error(request, exc)

    def _internal_error(self, request: Request, exc: Exception) -> Answer:
        self.log.exception("internal error while handling elementJob %s", request.element_job,
                           extra={"element_job": request.element_job})
        return internal_error(exc)

    async def _fit(self, request: Request, answer: Answer, size: int) -> bytes | None:
        """The too_large answer in place of one over the limit (None: not even that fits)."""
        limit = self.answer_limit
        self.log.warning(
            "the answer for elementJob %s is %d bytes, over the engine's limit of %d: answering it as too large",
            request.element_job, size, limit, extra={"element_job": request.element_job},
        )
        replacement = await anyio.to_thread.run_sync(answer_too_large, request, answer, size, limit)
        data = response_bytes(request, replacement)
        if len(data) > limit:
            self.log.error("even the error answer for elementJob %s does not fit: dropped", request.element_job[:200],
                           extra={"element_job": request.element_job})
            return None
        return data

    def _finish(self, token: int, request: Request, data: bytes | None, kind: str) -> None:
        """Queue the answer (`kind`: empty on success, else the error kind) and free the slot."""
        if self.inflight.pop(token, None) is None:
            return  # drain() answered it already
        metrics.request_done(self.name, request.debug, kind, time.monotonic() - self._began.pop(token, 0.0))
        self.log.debug("answer for elementJob %s: %d bytes", request.element_job, len(data or b""),
                       extra={"element_job": request.element_job})
        if data is not None:
            self.outboxes[request.debug].put(_Outgoing(data, request.element_job, time.monotonic()))
        if not self.inflight:
            self._idle.set()
        self.slots[request.debug].release()

    async def _writer(self, call: Any, outbox: Outbox, lose: Callable[[str], None]) -> None:
        while True:
            item = await outbox.get()
            if len(item.message) > self.answer_limit:
                # Queued (or held here) before the engine's smaller limit was learnt
                # (_check_refused): its too_large answer goes instead, so that it breaks no stream.
                item.message = refit(item.message, outbox.kind == "debug", self.answer_limit)
            outbox.writing += 1
            try:
                await call.write(item.message)
            except anyio.get_cancelled_exc_class():
                outbox.put(item, front=True)  # not known to be sent: keep it for the next stream
                raise
            except Exception as exc:
                # Every answer was checked to fit before it got here, so a failed write is
                # the stream's fault: it goes out on the next one. Unless the engine refused
                # an answer as too large for it, in which case that one never goes again.
                item.failures += 1
                outbox.put(item, front=True)
                if isinstance(exc, grpc.aio.AioRpcError):
                    self._check_refused(exc)
                lose(f"writing to the {outbox.kind} stream failed: {exc!r}")
                return
            finally:
                outbox.writing -= 1
            outbox.written(item)

    def _check_refused(self, exc: grpc.aio.AioRpcError) -> None:
        """The engine failed a stream for an answer over its own limit: learn it, resend nothing over it.

        Its limit may be smaller than ours (grpc-go's default is 4 MiB). Answers just written,
        and those waiting, that are over it are replaced by their too_large answers, so that
        no answer breaks a stream twice; every later one is checked against it.
        """
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            return
        recent = [item for outbox in self.outboxes.values() for _, item in outbox.recent]
        limit = engine_limit(exc.details() or "", max((len(item.message) for item in recent), default=0))
        if limit is None or limit >= self.answer_limit:
            return
        self.log.error(
            "the engine refused an answer as too large for it (%s); answers over %d bytes are answered as "
            "too large from now on", exc.details(), limit,
        )
        self.answer_limit = limit
        for outbox in self.outboxes.values():
            # Written, and refused: it goes again (the writer makes it its too_large answer),
            # however long ago it was written.
            for item in outbox.take_refused(limit):
                outbox.put(item, front=True)

    # --- shutdown ---------------------------------------------------------------------

    async def drain(self, grace: float, hurry: anyio.Event | None = None) -> None:
        """Take no new requests; wait up to `grace` (or until `hurry`) for those in flight; flush."""
        self.draining = True
        with anyio.move_on_after(grace):
            if hurry is None:
                await self._idle.wait()
            else:
                async with anyio.create_task_group() as tg:

                    async def idle() -> None:
                        await self._idle.wait()
                        tg.cancel_scope.cancel()

                    async def hurried() -> None:
                        await hurry.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(idle)
                    tg.start_soon(hurried)
        hurried_now = hurry is not None and hurry.is_set()
        if self.inflight:
            why = "a second signal" if hurried_now else f"the {grace:g} s grace period"
            self.log.warning(
                "%d requests still in flight after %s; answering them as unavailable", len(self.inflight), why
            )
            for token, request in list(self.inflight.items()):
                answer = failure(
                    UNAVAILABLE,
                    "the bridge was stopped before the handler answered" if hurried_now else
                    f"the bridge shut down before the handler answered (grace {grace:g} s)",
                )
                self._finish(token, request, response_bytes(request, answer), UNAVAILABLE)
        flush = HURRIED_FLUSH if hurried_now else min(5.0, max(1.0, grace))
        with anyio.move_on_after(flush):
            while not all(o.empty for o in self.outboxes.values()):
                await anyio.sleep(0.01)
        left = sum(len(o.items) for o in self.outboxes.values())
        if left:
            self.log.error("%d answers could not be delivered: the engine is not connected", left)

    async def aclose(self) -> None:
        """End politely: half-close both streams, so that the engine reads every answer
        written and then ends them, for at most CLOSE_FLUSH; then close().

        Cancelling a stream at once would be wrong: gRPC cancels a call whose read is
        cancelled, and answers still in its buffers would go with it.
        """
        self.closing = True
        with anyio.move_on_after(CLOSE_FLUSH):
            for call in list(self._calls.values()):
                try:
                    await call.done_writing()
                except Exception:  # the stream has just broken: nothing left to flush on it
                    pass
            while self.connected:
                await anyio.sleep(0.01)
        self.close()

    def close(self) -> None:
        """End at once: cancel the streams and the requests still being answered."""
        self.closing = True
        if self._connection_scope is not None:
            self._connection_scope.cancel()
        for task in list(self._tasks):
            task.cancel()  # drain() answered them already
