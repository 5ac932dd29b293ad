"""`flow-bridge engine` and `flow-bridge call`: the stand-in engine put to work."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio

from flow_bridge.child import StartError, open_stop_signals
from flow_bridge.core import Settings
from flow_bridge.engine import MESSAGE_SLACK
from flow_bridge.gateway import Backend, NameMissing, serve_plugin

from ._engine import Faults, StandinEngine, TaskLineError, parse_task

logger = logging.getLogger("flow_bridge.standin")


# One read from stdin; lines may be far longer, and are joined from many reads.
READ_SIZE = 1 << 16
# `call` talks to a private engine on loopback for one task: no name needs configuring, and
# there is no half-open connection to find, so no heartbeat either.
CALL_PLUGIN_NAME = "flow-bridge-call"
CALL_HEARTBEAT = 3600.0


async def _read_lines(fd: int) -> AsyncIterator[bytes]:
    """Yield stdin's lines, read on a daemon thread since stdin may be a file, a pipe or a tty.

    The thread is never waited for: a blocked read of a terminal must not keep Ctrl-C from
    ending the engine. Only each new chunk is searched for a newline, so a line of many
    megabytes costs time in proportion to its length, not to its length squared.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def pump() -> None:
        while True:
            try:
                chunk = os.read(fd, READ_SIZE)
            except OSError:
                chunk = b""
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:  # the loop is closed: the engine has stopped
                return
            if not chunk:
                return

    threading.Thread(target=pump, name="flow-bridge-engine-stdin", daemon=True).start()
    pending: list[bytes] = []
    while chunk := await chunks.get():
        *ends, rest = chunk.split(b"\n")
        for end in ends:
            yield b"".join([*pending, end])
            pending.clear()
        if rest:
            pending.append(rest)
    if pending:
        yield b"".join(pending)


async def _stop_on_signal(
    scope: anyio.CancelScope, received: list[int], *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """The platform's stop signals (Ctrl-C, TERM, HUP; Ctrl-Break on Windows) end the stand-in
    at once: it only serves tests and local runs. Started before the port is announced, so a
    signal that follows "listening" is never met by the default handler."""
    with open_stop_signals() as signals:
        task_status.started()
        async for signum in signals:
            received.append(signum)
            scope.cancel()
            return


async def run_engine(
    host: str,
    port: int,
    concurrency: int | None,
    task_timeout: float | None,
    faults: Faults | None = None,
    stats_file: str | None = None,
    plugin: str | None = None,
) -> int:
    """Serve until stdin ends and every task is answered; return the exit code.

    0 when every task was answered, whatever the answers say. A line that is not a task is
    skipped with an error that names it; it has no answer to wait for, so it does not
    change the exit code either (a summary at the end says how many were skipped).
    Ctrl-C (or TERM, HUP) stops at once, saying how many tasks were left: 128 + the signal.
    `plugin` is where a task line that names no plugin goes (None: to any plugin).
    """
    out = sys.stdout

    def on_answer(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()

    engine = StandinEngine(on_answer, concurrency=concurrency, faults=faults)
    bad_lines = 0
    signals: list[int] = []
    cannot_listen: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(_stop_on_signal, tg.cancel_scope, signals)
            try:
                bound = await engine.start(host, port)
            except (OSError, RuntimeError) as exc:  # grpc reports a taken port as RuntimeError
                cannot_listen = exc
                tg.cancel_scope.cancel()
                return 1
            logger.info("flow-bridge engine listening on %s:%d", host, bound)
            if task_timeout:
                tg.start_soon(engine.expire_tasks, task_timeout)
            bad_lines = await _feed(engine, host, bound, plugin)
            await engine.all_answered.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await engine.stop()
        if cannot_listen is not None:
            raise OSError("the port is taken, or the address is not one of this machine's") from cannot_listen
    if signals:
        left = len(engine.pending)
        logger.warning("stopped by %s: %d task%s unanswered", signal.Signals(signals[0]).name, left,
                       "" if left == 1 else "s")
        return 128 + signals[0]
    stats = engine.stats()
    logger.info(
        "answered %d tasks in %.2f s (%.0f tasks/s); duplicates %d, unknown %d, too large to send %d",
        stats["answered"], stats["seconds"], stats["tasks_per_s"] or 0.0, stats["duplicates"], stats["unknown"],
        stats["too_large"],
    )
    if bad_lines:
        what = "1 line that is not a task" if bad_lines == 1 else f"{bad_lines} lines that are not tasks"
        logger.warning("skipped %s (see the errors above)", what)
    if stats_file:
        with open(stats_file, "w", encoding="utf-8") as fh:
            json.dump(stats, fh)
    return 0


async def _feed(engine: StandinEngine, host: str, port: int, plugin: str | None) -> int:
    """Submit each task line of stdin; return how many lines were skipped."""
    bad_lines = 0
    number = 0
    said_waiting = False
    async for raw in _read_lines(sys.stdin.fileno()):
        number += 1
        if not raw.strip():
            continue
        try:
            engine.submit(*parse_task(raw.decode("utf-8", "replace"), number, plugin))
        except TaskLineError as exc:
            bad_lines += 1
            logger.error("%s (skipped)", exc)
        if engine.pending and not engine.registered.is_set() and not said_waiting:
            said_waiting = True  # once: a task is queued, and nobody is there to take it yet
            named = engine.router.waiting_for()
            logger.info("waiting for %s to register on %s:%d",
                        "a plugin" if not named else "the plugin " + ", ".join(named), host, port)
    engine.finish_input()
    return bad_lines


async def call_once(handler: Backend, settings: Settings, task: dict[str, Any]) -> dict[str, Any]:
    """One task through a private stand-in engine and the real bridge; return the answer.

    TaskLineError, before anything starts, for a task the engine could not send."""
    request = parse_task(json.dumps(task), 1)
    answers: list[dict[str, Any]] = []
    got = anyio.Event()

    def on_answer(record: dict[str, Any]) -> None:
        answers.append(record)
        got.set()

    engine = StandinEngine(on_answer, max_message=settings.max_frame + MESSAGE_SLACK)
    port = await engine.start("127.0.0.1", 0)
    # Registered under its configured name, else the one the handler declares, else this
    # one: the private engine takes any.
    settings = dataclasses.replace(settings, host="127.0.0.1", port=port, heartbeat_interval=CALL_HEARTBEAT)
    engine.submit(*request)
    engine.finish_input()
    stop = anyio.Event()
    failure: list[StartError | NameMissing] = []

    async def bridge() -> None:
        try:
            await serve_plugin(handler, settings, stop=stop, handle_signals=False, fallback_name=CALL_PLUGIN_NAME)
        except (StartError, NameMissing) as exc:  # the caller reports either; no task ran
            failure.append(exc)
            got.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bridge)
            await got.wait()
            stop.set()
    finally:
        await engine.stop()
    if failure:
        raise failure[0]
    return answers[0]
