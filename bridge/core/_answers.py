"""What the engine asked and what it gets back, independent of gRPC and of pipes.

`Request` is one FlowRequest or DebugRequest. `Answer` is the four fields of a
FlowResponse or DebugResponse besides elementJob. `failure()` builds the answers the
bridge makes itself, with the error kind visible in info and detail (SPEC.md, section 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from flow_bridge.protocol import NotJSONError, to_json_bytes


class ErrorKind(StrEnum):
    """Why a request failed, as the engine sees it in info and detail (SPEC.md section 4)."""

    HANDLER = "handler"  # the handler said no: a business error, its message unchanged
    CRASH = "crash"  # the handler process died with the request in flight
    TIMEOUT = "timeout"  # no answer within the task timeout (and the cancel grace)
    PROTOCOL = "protocol"  # the handler broke the stdio protocol, or its answer has no JSON form
    UNAVAILABLE = "unavailable"  # no handler could take the request (starting, crash loop, stopping)
    TOO_LARGE = "too_large"  # the request or the answer does not fit a gRPC message or a frame
    BAD_REQUEST = "bad_request"  # the engine's request cannot be handed to the handler as it is


HANDLER, CRASH, TIMEOUT, PROTOCOL, UNAVAILABLE = (
    ErrorKind.HANDLER, ErrorKind.CRASH, ErrorKind.TIMEOUT, ErrorKind.PROTOCOL, ErrorKind.UNAVAILABLE,
)
TOO_LARGE, BAD_REQUEST = ErrorKind.TOO_LARGE, ErrorKind.BAD_REQUEST
EMPTY = b"{}"


@dataclass(slots=True)
class Request:
    debug: bool
    element_job: str
    config: bytes = b""
    project_id: str = ""
    flow_id: str = ""
    job: str = ""
    element_id: str = ""


@dataclass(slots=True)
class Answer:
    status: bool
    info: str = ""
    detail: str = ""
    result: bytes = EMPTY
    kind: str = ""  # empty on success; an ErrorKind on failure
    # A failed debug request's value, as JSON (the handler's error.data); None: no value.
    value: bytes | None = None


@dataclass(slots=True)
class Failure:
    """A bridge-made failure before it is shaped into an Answer."""

    kind: str
    info: str
    detail: str = ""


@dataclass(slots=True)
class LogRecord:
    level: str
    msg: str
    time: str = field(default_factory=lambda: now_rfc3339())


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure(kind: str, info: str, detail: str = "") -> Answer:
    """An engine-facing failure; every one the bridge sends is built here."""
    kind = ErrorKind(kind)
    head = f"flow-bridge: kind={kind}"
    return Answer(
        status=False,
        info=info if kind == HANDLER else f"[{kind}] {info}",
        detail=f"{head}\n{detail}" if detail else head,
        result=EMPTY,
        kind=kind,
    )


def internal_error(exc: Exception) -> Answer:
    """The answer for a request that a bug of ours failed: it costs that request only."""
    return failure(UNAVAILABLE, f"internal error in flow-bridge: {exc!r}", "Please report it with the bridge's log.")


_NO_VALUE = object()


def handler_error(message: str, detail: str = "", data: Any = _NO_VALUE) -> Answer:
    """The handler's own error; `data`, when given, is kept as a failed debug request's value."""
    answer = failure(HANDLER, message, detail)
    if data is not _NO_VALUE:
        try:
            answer.value = to_json_bytes(data)
        except NotJSONError:
            answer.value = None  # a value with no JSON form is dropped; the failure itself stands
    return answer


def from_failure(f: Failure) -> Answer:
    return failure(f.kind, f.info, f.detail)


def success(data: Any, message: str = "", detail: str = "") -> Answer:
    try:
        body = to_json_bytes(data)
    except NotJSONError as exc:
        return failure(
            PROTOCOL,
            f"the handler's result has no JSON form: {exc}",
            "SPEC.md section 5 lists what maps to JSON; convert the value in the handler.",
        )
    return Answer(status=True, info=message, detail=detail, result=body)


def for_debug(answer: Answer, logs: list[LogRecord]) -> Answer:
    """Wrap an answer's result as a debug result: {"logs": [...], "value": ...}."""
    entries = json.dumps(
        [{"level": r.level, "time": r.time, "msg": r.msg} for r in logs], ensure_ascii=False
    ).encode("utf-8")
    if answer.status:
        value = answer.result
    else:
        value = answer.value if answer.value is not None else b"null"
    answer.result = b'{"logs":' + entries + b',"value":' + value + b"}"
    return answer
