"""Serve an AIR-IoT Python SDK 4.x FlowPlugin through the adapter, and the launcher for it.

Theory of operation. A vendor project's `main.py` ends in `Startup().run(plugin)`, which
in the vendor SDK reads config.yml, dials the engine over gRPC and blocks. flow-bridge
already holds the engine connection, so `python -m flow_bridge.adapter.airiot main.py`
(`main` below) takes the frame channel off fd 0 and fd 1 before any project code runs,
replaces `Startup.run` on the vendor's class with `run`, and runs main.py as `__main__`
the way `python main.py` would. `run(plugin)` maps the plugin onto `serve`:

    get_name(), get_type()         -> ready.name, ready.plugin_type
    start()                        -> before ready
    on_connection_state_changed(b) -> on each change the bridge reports (state frames)
    execute(FlowTask) -> FlowResult -> result: message, detail (details), data
    an exception                    -> error: its text, the traceback as detail
    debug(DebugTask) -> DebugResult -> log frames for its logs (with their own times),
                                       then result (value) or error (reason, detail, value)
    shutdown                        -> on_connection_state_changed(False) if connected, stop()

Tasks run one at a time, as the vendor SDK runs them, unless `--concurrency`, the
environment variable in CONCURRENCY_ENV, or `run(plugin, concurrency=N)` says otherwise
(in that order). Project code without the vendor SDK imports the same classes from
`flow_bridge.adapter.airiot` (see `_airiot_api`) and calls `run(plugin)` itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import importlib
import inspect
import logging
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, NoReturn

from . import _airiot_api as own_api
from ._channel import protect_stdio
from ._plugin import (
    HandlerError,
    Reply,
    Request,
    _check_options,
    _Options,
    _run_until_stopped,
    _untied_logs,
)

# The vendor SDK runs one task at a time per stream; so do we unless told otherwise.
DEFAULT_CONCURRENCY: Final = 1
CONCURRENCY_ENV: Final = "FLOW_BRIDGE_AIRIOT_CONCURRENCY"
VENDOR_PACKAGE: Final = "airiot_python_sdk"
VENDOR_API: Final = "airiot_python_sdk.flow_plugin"
VENDOR_STARTUP: Final = "airiot_python_sdk.flow_plugin.startup"
# Startup.run's own command-line options in the vendor SDK; under flow-bridge the bridge
# reads config.yml and sets the log level, so they are accepted and left alone.
_VENDOR_OPTIONS: Final = ("--config", "--log-level")
_LOG_LEVELS: Final = {
    "trace": "debug", "debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
    "error": "error", "err": "error", "fatal": "error", "critical": "error", "panic": "error",
}
_USAGE: Final = "python -m flow_bridge.adapter.airiot [--concurrency N] main.py [ARGS...]"


class _Launch:
    """What the launcher set up before main.py ran; `run` takes it from here."""

    fds: tuple[int, int] | None = None
    concurrency: int | None = None
    served = False


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _plugin_type(value: Any) -> str:
    """get_type()'s value as ready.plugin_type; the vendor enum's members are matched by name."""
    for candidate in (getattr(value, "name", None), getattr(value, "value", None), value):
        if isinstance(candidate, str):
            key = candidate.lower().replace("_", "")
            if key in ("usertask", "user"):
                return "user"
            if key in ("servicetask", "service"):
                return "service"
    raise ValueError(
        f"get_type() returned {value!r}; return FlowPluginType.ServiceTask or FlowPluginType.UserTask"
    )


def _log_level(value: Any) -> str:
    return _LOG_LEVELS.get(_text(value).strip().lower(), "info")


def _log_time(value: Any) -> str:
    isoformat = getattr(value, "isoformat", None)  # a datetime, should a plugin use one
    return _text(isoformat() if callable(isoformat) else value)


def _task_classes(plugin: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """FlowTask and DebugTask of the SDK the plugin was written against, so it gets its own types."""
    if not isinstance(plugin, own_api.FlowPlugin):
        try:
            vendor = importlib.import_module(VENDOR_API)
            return vendor.FlowTask, vendor.DebugTask
        except ImportError:
            pass
    return own_api.FlowTask, own_api.DebugTask


def _takes_debug(plugin: Any) -> bool:
    if isinstance(plugin, own_api.FlowPlugin):
        return type(plugin).debug is not own_api.FlowPlugin.debug
    return callable(getattr(plugin, "debug", None))


async def _invoke(method: Callable[..., Any], *args: Any) -> Any:
    """Call a plugin method: a coroutine function on the loop, a plain one on a worker thread."""
    if inspect.iscoroutinefunction(method):
        return await method(*args)
    ctx = contextvars.copy_context()  # carries the request id, so its log records stay tied to it
    value = await asyncio.get_running_loop().run_in_executor(None, ctx.run, method, *args)
    if inspect.isawaitable(value):
        value = await value
    return value


# Frames from here down to the plugin's own code say nothing to a plugin's author; a
# failure's detail starts at the first frame outside them.
_MACHINERY_DIRS: Final = frozenset(
    os.path.dirname(os.path.abspath(module.__file__ or ""))
    for module in (sys.modules[__name__], asyncio, concurrent.futures)
)


def _plugin_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) in _MACHINERY_DIRS:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


async def _call_plugin(method: Callable[..., Any], *args: Any) -> Any:
    """Call execute or debug; an exception fails the request with its own text (see README)."""
    try:
        return await _invoke(method, *args)
    except Exception as exc:
        raise HandlerError(str(exc) or type(exc).__name__, _plugin_traceback(exc)) from exc


async def _call_hook(plugin: Any, name: str, *args: Any) -> None:
    method = getattr(plugin, name, None)
    if method is None:
        return
    value = method(*args)  # the vendor's hooks are plain methods, called on the loop as it does
    if inspect.isawaitable(value):
        await value


class _PluginRunner:
    """A FlowPlugin as the handler functions and hooks that `serve` takes."""

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self.flow_task, self.debug_task = _task_classes(plugin)
        self.connected = False

    async def start(self) -> None:
        await _call_hook(self.plugin, "start")

    async def on_state(self, connected: bool) -> None:
        # The vendor calls the hook on changes; the bridge may report the same state again.
        if connected == self.connected:
            return
        self.connected = connected
        await _call_hook(self.plugin, "on_connection_state_changed", connected)

    async def stop(self) -> None:
        # The vendor's order on shutdown: the connection goes down first, then stop().
        if self.connected:
            self.connected = False
            try:
                await _call_hook(self.plugin, "on_connection_state_changed", False)
            except Exception:
                logging.getLogger(__name__).exception("on_connection_state_changed(False) failed at shutdown")
        await _call_hook(self.plugin, "stop")

    async def execute(self, request: Request) -> Reply:
        task = self.flow_task(
            request.project_id, request.flow_id, request.job, request.element_id, request.element_job,
            request.raw_config,
        )
        result = await _call_plugin(self.plugin.execute, task)
        try:
            message, details, data = result.message, result.details, result.data
        except AttributeError:
            raise HandlerError(
                f"execute() returned {type(result).__name__}; return FlowResult(message, details, data)"
            ) from None
        return Reply(data=data, message=_text(message), detail=_text(details))

    async def debug(self, request: Request) -> Reply:
        task = self.debug_task(request.project_id, request.flow_id, request.element_id, request.raw_config)
        # The vendor's debug response holds the DebugResult's logs and nothing else, so the
        # records a plugin logs meanwhile go to the bridge's log without the request's id.
        with _untied_logs():
            outcome = await _call_plugin(self.plugin.debug, task)
        try:
            success, reason, detail, value = outcome.success, outcome.reason, outcome.detail, outcome.value
            logs = outcome.logs
        except AttributeError:
            raise HandlerError(
                f"debug() returned {type(outcome).__name__}; return DebugResult(success, reason, detail, value, logs)"
            ) from None
        for entry in logs or ():
            if isinstance(entry, dict):
                level, when, msg = entry.get("level"), entry.get("time"), entry.get("msg", entry.get("message"))
            else:
                level, when = getattr(entry, "level", ""), getattr(entry, "time", "")
                msg = getattr(entry, "msg", getattr(entry, "message", ""))
            request._emit_log(_log_level(level), _text(msg), _log_time(when))
        if success:
            return Reply(data=value, message=_text(reason), detail=_text(detail))
        raise HandlerError(_text(reason) or "debug failed", _text(detail), data=value)


@contextmanager
def _frames_instead_of_stream_handlers() -> Iterator[None]:
    """Take the root logger's stderr/stdout handlers away while serving, and put them back after.

    The vendor SDK's import calls logging.basicConfig(level=DEBUG), whose handler prints each
    record to stderr, which the bridge logs; the adapter sends the same record as a log frame,
    so the bridge would log it twice.
    """
    root = logging.getLogger()
    streams = []
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:
            try:
                fd = handler.stream.fileno()
            except (AttributeError, OSError, ValueError):
                continue
            if fd in (1, 2):
                streams.append(handler)
    for handler in streams:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in streams:
            root.addHandler(handler)


def _concurrency(given: int | None) -> int:
    if _Launch.concurrency is not None:
        return _Launch.concurrency
    env = os.environ.get(CONCURRENCY_ENV, "").strip()
    if env:
        try:
            return int(env)
        except ValueError:
            raise ValueError(f"{CONCURRENCY_ENV}={env!r} is not a whole number of tasks") from None
    return DEFAULT_CONCURRENCY if given is None else given


_REQUIRED_METHODS: Final = ("get_name", "get_type", "execute")


def _check_plugin(plugin: Any) -> None:
    """TypeError naming what is missing when `plugin` is not a FlowPlugin (a class, or another object)."""
    if isinstance(plugin, type):
        raise TypeError(
            f"run() was given the class {plugin.__name__}, not a plugin: pass an instance, "
            f"Startup().run({plugin.__name__}())"
        )
    missing = [method for method in _REQUIRED_METHODS if not callable(getattr(plugin, method, None))]
    if missing:
        raise TypeError(
            f"run() was given an object of type {type(plugin).__name__}, which is not a FlowPlugin: it has no "
            f"{', '.join(m + '()' for m in missing)}; pass an instance of a FlowPlugin subclass "
            "(airiot_python_sdk.flow_plugin or flow_bridge.adapter.airiot) that defines get_name, "
            "get_type and execute"
        )


def run(plugin: Any, *, concurrency: int | None = None, log_level: int = logging.DEBUG) -> None:
    """Serve `plugin` (a FlowPlugin, flow-bridge's or the vendor SDK's) until the bridge says stop.

    It takes the place of the vendor's `Startup().run(plugin)`: flow-bridge holds the engine
    connection, and registers under `plugin.get_name()` and `get_type()` unless its own
    settings name the plugin. Records at `log_level` and above become log frames; the
    bridge's log level decides which it shows.
    """
    if _Launch.served:
        raise RuntimeError("run() was already called in this process: one plugin per process")
    _check_plugin(plugin)
    _Launch.served = True
    name = plugin.get_name()
    if not isinstance(name, str):
        raise TypeError(f"get_name() returned {type(name).__name__}; return the plugin's name as a str")
    plugin_type = _plugin_type(plugin.get_type())
    tasks_at_once = _concurrency(concurrency)
    _check_options(tasks_at_once, name, plugin_type)
    runner = _PluginRunner(plugin)
    options = _Options(
        execute=runner.execute,
        debug=runner.debug if _takes_debug(plugin) else None,
        start=runner.start,
        stop=runner.stop,
        on_state=runner.on_state,
        concurrency=tasks_at_once,
        name=name,
        plugin_type=plugin_type,
    )
    fds = _Launch.fds if _Launch.fds is not None else protect_stdio()
    with _frames_instead_of_stream_handlers():
        code = _run_until_stopped(fds, options, log_level)
    if code:
        sys.exit(code)


class Startup:
    """Stands in for the vendor's `airiot_python_sdk.flow_plugin.startup.Startup`."""

    def run(self, flow_plugin: Any, flow_plugin_config: Any = None) -> None:
        """Serve the plugin through flow-bridge; the engine settings come from the bridge."""
        _serve_from_startup(self, flow_plugin, flow_plugin_config)


