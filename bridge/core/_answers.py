"""What the engine asked and what it gets back, independent of gRPC and of pipes.

`Request` is one FlowRequest or DebugRequest. `Answer` is the four fields of a
FlowResponse or DebugResponse besides elementJob. `failure()` builds the answers the
bridge makes itself, with the error kind visible in info and detail (SPEC.md, section 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flow_bridge.protocol import NotJSONError, to_json_bytes

HANDLER, CRASH, TIMEOUT, PROTOCOL, UNAVAILABLE = "handler", "crash", "timeout", "protocol", "unavailable"
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
    kind: str = ""  # empty on success; one of the kinds above on failure


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
    head = f"flow-bridge: kind={kind}"
    return Answer(
        status=False,
        info=info if kind == HANDLER else f"[{kind}] {info}",
        detail=f"{head}\n{detail}" if detail else head,
        result=EMPTY,
        kind=kind,
    )


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
    value = answer.result if answer.status else b"null"
    answer.result = b'{"logs":' + entries + b',"value":' + value + b"}"
    return answer
