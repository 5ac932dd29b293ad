"""The sans-IO Connection in memory: a bridge and a child connection wired to each other.

The shared sequence vectors are replayed on both sides at once: for every step the
sender's connection must agree to send it (or refuse it with the step's error kind) and
the receiver's must produce the event (or reject the frame with that kind).
"""

from __future__ import annotations

import ast
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
    Cancel,
    Connection,
    ConnectionState,
    Error,
    ErrorKind,
    Event,
    Hello,
    LocalProtocolError,
    Log,
    Ready,
    RemoteProtocolError,
    Result,
    Role,
    Stop,
    Task,
    map_to_message,
)
from flow_bridge.protocol._connection import RECENT_ANSWERS

ROOT = pathlib.Path(__file__).parent.parent
VECTORS = json.loads((ROOT / "protocol" / "vectors.json").read_text("utf-8"))


class Pair:
    """A bridge and a child connection, each frame written by one fed to the other (cf. h11's helpers)."""

    def __init__(self) -> None:
        self.bridge = Connection(Role.BRIDGE)
        self.child = Connection(Role.CHILD)

    def side(self, role: str) -> tuple[Connection, Connection]:
        """(sender, receiver) for a frame from `role`."""
        return (self.bridge, self.child) if role == "bridge" else (self.child, self.bridge)

    def send(self, role: str, event: Event, *, bytewise: bool = False) -> list[Event]:
        sender, receiver = self.side(role)
        data = sender.send(event)
        if not bytewise:
            return receiver.receive_data(data)
        events: list[Event] = []
        for i in range(len(data)):
            events += receiver.receive_data(data[i : i + 1])
        return events

    def handshake(self) -> None:
        self.send("bridge", Hello(protocols=(1,), plugin="p"))
        self.send("child", Ready(protocol=1, concurrency=4))


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("sequence", VECTORS["sequences"], ids=lambda s: s["name"])
def test_sequence_vector(sequence: dict[str, Any], bytewise: bool) -> None:
    pair = Pair()
    for step in sequence["steps"]:
        event = map_to_message(from_json(step["value"]))
        sender, receiver = pair.side(step["from"])
        if "event" in step:
            assert pair.send(step["from"], event, bytewise=bytewise) == [event]
            assert event.TYPE == step["event"]
            continue
        before = (sender.state, set(sender.in_flight))
        with pytest.raises(LocalProtocolError) as local:
            sender.send(event)
        assert local.value.kind == step["error"]
        assert (sender.state, set(sender.in_flight)) == before  # a refused send changes nothing
        with pytest.raises(RemoteProtocolError) as remote:
            receiver.receive_data(bytes.fromhex(step["hex"]))
        assert remote.value.kind == step["error"]
        with pytest.raises(RemoteProtocolError):  # a peer that broke the rules is not read again
            receiver.receive_data(b"")


def test_every_error_kind_has_a_vector() -> None:
    """The closed set of kinds is the set the vectors exercise: none is missing, none is extra."""
    used = {v["error"] for v in VECTORS["invalid"]}
    used |= {step["error"] for s in VECTORS["sequences"] for step in s["steps"] if "error" in step}
    assert used == set(ErrorKind)


def test_the_handshake_moves_both_sides_through_the_same_states() -> None:
    pair = Pair()
    assert pair.bridge.state is pair.child.state is ConnectionState.AWAIT_HELLO
    pair.send("bridge", Hello(protocols=(1, 2), plugin="p", max_frame=4096))
    assert pair.bridge.state is pair.child.state is ConnectionState.AWAIT_READY
    assert pair.child.hello is not None and pair.child.hello.protocols == (1, 2)
    # hello's limit holds for both directions on both sides from here on.
    assert pair.bridge.max_frame == pair.child.max_frame == 4096
    pair.send("child", Ready(protocol=2))
    assert pair.bridge.state is pair.child.state is ConnectionState.OPEN
    assert pair.bridge.ready == Ready(protocol=2)
    pair.send("bridge", Stop())
    assert pair.bridge.state is pair.child.state is ConnectionState.STOPPING


def test_ids_in_flight_are_kept_on_both_sides() -> None:
    pair = Pair()
    pair.handshake()
    pair.send("bridge", Task(id=1, config=b"{}"))
    pair.send("bridge", Task(id=2, config=b"{}"))
    assert set(pair.bridge.in_flight) == set(pair.child.in_flight) == {1, 2}
    pair.send("child", Result(id=2))
    assert set(pair.bridge.in_flight) == set(pair.child.in_flight) == {1}
    # A cancel and a log for an id that is not in flight cross answers in the pipes: no error.
    assert pair.send("bridge", Cancel(id=2)) == [Cancel(id=2)]
    assert pair.send("child", Log(level="info", msg="late", id=2)) == [Log(level="info", msg="late", id=2)]


