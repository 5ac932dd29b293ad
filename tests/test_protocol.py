"""The sans-IO codec against the shared vectors, fed whole, byte by byte, and with trailing bytes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import msgpack
import pytest

from conftest import from_json
from flow_bridge.protocol import (
    DEFAULT_MAX_FRAME,
    Codec,
    LocalProtocolError,
    NotJSONError,
    RemoteProtocolError,
    Task,
    map_to_message,
    message_to_map,
    to_json_bytes,
)

VECTORS = json.loads((pathlib.Path(__file__).parent.parent / "protocol" / "vectors.json").read_text("utf-8"))


def feed(codec: Codec, data: bytes, how: str) -> list[Any]:
    if how == "whole":
        return codec.receive_data(data)
    if how == "bytewise":
        events = []
        for i in range(len(data)):
            events += codec.receive_data(data[i : i + 1])
        return events
    raise AssertionError(how)


HOWS = ["whole", "bytewise", "trailing"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_decodes(vector: dict[str, Any], how: str) -> None:
    frame = bytes.fromhex(vector["hex"])
    codec = Codec()
    if how == "trailing":
        events = codec.receive_data(frame + frame[:3])
        assert codec.pending_bytes == 3  # the next frame's start is kept, not misread
    else:
        events = feed(codec, frame, how)
        assert codec.receive_data(b"") == []  # a clean end between frames
    assert len(events) == 1
    expected = from_json(vector["value"])
    assert events[0] == map_to_message(expected)
    decoded = message_to_map(events[0])
    for key, value in expected.items():
        if key in decoded:
            assert decoded[key] == value


@pytest.mark.parametrize("vector", [v for v in VECTORS["valid"] if v["canonical"]], ids=lambda v: v["name"])
def test_canonical_vector_reencodes_exactly(vector: dict[str, Any]) -> None:
    event = map_to_message(from_json(vector["value"]))
    assert Codec().send(event).hex() == vector["hex"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_rejected_with_its_kind(vector: dict[str, Any], how: str) -> None:
    data = bytes.fromhex(vector["hex"])
    codec = Codec(vector.get("max_frame", DEFAULT_MAX_FRAME))
    with pytest.raises(RemoteProtocolError) as info:
        if how == "trailing" and vector["error"] != "truncated":
            feed(codec, data + b"\x00\x00\x00\x01\x80", "whole")
        else:
            feed(codec, data, "bytewise" if how == "bytewise" else "whole")
        codec.receive_data(b"")
    assert info.value.kind == vector["error"]
    with pytest.raises(RemoteProtocolError):  # a broken stream stays broken
        codec.receive_data(b"\x00")


@pytest.mark.parametrize("vector", VECTORS["json"], ids=lambda v: v["name"])
def test_json_rule(vector: dict[str, Any]) -> None:
    value = msgpack.unpackb(bytes.fromhex(vector["msgpack_hex"]), raw=False, strict_map_key=False)
    if vector["error"]:
        with pytest.raises(NotJSONError) as info:
            to_json_bytes(value)
        assert info.value.path.startswith("$")
    else:
        assert to_json_bytes(value).decode("utf-8") == vector["json"]


def test_frame_length_is_checked_before_the_body_arrives() -> None:
    codec = Codec(max_frame=1024)
    with pytest.raises(RemoteProtocolError) as info:
        codec.receive_data(b"\x7f\xff\xff\xff")  # 2 GiB declared, no body: refused at once
    assert info.value.kind == "frame_too_large"


def test_sending_a_frame_over_the_limit_is_a_local_error() -> None:
    codec = Codec(max_frame=1024)
    with pytest.raises(LocalProtocolError) as info:
        codec.send(Task(id=1, config=b"x" * 2000))
    assert info.value.kind == "frame_too_large"


def test_events_validate_where_they_are_built() -> None:
    with pytest.raises(LocalProtocolError, match="id must be"):
        Task(id=-1, config=b"")


def test_the_codec_does_no_io() -> None:
    code = (
        "import sys; import flow_bridge.protocol; "
        "bad = [m for m in ('anyio', 'grpc', 'subprocess', 'asyncio') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_adapter_does_not_need_grpc() -> None:
    code = "import sys; import flow_bridge.adapter; print('grpc' in sys.modules, 'anyio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
