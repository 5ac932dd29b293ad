"""Settings: defaults, then a YAML file, then FLOW_BRIDGE_* variables, then flags.

Every value remembers where it came from, so that a bad one is reported as
"--timeout: ..." or "config.yml: flow-engine.port: ..." in a single line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from flow_bridge.protocol import DEFAULT_MAX_FRAME, MAX_MAX_FRAME, MIN_MAX_FRAME


class ConfigError(Exception):
    """An invalid setting; the message says which one, where it came from, and why."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: object) -> float:
    """'15s', '2m', '500ms', '1.5h' or a bare number of seconds -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text} is negative")
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration (write it like 15s, 2m, 500ms)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _positive_int(text: object) -> int:
    try:
        value = int(str(text), 10)
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


def _plugin_type(text: object) -> str:
    value = str(text).strip().lower()
    if value not in ("service", "user"):
        raise ValueError(f"{text!r} must be 'service' or 'user'")
    return value


def _log_level(text: object) -> str:
    value = str(text).strip().upper()
    if value == "WARN":
        value = "WARNING"
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{text!r} must be one of debug, info, warning, error")
    return value


def _name(text: object) -> str:
    value = str(text).strip()
    if not value:
        raise ValueError("the plugin name must not be empty")
    return value


def _text(text: object) -> str:
    return str(text).strip()


def _bool(text: object) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{text!r} must be true or false")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `flow-bridge run` needs to know, validated."""

    host: str = "flow-engine"
    port: int = 2333
    name: str = "flow-bridge"
    type: str = "service"
    timeout: float = 600.0
    max_inflight: int = 64
    grace: float = 10.0
    connect_timeout: float = 15.0
    retry_interval: float = 30.0
    heartbeat_interval: float = 30.0
    log_level: str = "INFO"
    start_timeout: float = 10.0
    cancel_grace: float = 5.0
    workers: int = 1
    max_frame: int = DEFAULT_MAX_FRAME
    max_output: int = 16 * 1024 * 1024
    exec_mode: bool = False

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


# setting -> (parser, YAML path); its variable is env_name(setting)
_FIELDS: dict[str, tuple[Any, str]] = {
    "host": (_text, "flow-engine.host"),
    "port": (_port, "flow-engine.port"),
    "connect_timeout": (parse_duration, "flow-engine.connect-timeout"),
    "retry_interval": (parse_duration, "flow-engine.retry-interval"),
    "heartbeat_interval": (parse_duration, "flow-engine.heartbeat-interval"),
    "name": (_name, "plugin.name"),
    "type": (_plugin_type, "plugin.type"),
    "timeout": (parse_duration, "plugin.timeout"),
    "max_inflight": (_positive_int, "plugin.max-inflight"),
    "grace": (parse_duration, "plugin.grace"),
    "start_timeout": (parse_duration, "plugin.start-timeout"),
    "cancel_grace": (parse_duration, "plugin.cancel-grace"),
    "workers": (_positive_int, "plugin.workers"),
    "max_frame": (_frame_size, "plugin.max-frame"),
    "max_output": (_positive_int, "plugin.max-output"),
    "exec_mode": (_bool, "plugin.exec"),
    "log_level": (_log_level, "log.level"),
}
# The vendor's Go SDK keeps name, mode and timeout under `flow:`; accept its files as they are.
_ALIASES = {"flow.name": "name", "flow.mode": "type", "flow.timeout": "timeout"}


def env_name(field: str) -> str:
    return "FLOW_BRIDGE_" + ("EXEC" if field == "exec_mode" else field.upper())


DEFAULT_CONFIG = "config.yml"


def default_config_file() -> str | None:
    """./config.yml when it exists: the vendor SDKs read it from the working directory too."""
    return DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None


def _from_file(path: str) -> dict[str, tuple[object, str]]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'flow-engine:' and 'plugin:' sections")
    found: dict[str, tuple[object, str]] = {}
    by_path = {yaml_path: field for field, (_, yaml_path) in _FIELDS.items()}
    by_path.update(_ALIASES)
    for section, body in doc.items():
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: '{section}' must be a mapping of settings")
        for key, value in body.items():
            field = by_path.get(f"{section}.{key}")
            if field is not None and value is not None:
                found[field] = (value, f"{path}: {section}.{key}")
    return found


def load_settings(
    config_file: str | None = None,
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the three sources (flags win over environment, which wins over the file)."""
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[object, str]] = {}
    if config_file:
        raw.update(_from_file(config_file))
    for field in _FIELDS:
        text = environ.get(env_name(field))
        if text:
            raw[field] = (text, env_name(field))
    for field, flag in (flags or {}).items():
        if flag is not None:
            raw[field] = (flag, "--exec" if field == "exec_mode" else "--" + field.replace("_", "-"))
    values: dict[str, Any] = {}
    for field, (value, source) in raw.items():
        parser = _FIELDS[field][0]
        try:
            values[field] = parser(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    settings = Settings(**values)
    if settings.heartbeat_interval <= 0 or settings.connect_timeout <= 0:
        raise ConfigError("heartbeat-interval and connect-timeout must be greater than 0")
    return settings


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings))
