"""`flow-bridge engine` and `flow-bridge call`: the stand-in engine put to work."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any

import anyio

from flow_bridge.child import StartError
from flow_bridge.core import Settings
from flow_bridge.gateway import Backend, serve_plugin

from ._engine import Faults, StandinEngine, TaskLineError, parse_task

logger = logging.getLogger("flow_bridge.standin")


async def _read_lines(fd: int) -> Any:
    """Yield stdin's lines; reads happen on a thread since stdin may be a file or a tty."""
    pending = b""
    while True:
        chunk = await anyio.to_thread.run_sync(os.read, fd, 1 << 16)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line
    if pending:
        yield pending


async def run_engine(
    host: str,
    port: int,
    concurrency: int | None,
    task_timeout: float | None,
    faults: Faults | None = None,
    stats_file: str | None = None,
) -> int:
    """Serve until stdin ends and every task is answered; return the exit code."""
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
        "answered %d tasks in %.2f s (%.0f tasks/s); duplicates %d, unknown %d",
        stats["answered"], stats["seconds"], stats["tasks_per_s"] or 0.0, stats["duplicates"], stats["unknown"],
    )
    if stats_file:
        with open(stats_file, "w", encoding="utf-8") as fh:
            json.dump(stats, fh)
    await engine.stop()
    return 1 if bad_lines else 0


async def call_once(handler: Backend, settings: Settings, task: dict[str, Any]) -> dict[str, Any]:
    """One task through a private stand-in engine and the real bridge; return the answer."""
    answers: list[dict[str, Any]] = []
    got = anyio.Event()

    def on_answer(record: dict[str, Any]) -> None:
        answers.append(record)
        got.set()

    engine = StandinEngine(on_answer, max_message=settings.max_frame + 1024 * 1024)
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
