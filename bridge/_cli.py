"""The `flow-bridge` command line. Thin: parse, build the objects, call them."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio
import click

from flow_bridge.core import ConfigError, Settings, default_config_file, load_settings

from . import __version__

EXIT_USAGE = 2

# gRPC's fork handlers only log noise when we start children; we never use gRPC in a child.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # grpc's Python layer warns about streams it aborts when our own server stops.
    logging.getLogger("grpc._cython.cygrpc").setLevel(logging.ERROR)


def _fail(message: str, code: int) -> None:
    click.echo(f"flow-bridge: {message}", err=True)
    sys.exit(code)


def _run_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Run on asyncio, which grpc.aio needs.

    FLOW_BRIDGE_EVENT_LOOP=uvloop opts in to uvloop where it is installed. It is not the
    default: on the task path it measured within noise of the standard loop (2,204 and
    2,168 against 2,316 and 1,919 tasks/s), and it does not install on Windows.
    """
    use_uvloop = os.environ.get("FLOW_BRIDGE_EVENT_LOOP", "asyncio") == "uvloop"
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            use_uvloop = False
    return anyio.run(fn, *args, backend_options={"use_uvloop": use_uvloop})


def plugin_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by `run` and `call` (each maps to a Settings field)."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="FLOW_BRIDGE_CONFIG",
                     help="YAML file with flow-engine: and plugin: sections [./config.yml if it exists]."),
        click.option("--host", help="Engine host [flow-engine]."),
        click.option("--port", help="Engine port [2333]."),
        click.option("--name", help="Plugin name registered with the engine."),
        click.option("--type", "type_", help="Plugin type: service or user [service]."),
        click.option("--timeout", help="Per-task timeout, like 600s, 2m, 500ms [600s]."),
        click.option("--max-inflight", help="Most tasks in flight at once [64]."),
        click.option("--grace", help="On SIGTERM, how long in-flight tasks may finish [10s]."),
        click.option("--connect-timeout", help="How long one connection attempt waits [15s]."),
        click.option("--retry-interval", help="Between reports/attempts while the engine is away [30s]."),
        click.option("--heartbeat-interval", help="Between health checks [30s]."),
        click.option("--start-timeout", help="How long the handler may take to complete its handshake [10s]."),
        click.option("--cancel-grace", help="After a cancel, how long before a timeout is answered [5s]."),
        click.option("--workers", help="Copies of the handler to run [1]."),
        click.option("--max-output", help="Exec mode: most stdout bytes a run may write [16777216]."),
        click.option("--log-level", help="debug, info, warning or error [info]."),
        click.option("--exec", "exec_mode", is_flag=True, default=None,
                     help="Exec mode: start CMD once per task, task JSON on stdin (plugin.exec in config)."),
        click.argument("command", nargs=-1, type=click.UNPROCESSED),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(config_file: str | None, flags: dict[str, Any], **overrides: Any) -> Settings:
    if "type_" in flags:
        flags["type"] = flags.pop("type_")
    try:
        settings = load_settings(config_file or default_config_file(), flags)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
        raise  # unreachable; keeps type checkers content
    return dataclasses.replace(settings, **overrides) if overrides else settings


class _LazyGroup(click.Group):
    """A group whose tool commands are imported only when one of them runs (or help lists them).

    `run` should not pay for loading the scaffold, package and conformance tools, and the
    runtime must never depend on them (see flow_bridge/__init__.py for the layers).
    """

    lazy_commands: dict[str, str] = {
        "conformance": "flow_bridge.tools.conformance:conformance_command",
        "init": "flow_bridge.tools.scaffold:init_command",
        "package": "flow_bridge.tools.package:package_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_commands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flow-bridge")
def main() -> None:
    """Run any executable as an AIR-IoT flow-engine plugin."""


@main.command(context_settings={"ignore_unknown_options": False})
@plugin_options
def run(command: tuple[str, ...], config_file: str | None, **flags: Any) -> None:
    """Serve the engine with a handler: flow-bridge run [OPTIONS] -- CMD [ARGS...]"""
    from flow_bridge.child import StartError
    from flow_bridge.gateway import make_handler, serve_plugin

    settings = _settings(config_file, flags)
    _setup_logging(settings.log_level)
    try:
        handler = make_handler(command, settings)
        _run_async(functools.partial(serve_plugin, handler, settings))
    except StartError as exc:
        _fail(f"the handler failed to start: {exc}", 1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=2333, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one, printed on stderr).")
@click.option("--concurrency", type=click.IntRange(1), default=None,
              help="Most unanswered tasks at once [unlimited].")
@click.option("--task-timeout", default=None, help="Answer a task as failed if no answer comes within this.")
@click.option("--log-level", default="info", show_default=True)
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False),
              help="Write throughput and latency (p50, p99) as JSON to this file at the end.")
@click.option("--fault", "faults", multiple=True, hidden=True,
              help="Fault injection for tests: refuse=N, reset-after=N, health=hang|not-serving.")
def engine(
    host: str,
    port: int,
    concurrency: int | None,
    task_timeout: str | None,
    log_level: str,
    stats_file: str | None,
    faults: tuple[str, ...],
) -> None:
    """A stand-in engine: JSON task lines on stdin, JSON answer lines on stdout."""
    from flow_bridge.core import parse_duration
    from flow_bridge.tools.standin import Faults, run_engine

    try:
        level = load_settings(None, {"log_level": log_level}, environ={}).log_level
        timeout = parse_duration(task_timeout) if task_timeout else None
        injected = Faults.parse(faults)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
        return
    except ValueError as exc:
        _fail(str(exc) if str(exc).startswith("--fault") else f"--task-timeout: {exc}", EXIT_USAGE)
        return
    _setup_logging(level)
    try:
        code = _run_async(run_engine, host, port, concurrency, timeout, injected, stats_file)
    except OSError as exc:
        _fail(str(exc), 1)
        return
    sys.exit(code)


@main.command()
@click.option("--config-json", default="{}", show_default=True,
              help="The task's config, as JSON (a string here is sent as raw text).")
@click.option("--debug", "debug_request", is_flag=True, help="Send a debug request instead of a task.")
@plugin_options
def call(
    command: tuple[str, ...],
    config_json: str,
    debug_request: bool,
    config_file: str | None,
    **flags: Any,
) -> None:
    """Run one task through the stand-in engine, real gRPC and the bridge; print the answer."""
    from flow_bridge.child import StartError
    from flow_bridge.gateway import make_handler
    from flow_bridge.tools.standin import call_once

    try:
        config = json.loads(config_json)
    except ValueError as exc:
        _fail(f"--config-json: not JSON ({exc}); quote it for your shell, like '{{\"x\": 1}}'", EXIT_USAGE)
        return
    flags.setdefault("log_level", None)
    if flags["log_level"] is None:
        flags["log_level"] = "warning"  # the answer is the output; keep the log quiet unless asked
    settings = _settings(config_file, flags)
    _setup_logging(settings.log_level)
    task = {"config": config, "debug": debug_request}
    try:
        handler = make_handler(command, settings)
        record = _run_async(call_once, handler, settings, task)
    except StartError as exc:
        _fail(f"the handler failed to start: {exc}", 1)
        return
    click.echo(json.dumps(record, ensure_ascii=False))
    sys.exit(0 if record.get("status") else 1)

