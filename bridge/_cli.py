"""The `flow-bridge` command line. Thin: parse, build the objects, call them.

Errors follow click's own style: "Error: ..." on stderr, exit 2 for a usage or config
error in every command, exit 1 for a run or task that failed.
"""

from __future__ import annotations

import errno
import functools
import importlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import anyio
import click

from flow_bridge.core import (
    HOW_TO_WRITE,
    LOG_FORMATS,
    LOG_LEVELS,
    PLUGIN_TYPES,
    ConfigError,
    Settings,
    default_config_file,
    env_name,
    load_service,
    parse_limit,
)
from flow_bridge.protocol import MAX_MAX_FRAME, MIN_MAX_FRAME, parse_json

from . import __version__
from ._logging import setup_logging
from .tools._params import Duration, PluginName, ShownDefault

EXIT_FAILED = 1

# gRPC's fork handlers only log noise when we start children; we never use gRPC in a child.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    if code == click.UsageError.exit_code:
        raise click.UsageError(message)
    assert code == EXIT_FAILED, code  # the CLI exits 0, 1 or 2 (README, Operations)
    raise click.ClickException(message)  # click's exit status for it is 1


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
    try:
        return anyio.run(fn, *args, backend_options={"use_uvloop": use_uvloop})
    except KeyboardInterrupt:
        # Ctrl-C before a command's own signal handling is in place (while it starts): stop
        # as a shell expects, 128 + SIGINT, without click's "Aborted!" or a traceback.
        raise SystemExit(130) from None


def _option(*decls: str, setting: str, default: str, help: str, **kwargs: Any) -> Callable[..., Any]:
    """An option for one Settings field: its variable and its default shown in --help.

    The default stays None in click so that the file and the environment can still set the
    field; `default` is only what --help shows.
    """
    return click.option(
        *decls, cls=ShownDefault, envvar=env_name(setting), show_envvar=True, show_default=default, default=None,
        help=help, **kwargs,
    )


_ENGINE_OPTIONS = [
    _option("--host", setting="host", default="flow-engine", help="Engine host."),
    _option("--port", setting="port", default="2333", type=click.IntRange(1, 65535), help="Engine port."),
    _option("--connect-timeout", setting="connect_timeout", default="15s", type=Duration(),
            help="How long one connection attempt waits."),
    _option("--retry-interval", setting="retry_interval", default="30s", type=Duration(),
            help="Between reconnect attempts and reports while the engine is away."),
    _option("--heartbeat-interval", setting="heartbeat_interval", default="30s", type=Duration(),
            help="Between health checks."),
    _option("--metrics-port", setting="metrics_port", default="off", type=click.IntRange(1, 65535),
            help="Serve /metrics (Prometheus), /healthz and /readyz on this port."),
    _option("--metrics-host", setting="metrics_host", default="0.0.0.0",
            help="The address /metrics, /healthz and /readyz listen on."),
]

