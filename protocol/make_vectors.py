"""Write protocol/vectors.json, the shared test vectors of the stdio protocol.

    python protocol/make_vectors.py

Every adapter's tests load vectors.json; this script is only how it is made (and
tests/test_schema.py fails when the file differs from what it writes). In the JSON, a
msgpack bin value is written as {"$bin": "<hex>"} since JSON has no bytes.
"""

from __future__ import annotations

import json
import pathlib
import struct
from typing import Any

import msgpack

here = pathlib.Path(__file__).resolve().parent


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


# (name, direction, value, canonical). Canonical vectors list every field in the
# order SPEC.md gives, so an encoder that follows the SPEC reproduces the bytes.
# Maps inside data have their keys sorted, so that a test may load the value with a JSON
# parser that sorts keys (serde_json does) and still reproduce the bytes.
VALID: list[tuple[str, str, dict[str, Any], bool]] = [
    ("hello", "to_child", {"type": "hello", "protocols": [1], "plugin": "echo", "plugin_type": "service",
                           "max_frame": 16777216, "bridge": "flow-bridge 0.1.0"}, True),
    ("hello-minimal", "to_child", {"type": "hello", "protocols": [1], "plugin": "echo"}, False),
    ("hello-future-versions", "to_child", {"type": "hello", "protocols": [1, 2, 3], "plugin": "p",
                                           "plugin_type": "user", "max_frame": 1024, "bridge": ""}, True),
    ("ready", "to_bridge", {"type": "ready", "protocol": 1, "concurrency": 64, "debug": True,
                            "name": "echo", "version": "1.0.0"}, True),
    ("ready-minimal", "to_bridge", {"type": "ready", "protocol": 1}, False),
    ("ready-plugin-type", "to_bridge", {"type": "ready", "protocol": 1, "concurrency": 1, "debug": False,
                                        "name": "scaler", "version": "", "plugin_type": "user"}, True),
    ("task", "to_child", {"type": "task", "id": 1, "config": b'{"i":1,"payload":"ab"}',
                          "project_id": "p1", "flow_id": "f1", "job": "j1", "element_id": "e1",
                          "element_job": "ej1", "timeout_ms": 600000}, True),
    ("task-unicode", "to_child", {"type": "task", "id": 7, "config": '{"payload":"温度传感器"}'.encode(),
                                  "project_id": "项目", "flow_id": "", "job": "", "element_id": "",
                                  "element_job": "元素-1", "timeout_ms": 0}, True),
    ("task-binary-config", "to_child", {"type": "task", "id": 2, "config": bytes([0, 255, 254, 10, 13]),
                                        "project_id": "", "flow_id": "", "job": "", "element_id": "",
                                        "element_job": "x", "timeout_ms": 1000}, True),
    ("task-max-id", "to_child", {"type": "task", "id": 2**53 - 1, "config": b"{}",
                                 "project_id": "", "flow_id": "", "job": "", "element_id": "",
                                 "element_job": "", "timeout_ms": 0}, True),
    ("task-minimal", "to_child", {"type": "task", "id": 0, "config": b""}, False),
    ("task-unknown-key-ignored", "to_child", {"type": "task", "id": 3, "config": b"{}", "future": 1}, False),
    ("debug", "to_child", {"type": "debug", "id": 9, "config": b"{}", "project_id": "p", "flow_id": "f",
                           "element_id": "e", "element_job": "ej", "timeout_ms": 5000}, True),
    ("result", "to_bridge", {"type": "result", "id": 1, "data": {"i": 1, "n": 2}, "message": "ok",
                             "detail": ""}, True),
    ("result-nested", "to_bridge", {"type": "result", "id": 4, "data": {"a": [1, -2, 3.5, None, True],
                                    "b": {"c": "中文"}, "raw": b"\x00\x01"}, "message": "", "detail": ""}, True),
    ("result-minimal", "to_bridge", {"type": "result", "id": 5}, False),
    # Result data may be any msgpack value; nil is JSON null, which is not the same as absent ({}).
    ("result-data-array", "to_bridge", {"type": "result", "id": 6, "data": [1, "a", None, {"b": False}],
                                        "message": "", "detail": ""}, True),
    ("result-data-str", "to_bridge", {"type": "result", "id": 7, "data": "温度 ok", "message": "",
                                      "detail": ""}, True),
    ("result-data-int", "to_bridge", {"type": "result", "id": 8, "data": -42, "message": "", "detail": ""}, True),
    ("result-data-float", "to_bridge", {"type": "result", "id": 9, "data": 2.5, "message": "", "detail": ""}, True),
    ("result-data-bool", "to_bridge", {"type": "result", "id": 10, "data": True, "message": "", "detail": ""}, True),
    ("result-data-nil", "to_bridge", {"type": "result", "id": 11, "data": None, "message": "", "detail": ""}, True),
    ("result-data-bin", "to_bridge", {"type": "result", "id": 12, "data": b"\x00\xff", "message": "",
                                      "detail": ""}, True),
    ("error", "to_bridge", {"type": "error", "id": 1, "message": "bad input", "detail": "line 3"}, True),
    ("error-minimal", "to_bridge", {"type": "error", "id": 1, "message": "boom"}, False),
    ("error-with-data", "to_bridge", {"type": "error", "id": 2, "message": "out of range", "detail": "",
                                      "data": {"limit": [0, 100], "reading": 120}}, True),
    ("error-with-data-str", "to_bridge", {"type": "error", "id": 3, "message": "x", "detail": "",
                                          "data": "partial"}, True),
    # nil error data means the same as none: encoders leave it out, so not canonical.
    ("error-data-nil", "to_bridge", {"type": "error", "id": 4, "message": "x", "data": None}, False),
    ("log", "to_bridge", {"type": "log", "level": "info", "msg": "step 1", "id": 3,
                          "time": "2026-01-02T03:04:05.678Z"}, True),
    ("log-no-task", "to_bridge", {"type": "log", "level": "warning", "msg": "低电量", "time": ""}, True),
    ("cancel", "to_child", {"type": "cancel", "id": 3, "reason": "timeout"}, True),
    ("state", "to_child", {"type": "state", "connected": False}, True),
    ("stop", "to_child", {"type": "stop"}, True),
]


