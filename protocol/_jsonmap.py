"""The rule that turns a result's msgpack value into the engine's JSON bytes.

SPEC.md, "msgpack to JSON", is the normative text; in short: bin becomes a base64
string, integer keys become their decimal text, and everything that JSON cannot say
without losing something (ext values, NaN and infinities, other key types, two keys
that collide once converted, nesting deeper than MAX_DEPTH) is refused with a
`NotJSONError` that names the path of the offending value.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from msgpack import ExtType

# Deep enough for any real document, shallow enough that converting cannot exhaust
# the interpreter's stack (msgpack itself allows far more).
MAX_DEPTH = 100

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class NotJSONError(ValueError):
    """A value has no lossless JSON form; `path` says where it is ($.a[0].b)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{reason} at {path}")
        self.path = path
        self.reason = reason


def _convert(value: Any, path: str, depth: int) -> Any:
    if isinstance(value, str) or value is None or isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSONError(path, f"{value} has no JSON form; send a finite number, or a string")
        return value
    if depth >= MAX_DEPTH:
        raise NotJSONError(path, f"value is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                name = key
            elif isinstance(key, int) and not isinstance(key, bool):
                name = str(key)
            else:
                raise NotJSONError(
                    path, f"map key {key!r} of type {type(key).__name__} has no JSON form; use string keys"
                )
            if name in out:
                raise NotJSONError(path, f"map keys collide once converted to text: {name!r}")
            out[name] = _convert(item, f"{path}.{name}", depth + 1)
        return out
    if isinstance(value, (list, tuple)) and not isinstance(value, ExtType):
        return [_convert(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise NotJSONError(
        path, f"{type(value).__name__} value has no JSON form (msgpack ext types are not mapped)"
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; send null, a number or a string")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is beyond a double and has no JSON form; send it as a string")
    return value


def parse_json(text: str | bytes) -> Any:
    """JSON as the engine means it, or ValueError saying why not (json.JSONDecodeError for bad syntax).

    Python's json also takes NaN and Infinity, and reads 1e400 as inf; none of them can
    be sent on as JSON, so each is refused here. Nesting deeper than the parser can go is
    a ValueError too, rather than the RecursionError json raises."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested deeper than the JSON parser can go") from None


def dump_json(value: Any) -> bytes:
    """A parsed JSON value as UTF-8 JSON text; a lone surrogate ("\\ud800" is valid JSON, and has
    no UTF-8 form) keeps the escaped form it came in, and so does the rest of that text."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, allow_nan=False).encode("ascii")


_PLAIN = (str, int, bool, type(None))


def _is_plain(value: Any, depth: int) -> bool:
    """True when json would encode `value` exactly as the rule says, with nothing to convert.

    Most results are small maps of strings and numbers; checking them is much cheaper
    than rebuilding them, and only values that fail the check take the converting path.
    """
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth >= MAX_DEPTH:
        return False
    if kind is dict:
        return all(type(k) is str for k in value) and all(_is_plain(v, depth + 1) for v in value.values())
    if kind is list:
        return all(_is_plain(v, depth + 1) for v in value)
    return False


def to_json_bytes(value: Any) -> bytes:
    """Encode a decoded msgpack value as compact UTF-8 JSON, or raise NotJSONError."""
    if not _is_plain(value, 0):
        value = _convert(value, "$", 0)
    return _encoder.encode(value).encode("utf-8")


__all__ = ["MAX_DEPTH", "NotJSONError", "to_json_bytes"]
