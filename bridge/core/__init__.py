"""What every runtime layer shares: settings, and the engine-facing answer model.

``_config``   settings: defaults, YAML file, FLOW_BRIDGE_* variables, flags.
``_answers``  what the engine asked (Request) and what it gets back (Answer), with the error kinds.
"""
from __future__ import annotations

from ._answers import CRASH as CRASH
from ._answers import PROTOCOL as PROTOCOL
from ._answers import TIMEOUT as TIMEOUT
from ._answers import UNAVAILABLE as UNAVAILABLE
from ._answers import Answer as Answer
from ._answers import Failure as Failure
from ._answers import LogRecord as LogRecord
from ._answers import Request as Request
from ._answers import failure as failure
from ._answers import for_debug as for_debug
from ._answers import from_failure as from_failure
from ._answers import now_rfc3339 as now_rfc3339
from ._answers import success as success
from ._config import ConfigError as ConfigError
from ._config import Settings as Settings
from ._config import default_config_file as default_config_file
from ._config import load_settings as load_settings
from ._config import parse_duration as parse_duration

__all__ = [
    "CRASH", "PROTOCOL", "TIMEOUT", "UNAVAILABLE", "Answer", "ConfigError", "Failure", "LogRecord", "Request",
    "Settings", "default_config_file", "failure", "for_debug", "from_failure", "load_settings", "now_rfc3339",
    "parse_duration", "success",
]
