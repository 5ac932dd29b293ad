"""Sans-IO codec for the stdio protocol: bytes in, events out, and back.

Theory of operation. A frame is a 4-byte big-endian length followed by that many
bytes holding exactly one msgpack map. `Codec.receive_data` appends input to a buffer
and cuts off every complete frame; `receive_data(b"")` declares end of input, which is
an error when it leaves half a frame behind. The declared length is checked against
`max_frame` before a single byte of the body is kept, so a peer cannot make us
allocate more than the limit by lying about a length. After an error the codec stays
broken: a byte stream that lost its framing cannot be trusted again.

Nothing here does I/O, so the same code runs in the bridge, in the Python adapter,
and in tests fed one byte at a time.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from ._errors import ErrorKind, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import ABSENT_IF_NONE, DEFAULT_MAX_FRAME, EVENT_TYPES, NIL_ALLOWED, OPTIONAL, Event

_HEADER = struct.Struct(">I")
_SNIPPET = 64


def _snippet(data: bytes | bytearray | memoryview) -> bytes:
    return bytes(data[:_SNIPPET])


def pack_frame(body: bytes) -> bytes:
    """Prefix an already-packed msgpack body with its length."""
    return _HEADER.pack(len(body)) + body


def message_to_map(event: Event) -> dict[str, Any]:
    """The event as the msgpack map it travels as, fields in canonical order."""
    out: dict[str, Any] = {"type": event.TYPE}
    absent_if_none = ABSENT_IF_NONE.get(event.TYPE, frozenset())
    for name in event.FIELDS:
        value = getattr(event, name)
        if value is None and name in absent_if_none:  # a log without a task id, say
            continue
        if name == "protocols":
            value = list(value)
        out[name] = value
    return out


# Per message type, worked out once: the fields a frame must carry, and those a nil may fill.
# map_to_message runs for every frame either side reads (two per task), so it only looks up.
_REQUIRED = {kind: tuple(f for f in cls.FIELDS if f not in OPTIONAL[kind]) for kind, cls in EVENT_TYPES.items()}
_NIL_ALLOWED = {kind: NIL_ALLOWED.get(kind, frozenset()) for kind in EVENT_TYPES}


def map_to_message(obj: object) -> Event:
    """Build and validate an event from a decoded msgpack value."""
    if not isinstance(obj, dict):
        raise RemoteProtocolError(
            f"a frame must hold a msgpack map, got {type(obj).__name__}", kind=ErrorKind.NOT_A_MAP
        )
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise RemoteProtocolError("the frame's map has no string 'type' field", kind=ErrorKind.MISSING_TYPE)
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {kind!r}", kind=ErrorKind.UNKNOWN_TYPE)
    missing = [name for name in _REQUIRED[kind] if name not in obj]
    if missing:
        raise RemoteProtocolError(
            f"{kind} message lacks required field(s) {', '.join(missing)}", kind=ErrorKind.BAD_FIELD
        )
    # Unknown keys are ignored, so that a later minor addition does not break old peers.
    kwargs = {name: obj[name] for name in cls.FIELDS if name in obj}
    if None in kwargs.values():
        # Events hold some absent fields as None; a nil on the wire must not pass for that.
        nil_allowed = _NIL_ALLOWED[kind]
        nil = [name for name, value in kwargs.items() if value is None and name not in nil_allowed]
        if nil:
            raise RemoteProtocolError(
                f"invalid {kind} message: {', '.join(nil)} must not be nil", kind=ErrorKind.BAD_FIELD
            )
    try:
        return cls(**kwargs)
    except (LocalProtocolError, TypeError) as exc:
        raise RemoteProtocolError(f"invalid {kind} message: {exc}", kind=ErrorKind.BAD_FIELD) from None


class Codec:
    """One direction-agnostic framing state machine (see the module docstring)."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._broken: ProtocolError | None = None
        self._ended = False
        # One Packer per codec: reusing its buffer is cheaper than msgpack.packb each time,
        # and a codec belongs to one connection, used from one thread.
        self._pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the peer; b"" means the peer closed its end."""
        if self._broken is not None:
            raise self._broken
        if self._ended:
            raise LocalProtocolError("receive_data called after end of input", kind=ErrorKind.UNEXPECTED)
        if not data:
            self._ended = True
            if self._buffer:
                self._fail(
                    RemoteProtocolError(
                        f"input ended inside a frame ({len(self._buffer)} bytes of it were read)",
                        kind=ErrorKind.TRUNCATED,
                        snippet=_snippet(self._buffer),
                    )
                )
            return []
        self._buffer += data
        events: list[Event] = []
        try:
            self._drain(events)
        except ProtocolError as exc:
            exc.events = events  # what came complete before the error is still delivered
            raise
        return events

    def _drain(self, events: list[Event]) -> None:
        buf = self._buffer
        start = 0
        end = len(buf)
        while end - start >= 4:
            (length,) = _HEADER.unpack_from(buf, start)
            if length > self.max_frame:
                self._fail(
                    RemoteProtocolError(
                        f"frame of {length} bytes exceeds the limit of {self.max_frame}",
                        kind=ErrorKind.FRAME_TOO_LARGE,
                        snippet=_snippet(memoryview(buf)[start:]),
                    )
                )
            if end - start - 4 < length:
                break
            body = memoryview(buf)[start + 4 : start + 4 + length]
            try:
                events.append(map_to_message(self._unpack(body)))
            except ProtocolError as exc:
                exc.snippet = _snippet(memoryview(buf)[start:])
                body.release()
                self._fail(exc)
            body.release()
            start += 4 + length
        if start:
            del buf[:start]

    @staticmethod
    def _unpack(body: memoryview) -> object:
        if not body:
            raise RemoteProtocolError("empty frame: a frame must hold one msgpack map", kind=ErrorKind.BAD_MSGPACK)
        try:
            # strict_map_key=False: non-string keys are a matter for the JSON rule,
            # which reports them by path instead of failing the whole frame.
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except msgpack.ExtraData:
            raise RemoteProtocolError(
                "frame holds bytes after its msgpack map", kind=ErrorKind.BAD_MSGPACK
            ) from None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:  # TypeError: an unhashable key
            raise RemoteProtocolError(f"frame is not valid msgpack: {exc}", kind=ErrorKind.BAD_MSGPACK) from None

    def _fail(self, exc: ProtocolError) -> None:
        self._broken = exc
        raise exc

    def send(self, event: Event) -> bytes:
        """Encode one event as a frame, refusing frames over the limit."""
        return self.send_map(message_to_map(event))

    def send_map(self, message: dict[str, Any]) -> bytes:
        """Encode a message map that the caller built in canonical order from trusted values.

        The bridge's per-task path uses this to skip building and validating an event
        whose fields come straight from typed protobuf messages.
        """
        body: bytes = self._pack(message)
        if len(body) > self.max_frame:
            raise LocalProtocolError(
                f"{message.get('type')} frame of {len(body)} bytes exceeds the limit of {self.max_frame}",
                kind=ErrorKind.FRAME_TOO_LARGE,
            )
        return _HEADER.pack(len(body)) + body

    @property
    def pending_bytes(self) -> int:
        """How many bytes of an incomplete frame are buffered."""
        return len(self._buffer)


__all__ = ["Codec", "map_to_message", "message_to_map", "pack_frame"]
