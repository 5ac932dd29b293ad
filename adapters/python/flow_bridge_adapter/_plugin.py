"""The handler-side runner: hello -> ready, then requests to answers until stop.

Theory of operation. `serve()` protects stdio, opens the channel and waits for hello.
It picks protocol 1, runs the start hook and answers ready. Each task or debug request
becomes an asyncio task that calls the user's function (a coroutine function directly,
a plain function on a thread pool) and always ends in exactly one result or error frame.
A cancel cancels that asyncio task, which answers "cancelled". Stop and end of input
both close the door to new requests, wait for the ones in flight, run the stop hook,
and return, so the process exits 0.

Logging: a handler on the root logger turns every record into a log frame, tied to the
request whose code emitted it (a context variable carries the id into worker threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import json
import logging
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from flow_bridge.protocol import (
    PROTOCOL_VERSIONS,
    Cancel,
    Debug,
    Error,
    Event,
    Hello,
    Log,
    Ready,
    Result,
    State,
    Stop,
    Task,
)

from ._channel import Channel, protect_stdio

ADAPTER_VERSION = "flow-bridge-python 0.1.0"
_current_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("flow_bridge_task_id", default=None)
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}

log = logging.getLogger("flow_bridge.handler")


class HandlerError(Exception):
    """Raise to fail a request with a message (the engine's info) and optional detail."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class Reply:
    """A success with a message and detail besides the data (the engine's info/detail)."""

    def __init__(self, data: dict[str, Any] | None = None, message: str = "", detail: str = "") -> None:
        self.data = data if data is not None else {}
        self.message = message
        self.detail = detail


class Request:
    """One task or debug request as a handler sees it."""

    __slots__ = (
        "id", "raw_config", "project_id", "flow_id", "job", "element_id", "element_job",
        "timeout", "is_debug", "_config", "_parsed",
    )

    def __init__(self, event: Task | Debug) -> None:
        self.id = event.id
        self.raw_config: bytes = event.config
        self.project_id = event.project_id
        self.flow_id = event.flow_id
        self.job = event.job if isinstance(event, Task) else ""
        self.element_id = event.element_id
        self.element_job = event.element_job
        self.timeout: float | None = event.timeout_ms / 1000 if event.timeout_ms else None
        self.is_debug = isinstance(event, Debug)
        self._config: Any = None
        self._parsed = False

    @property
    def config(self) -> Any:
        """The config parsed as JSON, or None when its bytes are not UTF-8 JSON."""
        if not self._parsed:
            self._parsed = True
            try:
                self._config = json.loads(self.raw_config)
            except ValueError:
                self._config = None
        return self._config

    @property
    def config_text(self) -> str | None:
        """The config bytes as text, or None when they are not UTF-8."""
        try:
            return self.raw_config.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @property
    def log(self) -> logging.Logger:
        """A logger whose records inside this request become log frames with its id."""
        return log


Handler = Callable[[Request], Any | Awaitable[Any]]
Hook = Callable[..., None | Awaitable[None]]


class _FrameLogHandler(logging.Handler):
    """Turns log records into log frames; works from the loop and from worker threads."""

    def __init__(self, runner: _Runner) -> None:
        super().__init__()
        self._runner = runner

    def emit(self, record: logging.LogRecord) -> None:
        try:
            when = datetime.fromtimestamp(record.created, UTC)
            frame = Log(
                level=_LEVELS.get(record.levelno, "error" if record.levelno > logging.WARNING else "debug"),
                msg=self.format(record),
                id=_current_id.get(),
                time=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            )
            if self._runner.ready:
                self._runner.send_threadsafe(frame)
            else:  # SPEC 2.3: no log frame may come before ready
                print(f"{frame.level}: {frame.msg}", file=sys.stderr)
        except Exception:
            self.handleError(record)


async def _call(fn: Hook | None, *args: Any) -> None:
    if fn is None:
        return
    value = fn(*args)
    if inspect.isawaitable(value):
        await value


class _Runner:
    def __init__(
        self,
        execute: Handler,
        debug: Handler | None,
        start: Hook | None,
        stop: Hook | None,
        on_state: Hook | None,
        concurrency: int,
        name: str,
        version: str,
    ) -> None:
        self.execute = execute
        self.debug = debug
        self.start_hook = start
        self.stop_hook = stop
        self.on_state = on_state
        self.concurrency = concurrency
        self.name = name
        self.version = version
        self.inflight: dict[int, asyncio.Task[None]] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="handler")
        self.loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        self.ready = False
        self.started = False  # the start hook ran; only then does the stop hook run
        self.stopping = False
        self.exit_code = 0
        self.channel: Channel

    def send_threadsafe(self, event: Event) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.channel.send(event)
        else:
            self.loop.call_soon_threadsafe(self.channel.send, event)

    async def run(self, read_fd: int, write_fd: int) -> int:
        self.channel = Channel(read_fd, write_fd, self.on_events, self.on_failure)
        await self.channel.open()
        await self.done.wait()
        await self.finish()
        return self.exit_code

    def on_failure(self, exc: Exception) -> None:
        print(f"flow-bridge adapter: the bridge sent bytes that break the protocol: {exc}", file=sys.stderr)
        self.exit_code = 2
        self.begin_stop()

    def on_events(self, events: list[Event]) -> None:
        if not events:  # end of input
            self.begin_stop()
            return
        for event in events:
            if isinstance(event, (Task, Debug)):
                if self.stopping:
                    continue  # SPEC 2.5: nothing is sent after stop
                fn = self.debug if isinstance(event, Debug) else self.execute
                if fn is None:
                    self.channel.send(Error(id=event.id, message="this handler does not take debug requests"))
                    continue
                self.inflight[event.id] = self.loop.create_task(self.answer(fn, event))
            elif isinstance(event, Cancel):
                task = self.inflight.get(event.id)
                if task is not None:
                    task.cancel()
            elif isinstance(event, Hello):
                self.loop.create_task(self.handshake(event))
            elif isinstance(event, State):
                if self.on_state is not None:
                    self.loop.create_task(_call(self.on_state, event.connected))
            elif isinstance(event, Stop):
                self.begin_stop()
            else:
                self.on_failure(ValueError(f"unexpected {event.TYPE} message from the bridge"))

    async def handshake(self, hello: Hello) -> None:
        common = set(hello.protocols) & set(PROTOCOL_VERSIONS)
        if not common:
            print(
                f"flow-bridge adapter speaks protocol {list(PROTOCOL_VERSIONS)}, the bridge offers "
                f"{list(hello.protocols)}: upgrade flow-bridge or the adapter so they share one",
                file=sys.stderr,
            )
            self.exit_code = 3
            self.done.set()
            return
        self.channel.codec.max_frame = hello.max_frame
        try:
            await _call(self.start_hook)
            self.started = True
        except Exception:
            print("flow-bridge adapter: the start hook failed:", file=sys.stderr)
            traceback.print_exc()
            self.exit_code = 1
            self.done.set()
            return
        self.channel.send(
            Ready(
                protocol=max(common),
                concurrency=self.concurrency,
                debug=self.debug is not None,
                name=self.name,
                version=self.version or ADAPTER_VERSION,
            )
        )
        self.ready = True

    async def answer(self, fn: Handler, event: Task | Debug) -> None:
        request = Request(event)
        token = _current_id.set(event.id)
        try:
            if inspect.iscoroutinefunction(fn):
                value = await fn(request)
            else:
                ctx = contextvars.copy_context()
                value = await self.loop.run_in_executor(self.pool, ctx.run, fn, request)
                if inspect.isawaitable(value):
                    value = await value
            reply = self.to_result(event.id, value)
        except asyncio.CancelledError:
            reply = Error(id=event.id, message="cancelled")
        except HandlerError as exc:
            reply = Error(id=event.id, message=exc.message, detail=exc.detail)
        except Exception as exc:
            reply = Error(id=event.id, message=str(exc) or type(exc).__name__, detail=traceback.format_exc())
        finally:
            _current_id.reset(token)
        try:
            self.channel.send(reply)
        except (TypeError, ValueError) as exc:  # msgpack cannot pack what the handler returned
            self.channel.send(
                Error(id=event.id, message=f"the handler's result cannot be sent: {exc}; return plain dicts, "
                      "lists, str, bytes, numbers, bool and None")
            )
        finally:
            del self.inflight[event.id]
            if self.stopping and not self.inflight:
                self.done.set()

    @staticmethod
    def to_result(request_id: int, value: Any) -> Result | Error:
        if isinstance(value, Reply):
            return Result(id=request_id, data=value.data, message=value.message, detail=value.detail)
        if value is None:
            return Result(id=request_id)
        if isinstance(value, dict):
            return Result(id=request_id, data=value)
        return Error(
            id=request_id,
            message=f"the handler returned {type(value).__name__}; return a dict (or a Reply, or None)",
        )

    def begin_stop(self) -> None:
        self.stopping = True
        if not self.inflight:
            self.done.set()

    async def finish(self) -> None:
        try:
            if self.started:
                await _call(self.stop_hook)
        except Exception:
            print("flow-bridge adapter: the stop hook failed:", file=sys.stderr)
            traceback.print_exc()
        await self.channel.drain()
        self.pool.shutdown(wait=False, cancel_futures=True)


def serve(
    execute: Handler,
    *,
    debug: Handler | None = None,
    start: Hook | None = None,
    stop: Hook | None = None,
    on_connection_state_changed: Hook | None = None,
    concurrency: int = 64,
    name: str = "",
    version: str = "",
    log_level: int = logging.INFO,
) -> None:
    """Run a handler as a flow-bridge child until the bridge says stop; then exit.

    `execute(request)` and `debug(request)` may be plain or async functions; they return
    a dict (the result data), a `Reply`, or None, or raise (`HandlerError` for a chosen
    message and detail). Hooks: `start()` before the first request,
    `stop()` after the last, `on_connection_state_changed(connected)`.
    """
    read_fd, write_fd = protect_stdio()

    async def main() -> int:
        runner = _Runner(execute, debug, start, stop, on_connection_state_changed, concurrency, name, version)
        handler = _FrameLogHandler(runner)
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(log_level)
        try:
            return await runner.run(read_fd, write_fd)
        finally:
            root.removeHandler(handler)

    code = asyncio.run(main())
    sys.stdout.flush()
    if code:
        sys.exit(code)
