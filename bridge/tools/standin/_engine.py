"""A stand-in for the flow engine: engine.PluginService on loopback, tasks from JSON lines.

It speaks only the engine's public gRPC interface, so any plugin can register with it,
flow-bridge or not. Tasks wait in a queue until a plugin has registered; each is sent on
the newest Register (or DebugStream) stream, at most `concurrency` unanswered at once.
A task that names a plugin (`"plugin"` in its line, or `engine --plugin NAME`) goes only
to the streams registered under that name, as the real engine routes by the `name`
metadata; one that names none goes to whichever plugin takes it first.
A task sent on a stream that then broke stays pending: its answer may arrive on the
plugin's next stream, matched by elementJob, as the real engine matches them.

A task too big for one gRPC message is never sent: gRPC would fail the write and with it
the stream, the task would go back to the head of the queue, and every new stream would
break on it again. Such a task is answered here at once, as failed, and the rest go on.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import grpc
import grpc.aio

from flow_bridge.engine import MESSAGE_SLACK, SERVICE
from flow_bridge.protocol import DEFAULT_MAX_FRAME, dump_json, parse_json
from flow_bridge.protocol import engine_pb2 as pb

# The plugins of one service register within milliseconds of each other: a task still
# waiting for its named plugin this long after a registration names a plugin that is not
# there (or not yet), which is worth a hint.
UNREGISTERED_HINT_AFTER = 2.0

logger = logging.getLogger("flow_bridge.standin")


class TaskLineError(ValueError):
    """One input line is not a valid task; the message says what to write instead."""


@dataclass(slots=True)
class _Task:
    debug: bool
    message: Any  # pb.FlowRequest or pb.DebugRequest
    element_job: str
    plugin: str | None = None  # the plugin it is for; None: any
    sent: float = 0.0
    queued: float = 0.0


class _Router:
    """Tasks waiting for a stream: by the plugin they name (None: any) and by kind (task or debug)."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str | None, bool], collections.deque[_Task]] = collections.defaultdict(
            collections.deque)
        self._waiters: set[asyncio.Future[None]] = set()

    def put(self, task: _Task, front: bool = False) -> None:
        queue = self.queues[(task.plugin, task.debug)]
        (queue.appendleft if front else queue.append)(task)
        for waiter in self._waiters:  # few: two streams per registered plugin
            if not waiter.done():
                waiter.set_result(None)

    async def get(self, plugin: str, debug: bool) -> _Task:
        """The next task for this plugin's stream: one naming it, else one naming no plugin."""
        while True:
            for key in ((plugin, debug), (None, debug)):
                queue = self.queues.get(key)
                if queue:
                    return queue.popleft()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)

    def remove(self, task: _Task) -> bool:
        """Take a task out of its queue; False when it is not there (a stream has it)."""
        try:
            self.queues[(task.plugin, task.debug)].remove(task)
        except ValueError:
            return False
        return True

    def waiting_for(self) -> list[str]:
        """The plugins named by tasks still queued, for a hint when none of them registers."""
        return sorted({plugin for (plugin, _), queue in self.queues.items() if plugin and queue})


def parse_task(line: str, number: int, plugin: str | None = None) -> tuple[bool, Any, str | None]:
    """One JSON line -> (debug, FlowRequest or DebugRequest, the plugin it is for); raises TaskLineError.

    `plugin` is the one a line goes to when it names none (`engine --plugin NAME`).
    """
    try:
        obj = parse_json(line)
    except json.JSONDecodeError as exc:
        raise TaskLineError(f"line {number}: not JSON ({exc}); write one object per line") from None
    except ValueError as exc:  # NaN, Infinity, 1e400, too deep: no config the engine could send
        raise TaskLineError(f"line {number}: not JSON the engine can send: {exc}") from None
    if not isinstance(obj, dict):
        raise TaskLineError(f"line {number}: expected a JSON object like {{\"config\": {{...}}}}")
    if "config_base64" in obj:
        try:
            config = base64.b64decode(obj["config_base64"], validate=True)
        except (ValueError, TypeError):
            raise TaskLineError(f"line {number}: config_base64 is not valid base64") from None
    elif "config" in obj:
        value = obj["config"]
        # A string is taken as the config's raw text, so non-JSON configs can be sent too.
        config = _utf8(value, number, "config") if isinstance(value, str) else dump_json(value)
    else:
        raise TaskLineError(f"line {number}: missing \"config\" (a JSON value, or a string sent as raw text)")
    debug = obj.get("debug", False)
    if not isinstance(debug, bool):
        raise TaskLineError(f"line {number}: \"debug\" must be true or false")
    ids: dict[str, str] = {}
    for key, default in (
        ("projectId", "standin-project"),
        ("flowId", "standin-flow"),
        ("job", f"job-{number}"),
        ("elementId", "element-1"),
        ("elementJob", f"element-job-{number}"),
    ):
        value = obj.get(key, default)
        if not isinstance(value, str):
            raise TaskLineError(f"line {number}: \"{key}\" must be a string")
        _utf8(value, number, key)  # protobuf strings are UTF-8
        ids[key] = value
    target = obj.get("plugin", plugin)
    if target is not None and (not isinstance(target, str) or not target):
        raise TaskLineError(f"line {number}: \"plugin\" must be the name of a plugin, as a string")
    if debug:
        del ids["job"]
        return True, pb.DebugRequest(config=config, **ids), target
    return False, pb.FlowRequest(config=config, **ids), target