_PLUGIN_OPTIONS = [
    click.option("--config", "config_file", type=click.Path(exists=True), envvar="FLOW_BRIDGE_CONFIG",
                 show_envvar=True, show_default="./config.yml, else ./etc/config.yaml, if there",
                 help="YAML config: flow-bridge's own, or a vendor SDK project's config.yml or etc/config.yaml."),
    _option("--name", setting="name", default="the name the handler declares", type=PluginName(),
            help="Plugin name registered with the engine."),
    _option("--type", "type_", setting="type", default="service", type=click.Choice(PLUGIN_TYPES),
            help="Plugin type: a service task or a user task."),
    _option("--timeout", setting="timeout", default="600s", type=Duration(may_be_none=True),
            help=f"Per-task timeout; 0, none or off for no limit ({HOW_TO_WRITE})."),
    _option("--max-inflight", setting="max_inflight", default="64", type=click.IntRange(1),
            help="Most tasks in flight at once."),
    _option("--grace", setting="grace", default="10s", type=Duration(may_be_zero=True),
            help="On SIGTERM, SIGINT or SIGHUP, how long in-flight tasks may finish."),
    _option("--start-timeout", setting="start_timeout", default="10s", type=Duration(),
            help="How long the handler may take to complete its handshake."),
    _option("--cancel-grace", setting="cancel_grace", default="5s", type=Duration(may_be_zero=True),
            help="After a cancel, how long before a timeout is answered."),
    _option("--workers", setting="workers", default="1", type=click.IntRange(1), help="Copies of the handler to run."),
    _option("--max-frame", setting="max_frame", default="16777216", type=click.IntRange(MIN_MAX_FRAME, MAX_MAX_FRAME),
            help="Largest frame body, in bytes, either way on the handler's pipes."),
    _option("--max-output", setting="max_output", default="16777216", type=click.IntRange(1),
            help="Exec mode: most stdout bytes one run may write."),
    _option("--log-level", setting="log_level", default="info",
            type=click.Choice([level.lower() for level in LOG_LEVELS] + ["warn"], case_sensitive=False),
            help="Least severe log lines to write."),
    _option("--log-format", setting="log_format", default="text", type=click.Choice(LOG_FORMATS),
            help="text for people, json for one object per line."),
    _option("--exec", "exec_mode", setting="exec_mode", default="off", is_flag=True,
            help="Exec mode: start CMD once per task, task JSON on stdin (plugin.exec in config)."),
    click.argument("command", nargs=-1, type=click.UNPROCESSED),
]


