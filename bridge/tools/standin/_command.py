"""`flow-bridge engine` and `flow-bridge call`: the stand-in engine put to work."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio

from flow_bridge.child import StartError
from flow_bridge.core import Settings
from flow_bridge.engine import MESSAGE_SLACK
from flow_bridge.gateway import Backend, serve_plugin

from ._engine import Faults, StandinEngine, TaskLineError, parse_task

logger = logging.getLogger("flow_bridge.standin")


# One read from stdin; lines may be far longer, and are joined from many reads.
READ_SIZE = 1 << 16


async def _read_lines(fd: int) -> AsyncIterator[bytes]:
    """Yield stdin's lines; reads happen on a thread since stdin may be a file or a tty.

    Only each new chunk is searched for a newline, so a line of many megabytes costs time
    in proportion to its length, not to its length squared.
    """
    pending: list[bytes] = []
    while chunk := await anyio.to_thread.run_sync(os.read, fd, READ_SIZE):
        *ends, rest = chunk.split(b"\n")
        for end in ends:
            yield b"".join([*pending, end])
            pending.clear()
        if rest:
            pending.append(rest)
    if pending:
        yield b"".join(pending)


async def run_engine(
    host: str,
    port: int,
    concurrency: int | None,
    task_timeout: float | None,
    faults: Faults | None = None,
    stats_file: str | None = None,
) -> int:
    """Serve until stdin ends and every task is answered; return the exit code.

    0 when every task was answered, whatever the answers say. A line that is not a task is
    skipped with an error that names it; it has no answer to wait for, so it does not
    change the exit code either (a summary at the end says how many were skipped).
    """
    out = sys.stdout

    def on_answer(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()

    engine = StandinEngine(on_answer, concurrency=concurrency, faults=faults)
    bound = await engine.start(host, port)
    logger.info("flow-bridge engine listening on %s:%d", host, bound)
    bad_lines = 0
    number = 0
    async with anyio.create_task_group() as tg:
        if task_timeout:
            tg.start_soon(engine.expire_tasks, task_timeout)
        async for raw in _read_lines(sys.stdin.fileno()):
            number += 1
            if not raw.strip():
                continue
            try:
                engine.submit(*parse_task(raw.decode("utf-8", "replace"), number))
            except TaskLineError as exc:
                bad_lines += 1
                logger.error("%s (skipped)", exc)
        engine.finish_input()
        if engine.pending and not engine.registered.is_set():
            logger.info("waiting for a plugin to register on %s:%d", host, bound)
        await engine.all_answered.wait()
        tg.cancel_scope.cancel()
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
    await engine.stop()
    return 0


async def call_once(handler: Backend, settings: Settings, task: dict[str, Any]) -> dict[str, Any]:
    """One task through a private stand-in engine and the real bridge; return the answer."""
    answers: list[dict[str, Any]] = []
    got = anyio.Event()

    def on_answer(record: dict[str, Any]) -> None:
        answers.append(record)
        got.set()

    engine = StandinEngine(on_answer, max_message=settings.max_frame + MESSAGE_SLACK)
    port = await engine.start("127.0.0.1", 0)
    settings = dataclasses.replace(
        settings, host="127.0.0.1", port=port, name=settings.name, heartbeat_interval=3600.0
    )
    engine.submit(*parse_task(json.dumps(task), 1))
    engine.finish_input()
    stop = anyio.Event()
    failure: list[StartError] = []

    async def bridge() -> None:
        try:
            await serve_plugin(handler, settings, stop=stop, handle_signals=False)
        except StartError as exc:
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