def _serve_from_startup(startup: Any, flow_plugin: Any, flow_plugin_config: Any = None, *_: Any, **__: Any) -> None:
    # Takes the vendor Startup.run's place. Its config object and options named the engine to
    # dial; flow-bridge dials it now, from its own settings.
    if flow_plugin_config is not None:
        print(
            "flow_bridge.adapter.airiot: Startup.run's flow_plugin_config is not used: flow-bridge "
            "connects to the engine (flow-engine.host and port in its config.yml)",
            file=sys.stderr,
        )
    given = [arg.split("=", 1)[0] for arg in sys.argv[1:] if arg.split("=", 1)[0] in _VENDOR_OPTIONS]
    if given:
        print(
            f"flow_bridge.adapter.airiot: {', '.join(given)} is read by flow-bridge now "
            "(flow-bridge run --config FILE --log-level LEVEL); ignored here",
            file=sys.stderr,
        )
    run(flow_plugin)


def _patch_vendor_startup() -> bool:
    """Make the vendor's Startup.run serve through flow-bridge; False if the SDK is not installed."""
    try:
        module = importlib.import_module(VENDOR_STARTUP)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (exc.name == VENDOR_PACKAGE or exc.name.startswith(VENDOR_PACKAGE + ".")):
            return False
        raise
    module.Startup.run = _serve_from_startup
    return True


