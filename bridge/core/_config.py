"""Settings: defaults, then a YAML file, then FLOW_BRIDGE_* variables, then flags.

Every value remembers where it came from, so that a bad one is reported as
"--timeout: ..." or "config.yml: flow-engine.port: ..." in a single line.

The file may be flow-bridge's own (``flow-engine:``, ``plugin:``, ``log:``) or one a
vendor SDK project already has: the Python SDK's ``config.yml`` (``flow-engine.
health-check-interval`` in bare seconds, a top-level ``log-level``) or the Go SDK's
``etc/config.yaml`` (``flow:``, ``flowEngine:``, a numeric ``log.level``, ``pprof:``).
Keys may also be written dotted at the top level, as Spring's YAML allows
(``flow-engine.host: x`` reads as ``flow-engine: {host: x}``).
A misspelled key in a section flow-bridge reads is an error that names the closest
known key; a section it does not read is only warned about, since vendor files carry
other sections too.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from flow_bridge.protocol import DEFAULT_MAX_FRAME, MAX_MAX_FRAME, MIN_MAX_FRAME

from ._durations import parse_duration, parse_limit, parse_positive_duration


class ConfigError(Exception):
    """An invalid setting; the message says which one, where it came from, and why."""


def _positive_int(text: object) -> int:
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a whole number")
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def _frame_size(text: object) -> int:
    value = _positive_int(text)
    if not MIN_MAX_FRAME <= value <= MAX_MAX_FRAME:
        raise ValueError(f"{value} is outside {MIN_MAX_FRAME}..{MAX_MAX_FRAME} bytes")
    return value


def _port(text: object) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise ValueError(f"{value} is not a port number (1..65535)")
    return value


PLUGIN_TYPES = ("service", "user")


def _plugin_type(text: object) -> str:
    value = str(text).strip().lower()
    if value not in PLUGIN_TYPES:
        raise ValueError(f"{text!r} must be 'service' or 'user'")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# logrus levels, as the Go SDK's log.level writes them: 0 panic, 1 fatal, 2 error, 3 warn,
# 4 info, 5 debug, 6 trace.
_LOGRUS = {0: "ERROR", 1: "ERROR", 2: "ERROR", 3: "WARNING", 4: "INFO", 5: "DEBUG", 6: "DEBUG"}


def _log_level(text: object) -> str:
    if isinstance(text, int) and not isinstance(text, bool):
        if text in _LOGRUS:
            return _LOGRUS[text]
        raise ValueError(f"{text} is not a log level (0..6 as logrus counts, or debug, info, warning, error)")
    value = str(text).strip().upper()
    value = {"WARN": "WARNING", "CRITICAL": "ERROR", "FATAL": "ERROR", "TRACE": "DEBUG"}.get(value, value)
    if value.isdigit() and int(value) in _LOGRUS:
        return _LOGRUS[int(value)]
    if value not in LOG_LEVELS:
        raise ValueError(f"{text!r} must be one of debug, info, warning, error")
    return value


LOG_FORMATS = ("text", "json")


def _log_format(text: object) -> str:
    value = str(text).strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"{text!r} must be 'text' or 'json'")
    return value


# The platform's rule for a plugin name, which `init` and `package` apply too.
_PLUGIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def check_plugin_name(name: object) -> str:
    """The name if the platform accepts it; else ValueError with a name that would do."""
    value = str(name).strip() if name is not None else ""
    if not value:
        raise ValueError("the plugin name must not be empty")
    if not _PLUGIN_NAME.fullmatch(value):
        hint = re.sub(r"[^A-Za-z0-9_-]+", "-", value).strip("-_")
        hint = re.sub(r"^[^A-Za-z]+", "", hint)[:64] or "myPlugin"
        raise ValueError(
            f"{value!r} is not a plugin name the platform accepts: use letters, digits, '-' and '_', "
            f"starting with a letter, at most 64 characters (for example {hint})"
        )
    return value


def _text(text: object) -> str:
    return str(text).strip()


def _host(text: object) -> str:
    """The engine's host name or IP address alone: not a URL, and not host:port."""
    value = _text(text)
    if not value:
        raise ValueError("must name the engine's host, like flow-engine or 10.0.0.5")
    if "://" in value or "/" in value or any(ch.isspace() for ch in value):
        raise ValueError(f"{value!r} is not a host name: write the host alone, like flow-engine or 10.0.0.5, "
                         "and the port under port")
    if value.count(":") == 1 or (value.startswith("[") and not value.endswith("]")):
        raise ValueError(f"{value!r} has a port in it: write the host alone ({value.rsplit(':', 1)[0]}) "
                         "and the port under port")
    return value