def header(n: int) -> bytes:
    return struct.pack(">I", n)


# (name, raw bytes, expected error kind, max_frame or None). The input ends after
# the bytes (end of input is part of every invalid vector).
INVALID: list[tuple[str, bytes, str, int | None]] = [
    ("too-large", header(1025) + b"\x80" * 8, "frame_too_large", 1024),
    ("text-on-stdout", b"hello world\n", "frame_too_large", None),
    ("truncated-body", header(10) + b"\x81\xa4ty", "truncated", None),
    ("truncated-header", b"\x00\x00", "truncated", None),
    ("empty-frame", header(0), "bad_msgpack", None),
    ("not-msgpack", frame(b"\xc1"), "bad_msgpack", None),
    ("trailing-bytes-in-frame", frame(pack({"type": "stop"}) + b"\x00"), "bad_msgpack", None),
    ("invalid-utf8-string", frame(b"\x81\xa4type\xa2\xff\xfe"), "bad_msgpack", None),
    ("array-not-map", frame(pack(["task", 1])), "not_a_map", None),
    ("no-type", frame(pack({"id": 1})), "missing_type", None),
    ("type-not-string", frame(pack({"type": 1})), "missing_type", None),
    ("unknown-type", frame(pack({"type": "bogus"})), "unknown_type", None),
    ("task-without-id", frame(pack({"type": "task", "config": b""})), "bad_field", None),
    ("task-negative-id", frame(pack({"type": "task", "id": -1, "config": b""})), "bad_field", None),
    ("task-string-id", frame(pack({"type": "task", "id": "1", "config": b""})), "bad_field", None),
    ("task-config-not-bin", frame(pack({"type": "task", "id": 1, "config": "{}"})), "bad_field", None),
    ("ready-zero-concurrency", frame(pack({"type": "ready", "protocol": 1, "concurrency": 0})), "bad_field", None),
    ("log-bad-level", frame(pack({"type": "log", "level": "trace", "msg": "x"})), "bad_field", None),
    ("ready-plugin-type-unknown", frame(pack({"type": "ready", "protocol": 1, "plugin_type": "daemon"})),
     "bad_field", None),
    ("ready-plugin-type-nil", frame(pack({"type": "ready", "protocol": 1, "plugin_type": None})), "bad_field", None),
    ("ready-plugin-type-not-str", frame(pack({"type": "ready", "protocol": 1, "plugin_type": 1})), "bad_field",
     None),
    ("error-without-message", frame(pack({"type": "error", "id": 1})), "bad_field", None),
]