def test_a_frame_over_the_limit_changes_nothing_so_the_child_can_answer_otherwise() -> None:
    pair = Pair()
    pair.send("bridge", Hello(protocols=(1,), plugin="p", max_frame=1024))
    pair.send("child", Ready(protocol=1))
    pair.send("bridge", Task(id=1, config=b""))
    with pytest.raises(LocalProtocolError) as info:
        pair.child.send(Result(id=1, data="x" * 2000))
    assert info.value.kind is ErrorKind.FRAME_TOO_LARGE
    assert set(pair.child.in_flight) == {1}  # still owed
    assert pair.send("child", Error.too_large(1, 2030, 1024)) == [Error.too_large(1, 2030, 1024)]
    assert not pair.bridge.in_flight


def test_a_value_msgpack_cannot_pack_changes_nothing() -> None:
    pair = Pair()
    pair.handshake()
    pair.send("bridge", Task(id=1, config=b""))
    with pytest.raises(TypeError):
        pair.child.send(Result(id=1, data={"x": object()}))
    assert set(pair.child.in_flight) == {1}


def test_after_the_bridge_broke_the_rules_the_child_still_answers_what_is_in_flight() -> None:
    pair = Pair()
    pair.handshake()
    pair.send("bridge", Task(id=1, config=b""))
    with pytest.raises(RemoteProtocolError) as info:
        pair.child.receive_data(pair.child.codec.send(Result(id=9)))  # bytes no bridge may send
    assert info.value.kind is ErrorKind.UNEXPECTED
    assert "the bridge sent a result message, which only the child sends" in str(info.value)
    assert pair.bridge.receive_data(pair.child.send(Result(id=1))) == [Result(id=1)]


def test_send_map_is_the_fast_path_for_requests() -> None:
    pair = Pair()
    pair.handshake()
    frame = pair.bridge.send_map({"type": "task", "id": 5, "config": b"{}"})
    assert pair.child.receive_data(frame) == [Task(id=5, config=b"{}")]
    assert set(pair.bridge.in_flight) == {5}
    with pytest.raises(LocalProtocolError) as info:
        pair.bridge.send_map({"type": "debug", "id": 5, "config": b"{}"})
    assert info.value.kind is ErrorKind.DUPLICATE_ID
    # A message that moves the state goes through send(), which keeps the event.
    pair.child.receive_data(pair.bridge.send_map({"type": "stop"}))
    assert pair.bridge.state is pair.child.state is ConnectionState.STOPPING


def test_may_send_reads_the_table() -> None:
    pair = Pair()
    assert pair.bridge.may_send("hello") and not pair.child.may_send("log")
    pair.handshake()
    assert pair.bridge.may_send("cancel") and pair.child.may_send("log")
    pair.send("bridge", Stop())
    assert not pair.bridge.may_send("cancel") and pair.child.may_send("result")


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        pytest.param([], "the bridge sent a task message before hello", id="before-hello"),
        pytest.param(["hello"], "the bridge sent a task message before ready", id="before-ready"),
        pytest.param(["hello", "ready", "stop"], "the bridge sent a task message after stop", id="after-stop"),
    ],
)
def test_out_of_turn_messages_say_when(steps: list[str], words: str) -> None:
    pair = Pair()
    events: dict[str, tuple[str, Event]] = {
        "hello": ("bridge", Hello(protocols=(1,), plugin="p")),
        "ready": ("child", Ready(protocol=1)),
        "stop": ("bridge", Stop()),
    }
    for name in steps:
        pair.send(*events[name])
    with pytest.raises(LocalProtocolError, match=words):
        pair.bridge.send(Task(id=1, config=b""))


def test_a_second_answer_is_named_as_such_while_remembered() -> None:
    pair = Pair()
    pair.handshake()
    pair.send("bridge", Task(id=1, config=b""))
    pair.send("child", Result(id=1))
    twice = r"answered id 1: it was answered already \(first result, then error\)"
    with pytest.raises(RemoteProtocolError, match=twice):
        pair.bridge.receive_data(pair.child.codec.send(Error(id=1, message="x")))


def test_the_memory_of_answers_is_bounded() -> None:
    pair = Pair()
    pair.handshake()
    for i in range(RECENT_ANSWERS + 10):
        pair.send("bridge", Task(id=i, config=b""))
        pair.send("child", Result(id=i))
    assert len(pair.bridge._answered) == len(pair.child._answered) == RECENT_ANSWERS
    with pytest.raises(RemoteProtocolError, match="answered id 0: it is not in flight") as info:
        pair.bridge.receive_data(pair.child.codec.send(Result(id=0)))
    assert info.value.kind is ErrorKind.UNKNOWN_ID


def test_ready_must_name_an_offered_version() -> None:
    pair = Pair()
    pair.send("bridge", Hello(protocols=(1,), plugin="p"))
    with pytest.raises(LocalProtocolError, match="chose protocol 3, but the bridge offered") as info:
        pair.child.send(Ready(protocol=3))
    assert info.value.kind is ErrorKind.BAD_FIELD