_HELP: Final = f"""usage: {_USAGE}

Runs an AIR-IoT Python SDK 4.x plugin project, whose main.py ends in Startup().run(plugin),
as a flow-bridge handler:

    flow-bridge run -- python -m flow_bridge.adapter.airiot main.py

  --concurrency N   tasks the plugin takes at once [{CONCURRENCY_ENV}, else {DEFAULT_CONCURRENCY}]

Options go before main.py; everything after it is main.py's own sys.argv.
"""


def _usage_error(what: str) -> NoReturn:
    print(f"usage: {_USAGE}\nflow_bridge.adapter.airiot: {what}", file=sys.stderr)
    sys.exit(2)


def _parse(argv: list[str]) -> tuple[int | None, list[str]]:
    """The launcher's options, then main.py and its arguments, which are left as they are."""
    concurrency: int | None = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg in ("-h", "--help"):
            print(_HELP, end="", file=sys.stderr)
            sys.exit(0)
        if arg == "--concurrency" and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        elif arg.startswith("--concurrency="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            _usage_error(f"unknown option {arg!r}")
        try:
            concurrency = int(value)
        except ValueError:
            _usage_error(f"--concurrency takes a whole number, got {value!r}")
    if i == len(argv):
        _usage_error("give the project's main.py")
    return concurrency, argv[i:]


def main(argv: list[str] | None = None) -> None:
    """`python -m flow_bridge.adapter.airiot [--concurrency N] main.py [ARGS...]`."""
    concurrency, script_argv = _parse(sys.argv[1:] if argv is None else argv)
    script = script_argv[0]
    path = os.path.abspath(script)
    if not os.path.isfile(path):
        _usage_error(f"{script}: no such file; give the project's main.py")
    if concurrency is not None and not 1 <= concurrency <= 65536:
        _usage_error(f"--concurrency must be in 1..65536, got {concurrency}")
    _Launch.concurrency = concurrency
    # Before any project code runs: a print() at import time must not reach the frame channel.
    _Launch.fds = protect_stdio()
    try:
        _patch_vendor_startup()
    except Exception as exc:  # the SDK is there but does not import; main.py will say the same
        print(f"flow_bridge.adapter.airiot: the vendor SDK ({VENDOR_STARTUP}) failed to import: {exc!r}",
              file=sys.stderr)
    # As `python main.py` sees it: its folder first on the path, itself as argv[0].
    sys.path[0] = os.path.dirname(path)
    sys.argv = script_argv
    try:
        runpy.run_path(script, run_name="__main__")
    except SyntaxError as exc:
        # The project does not compile: say where, without the launcher's own frames.
        where = f"{exc.filename or script}, line {exc.lineno}" if exc.lineno else (exc.filename or script)
        sys.exit(
            f"flow_bridge.adapter.airiot: {script} cannot run: a syntax error in {where}; fix it and "
            f"start again (python -m py_compile {script} checks the file)\n"
            + "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
        )
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != VENDOR_PACKAGE:
            raise
        sys.exit(
            f"flow_bridge.adapter.airiot: {script} imports {exc.name}, which is not installed in this "
            f"Python ({sys.executable}). Install the vendor SDK here, or change its import lines to "
            "`from flow_bridge.adapter.airiot import FlowPlugin, FlowPluginType, FlowTask, FlowResult, "
            "DebugTask, DebugResult, DebugLog, Startup`"
        )
    if not _Launch.served:
        sys.exit(
            f"flow_bridge.adapter.airiot: {script} ended without calling Startup().run(plugin) "
            "(is that call under `if __name__ == '__main__':`?)"
        )