def _apply(options: list[Callable[..., Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _log_notes(settings: Settings) -> None:
    for info in settings.infos:
        logging.getLogger("flow_bridge.config").info("%s", info)
    for note in settings.notes:
        logging.getLogger("flow_bridge.config").warning("%s", note)


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
@_apply(_ENGINE_OPTIONS + _PLUGIN_OPTIONS)
def run(command: tuple[str, ...], config_file: str | None, **flags: Any) -> None:
    """Serve the engine: flow-bridge run [OPTIONS] -- CMD [ARGS...], or every plugin of --config's plugins: list."""
    from flow_bridge.child import StartError
    from flow_bridge.gateway import EntryFailed, NameMissing, serve_service

    plugins = _service(config_file, flags, command)
    settings = plugins[0].settings
    setup_logging(settings.log_level, settings.log_format)
    _log_notes(settings)
    ops = _start_ops(settings)
    try:
        _run_async(functools.partial(serve_service, plugins))
    except EntryFailed as exc:
        if not plugins[0].label:  # one plugin, as before: its start failure is a run that failed
            if isinstance(exc.cause, NameMissing):
                _fail(str(exc.cause), click.UsageError.exit_code)
            _fail(f"the handler failed to start: {exc.cause}")
        _fail(f"{exc.plugin.what} cannot start: {exc.cause}; nothing was registered with the engine, the other "
              "plugins were stopped. Fix or remove that entry", click.UsageError.exit_code)
    except StartError as exc:
        _fail(f"the handler failed to start: {exc}")
    finally:
        if ops is not None:
            ops.close()


def _config_path(config_file: str | None) -> str | None:
    return config_file or default_config_file()


def _has_plugin_list(config_file: str | None) -> bool:
    """Whether the config file has a `plugins:` list (a service of its own plugins, even of one)."""
    path = _config_path(config_file)
    if path is None or not os.path.isfile(path):  # a folder is the Go SDK's layout: never a list
        return False
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # load_service reports what is wrong with it
    return isinstance(doc, dict) and "plugins" in doc


def _load_service(config_file: str | None, flags: dict[str, Any]) -> list[Settings]:
    if "type_" in flags:
        flags["type"] = flags.pop("type_")
    try:
        return load_service(_config_path(config_file), flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _service(config_file: str | None, flags: dict[str, Any], command: tuple[str, ...]) -> list[Any]:
    """The plugins `run` serves: each entry of a plugins: list, or the one plugin with its command."""
    from flow_bridge.child import StartError
    from flow_bridge.gateway import Plugin, make_handler

    listed = _has_plugin_list(config_file)
    if listed and command:
        raise click.UsageError(
            f"{_config_path(config_file)} has a plugins: list, and each entry names its own command: "
            "drop the command after `--`, or use a config without plugins:"
        )
    service = _load_service(config_file, flags)
    plugins: list[Any] = []
    for index, settings in enumerate(service):
        argv = command or settings.command
        if not argv:
            raise click.UsageError(
                "no handler command given: put it after `--`, as in `flow-bridge run -- ./handler`, "
                "or set plugin.command (or a plugins: list) in the config file"
            )
        label = f"{_config_path(config_file)}: plugins[{index}] ({settings.name})" if listed else ""
        try:
            plugins.append(Plugin(make_handler(argv, settings), settings, label))
        except StartError as exc:
            if not listed:
                _fail(f"the handler failed to start: {exc}")
            _fail(f"{label} cannot start: {exc}; nothing was registered with the engine. Fix or remove that entry",
                  click.UsageError.exit_code)
    return plugins


def _pick_plugin(config_file: str | None, flags: dict[str, Any], plugin: str | None) -> Settings:
    """The settings of the one plugin `call` (or conformance) works with: --plugin NAME of a service."""
    service = _load_service(config_file, flags)
    if plugin is None:
        if len(service) > 1:
            names = ", ".join(s.name or "?" for s in service)
            raise click.UsageError(f"the config serves {len(service)} plugins ({names}): pick one with --plugin NAME")
        return service[0]
    for settings in service:
        if settings.name == plugin:
            return settings
    names = ", ".join(s.name or "?" for s in service)
    raise click.UsageError(f"--plugin {plugin}: no plugin of that name in the config; it has: {names}")


def _start_ops(settings: Settings) -> Any:
    """The metrics and health endpoints, when --metrics-port (or metrics.port) asks for them."""
    if settings.metrics_port is None:
        return None
    from flow_bridge.core import metrics, url_host
    from flow_bridge.gateway._ops import OpsServer

    metrics.set_version(__version__)
    host, port = settings.metrics_host, settings.metrics_port
    try:
        server = OpsServer(host, port)
    except OSError as exc:
        # The port or the address in the settings cannot be used here: a config error (exit 2).
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            advice = "pick another --metrics-port (metrics.port)"
        else:
            advice = ("give --metrics-host (metrics.host) an address of this machine, "
                      "such as 0.0.0.0, 127.0.0.1 or :: for every IPv6 address")
        _fail(f"cannot serve metrics on {url_host(host)}:{port}: {exc.strerror or exc}; {advice}",
              click.UsageError.exit_code)
    server.start()
    return server


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=2333, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one, printed on stderr).")
@click.option("--concurrency", type=click.IntRange(1), default=None, show_default="unlimited",
              help="Most unanswered tasks at once.")
@click.option("--task-timeout", cls=ShownDefault, type=Duration(may_be_none=True), default=None,
              show_default="none", help="Answer a task as failed if no answer comes within this (or not taken by a "
                                        "plugin within this).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice([level.lower() for level in LOG_LEVELS] + ["warn"], case_sensitive=False),
              envvar=env_name("log_level"), show_envvar=True, help="Least severe log lines to write.")
@click.option("--log-format", default="text", show_default=True, type=click.Choice(LOG_FORMATS),
              envvar=env_name("log_format"), show_envvar=True, help="text for people, json for one object per line.")
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False),
              help="Write throughput and latency (p50, p99) as JSON to this file at the end.")
@click.option("--fault", "faults", multiple=True, hidden=True,
              help="Fault injection for tests: refuse=N, reset-after=N, health=hang|not-serving.")
@click.option("--plugin", type=PluginName(), default=None, show_default="any plugin",
              help="Send task lines that name no \"plugin\" to the plugin registered under this name.")
def engine(
    host: str,
    port: int,
    concurrency: int | None,
    task_timeout: str | None,
    log_level: str,
    log_format: str,
    stats_file: str | None,
    faults: tuple[str, ...],
    plugin: str | None,
) -> None:
    """A stand-in engine: JSON task lines on stdin, JSON answer lines on stdout."""
    from flow_bridge.tools.standin import Faults, run_engine

    timeout = parse_limit(task_timeout) if task_timeout else None
    try:
        injected = Faults.parse(faults)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    if stats_file is not None:
        # Checked before serving: a session's numbers must not be lost to a typo at its end.
        folder = os.path.dirname(os.path.abspath(stats_file))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise click.BadParameter(f"cannot write {stats_file}: {folder} is not a folder this user can write to; "
                                     "create it or pick another path", param_hint="--stats")
    setup_logging("WARNING" if log_level.lower() == "warn" else log_level.upper(), log_format)
    try:
        code = _run_async(run_engine, host, port, concurrency, timeout, injected, stats_file, plugin)
    except OSError as exc:
        if exc.filename is not None:  # the --stats file, not the socket
            _fail(f"cannot write {exc.filename}: {exc.strerror or exc}; pick another --stats path")
        reason = str(exc) if str(exc).startswith("cannot listen") else f"cannot listen on {host}:{port}: " + (
            exc.strerror or str(exc))
        # The address or port given cannot be used here: a usage error, as a busy --metrics-port is.
        _fail(f"{reason}; pick another --port (0 for any free one)", click.UsageError.exit_code)
        return
    raise SystemExit(code)


@main.command()
@click.option("--config-json", default="{}", show_default=True,
              help="The task's config, as JSON (a string here is sent as raw text).")
@click.option("--debug", "debug_request", is_flag=True, help="Send a debug request instead of a task.")
@click.option("--quiet", "-q", is_flag=True, help="Hide the handler's own output (its stderr and log lines).")
@click.option("--plugin", type=PluginName(), default=None, show_default="the config's only plugin",
              help="The plugin of the config's plugins: list to call, with its own command and settings.")
@_apply(_PLUGIN_OPTIONS)
def call(
    command: tuple[str, ...],
    config_json: str,
    debug_request: bool,
    quiet: bool,
    plugin: str | None,
    config_file: str | None,
    **flags: Any,
) -> None:
    """Run one task through the stand-in engine, real gRPC and the bridge; print the answer."""
    from flow_bridge.child import StartError
    from flow_bridge.gateway import NameMissing, make_handler
    from flow_bridge.tools.standin import TaskLineError, call_once

    try:
        config = parse_json(config_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not JSON ({exc}); quote it for your shell, like '{{\"x\": 1}}'", param_hint="--config-json"
        ) from None
    except ValueError as exc:  # NaN, Infinity, 1e400; or nested beyond the parser
        raise click.BadParameter(f"not JSON the engine can send: {exc}",
                                 param_hint="--config-json") from None
    settings = _pick_plugin(config_file, flags, plugin)
    if plugin is not None and command:
        raise click.UsageError(f"--plugin {plugin} runs that plugin's own command from the config: "
                               "drop the one after `--`")
    command = command or settings.command
    if not command:
        raise click.UsageError("no handler command given: put it after `--`, as in `flow-bridge call -- ./handler`, "
                               "or set plugin.command in the config file")
    # The answer is the output: the bridge's own lines stay quiet unless a level is asked
    # for, while the handler's output shows (unless --quiet).
    explicit = flags.get("log_level") is not None or bool(os.environ.get(env_name("log_level")))
    bridge_level = settings.log_level if explicit else "WARNING"
    setup_logging(bridge_level, settings.log_format, handler_level=None if quiet else "INFO", handler_quiet=quiet)
    _log_notes(settings)
    task = {"config": config, "debug": debug_request}
    try:
        handler = make_handler(command, settings)
        record = _run_async(call_once, handler, settings, task)
    except StartError as exc:
        _fail(f"the handler failed to start: {exc}")
        return
    except NameMissing as exc:  # a name the handler declared that the platform would refuse: as run does
        raise click.UsageError(str(exc)) from None
    except TaskLineError as exc:  # raised before anything started; "line 1" means nothing here
        raise click.BadParameter(str(exc).removeprefix("line 1: "), param_hint="--config-json") from None
    click.echo(json.dumps(record, ensure_ascii=False))
    raise SystemExit(0 if record.get("status") else EXIT_FAILED)
