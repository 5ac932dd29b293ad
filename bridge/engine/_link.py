"""The plugin's side of the engine's gRPC interface: register, answer, heartbeat, reconnect.

Theory of operation. One grpc.aio channel lives for the whole run; gRPC itself redials a
lost connection (we cap its backoff at one second, so a returning engine is seen within
about a second). Each time the channel is ready, the link opens Register and DebugStream
with the hex `name`/`mode` metadata and serves them until either breaks or a health check
fails; then it tells the handler the connection is down and waits for the channel again.

Requests are handed to a `RequestHandler` in tasks that outlive any one connection.
Before reading each request the reader takes a slot (at most `max_inflight`, and no more
than the children can take); while no slot is free it does not read, so gRPC's flow
control pushes back on the engine. Answers go to an outbox per stream and are written by
one writer per stream; an answer whose write failed stays in the outbox and goes out on
the next connection, unless it is older than REDELIVER_TTL or failed REDELIVER_MAX times.
Answers written in the RESEND_WINDOW before a stream broke go out again too: the engine
may have lost them with the stream, and a repeated elementJob is the lesser harm.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import grpc
import grpc.aio

from flow_bridge.core import UNAVAILABLE, Answer, Request, Settings, failure
from flow_bridge.protocol import engine_pb2 as pb

logger = logging.getLogger("flow_bridge.engine")

SERVICE = "engine.PluginService"
REDELIVER_TTL = 600.0
REDELIVER_MAX = 5
# gRPC reports a write done once the message is handed to the transport, not when the
# engine has read it; answers written this shortly before a stream broke are sent again.
RESEND_WINDOW = 0.5
# Results and configs may be as large as a frame; gRPC's 4 MiB default is too small.
MESSAGE_SLACK = 1024 * 1024


class RequestHandler(Protocol):
    async def handle(self, request: Request) -> Answer: ...

    def notify_state(self, connected: bool) -> None: ...


def hex_metadata(name: str, mode: str) -> tuple[tuple[str, str], ...]:
    """The engine wants each metadata value as lower-case hex of its UTF-8 bytes."""
    return (("name", name.encode("utf-8").hex()), ("mode", mode.encode("utf-8").hex()))


def channel_options(max_message: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_receive_message_length", max_message),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.enable_retries", 0),
    ]


@dataclass(slots=True)
class _Outgoing:
    message: Any
    element_job: str
    created: float
    failures: int = 0


class Outbox:
    """Answers waiting for a stream to carry them, oldest first."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: collections.deque[_Outgoing] = collections.deque()
        self.writing = 0  # items taken by a writer whose write has not completed yet
        self.recent: collections.deque[tuple[float, _Outgoing]] = collections.deque()
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
        now = time.monotonic()
        self.recent.append((now, item))
        while self.recent and now - self.recent[0][0] > RESEND_WINDOW:
            self.recent.popleft()

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
                )
        self.items = keep


def _to_response(request: Request, answer: Answer) -> Any:
    cls = pb.DebugResponse if request.debug else pb.FlowResponse
    return cls(
        elementJob=request.element_job,
        status=answer.status,
        info=answer.info,
        detail=answer.detail,
        result=answer.result,
    )