def url_host(host: str) -> str:
    """`host` as it goes before `:port` in an address or URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _bool(text: object) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{text!r} must be true or false")


def _command(value: object) -> tuple[str, ...]:
    """A list of arguments, or one string split as a shell would split it (no shell runs it)."""
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} cannot be split into arguments ({exc}): close its quotes, "
                             "or write the command as a list such as [./handler, 'an argument']") from None
    elif isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
        argv = [str(item) for item in value]
    else:
        raise ValueError("must be a list of arguments, or one string such as './handler --flag'")
    if not argv:
        raise ValueError("must name the handler to run")
    return tuple(argv)


def _environment(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of variable names to values")
    pairs: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValueError(f"{key!r} is not a variable name")
        if isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"{key}: the value must be a string or a number")
        pairs.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `flow-bridge run` needs to know, validated."""

    host: str = "flow-engine"
    port: int = 2333
    # None: not configured; the name the handler declares at its handshake is used then.
    name: str | None = None
    type: str | None = None
    # None: no limit (timeout 0, none or off), as in the vendor's Python and Java SDKs.
    timeout: float | None = 600.0
    max_inflight: int = 64
    grace: float = 10.0
    connect_timeout: float = 15.0
    retry_interval: float = 30.0
    heartbeat_interval: float = 30.0
    log_level: str = "INFO"
    log_format: str = "text"
    start_timeout: float = 10.0
    cancel_grace: float = 5.0
    workers: int = 1
    max_frame: int = DEFAULT_MAX_FRAME
    max_output: int = 16 * 1024 * 1024
    exec_mode: bool = False
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    # The handler to run, from the config file (a `--` command on the command line wins).
    command: tuple[str, ...] = ()
    # Extra variables for the handler's environment, from the config file.
    env: tuple[tuple[str, str], ...] = ()
    # What the file said that is worth a log line once logging is set up (unknown sections...).
    notes: tuple[str, ...] = field(default=(), compare=False)
    # ...and what is only worth an info line (a vendor section accepted and not used).
    infos: tuple[str, ...] = field(default=(), compare=False)

    @property
    def target(self) -> str:
        return f"{url_host(self.host)}:{self.port}"

    @property
    def plugin_type(self) -> str:
        return self.type or "service"


Parser = Callable[[object], Any]

# setting -> (parser, the key in flow-bridge's own file); its variable is env_name(setting).
_FIELDS: dict[str, tuple[Parser, str]] = {
    "host": (_host, "flow-engine.host"),
    "port": (_port, "flow-engine.port"),
    "connect_timeout": (parse_positive_duration, "flow-engine.connect-timeout"),
    "retry_interval": (parse_positive_duration, "flow-engine.retry-interval"),
    "heartbeat_interval": (parse_positive_duration, "flow-engine.heartbeat-interval"),
    "name": (check_plugin_name, "plugin.name"),
    "type": (_plugin_type, "plugin.type"),
    "timeout": (parse_limit, "plugin.timeout"),
    "max_inflight": (_positive_int, "plugin.max-inflight"),
    "grace": (parse_duration, "plugin.grace"),
    "start_timeout": (parse_positive_duration, "plugin.start-timeout"),
    "cancel_grace": (parse_duration, "plugin.cancel-grace"),
    "workers": (_positive_int, "plugin.workers"),
    "max_frame": (_frame_size, "plugin.max-frame"),
    "max_output": (_positive_int, "plugin.max-output"),
    "exec_mode": (_bool, "plugin.exec"),
    "log_level": (_log_level, "log.level"),
    "log_format": (_log_format, "log.format"),
    "metrics_port": (_port, "metrics.port"),
    "metrics_host": (_text, "metrics.host"),
    "command": (_command, "plugin.command"),
    "env": (_environment, "plugin.env"),
}
# Keys of the vendor SDKs' files, read as they are.
_VENDOR_KEYS: dict[str, str] = {
    "flow-engine.health-check-interval": "heartbeat_interval",  # Python SDK, bare seconds
    "flow.name": "name",  # Go SDK
    "flow.mode": "type",
    "flow.timeout": "timeout",
    "flowEngine.host": "host",
    "flowEngine.port": "port",
}
_KEYS: dict[str, str] = {key: name for name, (_, key) in _FIELDS.items()} | _VENDOR_KEYS
# Sections read whole; a misspelled key in one of them is an error.
_SECTIONS = frozenset(key.split(".")[0] for key in _KEYS)
# Top-level scalars: the Python SDK's log-level.
_TOP_LEVEL = {"log-level": "log_level"}
# What one entry of a `plugins:` list may set; what it leaves out comes from the rest.
PLUGIN_ENTRY_KEYS: dict[str, str] = {
    key.split(".", 1)[1]: name for name, (_, key) in _FIELDS.items() if key.startswith("plugin.")
}
# Accepted and not used, with the line that says so.
_IGNORED = {"pprof": "pprof: flow-bridge has no pprof endpoint; use --metrics-port for metrics"}
# Read by a flow-bridge tool, not by the runtime: `flow-bridge package` reads package:.
_TOOL_SECTIONS = frozenset({"package"})