def _utf8(text: str, number: int, key: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        fix = ("send the config as a JSON value, or its raw bytes as config_base64 in a task line"
               if key == "config" else "use text without it")
        raise TaskLineError(
            f"line {number}: \"{key}\" holds a lone surrogate (such as \\ud800), which has no UTF-8 form; {fix}"
        ) from None


def answer_record(element_job: str, debug: bool, msg: Any, plugin: str | None = None) -> dict[str, Any]:
    """An answer as the JSON object `engine` prints: result parsed when it is JSON.

    `plugin`: the plugin that answered, for a task that named one.
    """
    raw = bytes(msg.result)
    result: Any
    if not raw:
        result = None
    else:
        try:
            result = json.loads(raw)
        except ValueError:
            result = raw.decode("utf-8", "replace")
    record = {
        "elementJob": element_job,
        "status": msg.status,
        "info": msg.info,
        "detail": msg.detail,
        "result": result,
    }
    if debug:
        record["debug"] = True
    if plugin is not None:
        record["plugin"] = plugin
    return record


def _unhex(value: str | bytes | None) -> str:
    if value is None:
        return "?"
    text = value.decode() if isinstance(value, bytes) else value
    try:
        return bytes.fromhex(text).decode("utf-8")
    except ValueError:
        return f"{text} (not hex)"


@dataclass(slots=True)
class Faults:
    """Misbehaviour on request, for fault-injection tests (`engine --fault ...`)."""

    refuse: int = 0  # abort this many Register calls before accepting one
    reset_after: int = 0  # abort the Register stream once, after this many answers
    health: str = ""  # "hang": never answer HealthCheck; "not-serving": answer NOT_SERVING

    @classmethod
    def parse(cls, specs: tuple[str, ...]) -> Faults:
        faults = cls()
        for spec in specs:
            key, _, value = spec.partition("=")
            if key == "refuse" and value.isdigit():
                faults.refuse = int(value)
            elif key == "reset-after" and value.isdigit():
                faults.reset_after = int(value)
            elif key == "health" and value in ("hang", "not-serving"):
                faults.health = value
            else:
                raise ValueError(
                    f"--fault {spec!r}: expected refuse=N, reset-after=N, health=hang or health=not-serving"
                )
        return faults


class StandinEngine:
    def __init__(
        self,
        on_answer: Callable[[dict[str, Any]], None],
        *,
        concurrency: int | None = None,
        max_message: int = DEFAULT_MAX_FRAME + MESSAGE_SLACK,
        faults: Faults | None = None,
    ) -> None:
        self.on_answer = on_answer
        self.faults = faults or Faults()
        self._refused = 0
        self._received = 0
        self.router = _Router()
        self.pending: dict[str, _Task] = {}
        self.answered: set[str] = set()
        self.duplicates = 0
        self.unknown = 0
        self.too_large = 0  # answered here, unsent: over the gRPC message limit
        self.registrations = 0
        self.registered = anyio.Event()
        self.all_answered = anyio.Event()
        self.input_done = False
        self.first_sent: float | None = None
        self.latencies: list[float] = []  # seconds from sending a task to its answer
        self._outstanding = anyio.Semaphore(concurrency) if concurrency else None
        self._streams: dict[tuple[str, bool], object] = {}  # the newest stream of each plugin and kind
        self.plugin_names: set[str] = set()  # every name that registered
        self._hinted: set[str] = set()  # plugins named by tasks that were said not to be registered
        self._max_message = max_message
        self._server: grpc.aio.Server | None = None

    # --- the task queue ------------------------------------------------------------

    def submit(self, debug: bool, message: Any, plugin: str | None = None) -> None:
        element_job = message.elementJob
        if element_job in self.pending or element_job in self.answered:
            raise TaskLineError(f"elementJob {element_job!r} was already sent; each task needs its own")
        size = message.ByteSize()
        if size > self._max_message:
            self._answer_too_large(debug, message, size)
            return
        task = _Task(debug, message, element_job, plugin, queued=time.monotonic())
        self.pending[element_job] = task
        self.router.put(task)

    def _answer_too_large(self, debug: bool, message: Any, size: int) -> None:
        kind = "DebugRequest" if debug else "FlowRequest"
        info = (f"[standin] task too large: its {kind} is {size} bytes, over the gRPC message limit of "
                f"{self._max_message} bytes, so it was not sent; send a smaller config")
        logger.error("elementJob %s: %s", message.elementJob, info)
        self.too_large += 1
        self.answered.add(message.elementJob)
        response = pb.FlowResponse(elementJob=message.elementJob, status=False, info=info,
                                   detail=f"config is {len(message.config)} bytes")
        self.on_answer(answer_record(message.elementJob, debug, response))

    def finish_input(self) -> None:
        self.input_done = True
        self._check_done()

    def _check_done(self) -> None:
        if self.input_done and not self.pending:
            self.all_answered.set()

    def _on_response(self, msg: Any, debug: bool) -> None:
        task = self.pending.pop(msg.elementJob, None)
        if task is None:
            if msg.elementJob in self.answered:
                self.duplicates += 1
                logger.info("repeated answer for elementJob %s (kept the first)", msg.elementJob)
            else:
                self.unknown += 1
                logger.warning("answer for unknown elementJob %r (not sent by this engine)", msg.elementJob)
                record = answer_record(msg.elementJob, debug, msg)
                record["unexpected"] = True
                self.on_answer(record)
            return
        self.answered.add(task.element_job)
        if task.sent:
            self.latencies.append(time.monotonic() - task.sent)
        if self._outstanding is not None:
            self._outstanding.release()
        self.on_answer(answer_record(task.element_job, debug, msg, task.plugin))
        self._check_done()

    # --- gRPC ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on host:port (0 picks a free port); return the port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", self._max_message),
                ("grpc.max_receive_message_length", self._max_message),
                # gRPC sets SO_REUSEPORT by default: a second engine on a taken port would
                # "listen" too and take half of the plugins' connections.
                ("grpc.so_reuseport", 0),
            ]
        )
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "HealthCheck": grpc.unary_unary_rpc_method_handler(
                self._health,
                request_deserializer=pb.HealthCheckRequest.FromString,
                response_serializer=pb.HealthCheckResponse.SerializeToString,
            ),
            "Register": grpc.stream_stream_rpc_method_handler(
                self._register,
                request_deserializer=pb.FlowResponse.FromString,
                response_serializer=pb.FlowRequest.SerializeToString,
            ),
            "DebugStream": grpc.stream_stream_rpc_method_handler(
                self._debug_stream,
                request_deserializer=pb.DebugResponse.FromString,
                response_serializer=pb.DebugRequest.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot listen on {host}:{port}: the port is taken or the address is not local")
        await server.start()
        self._server = server
        return bound

    async def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)

    async def _health(self, request: Any, context: Any) -> Any:
        if self.faults.health == "hang":
            await asyncio.sleep(3600)
        if self.faults.health == "not-serving":
            return pb.HealthCheckResponse(status=pb.HealthCheckResponse.NOT_SERVING)
        return pb.HealthCheckResponse(status=pb.HealthCheckResponse.SERVING)

    async def _register(self, request_iterator: Any, context: Any) -> None:
        await self._serve_stream(context, debug=False)

    async def _debug_stream(self, request_iterator: Any, context: Any) -> None:
        await self._serve_stream(context, debug=True)

    async def _serve_stream(self, context: Any, debug: bool) -> None:
        try:
            await self._serve_stream_until_closed(context, debug)
        except asyncio.CancelledError:
            # The server is stopping (our own exit): ending the stream is the point.
            pass

    async def _serve_stream_until_closed(self, context: Any, debug: bool) -> None:
        metadata = dict(context.invocation_metadata())
        name, mode = _unhex(metadata.get("name")), _unhex(metadata.get("mode"))
        if not debug and self._refused < self.faults.refuse:
            self._refused += 1
            logger.info("refusing registration %d of %d (fault injection)", self._refused, self.faults.refuse)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in engine refuses registration (fault injection)")
        if not debug:
            self.registrations += 1
            logger.info("plugin registered: name=%s mode=%s (registration %d)", name, mode, self.registrations)
            self.plugin_names.add(name)
            asyncio.get_running_loop().call_later(UNREGISTERED_HINT_AFTER, self._hint_unregistered)
        token = object()
        self._streams[(name, debug)] = token
        self.registered.set()
        reset = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._send_tasks, context, name, debug, token)
                while True:
                    msg = await context.read()
                    if msg is grpc.aio.EOF:
                        break
                    self._on_response(msg, debug)
                    self._received += 1
                    if not debug and self._received == self.faults.reset_after:
                        reset = True
                        break
                tg.cancel_scope.cancel()
        finally:
            if self._streams.get((name, debug)) is token:
                del self._streams[(name, debug)]
        if reset:
            # Outside the task group: grpc needs its AbortError to reach it unwrapped.
            logger.info("resetting the Register stream after %d answers (fault injection)", self._received)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in stream reset (fault injection)")

    async def _send_tasks(self, context: Any, name: str, debug: bool, token: object) -> None:
        while self._streams.get((name, debug)) is token:
            task = await self.router.get(name, debug)
            acquired = False
            try:
                if self._outstanding is not None:
                    await self._outstanding.acquire()
                    acquired = True
                # Stamped before the write: write() may return after the answer is back.
                task.sent = time.monotonic()
                if self.first_sent is None:
                    self.first_sent = task.sent
                await context.write(task.message)
            except BaseException:
                task.sent = 0.0
                self.router.put(task, front=True)  # never sent: the next stream takes it
                if acquired and self._outstanding is not None:
                    self._outstanding.release()
                raise

    def stats(self) -> dict[str, Any]:
        """Throughput and latency over every answered task, for `engine --stats`."""
        took = (time.monotonic() - self.first_sent) if self.first_sent else 0.0
        ordered = sorted(self.latencies)

        def pick(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3) if ordered else None

        return {
            "answered": len(self.answered),
            "seconds": round(took, 4),
            "tasks_per_s": round(len(self.answered) / took, 1) if took else None,
            "p50_ms": pick(0.50),
            "p99_ms": pick(0.99),
            "duplicates": self.duplicates,
            "unknown": self.unknown,
            "too_large": self.too_large,
            "registrations": self.registrations,
        }

    def registered_names(self) -> str:
        return ", ".join(sorted(self.plugin_names)) or "none yet"

    def _hint_unregistered(self) -> None:
        for plugin in self.router.waiting_for():
            if plugin not in self.plugin_names and plugin not in self._hinted:
                self._hinted.add(plugin)
                logger.warning(
                    "tasks wait for plugin %r, which has not registered; registered: %s. Is the name right "
                    "(\"plugin\" in the task line, or engine --plugin)?", plugin, self.registered_names(),
                )

    def _expire_unsent(self, task: _Task, task_timeout: float) -> None:
        """Answer a task that no plugin took within task_timeout: it never left the queue."""
        if not self.router.remove(task):
            return  # a stream took it just now, and waits for its turn to send it
        del self.pending[task.element_job]
        self.answered.add(task.element_job)
        if task.plugin is not None:
            why = (f"no plugin named {task.plugin!r} registered to take it within {task_timeout:g} s "
                   f"(registered: {self.registered_names()})")
        else:
            why = f"no plugin registered to take it within {task_timeout:g} s"
        logger.warning("elementJob %s: %s", task.element_job, why)
        response = pb.FlowResponse(elementJob=task.element_job, status=False, info=f"[standin] {why}")
        self.on_answer(answer_record(task.element_job, task.debug, response, task.plugin))
        self._check_done()

    async def expire_tasks(self, task_timeout: float) -> None:
        """Answer, as the engine itself, every task left unanswered, or not taken, for too long."""
        while True:
            await anyio.sleep(min(1.0, task_timeout / 4))
            now = time.monotonic()
            for task in [t for t in self.pending.values() if not t.sent and now - t.queued > task_timeout]:
                self._expire_unsent(task, task_timeout)
            for task in [t for t in self.pending.values() if t.sent and now - t.sent > task_timeout]:
                logger.warning("no answer for elementJob %s within %g s", task.element_job, task_timeout)
                self._on_response(
                    pb.FlowResponse(
                        elementJob=task.element_job,
                        status=False,
                        info=f"[standin] the plugin did not answer within {task_timeout:g} s",
                    ),
                    task.debug,
                )