class EngineLink:
    def __init__(self, settings: Settings, handler: RequestHandler, slots: int) -> None:
        self.settings = settings
        self.handler = handler
        self.metadata = hex_metadata(settings.name or "", settings.plugin_type)
        # asyncio's own primitives on the per-task path: grpc.aio ties us to asyncio, and
        # they cost a fraction of anyio's portable ones.
        self.slots = asyncio.Semaphore(max(1, slots))
        self._tasks: set[asyncio.Task[None]] = set()
        self.outboxes = {False: Outbox("flow"), True: Outbox("debug")}
        self.inflight: dict[int, Request] = {}
        self._next_token = 0
        self.draining = False
        self.connected = False
        self._idle = asyncio.Event()  # set while nothing is in flight
        self._idle.set()
        self._closing = False
        self._connection_scope: anyio.CancelScope | None = None
        self._channel: grpc.aio.Channel | None = None

    # --- the run loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect until close()."""
        s = self.settings
        self._channel = grpc.aio.insecure_channel(s.target, options=channel_options(s.max_frame + MESSAGE_SLACK))
        attempt = 0
        try:
            while not self._closing:
                attempt += 1
                if not await self._wait_reachable(attempt):
                    continue
                started = time.monotonic()
                reason = await self._serve_connection()
                if self._closing:
                    break
                logger.warning("engine connection lost: %s; reconnecting", reason)
                if time.monotonic() - started < 2.0:
                    # Reachable but refusing our streams: do not spin.
                    await anyio.sleep(min(s.retry_interval, 0.2 * 2 ** min(attempt, 8)))
                else:
                    attempt = 0
        finally:
            with anyio.CancelScope(shield=True):
                await self._channel.close()

    async def _wait_reachable(self, attempt: int) -> bool:
        assert self._channel is not None
        s = self.settings
        limit = s.connect_timeout if attempt == 1 else s.retry_interval
        with anyio.move_on_after(limit):
            await self._channel.channel_ready()
            return True
        if not self._closing:
            logger.warning(
                "engine at %s not reachable (attempt %d, waited %g s); retrying, next report in %g s",
                s.target, attempt, limit, s.retry_interval,
            )
        return False

    async def _serve_connection(self) -> str:
        assert self._channel is not None
        channel = self._channel
        flow_call = channel.stream_stream(
            f"/{SERVICE}/Register",
            request_serializer=pb.FlowResponse.SerializeToString,
            response_deserializer=pb.FlowRequest.FromString,
        )(metadata=self.metadata)
        debug_call = channel.stream_stream(
            f"/{SERVICE}/DebugStream",
            request_serializer=pb.DebugResponse.SerializeToString,
            response_deserializer=pb.DebugRequest.FromString,
        )(metadata=self.metadata)
        lost: list[str] = []

        def lose(reason: str) -> None:
            if not lost:
                lost.append(reason)
            scope.cancel()

        with anyio.CancelScope() as scope:
            self._connection_scope = scope
            self.connected = True
            logger.info(
                "registered with the engine at %s as %r (%s)", self.settings.target, self.settings.name,
                self.settings.plugin_type,
            )
            self.handler.notify_state(True)
            for outbox in self.outboxes.values():
                outbox.expire()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._reader, flow_call, False, lose)
                tg.start_soon(self._reader, debug_call, True, lose)
                tg.start_soon(self._writer, flow_call, self.outboxes[False], lose)
                tg.start_soon(self._writer, debug_call, self.outboxes[True], lose)
                tg.start_soon(self._heartbeat, lose)
        self._connection_scope = None
        self.connected = False
        if not self._closing:
            for outbox in self.outboxes.values():
                resent = outbox.requeue_recent()
                if resent:
                    logger.info("%d %s answers written just before the break go out again", resent, outbox.kind)
        if self._closing:
            # A polite end: half-close both streams so the engine reads every answer we wrote.
            with anyio.move_on_after(1.0, shield=True):
                await flow_call.done_writing()
                await debug_call.done_writing()
        flow_call.cancel()
        debug_call.cancel()
        self.handler.notify_state(False)
        return lost[0] if lost else "closed"

    # --- the three kinds of work on a connection -----------------------------------------

    async def _reader(
        self, call: Any, debug: bool, lose: Callable[[str], None]
    ) -> None:
        kind = "DebugStream" if debug else "Register"
        while True:
            await self.slots.acquire()
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as exc:
                self.slots.release()
                lose(f"{kind} stream failed: {exc.code().name}: {exc.details()}")
                return
            except BaseException:
                self.slots.release()
                raise
            if message is grpc.aio.EOF:
                self.slots.release()
                lose(f"the engine closed the {kind} stream")
                return
            request = Request(
                debug=debug,
                element_job=message.elementJob,
                config=message.config,
                project_id=message.projectId,
                flow_id=message.flowId,
                job="" if debug else message.job,
                element_id=message.elementId,
            )
            token = self._next_token
            self._next_token += 1
            self.inflight[token] = request
            self._idle.clear()
            task = asyncio.get_running_loop().create_task(self._process(token, request))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("internal error while answering a request", exc_info=task.exception())

    async def _process(self, token: int, request: Request) -> None:
        if self.draining:
            answer = failure(UNAVAILABLE, "handler unavailable: the bridge is shutting down")
        else:
            try:
                answer = await self.handler.handle(request)
            except Exception as exc:  # a bug of ours must still cost only this one task
                logger.exception("internal error while handling elementJob %s", request.element_job)
                answer = failure(
                    UNAVAILABLE,
                    f"internal error in flow-bridge: {exc!r}",
                    "Please report it with the bridge's log.",
                )
        self._finish(token, request, answer)

    def _finish(self, token: int, request: Request, answer: Answer) -> None:
        if self.inflight.pop(token, None) is None:
            return  # drain() answered it already
        logger.debug("answer for elementJob %s: status %s", request.element_job, answer.status)
        response = _to_response(request, answer)
        self.outboxes[request.debug].put(_Outgoing(response, request.element_job, time.monotonic()))
        if not self.inflight:
            self._idle.set()
        self.slots.release()

    async def _writer(self, call: Any, outbox: Outbox, lose: Callable[[str], None]) -> None:
        while True:
            item = await outbox.get()
            outbox.writing += 1
            try:
                await call.write(item.message)
            except anyio.get_cancelled_exc_class():
                outbox.put(item, front=True)  # not known to be sent: keep it for the next stream
                raise
            except Exception as exc:
                item.failures += 1
                outbox.put(item, front=True)
                lose(f"writing to the {outbox.kind} stream failed: {exc!r}")
                return
            finally:
                outbox.writing -= 1
            outbox.written(item)

    async def _heartbeat(self, lose: Callable[[str], None]) -> None:
        assert self._channel is not None
        s = self.settings
        health = self._channel.unary_unary(
            f"/{SERVICE}/HealthCheck",
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString,
        )
        while True:
            await anyio.sleep(s.heartbeat_interval)
            try:
                reply = await health(
                    pb.HealthCheckRequest(name=s.name),
                    timeout=min(s.connect_timeout, s.heartbeat_interval),
                    metadata=self.metadata,
                )
            except grpc.aio.AioRpcError as exc:
                lose(f"health check failed: {exc.code().name}: {exc.details()}")
                return
            for error in reply.errors:
                logger.warning("the engine reports a registration problem: %s", error.message)
            if reply.status != pb.HealthCheckResponse.SERVING:
                lose(f"health check answered {pb.HealthCheckResponse.ServingStatus.Name(reply.status)}")
                return

    # --- shutdown ---------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Take no new requests; wait up to `grace` for those in flight; flush answers."""
        self.draining = True
        with anyio.move_on_after(grace):
            await self._idle.wait()
        if self.inflight:
            logger.warning(
                "%d requests still in flight after the %g s grace period; answering them as unavailable",
                len(self.inflight), grace,
            )
            for token, request in list(self.inflight.items()):
                self._finish(
                    token,
                    request,
                    failure(UNAVAILABLE, f"the bridge shut down before the handler answered (grace {grace:g} s)"),
                )
        with anyio.move_on_after(min(5.0, max(1.0, grace))):
            while not all(o.empty for o in self.outboxes.values()):
                await anyio.sleep(0.01)
        left = sum(len(o.items) for o in self.outboxes.values())
        if left:
            logger.error("%d answers could not be delivered: the engine is not connected", left)

    def close(self) -> None:
        self._closing = True
        if self._connection_scope is not None:
            self._connection_scope.cancel()
        for task in list(self._tasks):
            task.cancel()  # drain() answered them already
