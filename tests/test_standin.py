"""`flow-bridge engine`, the stand-in engine, run as a user runs it: task lines in, answer lines out.

The plugin on the other side is either the real bridge with the Python echo example, or
`RawPlugin`: a few lines straight against engine.PluginService over real gRPC, which
answers every task with the size of its config, so that the stand-in's own limits can be
tested apart from whatever the bridge does with a big request.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from conftest import ECHO_PY, FLOW_BRIDGE, ROOT
from flow_bridge.engine import MESSAGE_SLACK, SERVICE
from flow_bridge.protocol import DEFAULT_MAX_FRAME
from flow_bridge.protocol import engine_pb2 as pb

# What the stand-in sends at most in one gRPC message (it serves with the default max_frame).
LIMIT = DEFAULT_MAX_FRAME + MESSAGE_SLACK
IDS = {"projectId": "p", "flowId": "f", "job": "j", "elementId": "e"}


def line_of_size(element_job: str, size: int) -> dict[str, Any]:
    """A task line whose FlowRequest is exactly `size` bytes (its config sent as raw text)."""
    fill = size
    for _ in range(5):
        message = pb.FlowRequest(config=b"a" * fill, elementJob=element_job, **IDS)
        if message.ByteSize() == size:
            return {"config": "a" * fill, "elementJob": element_job, **IDS}
        fill += size - message.ByteSize()
    raise AssertionError(f"could not make a FlowRequest of {size} bytes")


class RawPlugin:
    """A plugin without flow-bridge: registers, and answers each task {"size": len(config)}."""

    def __init__(self, port: int) -> None:
        unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=unlimited)
        self.received: list[str] = []
        self._outbox: queue.Queue[pb.FlowResponse | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _answers(self) -> Iterator[pb.FlowResponse]:
        while (answer := self._outbox.get()) is not None:
            yield answer

    def _serve(self) -> None:
        register = self.channel.stream_stream(
            f"/{SERVICE}/Register",
            request_serializer=pb.FlowResponse.SerializeToString,
            response_deserializer=pb.FlowRequest.FromString,
        )
        metadata = (("name", b"raw".hex()), ("mode", b"service".hex()))
        try:
            for request in register(self._answers(), metadata=metadata, wait_for_ready=True):
                self.received.append(request.elementJob)
                result = json.dumps({"size": len(request.config)}).encode()
                self._outbox.put(pb.FlowResponse(elementJob=request.elementJob, status=True, result=result))
        except grpc.RpcError:
            pass  # the engine went away: the test is over

    def close(self) -> None:
        self._outbox.put(None)
        self.channel.close()
        self._thread.join(5)


def run_engine(lines: list[str], port: int, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOW_BRIDGE, "engine", "--port", str(port)], input="".join(f"{x}\n" for x in lines),
                          capture_output=True, text=True, timeout=timeout, check=False)


def answers(out: str) -> dict[str, dict[str, Any]]:
    return {record["elementJob"]: record for record in map(json.loads, out.splitlines())}


@pytest.mark.timeout(60)
def test_an_oversize_task_with_no_plugin_is_answered_at_once_and_the_engine_exits_0(port):
    huge = line_of_size("huge", LIMIT + 1)
    started = time.monotonic()
    done = run_engine([json.dumps(huge)], port)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    (record,) = answers(done.stdout).values()
    assert record["elementJob"] == "huge" and record["status"] is False
    assert record["info"] == (f"[standin] task too large: its FlowRequest is {LIMIT + 1} bytes, over the gRPC "
                              f"message limit of {LIMIT} bytes, so it was not sent; send a smaller config")
    assert "ERROR" in done.stderr and "elementJob huge: [standin] task too large" in done.stderr
    assert "too large to send 1" in done.stderr
    assert took < 30, f"{took:.1f} s for one {LIMIT >> 20} MiB line"


@pytest.mark.timeout(120)
def test_the_limit_itself_is_sent_and_one_byte_more_is_answered_locally(port):
    lines = [json.dumps(line_of_size("at-limit", LIMIT)), json.dumps(line_of_size("one-past", LIMIT + 1)),
             json.dumps({"config": {"i": 1}, "elementJob": "after"})]
    engine = subprocess.Popen([*FLOW_BRIDGE, "engine", "--port", str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plugin = RawPlugin(port)
    try:
        out, err = engine.communicate("".join(f"{x}\n" for x in lines), timeout=90)
    finally:
        plugin.close()
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 0, err
    got = answers(out)
    assert set(got) == {"at-limit", "one-past", "after"}
    assert got["at-limit"]["status"] is True
    assert got["at-limit"]["result"]["size"] == len(line_of_size("at-limit", LIMIT)["config"])
    assert got["one-past"]["status"] is False and got["one-past"]["info"].startswith("[standin] task too large")
    assert got["after"]["status"] is True
    assert sorted(plugin.received) == ["after", "at-limit"]  # the oversize one never went out
    assert err.count("plugin registered") == 1, err


@pytest.mark.timeout(90)
def test_an_oversize_task_between_two_small_ones_through_the_bridge(port, engine_factory, bridge_factory):
    """Before: the stream broke on the big task, the bridge registered again and again, no exit."""
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY])
    engine.send({"config": {"i": 1}, "elementJob": "small-1"}, line_of_size("huge", LIMIT + 1),
                {"config": {"i": 2}, "elementJob": "small-2"})
    engine.close_input()
    assert engine.proc.wait(60) == 0, "\n".join(engine.err.texts())
    got = {a["elementJob"]: a for a in engine.answers()}
    assert set(got) == {"small-1", "huge", "small-2"}
    assert got["small-1"]["status"] and got["small-2"]["status"], got
    assert got["huge"]["status"] is False and got["huge"]["info"].startswith("[standin] task too large")
    assert len(engine.registrations()) == 1, engine.err.texts()
    assert bridge.proc.poll() is None  # the bridge's stream never broke


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lines, skipped", [
    pytest.param(["not json"], ["line 1: not JSON"], id="one"),
    pytest.param(["[1, 2]", "", '{"nope": 1}'], ['line 1: expected a JSON object', 'line 3: missing "config"'],
                 id="two-and-a-blank"),
    # Python's json takes these; the engine could only send them on as invalid JSON.
    pytest.param(['{"config": {"x": NaN}}', '{"config": [1e400]}', '{"config": -Infinity}',
                  '{"config": ' + "[" * 100_000 + "}"],
                 ["line 1: not JSON the engine can send: NaN is not JSON",
                  "line 2: not JSON the engine can send: the number 1e400 is beyond a double",
                  "line 3: not JSON the engine can send: -Infinity is not JSON",
                  "line 4: not JSON the engine can send: nested deeper than the JSON parser can go"],
                 id="nan-infinities-and-too-deep"),
])
def test_skipped_lines_are_named_and_the_engine_still_exits_0(lines, skipped, port):
    done = run_engine(lines, port)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    for needle in skipped:
        assert needle in done.stderr
    n = len(skipped)
    summary = "skipped 1 line that is not a task" if n == 1 else f"skipped {n} lines that are not tasks"
    assert summary in done.stderr, done.stderr


@pytest.mark.timeout(60)
def test_a_skipped_line_does_not_cost_the_good_ones(port):
    engine = subprocess.Popen([*FLOW_BRIDGE, "engine", "--port", str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plugin = RawPlugin(port)
    try:
        out, err = engine.communicate('{"config": {"i": 1}, "elementJob": "good"}\n{oops\n', timeout=45)
    finally:
        plugin.close()
    assert engine.returncode == 0, err
    assert list(answers(out)) == ["good"]
    assert "line 2: not JSON" in err and "skipped 1 line that is not a task" in err


@pytest.mark.timeout(60)
def test_a_lone_surrogate_costs_only_its_own_line(port):
    """"\\ud800" is valid JSON with no UTF-8 form. In a JSON config it goes out escaped, as it came;
    as a raw-text config or an id it cannot go at all. Before, either crashed the engine."""
    lines = [
        r'{"config": {"echo": "\ud800", "t": "温"}, "elementJob": "escaped"}',
        r'{"config": "raw \ud800", "elementJob": "raw"}',
        r'{"config": {}, "elementJob": "\udfff"}',
        '{"config": {"i": 1}, "elementJob": "good"}',
    ]
    engine = subprocess.Popen([*FLOW_BRIDGE, "engine", "--port", str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plugin = RawPlugin(port)
    try:
        out, err = engine.communicate("".join(f"{line}\n" for line in lines), timeout=45)
    finally:
        plugin.close()
    assert engine.returncode == 0, err
    got = answers(out)
    assert sorted(got) == ["escaped", "good"], err
    # The config as sent: every non-ASCII character escaped once one has no UTF-8 form.
    assert got["escaped"]["result"] == {"size": len(r'{"echo": "\ud800", "t": "\u6e29"}')}
    assert 'line 2: "config" holds a lone surrogate' in err and "config_base64" in err
    assert 'line 3: "elementJob" holds a lone surrogate' in err
    assert "skipped 2 lines that are not tasks" in err


def test_a_line_of_many_megabytes_is_read_in_linear_time(port):
    """Lines are joined from 64 KiB reads; a quadratic join would take minutes here."""
    big = json.dumps(line_of_size("big", 40 * 1024 * 1024))
    started = time.monotonic()
    done = run_engine([big], port)
    assert done.returncode == 0, done.stderr
    assert answers(done.stdout)["big"]["status"] is False
    assert time.monotonic() - started < 30


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [pytest.param(signal.SIGINT, id="ctrl-c"), pytest.param(signal.SIGTERM, id="term")])
def test_a_stop_signal_ends_the_engine_at_once_and_quietly(signum, port):
    """Stdin still open (a terminal, say), a task waiting for a plugin: the signal ends it, 5 times of 5."""
    for _ in range(5):
        engine = subprocess.Popen([*FLOW_BRIDGE, "engine", "--port", str(port)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert engine.stdin is not None and engine.stdout is not None and engine.stderr is not None
            engine.stdin.write('{"config": {"i": 1}}\n')
            engine.stdin.flush()
            seen = ""
            while "waiting for a plugin" not in seen:
                line = engine.stderr.readline()
                assert line, seen
                seen += line
            sent = time.monotonic()
            engine.send_signal(signum)
            code = engine.wait(10)
            took = time.monotonic() - sent
            err = seen + engine.stderr.read()
            assert engine.stdout.read() == ""
        finally:
            engine.kill()
            engine.wait()
            for stream in (engine.stdin, engine.stdout, engine.stderr):
                assert stream is not None
                stream.close()
        assert code == 128 + signum, err
        assert f"stopped by {signal.Signals(signum).name}: 1 task unanswered" in err
        assert "Traceback" not in err and "Error" not in err, err
        assert took < 5, f"{took:.1f} s to stop"


@pytest.mark.timeout(60)
def test_call_answers_through_a_handler_that_names_no_plugin():
    """No --name, no config.yml, no ready.name: `call` registers it with its private engine anyway."""
    handler = [sys.executable, str(ROOT / "tests" / "handlers" / "conformance_echo.py"), "ok"]
    done = subprocess.run([*FLOW_BRIDGE, "call", "--config-json", '{"i": 3, "payload": "温度"}', "--", *handler],
                          capture_output=True, text=True, timeout=45, cwd=ROOT / "tests", check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"i": 3, "n": 2}
    assert "Traceback" not in done.stderr


def test_a_second_engine_on_a_taken_port_is_refused(port, engine_factory):
    engine_factory(port)  # listening, waiting for tasks
    second = subprocess.run([*FLOW_BRIDGE, "engine", "--port", str(port)], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    print(f"second engine: exit {second.returncode}: {second.stderr.strip().splitlines()[-1]}")
    assert second.returncode == 2, second.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is taken" in second.stderr
