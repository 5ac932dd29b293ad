"""Wiring: children first, then the engine links; a signal drains and stops both.

The order follows the vendor SDK, which calls start() before it connects: a handler
that cannot start stops `run` before anything registers with the engine, and so does
a plugin with no name, since the name the handler declares is known only once it has
started.

Signals. SIGTERM, SIGINT and SIGHUP (Ctrl-C and Ctrl-Break on Windows) all mean "stop":
take no new tasks, give those in flight the grace period, stop the children. A second
one means "stop now": in-flight tasks are answered `unavailable` at once and flushed to
the engine for at most a second, and the children are killed. Later ones change nothing.
The signal handlers are installed before the first child starts and stay until
serve_service returns; a signal during the start stops it at once, whatever the start
timeout. After that a late signal ends the process at once, quietly (and is ignored
once the interpreter exits): Python's default SIGINT handler would raise
KeyboardInterrupt wherever the code happens to be, gRPC's poller included, which is
how three quick Ctrl-C's used to print a traceback or hang.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import anyio
import anyio.abc

# The platform's stop signals (SIGTERM, SIGINT, SIGHUP; Ctrl-C and Ctrl-Break on Windows),
# each of which asks for a drain; re-exported by the package.
from flow_bridge.child import STOP_SIGNALS as STOP_SIGNALS
from flow_bridge.child import (
    StartError,
    Supervisor,
    check_startable,
    handler_env,
    ignore_stop_signals,
    on_stop_signals,
    open_stop_signals,
    spawn_process,
)
from flow_bridge.core import Settings, check_plugin_name, metrics
from flow_bridge.engine import EngineChannel, PluginLink, RequestHandler

logger = logging.getLogger("flow_bridge")

# Children that have nothing in flight exit at once on `stop`; this only bounds one that
# does not, when `run` stops before it registered (a signal during start, no name).
IDLE_STOP_GRACE = 2.0
HOW_TO_NAME = (
    "set one with --name, the FLOW_BRIDGE_NAME variable or plugin.name in config.yml, "
    "or declare it in the adapter (ready.name)"
)


class NameMissing(Exception):
    """No plugin name to register with: none configured and none declared; `run` exits 2."""


class Backend(RequestHandler, Protocol):
    """What serves requests behind the engine link: a supervised child, or exec mode."""

    @property
    def capacity(self) -> int: ...

    async def start(self, task_group: anyio.abc.TaskGroup) -> None: ...

    async def stop(self, grace: float) -> None: ...


async def _watch_signals(
    stop: anyio.Event, hurry: anyio.Event, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """First signal: drain. Second: stop now. Later: ignored (the stop is as quick as it gets).

    Reports itself started once the handlers are installed, so that serve_service starts no
    child before a signal can be heard."""
    with open_stop_signals() as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stop.is_set():
                logger.info("%s received: taking no new tasks, finishing those in flight", name)
                metrics.stopping(name)  # /readyz says so at once, before the links have heard
                stop.set()
            elif not hurry.is_set():
                logger.warning("second signal (%s): stopping now; tasks in flight are answered as unavailable", name)
                hurry.set()
            else:
                logger.info("%s received: already stopping now", name)


def _exit_quietly(signum: int, frame: Any) -> None:
    """A signal after serve_service returned: everything is answered and stopped; just go."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _ignore_late_signals() -> None:
    """At exit: Python resets the handlers it set to the default while it finalizes (which
    grpc's shutdown can make last a while), and the default would end a bridge that stopped
    cleanly by the signal (exit -2, not 0). An ignored signal is left as it is."""
    ignore_stop_signals()


def _after_serving() -> None:
    if threading.current_thread() is threading.main_thread():
        on_stop_signals(_exit_quietly)
        # Registered last, so run first among the exit handlers (they run in reverse order).
        atexit.unregister(_ignore_late_signals)
        atexit.register(_ignore_late_signals)