def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# The result data rule: msgpack value -> JSON text, or the error "not_json".
JSON_RULE: list[tuple[str, Any, str | None]] = [
    ("object", {"i": 1, "s": "中文", "f": 1.5, "n": None, "b": False, "a": [1, 2]},
     '{"i":1,"s":"中文","f":1.5,"n":null,"b":false,"a":[1,2]}'),
    ("bin-is-base64", {"raw": b"\x00\xff"}, '{"raw":"AP8="}'),
    ("int-key-is-text", {1: "a", -2: "b"}, '{"1":"a","-2":"b"}'),
    ("big-int", {"n": 2**64 - 1}, '{"n":18446744073709551615}'),
    ("empty", {}, "{}"),
    # Result data need not be a map: the same rule applies to any value at the top.
    ("top-array", [1, "a", None, {"b": b"\x01"}], '[1,"a",null,{"b":"AQ=="}]'),
    ("top-string", "温度", '"温度"'),
    ("top-int", -42, "-42"),
    ("top-float", 2.5, "2.5"),
    ("top-bool", True, "true"),
    ("top-null", None, "null"),
    ("top-bin", b"\x00\xff", '"AP8="'),
    ("top-nan", float("nan"), None),
    ("top-ext", msgpack.ExtType(1, b"x"), None),
    ("nan", {"x": float("nan")}, None),
    ("infinity", {"x": float("inf")}, None),
    ("ext", {"x": msgpack.ExtType(5, b"ab")}, None),
    ("bool-key", {True: 1}, None),
    ("colliding-keys", {1: "a", "1": "b"}, None),
    ("too-deep", {"x": _nested(101)}, None),
]


# --- sequences: the state table and the ids in flight (SPEC.md section 2) -------------
# Each step is (sender, message, expected): None when the receiver gets the message as an
# event of its type and the sender may send it, or the error kind both sides give: the
# sender refuses to send it (a local error), the receiver rejects it (a remote error). An
# error ends its sequence.
B, C = "bridge", "child"
OK = None
HELLO: dict[str, Any] = {"type": "hello", "protocols": [1], "plugin": "echo"}
READY: dict[str, Any] = {"type": "ready", "protocol": 1}
STOP: dict[str, Any] = {"type": "stop"}
Step = tuple[str, dict[str, Any], str | None]


def task(i: int) -> dict[str, Any]:
    return {"type": "task", "id": i, "config": b"{}"}


def debug(i: int) -> dict[str, Any]:
    return {"type": "debug", "id": i, "config": b"{}"}


def result(i: int) -> dict[str, Any]:
    return {"type": "result", "id": i}


def error(i: int, message: str = "failed") -> dict[str, Any]:
    return {"type": "error", "id": i, "message": message}


def log(i: int | None = None) -> dict[str, Any]:
    return {"type": "log", "level": "info", "msg": "step", **({"id": i} if i is not None else {})}


def cancel(i: int) -> dict[str, Any]:
    return {"type": "cancel", "id": i}


def state(connected: bool) -> dict[str, Any]:
    return {"type": "state", "connected": connected}


HANDSHAKE: list[Step] = [(B, HELLO, OK), (C, READY, OK)]