def test_the_default_limit_holds_until_hello() -> None:
    assert Connection(Role.CHILD).max_frame == DEFAULT_MAX_FRAME


def test_the_protocol_package_imports_no_io() -> None:
    """protocol/'s modules (the codec, the events, the connection) import no I/O library at all."""
    banned = {"anyio", "asyncio", "subprocess", "os", "grpc", "socket", "pathlib", "io"}
    for path in sorted((ROOT / "protocol").glob("*.py")):
        if not (path.name.startswith("_") or path.name == "__init__.py"):
            continue  # scripts run by hand: make_vectors.py, generate.py, regen.py
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"


# --- the Python adapter over real pipes ------------------------------------------------

HANDLER = "from flow_bridge.adapter import serve; serve(lambda request: {})"


def _bridge_errors() -> list[Any]:
    """Sequences that end in a frame from the bridge that the child must reject.

    Left out: those where the bad frame follows stop, since a child that has nothing in
    flight may be gone before it reads more (the in-memory replay covers them)."""
    chosen = []
    for s in VECTORS["sequences"]:
        last = s["steps"][-1]
        after_stop = any(step["event"] == "stop" for step in s["steps"] if "event" in step)
        if "error" in last and last["from"] == "bridge" and not after_stop:
            chosen.append(pytest.param(s, id=s["name"]))
    return chosen


def _read_frame(stream: Any) -> dict[str, Any]:
    header = stream.read(4)
    assert len(header) == 4, "the child closed its stdout"
    value: dict[str, Any] = msgpack.unpackb(stream.read(int.from_bytes(header, "big")), raw=False)
    return value


@pytest.mark.parametrize("sequence", _bridge_errors())
def test_the_python_adapter_rejects_what_the_vectors_reject(sequence: dict[str, Any]) -> None:
    """The bridge's frames of the sequence go to a real child; it must name the kind and exit non-zero.

    The frames before the child's ready go in one write, the rest in another, so that the
    child reads each group at once (a request in flight is then still in flight when its
    duplicate arrives)."""
    steps = sequence["steps"]
    split = next((i for i, s in enumerate(steps) if s["from"] == "child"), len(steps))
    before = b"".join(bytes.fromhex(s["hex"]) for s in steps[:split] if s["from"] == "bridge")
    after = b"".join(bytes.fromhex(s["hex"]) for s in steps[split:] if s["from"] == "bridge")
    with subprocess.Popen(
        [sys.executable, "-c", HANDLER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        child.stdin.write(before)
        child.stdin.flush()
        if split < len(steps):
            assert _read_frame(child.stdout)["type"] == "ready"
            child.stdin.write(after)
            child.stdin.flush()
        status = child.wait(timeout=30)
        stderr = child.stderr.read().decode()
    assert status != 0
    assert f"break the protocol ({steps[-1]['error']})" in stderr


# --- good frames before bad bytes (issue 11.7): the outcome does not depend on the split --


@pytest.mark.parametrize("garbage", [
    pytest.param(b"\xff\xff\xff\xff", id="huge-length"),
    pytest.param(b"\x00\x00\x00\x05hello", id="not-msgpack"),
    pytest.param(b"\x00\x00\x00\x01\xc1", id="bad-byte"),
])
def test_frames_before_garbage_in_one_read_are_delivered_then_the_error(garbage):
    pair = Pair()
    pair.handshake()
    pair.send("bridge", Task(id=7, config=b"{}"))
    good = pair.child.send(Result(id=7, data={"ok": 1}))
    with pytest.raises(RemoteProtocolError) as caught:
        pair.bridge.receive_data(good + garbage)
    assert [type(e) for e in caught.value.events] == [Result] and caught.value.events[0].id == 7
    with pytest.raises(RemoteProtocolError):  # the connection stays broken
        pair.bridge.receive_data(b"")

    split = Pair()  # the same bytes in two reads: the same events, the same error kind
    split.handshake()
    split.send("bridge", Task(id=7, config=b"{}"))
    assert [e.id for e in split.bridge.receive_data(split.child.send(Result(id=7, data={"ok": 1})))] == [7]
    with pytest.raises(RemoteProtocolError) as again:
        split.bridge.receive_data(garbage + (b"" if garbage.startswith(b"\xff") else b"\x00"))
    assert again.value.kind == caught.value.kind and again.value.events == []


def test_an_answer_out_of_turn_after_good_ones_keeps_the_good_ones():
    pair = Pair()
    pair.handshake()
    pair.send("bridge", Task(id=1, config=b"{}"))
    data = pair.child.send(Result(id=1, data={})) + pair.child.codec.send(Result(id=1, data={}))
    with pytest.raises(RemoteProtocolError) as caught:
        pair.bridge.receive_data(data)
    assert caught.value.kind is ErrorKind.UNKNOWN_ID
    assert [e.id for e in caught.value.events] == [1]