def env_name(field: str) -> str:
    return "FLOW_BRIDGE_" + ("EXEC" if field == "exec_mode" else field.upper())


# Looked for in this order in the working directory, as the vendor SDKs do: the Python
# SDK reads ./config.yml, the Go SDK ./etc/config.yaml.
DEFAULT_CONFIGS = ("config.yml", os.path.join("etc", "config.yaml"))


def default_config_file() -> str | None:
    """The first of DEFAULT_CONFIGS that exists in the working directory."""
    return next((path for path in DEFAULT_CONFIGS if os.path.isfile(path)), None)


def resolve_config_path(path: str) -> str:
    """A file as given; a folder (the Go SDK's --config DIR) holds config.yml or config.yaml."""
    if os.path.isdir(path):
        for name in ("config.yml", "config.yaml"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise ConfigError(f"{path}: a folder with neither config.yml nor config.yaml in it; name the file itself")
    return path


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML keeps the last,
    silently; in a config file that is almost always a mistake)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is written twice (lines {first} and {line}); keep one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def _unknown_key(path: str, section: str, key: object) -> ConfigError:
    known = sorted(k.split(".", 1)[1] for k in _KEYS if k.startswith(section + "."))
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(
        f"{path}: {section}.{key}: not a setting flow-bridge knows; {hint}"
        f"the keys of '{section}' are: {', '.join(known)}"
    )


Raw = dict[str, tuple[object, str]]  # setting -> (value as written, where it was written)


@dataclass
class _File:
    shared: Raw = field(default_factory=dict)
    entries: list[Raw] | None = None  # the `plugins:` list, when the file has one
    notes: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


def _plugin_entries(path: str, body: object) -> list[Raw]:
    if isinstance(body, list) and not body:
        raise ConfigError(f"{path}: plugins: must be a list of plugins, each with its own name and command, and this "
                          "one is empty: add an entry, or remove plugins: to serve the plugin: section's one plugin")
    if not isinstance(body, list):
        raise ConfigError(f"{path}: plugins: must be a list of plugins, each with its own name and command")
    entries: list[Raw] = []
    for index, entry in enumerate(body):
        label = f"{path}: plugins[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{label}: must be a mapping such as {{name: myPlugin, command: ./handler}}")
        if entry.get("name") is not None:
            label = f"{path}: plugins[{index}] ({entry['name']})"
        raw: Raw = {}
        for key, value in entry.items():
            setting = PLUGIN_ENTRY_KEYS.get(str(key))
            if setting is None:
                close = difflib.get_close_matches(str(key), sorted(PLUGIN_ENTRY_KEYS), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ConfigError(f"{label}.{key}: not a setting of a plugin; {hint}"
                                  f"a plugin's keys are: {', '.join(sorted(PLUGIN_ENTRY_KEYS))}")
            if value is not None:
                raw[setting] = (value, f"{label}.{key}")
        for required in ("name", "command"):
            if required not in raw:
                raise ConfigError(f"{label}: every entry of plugins: needs its own {required}")
        entries.append(raw)
    return entries


def _put(found: Raw, setting: str, value: object, where: str) -> None:
    """One setting from the file; two keys for the same setting (a vendor's and ours) is an error."""
    if setting in found:
        first = found[setting][1]
        raise ConfigError(
            f"{where}: sets the same thing as {first.split(': ', 1)[-1]} (flow-bridge reads both the vendor "
            "SDKs' keys and its own); keep one of them"
        )
    found[setting] = (value, where)


def _unfold_dotted(path: str, doc: dict[Any, Any]) -> dict[Any, Any]:
    """`flow-engine.host: x` at the top level (Spring writes keys so) as `flow-engine: {host: x}`.

    Only for sections flow-bridge reads; any other dotted key stays as it is, an unknown section.
    """
    unfolded: dict[Any, Any] = {}
    for key, value in doc.items():
        section, dot, rest = key.partition(".") if isinstance(key, str) else (key, "", "")
        if not dot or section not in _SECTIONS or not rest:
            if key in unfolded:  # `flow-engine.host:` came first, then `flow-engine:`
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: {key}: must be a mapping of settings, like '{key}:' "
                                      "then indented 'key: value'")
                body = unfolded[key]
                for name, item in value.items():
                    if name in body:
                        raise ConfigError(f"{path}: {key}.{name} is written twice (as '{key}.{name}:' and "
                                          f"under '{key}:'); keep one")
                    body[name] = item
                continue
            unfolded[key] = value
            continue
        body = unfolded.setdefault(section, {})
        if body is None:
            body = unfolded[section] = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {section}: must be a mapping of settings, like '{section}:' then "
                              "indented 'key: value'")
        if rest in body:
            raise ConfigError(f"{path}: {key} is written twice (as '{key}:' and under '{section}:'); keep one")
        body[rest] = value
    return unfolded