# (name, what it shows, steps)
SEQUENCES: list[tuple[str, str, list[Step]]] = [
    ("handshake", "hello, then ready", HANDSHAKE),
    ("task-answered", "a task, logs tied to it and to none, its result",
     [*HANDSHAKE, (B, task(1), OK), (C, log(1), OK), (C, log(), OK), (C, result(1), OK)]),
    ("answers-in-any-order", "answers need not follow the order of the requests",
     [*HANDSHAKE, (B, task(1), OK), (B, debug(2), OK), (B, task(3), OK), (C, error(2), OK), (C, result(3), OK),
      (C, result(1), OK)]),
    ("cancel-then-answer", "a cancelled request is still answered, once",
     [*HANDSHAKE, (B, task(1), OK), (B, cancel(1), OK), (C, error(1, "cancelled"), OK)]),
    ("cancel-crosses-the-answer", "a cancel for an id answered already crossed the answer: no error",
     [*HANDSHAKE, (B, task(1), OK), (C, result(1), OK), (B, cancel(1), OK)]),
    ("cancel-unknown-id", "a cancel for an id never sent: no error, the child ignores it",
     [*HANDSHAKE, (B, cancel(99), OK), (B, task(1), OK), (C, result(1), OK)]),
    ("log-after-answer", "a log naming an id no longer in flight: no error, logged without a request",
     [*HANDSHAKE, (B, task(1), OK), (C, result(1), OK), (C, log(1), OK)]),
    ("id-reused-after-answer", "an id is unique among the requests in flight only",
     [*HANDSHAKE, (B, task(1), OK), (C, result(1), OK), (B, task(1), OK), (C, error(1), OK)]),
    ("state-changes", "the engine link goes down and up",
     [*HANDSHAKE, (B, state(False), OK), (B, state(True), OK)]),
    ("stop-then-remaining-answers", "after stop, the child answers what is in flight and may log",
     [*HANDSHAKE, (B, task(1), OK), (B, debug(2), OK), (B, STOP, OK), (C, log(1), OK), (C, result(1), OK),
      (C, error(2), OK)]),
    ("stop-with-nothing-in-flight", "stop at once after the handshake", [*HANDSHAKE, (B, STOP, OK)]),
    # Before the handshake.
    ("task-before-hello", "the bridge's first frame must be hello", [(B, task(1), "unexpected")]),
    ("stop-before-hello", "the bridge's first frame must be hello", [(B, STOP, "unexpected")]),
    ("ready-before-hello", "the child writes nothing before it has read hello", [(C, READY, "unexpected")]),
    ("log-before-hello", "the child writes nothing before it has read hello", [(C, log(), "unexpected")]),
    ("task-before-ready", "the bridge sends nothing between hello and ready",
     [(B, HELLO, OK), (B, task(1), "unexpected")]),
    ("stop-before-ready", "the bridge sends nothing between hello and ready",
     [(B, HELLO, OK), (B, STOP, "unexpected")]),
    ("second-hello-before-ready", "hello is sent once", [(B, HELLO, OK), (B, HELLO, "unexpected")]),
    ("result-before-ready", "the child's first frame must be ready",
     [(B, HELLO, OK), (C, result(1), "unexpected")]),
    ("log-before-ready", "the child's first frame must be ready", [(B, HELLO, OK), (C, log(), "unexpected")]),
    ("ready-version-not-offered", "ready must name a version that hello offered",
     [(B, HELLO, OK), (C, {"type": "ready", "protocol": 2}, "bad_field")]),
    # After the handshake.
    ("second-hello", "hello is sent once", [*HANDSHAKE, (B, HELLO, "unexpected")]),
    ("second-ready", "ready is sent once", [*HANDSHAKE, (C, READY, "unexpected")]),
    ("result-to-child", "a result comes from the child only",
     [*HANDSHAKE, (B, task(1), OK), (B, result(1), "unexpected")]),
    ("error-to-child", "an error comes from the child only", [*HANDSHAKE, (B, error(1), "unexpected")]),
    ("log-to-child", "a log comes from the child only", [*HANDSHAKE, (B, log(), "unexpected")]),
    ("ready-to-child", "ready comes from the child only", [*HANDSHAKE, (B, READY, "unexpected")]),
    ("task-to-bridge", "a task comes from the bridge only", [*HANDSHAKE, (C, task(1), "unexpected")]),
    ("cancel-to-bridge", "a cancel comes from the bridge only",
     [*HANDSHAKE, (B, task(1), OK), (C, cancel(1), "unexpected")]),
    ("hello-to-bridge", "hello comes from the bridge only", [*HANDSHAKE, (C, HELLO, "unexpected")]),
    ("stop-to-bridge", "stop comes from the bridge only", [*HANDSHAKE, (C, STOP, "unexpected")]),
    # Ids.
    ("unknown-id", "an answer for an id that was never sent",
     [*HANDSHAKE, (B, task(1), OK), (C, result(2), "unknown_id")]),
    ("answer-without-requests", "an answer when nothing is in flight", [*HANDSHAKE, (C, error(7), "unknown_id")]),
    ("answered-twice", "a second result for one request",
     [*HANDSHAKE, (B, task(1), OK), (C, result(1), OK), (C, result(1), "unknown_id")]),
    ("answered-twice-result-then-error", "a result and then an error for one request",
     [*HANDSHAKE, (B, task(1), OK), (C, result(1), OK), (C, error(1), "unknown_id")]),
    ("answered-twice-after-cancel", "a cancel that crossed the answer must not bring a second one",
     [*HANDSHAKE, (B, task(1), OK), (C, result(1), OK), (B, cancel(1), OK), (C, error(1, "cancelled"), "unknown_id")]),
    ("duplicate-id", "a task whose id is in flight", [*HANDSHAKE, (B, task(1), OK), (B, task(1), "duplicate_id")]),
    ("duplicate-id-debug", "a debug request whose id a task has in flight",
     [*HANDSHAKE, (B, task(1), OK), (B, debug(1), "duplicate_id")]),
    # After stop.
    ("task-after-stop", "the bridge sends nothing after stop", [*HANDSHAKE, (B, STOP, OK), (B, task(1), "unexpected")]),
    ("cancel-after-stop", "the bridge sends nothing after stop, not even a cancel",
     [*HANDSHAKE, (B, task(1), OK), (B, STOP, OK), (B, cancel(1), "unexpected")]),
    ("state-after-stop", "the bridge sends nothing after stop",
     [*HANDSHAKE, (B, STOP, OK), (B, state(True), "unexpected")]),
    ("stop-twice", "stop is sent once", [*HANDSHAKE, (B, STOP, OK), (B, STOP, "unexpected")]),
    ("unknown-id-after-stop", "after stop, only the requests in flight are answered",
     [*HANDSHAKE, (B, task(1), OK), (B, STOP, OK), (C, result(2), "unknown_id")]),
]


