"""Wiring: children first, then the engine link; a signal drains and stops both.

The order follows the vendor SDK, which calls start() before it connects: a handler
that cannot start stops `run` before anything registers with the engine.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Sequence
from typing import Protocol

import anyio
import anyio.abc

from flow_bridge.child import StartError, Supervisor, check_startable, spawn_process
from flow_bridge.core import Settings
from flow_bridge.engine import EngineLink, RequestHandler

logger = logging.getLogger("flow_bridge")


class Backend(RequestHandler, Protocol):
    """What serves requests behind the engine link: a supervised child, or exec mode."""

    @property
    def capacity(self) -> int: ...

    async def start(self, task_group: anyio.abc.TaskGroup) -> None: ...

    async def stop(self, grace: float) -> None: ...


async def _watch_signals(stop: anyio.Event, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not stop.is_set():
                logger.info(
                    "%s received: taking no new tasks, finishing those in flight", signal.Signals(signum).name
                )
                stop.set()
            else:
                logger.warning("second signal: stopping now")
                scope.cancel()
                return


def make_handler(argv: Sequence[str], settings: Settings) -> Backend:
    """The request handler for `run` and `call`: a supervised child, or exec mode."""
    check_startable(argv)
    if settings.exec_mode:
        from flow_bridge.exec import ExecHandler

        return ExecHandler(argv, settings)
    return Supervisor(argv, settings, spawn_process)


async def serve_plugin(
    handler: Backend,
    settings: Settings,
    *,
    stop: anyio.Event | None = None,
    handle_signals: bool = True,
) -> EngineLink:
    """Run until `stop` is set (or a signal comes); raise StartError if the handler cannot start."""
    stop = stop if stop is not None else anyio.Event()
    start_error: StartError | None = None
    link: EngineLink | None = None
    async with anyio.create_task_group() as tg:
        try:
            await handler.start(tg)
        except StartError as exc:
            start_error = exc
            tg.cancel_scope.cancel()
        else:
            link = EngineLink(settings, handler, slots=min(settings.max_inflight, handler.capacity))
            if handle_signals:
                tg.start_soon(_watch_signals, stop, tg.cancel_scope)
            tg.start_soon(link.run)
            await stop.wait()
            began = time.monotonic()
            await link.drain(settings.grace)
            link.close()
            await handler.stop(max(1.0, settings.grace - (time.monotonic() - began)))
            tg.cancel_scope.cancel()
    if start_error is not None:
        raise start_error
    assert link is not None
    return link