def resolve_identity(settings: Settings, handler: object, fallback_name: str | None = None) -> Settings:
    """The settings with the name and mode to register: configured, else declared by the handler.

    `fallback_name` serves when there is neither (`call`, whose private engine needs no real
    name); without one, NameMissing is raised, as it is when the declared name is not one
    the platform accepts. The backend declares them, after start(), as `declared_name` and
    `declared_type`.
    """
    mode = settings.type or getattr(handler, "declared_type", None) or "service"
    name = settings.name
    if not name:
        declared = getattr(handler, "declared_name", None)
        if declared:
            try:
                name = check_plugin_name(declared)
            except ValueError as exc:
                raise NameMissing(f"the handler declared its name as {declared!r}: {exc}; or {HOW_TO_NAME}") from None
            logger.info("registering under the name the handler declared: %s", name)
        elif fallback_name:
            name = fallback_name
        else:
            raise NameMissing(f"no plugin name to register with the engine: {HOW_TO_NAME}")
    return dataclasses.replace(settings, name=name, type=mode)


def make_handler(argv: Sequence[str], settings: Settings) -> Backend:
    """The request handler for `run` and `call`: a supervised child, or exec mode.

    The handler's environment is the bridge's, plus the plugin's own `env` from the config.
    """
    check_startable(argv)
    extra = dict(settings.env)
    if settings.exec_mode:
        from flow_bridge.exec import ExecHandler

        runner = ExecHandler(argv, settings)
        runner.env.update(extra)
        return runner
    return Supervisor(argv, settings, spawn_process, env=handler_env(extra))


@dataclasses.dataclass(slots=True)
class Plugin:
    """One plugin of a service: its backend, its settings, and how the config names it."""

    backend: Backend
    settings: Settings
    label: str = ""  # "plugins[2] (report)"; empty for a service of one plugin

    @property
    def what(self) -> str:
        return self.label or repr(self.settings.name or "the plugin")


class EntryFailed(Exception):
    """One plugin of a service cannot start or has no name; none registered, the others were stopped.

    `cause` is the StartError or NameMissing; `run` exits 2 naming the entry.
    """

    def __init__(self, plugin: Plugin, cause: StartError | NameMissing) -> None:
        super().__init__(f"{plugin.what}: {cause}")
        self.plugin = plugin
        self.cause = cause


async def serve_plugin(
    handler: Backend,
    settings: Settings,
    *,
    stop: anyio.Event | None = None,
    handle_signals: bool = True,
    fallback_name: str | None = None,
) -> PluginLink | None:
    """Serve one plugin: serve_service with one entry; StartError and NameMissing raised as they are."""
    try:
        links = await serve_service([Plugin(handler, settings)], stop=stop, handle_signals=handle_signals,
                                    fallback_name=fallback_name)
    except EntryFailed as exc:
        raise exc.cause from None
    return links[0] if links else None


async def _start_all(
    plugins: Sequence[Plugin], tg: anyio.abc.TaskGroup, stop: anyio.Event
) -> list[tuple[Plugin, StartError]]:
    """Start every backend at once (ten handshakes take as long as the slowest); return the failures.

    A stop (a signal) cuts the start short at once, whatever --start-timeout says: a handler
    that builds for minutes must not hold up a service manager's stop. The children still in
    their handshake are then ended with `tg` (stdin closed, SIGTERM, SIGKILL, whole group)."""
    failures: list[tuple[Plugin, StartError]] = []

    async def start(plugin: Plugin) -> None:
        try:
            await plugin.backend.start(tg)
        except StartError as exc:
            failures.append((plugin, exc))

    async with anyio.create_task_group() as starting:

        async def start_every() -> None:
            async with anyio.create_task_group() as each:
                for plugin in plugins:
                    each.start_soon(start, plugin)
            starting.cancel_scope.cancel()  # all started: stop watching for a stop

        async def stopped() -> None:
            await stop.wait()
            starting.cancel_scope.cancel()

        starting.start_soon(start_every)
        starting.start_soon(stopped)
    return failures