def _from_file(path: str) -> _File:
    doc = _read_yaml(path)
    result = _File()
    if doc is None:
        return result
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'flow-engine:' and 'plugin:' sections")
    doc = _unfold_dotted(path, doc)
    found, notes = result.shared, result.notes
    for section, body in doc.items():
        where = f"{path}: {section}"
        if section == "plugins":
            result.entries = _plugin_entries(path, body)
            continue
        if section in _TOP_LEVEL:
            if body is not None:
                _put(found, _TOP_LEVEL[section], body, where)
            continue
        if section in _IGNORED:
            result.infos.append(f"{path}: {_IGNORED[section]}")
            continue
        if section in _TOOL_SECTIONS:
            continue
        if section not in _SECTIONS:
            close = difflib.get_close_matches(str(section), sorted(_SECTIONS | set(_TOP_LEVEL)), n=1, cutoff=0.75)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            notes.append(f"{path}: section '{section}' is not one flow-bridge reads; ignored{hint}")
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: must be a mapping of settings, like '{section}:' then indented 'key: value'")
        for key, value in body.items():
            setting = _KEYS.get(f"{section}.{key}")
            if setting is None:
                raise _unknown_key(path, section, key)
            if value is not None:
                _put(found, setting, value, f"{where}.{key}")
    return result


def _merge(
    config: _File, flags: Mapping[str, object] | None, environ: Mapping[str, str] | None
) -> Raw:
    """The shared settings: the file's sections, then FLOW_BRIDGE_* variables, then flags."""
    environ = os.environ if environ is None else environ
    raw: Raw = dict(config.shared)
    for name in _FIELDS:
        text = environ.get(env_name(name))
        if text:
            raw[name] = (text, env_name(name))
    for name, flag in (flags or {}).items():
        if flag is not None:
            raw[name] = (flag, "--exec" if name == "exec_mode" else "--" + name.replace("_", "-"))
    return raw


def _build(raw: Raw, notes: list[str], infos: list[str] | None = None) -> Settings:
    values: dict[str, Any] = {}
    for name, (value, source) in raw.items():
        try:
            values[name] = _FIELDS[name][0](value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return Settings(**values, notes=tuple(notes), infos=tuple(infos or ()))


def _read(config_file: str | None) -> _File:
    return _from_file(resolve_config_path(config_file)) if config_file else _File()


def load_settings(
    config_file: str | None = None,
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The shared settings (flags win over environment, which wins over the file)."""
    config = _read(config_file)
    return _build(_merge(config, flags, environ), config.notes, config.infos)


def load_service(
    config_file: str | None = None,
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Settings]:
    """One Settings per plugin this service runs: each entry of `plugins:`, or the one plugin.

    An entry's own keys win; what it leaves out comes from flags, then variables, then the
    shared `plugin:` section. Names must differ, since the engine tells plugins apart by name.
    """
    config = _read(config_file)
    shared = _merge(config, flags, environ)
    if config.entries is None:
        return [_build(shared, config.notes, config.infos)]
    if "name" in shared and shared["name"][1].startswith("--"):
        raise ConfigError("--name names a single plugin; with a plugins: list each entry names itself "
                          "(use --plugin NAME in call, engine and conformance to pick one)")
    plugins = [_build(shared | entry, config.notes, config.infos) for entry in config.entries]
    seen: dict[str, str] = {}
    for entry, settings in zip(config.entries, plugins, strict=True):
        where = entry["name"][1].removesuffix(".name")
        assert settings.name is not None  # every entry has one (checked when read)
        if settings.name in seen:
            raise ConfigError(f"{where}: the name {settings.name!r} is taken by {seen[settings.name]}; "
                              "each plugin registers under its own name")
        seen[settings.name] = where
    return plugins


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings) if f.name not in ("notes", "infos"))
