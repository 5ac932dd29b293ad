"""Log lines for operators: a time with its zone, and the engine's elementJob where there is one.

Text is for people; ``--log-format json`` writes one JSON object per line for a log
collector. The JSON formatter is a few lines over the standard library's Formatter, so it
is written here rather than adding a dependency for it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime

# Handler output (a child's stderr and its log frames) goes to this logger, so that `call`
# can show it while keeping the bridge's own lines quiet.
HANDLER_LOGGER = "flow_bridge.handler"


def _local_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


# Control characters other than newline and tab, as a handler may write them to stderr: on
# a terminal, ESC sequences would recolour or clear the screen and CR would overwrite the
# line with text that looks like another log line. Text shows them escaped (JSON always does).
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F] if chr(code) not in "\n\t"}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().translate(_CONTROLS)
        line = f"{_local_time(record)} {record.levelname:<7} {record.name}: {message}"
        job = getattr(record, "element_job", None)
        if job and job not in line:
            line += f" (elementJob {job})"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _local_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = getattr(record, "element_job", None)
        if job:
            entry["elementJob"] = job
        kind = getattr(record, "kind", None)
        if kind:
            entry["kind"] = str(kind)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text", *, handler_level: str | None = None,
                  handler_quiet: bool = False) -> None:
    """Log to stderr at `level`; `handler_level` sets the handler-output logger apart from it,
    and `handler_quiet` silences that logger whatever the level of a line (`call --quiet`)."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(stream)
    root.setLevel(getattr(logging, level))
    handler_output = logging.getLogger(HANDLER_LOGGER)
    handler_output.setLevel(getattr(logging, handler_level or level))
    handler_output.disabled = handler_quiet
    # grpc's Python layer warns about streams it aborts when our own server stops.
    logging.getLogger("grpc._cython.cygrpc").setLevel(logging.ERROR)