async def _stop_unstarted(plugins: Sequence[Plugin], hurry: anyio.Event) -> None:
    """Stop backends that never served: IDLE_STOP_GRACE each at once, or none after a second signal."""
    async with anyio.create_task_group() as tg:

        async def cut_short() -> None:
            await hurry.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(cut_short)
        await _each(plugins, lambda p: p.backend.stop(0.0 if hurry.is_set() else IDLE_STOP_GRACE))
        tg.cancel_scope.cancel()
    if hurry.is_set():
        await _each(plugins, lambda p: p.backend.stop(0.0))  # kills whatever the cut-short stop left


async def _each(plugins: Sequence[Any], step: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    """Run `step` for every plugin at once: one grace for all, not one after another."""
    async with anyio.create_task_group() as tg:
        for plugin in plugins:
            tg.start_soon(step, plugin)


async def serve_service(
    plugins: Sequence[Plugin],
    *,
    stop: anyio.Event | None = None,
    handle_signals: bool = True,
    fallback_name: str | None = None,
) -> list[PluginLink]:
    """Run every plugin over one engine channel until `stop` is set (or a signal comes).

    Every backend starts first; if one cannot (or has no name), the others are stopped and
    EntryFailed names it: nothing has registered. Then each plugin registers on its own
    streams. A stop drains them all at once, each within its own grace. Returns the links
    (empty: stopped before they registered). With `handle_signals`, serve_service owns the
    process's stop signals (module docstring), also after it returns.
    """
    if not plugins:
        raise ValueError("serve_service needs at least one plugin")
    stop = stop if stop is not None else anyio.Event()
    hurry = anyio.Event()
    failed: EntryFailed | None = None
    links: list[PluginLink] = []
    try:
        # The signal watcher lives in a scope of its own, around everything else, so that a
        # signal is heard before the first child starts and until the last one has ended:
        # without its handlers, a second SIGTERM would kill the bridge mid-stop (and SIGINT
        # would raise KeyboardInterrupt wherever the code happens to be).
        async with anyio.create_task_group() as watching:
            if handle_signals:
                await watching.start(_watch_signals, stop, hurry)
            try:
                links = await _serve(plugins, stop, hurry, fallback_name)
            except EntryFailed as exc:
                failed = exc
            watching.cancel_scope.cancel()
    finally:
        if failed is not None:
            raise failed
        if handle_signals:
            _after_serving()
    return links


async def _serve(
    plugins: Sequence[Plugin], stop: anyio.Event, hurry: anyio.Event, fallback_name: str | None
) -> list[PluginLink]:
    """serve_service's work, without the signals: start, register, serve until `stop`, drain."""
    failed: EntryFailed | None = None
    links: list[PluginLink] = []
    try:
        async with anyio.create_task_group() as tg:
            failures = await _start_all(plugins, tg, stop)
            named: list[Settings] = []
            if failures:
                failed = EntryFailed(*failures[0])
            else:
                for plugin in plugins:
                    try:
                        named.append(resolve_identity(plugin.settings, plugin.backend, fallback_name))
                    except NameMissing as exc:
                        failed = EntryFailed(plugin, exc)
                        break
            if failed is not None or stop.is_set():
                if stop.is_set() and failed is None:
                    logger.info("stopped before registering with the engine")
                broken = {id(plugin) for plugin, _ in failures}
                await _stop_unstarted([p for p in plugins if id(p) not in broken], hurry)
                tg.cancel_scope.cancel()
                return []
            channel = EngineChannel(named[0])
            links = [
                PluginLink(settings, plugin.backend, min(settings.max_inflight, plugin.backend.capacity), channel)
                for plugin, settings in zip(plugins, named, strict=True)
            ]
            tg.start_soon(channel.run)
            await stop.wait()
            metrics.stopping("the stop")  # when no signal asked for it (a caller's stop event)
            began = time.monotonic()
            await _each(links, lambda link: link.drain(link.settings.grace, hurry))
            await _each(links, lambda link: link.aclose())
            channel.close()

            async def stop_backend(plugin: Plugin) -> None:
                left = plugin.settings.grace - (time.monotonic() - began)
                await plugin.backend.stop(0.0 if hurry.is_set() else max(1.0, left))

            await _each(plugins, stop_backend)
            tg.cancel_scope.cancel()
    finally:
        if failed is not None:
            raise failed
    return links
