"""What every runtime layer shares: settings, and the engine-facing answer model.

``_config``     settings: defaults, a YAML file (flow-bridge's or a vendor SDK's), FLOW_BRIDGE_*, flags.
``_metrics``    counters, latencies and readiness per plugin, for /metrics and /readyz.
``_limits``      limits and timeouts that several layers share, each with its reason.
``_durations``  15s, 1m30s, PT15S or bare seconds; 0/none/off where a limit may be turned off.
``_answers``     what the engine asked (Request) and what it gets back (Answer), with the error kinds.
"""
from __future__ import annotations

from . import _metrics as metrics
from ._answers import BAD_REQUEST as BAD_REQUEST
from ._answers import CRASH as CRASH
from ._answers import PROTOCOL as PROTOCOL
from ._answers import TIMEOUT as TIMEOUT
from ._answers import TOO_LARGE as TOO_LARGE
from ._answers import UNAVAILABLE as UNAVAILABLE
from ._answers import Answer as Answer
from ._answers import ErrorKind as ErrorKind
from ._answers import Failure as Failure
from ._answers import LogRecord as LogRecord
from ._answers import Request as Request
from ._answers import failure as failure
from ._answers import for_debug as for_debug
from ._answers import from_failure as from_failure
from ._answers import handler_error as handler_error
from ._answers import internal_error as internal_error
from ._answers import now_rfc3339 as now_rfc3339
from ._answers import success as success
from ._config import LOG_FORMATS as LOG_FORMATS
from ._config import LOG_LEVELS as LOG_LEVELS
from ._config import PLUGIN_TYPES as PLUGIN_TYPES
from ._config import ConfigError as ConfigError
from ._config import Settings as Settings
from ._config import check_plugin_name as check_plugin_name
from ._config import default_config_file as default_config_file
from ._config import env_name as env_name
from ._config import load_service as load_service
from ._config import load_settings as load_settings
from ._config import url_host as url_host
from ._durations import HOW_TO_WRITE as HOW_TO_WRITE
from ._durations import parse_duration as parse_duration
from ._durations import parse_limit as parse_limit
from ._durations import parse_positive_duration as parse_positive_duration
from ._limits import MAX_LINE as MAX_LINE
from ._limits import OUTPUT_AFTER_EXIT as OUTPUT_AFTER_EXIT
from ._limits import TAIL_LINES as TAIL_LINES
from ._limits import TERM_GRACE as TERM_GRACE

__all__ = [
    "Answer", "BAD_REQUEST", "CRASH", "ConfigError", "ErrorKind", "Failure", "HOW_TO_WRITE", "LOG_FORMATS",
    "LOG_LEVELS", "LogRecord", "MAX_LINE", "OUTPUT_AFTER_EXIT", "PLUGIN_TYPES", "PROTOCOL", "Request", "Settings",
    "TAIL_LINES", "TERM_GRACE", "TIMEOUT", "TOO_LARGE", "UNAVAILABLE", "check_plugin_name", "default_config_file",
    "env_name", "failure", "for_debug", "from_failure", "handler_error", "load_service", "load_settings", "metrics",
    "now_rfc3339", "parse_duration", "parse_limit", "parse_positive_duration", "success", "url_host",
]
