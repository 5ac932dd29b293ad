"""What fits in the engine's gRPC messages, and the one typed answer for what does not.

gRPC refuses a message over the receiver's limit by failing the whole stream, and with it
every task on that stream. So the bridge checks each answer on its final form, the
serialized FlowResponse or DebugResponse, before it is written, and each request as it
is read. An answer's size is not its frame's: `result` is JSON, in which bin grows by 4/3
as base64, a control character 6-fold as `\\u0001`, and a debug answer adds its logs,
which have no cap of their own. What does not fit is answered with a `too_large` error
for that task alone (SPEC.md section 6); the stream stays up.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flow_bridge.core import BAD_REQUEST, TOO_LARGE, Answer, LogRecord, Request, failure, for_debug
from flow_bridge.protocol import engine_pb2 as pb

# An answer may carry a result as large as a frame, and its JSON is somewhat larger than
# the msgpack it came from; this much room on top of max_frame is what the bridge sends
# and what the stand-in engine receives.
MESSAGE_SLACK = 1024 * 1024

# gRPC's receive limit on the engine's streams: none. A request over what the bridge takes
# is still received in full, because gRPC would otherwise fail the stream and every task
# on it; the bridge drops its config at once and answers it as too large (request_limit).
RECEIVE_LIMIT = -1

# A debug answer too large to send keeps the first log records up to this many bytes of
# JSON, so that whoever debugs still sees how the run began.
DEBUG_LOGS_KEPT = 64 * 1024
# How much of the handler's own info a too_large answer quotes in its detail.
QUOTED_INFO = 1024
# An engine that fails a stream for a message over its own receive limit (smaller than
# ours) says so in the status details, in grpc-go's words or grpc-java's; the limit is
# learned from them. Below this the learned limit is not believed: no real engine is so
# strict, and a misread detail must not turn every answer into an error.
_ENGINE_LIMIT = re.compile(r"larger than max \((\d+) vs\. (\d+)\)|exceeds maximum size:? (\d+)")
LEAST_ENGINE_LIMIT = 64 * 1024


def answer_limit(max_frame: int) -> int:
    """The largest serialized FlowResponse or DebugResponse the bridge writes."""
    return max_frame + MESSAGE_SLACK


def request_limit(max_frame: int) -> int:
    """The largest serialized FlowRequest or DebugRequest the bridge takes.

    A task frame carries every field of a FlowRequest plus msgpack field names, which cost
    more than protobuf's tags; so a request over max_frame makes a frame over max_frame,
    which no child may be sent. This limit refuses nothing a child could have taken.
    """
    return max_frame


@dataclass(frozen=True, slots=True)
class Unfit:
    """A request that was not read as a message: over request_limit, or not valid protobuf.

    `element_job` is the id when it could be read from the bytes, else None.
    """

    size: int
    element_job: str | None
    too_large: bool  # else: not a valid message


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def read_element_job(data: bytes) -> str | None:
    """elementJob (field 5 of both request messages) from raw protobuf, without parsing the rest.

    The config, however large, is skipped by its length, so this costs nothing on a 1 GB
    message; None when the bytes are not well-formed enough to tell.
    """
    view = memoryview(data)
    pos, end = 0, len(view)
    found: str | None = None
    try:
        while pos < end:
            key, pos = _varint(view, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(view, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(view, pos)
                if pos + length > end:
                    return None
                if field == 5:
                    found = bytes(view[pos:pos + length]).decode("utf-8")  # the last one wins, as in protobuf
                pos += length
            else:
                return None
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return found if pos == end else None


def request_reader(message_class: Any, limit: int) -> Any:
    """A gRPC deserializer that never raises: a message, or an Unfit for what it cannot take.

    (gRPC logs and swallows a deserializer's exception and hands back None instead.)
    """

    def read(data: bytes) -> Any:
        if len(data) > limit:
            return Unfit(len(data), read_element_job(data), too_large=True)
        try:
            return message_class.FromString(data)
        except Exception:  # protobuf's DecodeError, or anything else a broken message causes
            return Unfit(len(data), read_element_job(data), too_large=False)

    return read


def request_too_large(request: Request, size: int, limit: int) -> Answer:
    """The answer to a request the bridge did not pass on: its config is over the limit."""
    what = "DebugRequest" if request.debug else "FlowRequest"
    answer = failure(
        TOO_LARGE,
        f"request too large: the engine's {what} was {size} bytes, the limit is {limit} (plugin.max-frame); "
        "it was not passed to the handler",
        "A request must fit in one frame to the handler. Send a smaller config, or raise "
        "plugin.max-frame (--max-frame) on the bridge if the handler can take it.",
    )
    return for_debug(answer, []) if request.debug else answer


def request_unreadable(request: Request, size: int) -> Answer:
    """The answer to a request whose elementJob could be read, but not the rest of it."""
    what = "DebugRequest" if request.debug else "FlowRequest"
    answer = failure(
        BAD_REQUEST,
        f"the engine's {what} ({size} bytes) is not a valid protobuf message; it was not passed to the handler",
        "The bridge read its elementJob only. Please report it with the engine's version.",
    )
    return for_debug(answer, []) if request.debug else answer


def response_bytes(request: Request, answer: Answer) -> bytes:
    """The answer in its final gRPC form: the serialized FlowResponse or DebugResponse."""
    cls = pb.DebugResponse if request.debug else pb.FlowResponse
    message = cls(
        elementJob=request.element_job,
        status=answer.status,
        info=answer.info,
        detail=answer.detail,
        result=answer.result,
    )
    data: bytes = message.SerializeToString()
    return data


def answer_too_large(request: Request, answer: Answer, size: int, limit: int) -> Answer:
    """What the engine gets instead of an answer over the limit: a too_large error.

    A debug answer keeps its first log records, and a note of how many were cut. Parsing
    a large debug result takes a while: callers run this off the event loop.
    """
    what = "DebugResponse" if request.debug else "FlowResponse"
    own = "a success" if answer.status else "a failure: " + answer.info[:QUOTED_INFO]
    replacement = failure(
        TOO_LARGE,
        f"answer too large for the engine: {size} bytes as a {what}, the limit is {limit}; return less data",
        f"The handler's answer was {own}.\n"
        "The engine takes the result as JSON: bytes grow by 4/3 as base64, control characters "
        "6-fold as \\u0001 escapes, and a debug answer carries every log record of the request. "
        "The limit is plugin.max-frame plus 1 MiB, or the engine's own when it refused a smaller answer.",
    )
    if not request.debug:
        return replacement
    return for_debug(replacement, _first_logs(answer.result, size, limit))


def _first_logs(result: bytes, size: int, limit: int) -> list[LogRecord]:
    try:
        entries = json.loads(result)["logs"]
    except (ValueError, KeyError, TypeError):
        entries = []
    kept: list[LogRecord] = []
    budget = DEBUG_LOGS_KEPT
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        record = LogRecord(str(entry.get("level", "info")), str(entry.get("msg", "")), str(entry.get("time", "")))
        budget -= len(record.msg.encode("utf-8")) + len(record.time) + 40
        if budget < 0:
            break
        kept.append(record)
    cut = len(entries) - len(kept) if isinstance(entries, list) else 0
    kept.append(LogRecord(
        "error",
        f"flow-bridge: {cut} more log records cut; the answer was {size} bytes, the limit is {limit}",
    ))
    return kept


def engine_limit(details: str, largest_written: int) -> int | None:
    """The engine's own receive limit, from a RESOURCE_EXHAUSTED it failed a stream with.

    From its words when they name it; else one byte less than the largest answer just
    written, which is the one it must have refused. None: not believable.
    """
    match = _ENGINE_LIMIT.search(details)
    if match:
        limit = int(match.group(2) or match.group(3))
    elif largest_written:
        limit = largest_written - 1
    else:
        return None
    return limit if limit >= LEAST_ENGINE_LIMIT else None


def refit(data: bytes, debug: bool, limit: int) -> bytes:
    """A serialized answer over `limit`, replaced by its too_large answer (also serialized)."""
    cls = pb.DebugResponse if debug else pb.FlowResponse
    message = cls.FromString(data)
    request = Request(debug=debug, element_job=message.elementJob)
    answer = Answer(status=message.status, info=message.info, detail=message.detail, result=message.result)
    return response_bytes(request, answer_too_large(request, answer, len(data), limit))