def sequence(name: str, about: str, steps: list[Step]) -> dict[str, Any]:
    assert all(expected is None for _, _, expected in steps[:-1]), f"{name}: an error must end its sequence"
    return {
        "name": name,
        "about": about,
        "steps": [
            {"from": sender, "hex": frame(pack(value)).hex(), "value": to_json(value),
             **({"error": expected} if expected else {"event": value["type"]})}
            for sender, value, expected in steps
        ],
    }


def render() -> str:
    """The text of vectors.json."""

    out = {
        "about": "Shared vectors of the flow-bridge stdio protocol v1. Generated by "
        "protocol/make_vectors.py; edit that script, not this file. See SPEC.md, 'Test vectors'.",
        "default_max_frame": 16 * 1024 * 1024,
        "valid": [
            {"name": n, "direction": d, "hex": frame(pack(v)).hex(), "value": to_json(v), "canonical": c}
            for n, d, v, c in VALID
        ],
        "invalid": [
            {"name": n, "hex": raw.hex(), "error": err, **({"max_frame": mf} if mf else {})}
            for n, raw, err, mf in INVALID
        ],
        "json": [
            {"name": n, "msgpack_hex": pack(v).hex(), "json": j, "error": None if j is not None else "not_json"}
            for n, v, j in JSON_RULE
        ],
        "sequences": [sequence(n, a, s) for n, a, s in SEQUENCES],
    }
    return json.dumps(out, ensure_ascii=False, indent=1) + "\n"


def main() -> None:
    (here / "vectors.json").write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
