"""The engine side: slots, stream failures, message sizes, the registered name, and signals.

Through real processes and real gRPC: `flow-bridge run` against the stand-in engine, or
against MiniEngine below, a tiny engine.PluginService of the test's own for what the
stand-in cannot do (no DebugStream, a health check that fails on cue, requests larger
than the stand-in sends). Each test prints what it measured.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import anyio
import grpc
import grpc.aio
import pytest

from conftest import ECHO_PY, FLOW_BRIDGE, ROOT, free_port, wait_for
from flow_bridge.core import Answer, Request, Settings, success
from flow_bridge.engine import SERVICE
from flow_bridge.protocol import engine_pb2 as pb

PROBE = [sys.executable, str(ROOT / "tests" / "handlers" / "engine_probe.py")]
EXEC_PROBE = [sys.executable, str(ROOT / "tests" / "handlers" / "exec_probe.py")]
MiB = 1024 * 1024


def tasks(n: int, prefix: str = "t", **config: object) -> list[dict[str, object]]:
    return [{"config": {"i": i, **config}, "elementJob": f"{prefix}{i}"} for i in range(n)]


def one_each(answers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    jobs = collections.Counter(a["elementJob"] for a in answers)
    assert all(count == 1 for count in jobs.values()), f"duplicate answers: {jobs.most_common(3)}"
    return {a["elementJob"]: a for a in answers}


def stop(bridge: Any) -> None:
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(30) == 0, bridge.log()
    assert "Traceback" not in bridge.log()


# --- MiniEngine --------------------------------------------------------------------------


class MiniEngine:
    """engine.PluginService on loopback, on an event loop of its own thread.

    `debug`: "serve" (a working DebugStream), "missing" (not implemented: gRPC answers
    UNIMPLEMENTED, as an engine from before late 2023 does) or "end" (ends each at once).
    `health_fails`: the numbers (from 1) of the health checks answered NOT_SERVING.
    `max_receive`: its gRPC receive limit (-1: none; grpc-go's default is 4 MiB).
    `refuse_late`: on the first Register stream, sends one task, reads its answer without
    recording it, and this many seconds later fails the stream as a 4 MiB engine does an answer over its limit: a busy
    engine's refusal of an answer written long before.
    """

    def __init__(
        self, *, debug: str = "serve", health_fails: Iterable[int] = (), max_receive: int = -1,
        refuse_late: float = 0.0,
    ) -> None:
        self.port = free_port()
        self.max_receive = max_receive
        self.refuse_late = refuse_late
        self.debug = debug
        self.health_fails = set(health_fails)
        self.registrations: list[tuple[str, str]] = []
        self.debug_opens = 0
        self.health_checks = 0
        self._answers: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server | None = None
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._queues: dict[bool, asyncio.Queue[Any]] = {False: asyncio.Queue(), True: asyncio.Queue()}
        limits = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", self.max_receive)]
        server = grpc.aio.server(options=limits)

        def raw(message: Any) -> bytes:  # a test may send bytes that are no valid message
            return message if isinstance(message, bytes) else message.SerializeToString()

        handlers = {
            "HealthCheck": grpc.unary_unary_rpc_method_handler(
                self._health, pb.HealthCheckRequest.FromString, pb.HealthCheckResponse.SerializeToString
            ),
            "Register": grpc.stream_stream_rpc_method_handler(self._register, pb.FlowResponse.FromString, raw),
        }
        if self.debug != "missing":
            handlers["DebugStream"] = grpc.stream_stream_rpc_method_handler(
                self._debug_stream, pb.DebugResponse.FromString, raw
            )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    def close(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # what a test does

    def send(self, message: Any, debug: bool = False) -> None:
        self._loop.call_soon_threadsafe(self._queues[debug].put_nowait, message)

    def send_tasks(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            config = item["config"]
            data = config if isinstance(config, bytes) else json.dumps(config).encode()
            if item.get("debug"):
                self.send(pb.DebugRequest(elementJob=item["elementJob"], config=data), debug=True)
            else:
                self.send(pb.FlowRequest(elementJob=item["elementJob"], config=data))

    def answers(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._answers)

    def wait_answers(self, n: int, timeout: float = 30) -> list[dict[str, Any]]:
        wait_for(
            lambda: len(self.answers()) >= n, timeout,
            lambda: f"{n} answers (have {len(self.answers())}: {sorted(a['elementJob'] for a in self.answers())[:40]})",
        )
        return self.answers()

    # the service

    async def _health(self, request: Any, context: Any) -> Any:
        self.health_checks += 1
        failing = self.health_checks in self.health_fails
        status = pb.HealthCheckResponse.NOT_SERVING if failing else pb.HealthCheckResponse.SERVING
        return pb.HealthCheckResponse(status=status)

    async def _register(self, request_iterator: Any, context: Any) -> None:
        await self._stream(context, debug=False)

    async def _debug_stream(self, request_iterator: Any, context: Any) -> None:
        self.debug_opens += 1
        if self.debug == "end":
            return
        await self._stream(context, debug=True)

    async def _stream(self, context: Any, debug: bool) -> None:
        metadata = dict(context.invocation_metadata())
        if not debug:
            self.registrations.append(
                (bytes.fromhex(metadata["name"]).decode(), bytes.fromhex(metadata["mode"]).decode())
            )
        queue = self._queues[debug]

        async def pump() -> None:
            while True:
                await context.write(await queue.get())

        if self.refuse_late and not debug and len(self.registrations) == 1:
            await context.write(await queue.get())
            await context.read()  # its answer: written (and read, not recorded) long before the refusal
            await asyncio.sleep(self.refuse_late)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"Received message larger than max (5592452 vs. {4 * MiB})")
        sender = asyncio.ensure_future(pump())
        try:
            while (message := await context.read()) is not grpc.aio.EOF:
                record = {
                    "elementJob": message.elementJob, "status": message.status, "info": message.info,
                    "detail": message.detail, "result": json.loads(message.result) if message.result else None,
                    "size": message.ByteSize(), "debug": debug,
                }
                with self._lock:
                    self._answers.append(record)
        finally:
            sender.cancel()


@pytest.fixture
def mini_engine() -> Any:
    made: list[MiniEngine] = []

    def make(**kwargs: Any) -> MiniEngine:
        engine = MiniEngine(**kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


# --- 10.1: every slot serves tasks ---------------------------------------------------------


def test_max_inflight_1_answers_all_30_tasks(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--max-inflight", "1")
    engine.send(*tasks(30, payload="ab"))
    try:
        engine.wait_answers(30, timeout=30)
    finally:
        print(f"--max-inflight 1: {len(engine.answers())} of 30 answered")
    answers = one_each(engine.answers())
    assert all(a["status"] for a in answers.values())
    stop(bridge)


def test_a_concurrency_1_child_gets_every_task_one_at_a_time(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, PROBE)
    engine.send(*tasks(30, sleep_ms=20))
    engine.send({"config": {"i": 99}, "debug": True, "elementJob": "debug"})
    answers = one_each(engine.wait_answers(31, timeout=30))
    assert all(a["status"] for a in answers.values())
    assert {a["result"]["overlap"] for a in answers.values() if a["elementJob"] != "debug"} == {1}
    assert answers["debug"]["result"]["value"]["overlap"] == 1
    stop(bridge)


def test_exec_mode_at_max_inflight_1_answers_every_task(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, EXEC_PROBE, "--exec", "--max-inflight", "1")
    engine.send(*tasks(10, mode="stdin"))
    answers = one_each(engine.wait_answers(10, timeout=60))
    assert all(a["status"] for a in answers.values())
    stop(bridge)


def test_exec_mode_runs_at_most_max_inflight_processes_debug_requests_included(tmp_path, port, engine_factory,
                                                                               bridge_factory):
    # A script that must run alone (a serial port, a lock file): a debug request waits its turn.
    lock = tmp_path / "held"
    script = tmp_path / "alone.sh"
    script.write_text(
        "#!/bin/sh\ncat > /dev/null\n"
        f"if mkdir {lock} 2>/dev/null; then sleep 0.2; rmdir {lock}; echo '{{\"overlap\": false}}'\n"
        "else echo '{\"overlap\": true}'; fi\n"
    )
    script.chmod(0o755)
    engine = engine_factory(port)
    bridge = bridge_factory(port, [str(script)], "--exec", "--max-inflight", "1")
    engine.send(*tasks(4), *({"config": {}, "debug": True, "elementJob": f"debug{i}"} for i in range(2)))
    answers = one_each(engine.wait_answers(6, timeout=60))
    overlaps = {job: (a["result"]["value"] if job.startswith("debug") else a["result"])["overlap"]
                for job, a in answers.items()}
    print(f"--max-inflight 1, 4 tasks and 2 debug requests: overlaps {overlaps}")
    assert not any(overlaps.values())
    stop(bridge)


def test_n_slots_run_n_tasks_at_once(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--max-inflight", "4")
    wait_for(lambda: engine.registrations(), 15, "registration")
    began = time.monotonic()
    engine.send(*tasks(4, sleep_ms=1000))
    engine.wait_answers(4, timeout=10)
    took = time.monotonic() - began
    print(f"4 tasks of 1 s at --max-inflight 4 took {took:.2f} s")
    assert took < 1.9, "the four did not run at once"
    stop(bridge)


# --- 10.7: streams fail on their own --------------------------------------------------------


def test_an_engine_without_debugstream_serves_100_tasks_on_one_registration(mini_engine, bridge_factory):
    engine = mini_engine(debug="missing")
    bridge = bridge_factory(engine.port, [ECHO_PY], "--retry-interval", "1s")
    engine.send_tasks(tasks(50))
    engine.wait_answers(50)
    time.sleep(3)  # DebugStream is asked for again a few times meanwhile
    engine.send_tasks(tasks(50, prefix="u"))
    answers = one_each(engine.wait_answers(100))
    assert all(a["status"] for a in answers.values())
    assert len(engine.registrations) == 1, "Register was opened again"
    assert len(bridge.err.find("does not offer DebugStream")) == 1, bridge.log()
    assert not bridge.err.find("connection lost")
    print(f"100 of 100 answered on 1 registration; {bridge.log().count('DebugStream')} log lines name DebugStream")
    stop(bridge)


def test_a_debugstream_that_ends_is_reopened_and_register_is_untouched(mini_engine, bridge_factory):
    engine = mini_engine(debug="end")
    bridge = bridge_factory(engine.port, [ECHO_PY], "--retry-interval", "1s")
    wait_for(lambda: engine.debug_opens >= 3, 15, "DebugStream opened again")
    engine.send_tasks(tasks(20))
    assert all(a["status"] for a in engine.wait_answers(20))
    assert len(engine.registrations) == 1
    assert len(bridge.err.find("DebugStream lost")) == 1, bridge.log()
    stop(bridge)


@pytest.mark.parametrize(
    ("fails", "registrations"),
    [
        pytest.param([2], 1, id="one-failure"),
        pytest.param([2, 3], 1, id="two-in-a-row"),
        pytest.param([2, 4, 6, 8], 1, id="four-not-in-a-row"),
        pytest.param([2, 3, 4], 2, id="three-in-a-row-reconnects"),
    ],
)
def test_health_checks_reconnect_only_after_3_failures_in_a_row(fails, registrations, mini_engine, bridge_factory):
    engine = mini_engine(health_fails=fails)
    # Each check may take up to the interval; at 500 ms a loaded machine still answers in time.
    bridge = bridge_factory(engine.port, [ECHO_PY], "--heartbeat-interval", "500ms")
    wait_for(lambda: engine.health_checks >= 10, 20, "ten health checks")
    assert len(engine.registrations) == registrations, bridge.log()
    engine.send_tasks(tasks(5))
    assert all(a["status"] for a in engine.wait_answers(5))
    if registrations == 1:
        assert len(bridge.err.find("health check answered NOT_SERVING")) == len(
            [f for f in fails if f - 1 not in fails]
        ), "each run of failures is logged once"
    else:
        assert bridge.err.find(r"health check answered NOT_SERVING \(3 in a row\); reconnecting")
    stop(bridge)


# --- 11.1 / 11.2: what does not fit the engine's messages -----------------------------------


@pytest.mark.parametrize(
    ("task", "what"),
    [
        pytest.param({"config": {"bytes": 13 * MiB}}, "FlowResponse", id="13MiB-of-bytes"),
        pytest.param({"config": {"ctrl": 3 * MiB}}, "FlowResponse", id="3MiB-of-U+0001"),
        pytest.param({"config": {"logs": 200_000}, "debug": True}, "DebugResponse", id="200k-debug-log-lines"),
    ],
)
def test_an_answer_over_the_engines_limit_is_a_too_large_error_and_the_stream_stays(
    task, what, port, engine_factory, bridge_factory
):
    engine = engine_factory(port)
    bridge = bridge_factory(port, PROBE, env={"ENGINE_PROBE_CONCURRENCY": "64"})
    wait_for(lambda: engine.registrations(), 15, "registration")
    began = time.monotonic()
    engine.send({**task, "elementJob": "big"}, *tasks(20, prefix="after"))
    try:
        engine.wait_answers(21, timeout=60)
    finally:
        print(f"{what}: {len(engine.answers())} of 21 answered in {time.monotonic() - began:.1f} s, "
              f"{len(engine.registrations())} registrations")
    answers = one_each(engine.answers())
    big = answers["big"]
    assert big["status"] is False
    assert re.fullmatch(
        rf"\[too_large\] answer too large for the engine: \d+ bytes as a {what}, the limit is 17825792; "
        r"return less data", big["info"]
    ), big["info"]
    assert big["detail"].startswith("flow-bridge: kind=too_large\n")
    if task.get("debug"):
        logs = big["result"]["logs"]
        assert big["result"]["value"] is None
        assert logs[0]["msg"] == "log line 000000 of the probe's debug run"
        assert re.match(r"flow-bridge: \d+ more log records cut", logs[-1]["msg"])
    else:
        assert big["result"] == {}
    assert all(answers[f"after{i}"]["status"] for i in range(20))
    assert len(engine.registrations()) == 1, "the connection broke"
    stop(bridge)


def test_an_engine_with_a_smaller_limit_refuses_one_answer_once(mini_engine, bridge_factory):
    engine = mini_engine(max_receive=4 * MiB)
    bridge = bridge_factory(engine.port, PROBE, env={"ENGINE_PROBE_CONCURRENCY": "64"})
    wait_for(lambda: engine.registrations, 15, "registration")
    engine.send_tasks([{"config": {"bytes": 4 * MiB}, "elementJob": "big"}])
    wait_for(lambda: len(engine.registrations) == 2, 15, "the stream the engine broke, opened again")
    engine.send_tasks(tasks(20, prefix="after") + [{"config": {"bytes": 3 * MiB}, "elementJob": "big2"}])
    answers = one_each(engine.wait_answers(22))
    for job in ("big", "big2"):
        assert answers[job]["info"].startswith("[too_large] answer too large for the engine: "), answers[job]
        assert answers[job]["info"].endswith(" bytes as a FlowResponse, the limit is 4194304; return less data")
    assert all(answers[f"after{i}"]["status"] for i in range(20))
    assert len(engine.registrations) == 2, "an answer broke the stream twice"
    assert len(bridge.err.find("the engine refused an answer as too large for it")) == 1
    stop(bridge)


def test_an_answer_refused_long_after_it_was_written_is_still_answered(mini_engine, bridge_factory):
    # Answers written RESEND_WINDOW before a break go again; a refused one must go whatever its age.
    engine = mini_engine(refuse_late=2.0)
    bridge = bridge_factory(engine.port, PROBE, env={"ENGINE_PROBE_CONCURRENCY": "64"})
    wait_for(lambda: engine.registrations, 15, "registration")
    engine.send_tasks([{"config": {"bytes": 4 * MiB}, "elementJob": "big"}])
    wait_for(lambda: len(engine.registrations) == 2, 15, "the stream the engine failed, opened again")
    engine.send_tasks(tasks(5, prefix="after"))
    answers = one_each(engine.wait_answers(6))
    print(f"answers: {sorted(answers)}; registrations: {len(engine.registrations)}")
    assert answers["big"]["info"].startswith("[too_large] answer too large for the engine: "), answers["big"]
    assert answers["big"]["info"].endswith(" the limit is 4194304; return less data"), answers["big"]
    assert all(answers[f"after{i}"]["status"] for i in range(5))
    assert len(engine.registrations) == 2, "the refused answer broke a second stream"
    stop(bridge)


def test_a_request_over_the_limit_gets_a_too_large_answer_and_the_stream_stays(mini_engine, bridge_factory):
    engine = mini_engine()
    bridge = bridge_factory(engine.port, PROBE, env={"ENGINE_PROBE_CONCURRENCY": "64"})
    wait_for(lambda: engine.registrations, 15, "registration")
    began = time.monotonic()
    huge = b'{"i": 0, "pad": "' + b"x" * (20 * 1000 * 1000) + b'"}'
    engine.send_tasks([{"config": huge, "elementJob": "huge"}, *tasks(20, prefix="after")])
    engine.send_tasks([{"config": huge, "elementJob": "huge-debug", "debug": True}])
    try:
        engine.wait_answers(22, timeout=60)
    finally:
        print(f"20 MB config: {len(engine.answers())} of 22 answered in {time.monotonic() - began:.1f} s, "
              f"{len(engine.registrations)} registrations")
    answers = one_each(engine.answers())
    for job, what in (("huge", "FlowRequest"), ("huge-debug", "DebugRequest")):
        assert answers[job]["status"] is False
        assert answers[job]["info"] == (
            f"[too_large] request too large: the engine's {what} was "
            f"{pb.FlowRequest(elementJob=job, config=huge).ByteSize()} bytes, "
            "the limit is 16777216 (plugin.max-frame); it was not passed to the handler"
        )
    assert answers["huge-debug"]["result"] == {"logs": [], "value": None}
    assert all(answers[f"after{i}"]["status"] for i in range(20))
    assert len(engine.registrations) == 1
    # A config that a child can take still arrives whole: the receive limit leaves room for it.
    fits = b'{"i": 1, "pad": "' + b"y" * (16 * MiB - 400) + b'"}'
    engine.send_tasks([{"config": fits, "elementJob": "fits"}])
    assert engine.wait_answers(23)[-1]["status"] is True
    stop(bridge)


def test_a_request_that_is_not_protobuf_gets_a_bad_request_answer_or_is_skipped(mini_engine, bridge_factory):
    engine = mini_engine()
    bridge = bridge_factory(engine.port, PROBE, env={"ENGINE_PROBE_CONCURRENCY": "64"})
    wait_for(lambda: engine.registrations, 15, "registration")
    engine.send(b"\xff\xff\xff")  # nothing to answer: no elementJob can be read
    # A projectId that is not UTF-8: protobuf refuses the message, but its elementJob reads.
    engine.send(b"\x0a\x02\xff\xfe" + b"\x2a\x08bad-utf8" + b"\x32\x02{}")
    engine.send_tasks(tasks(5))
    answers = one_each(engine.wait_answers(6))
    assert answers["bad-utf8"]["info"] == (
        "[bad_request] the engine's FlowRequest (18 bytes) is not a valid protobuf message; "
        "it was not passed to the handler"
    )
    assert all(answers[f"t{i}"]["status"] for i in range(5))
    assert bridge.err.find("cannot be read")
    assert len(engine.registrations) == 1
    stop(bridge)


def test_after_a_break_the_answers_sent_again_are_bounded_by_the_slots(port, engine_factory, bridge_factory):
    engine = engine_factory(port, "--fault", "reset-after=1500", "--task-timeout", "5s")
    bridge = bridge_factory(port, [ECHO_PY], "--max-inflight", "16")
    engine.send(*tasks(3000, payload="ab"))
    engine.close_input()
    assert engine.proc.wait(90) == 0
    summary = engine.err.find(r"answered \d+ tasks .* duplicates (\d+)")
    duplicates = int(re.search(r"duplicates (\d+)", summary[-1][1]).group(1))  # type: ignore[union-attr]
    resent = bridge.err.find(r"(\d+) flow answers written just before the break go out again")
    print(f"after the break: {duplicates} answers repeated; bridge: {[line for _, line in resent]}")
    assert duplicates <= 16
    stop(bridge)


# --- 10.3: the name is never invented --------------------------------------------------------


class FakeBackend:
    """A backend that answers at once and declares what it is told to."""

    capacity = 4

    def __init__(self, declared_name: str | None = None, declared_type: str | None = None) -> None:
        self.declared_name = declared_name
        self.declared_type = declared_type
        self.stopped = False

    async def start(self, task_group: Any) -> None:
        pass

    async def stop(self, grace: float) -> None:
        self.stopped = True

    def notify_state(self, connected: bool) -> None:
        pass

    def handle_now(self, request: Request, on_answer: Any) -> bool:
        return False  # always through handle()

    async def handle(self, request: Request) -> Answer:
        return success({"ok": True})


def serve_until_registered(
    engine: MiniEngine, backend: FakeBackend, fallback_name: str | None = None, **settings: Any
) -> None:
    from flow_bridge.gateway import serve_plugin

    raised: list[BaseException] = []

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while not engine.registrations:
                    await anyio.sleep(0.02)
                stop.set()

            tg.start_soon(watch)
            try:
                with anyio.fail_after(15):
                    await serve_plugin(
                        backend, Settings(host="127.0.0.1", port=engine.port, grace=1.0, **settings),
                        stop=stop, handle_signals=False, fallback_name=fallback_name,
                    )
            except Exception as exc:
                raised.append(exc)
            tg.cancel_scope.cancel()

    anyio.run(main)
    if raised:
        raise raised[0]


@pytest.mark.parametrize(
    ("configured", "declared", "registered"),
    [
        pytest.param({}, ("fromHandler", "user"), ("fromHandler", "user"), id="declared-name-and-type"),
        pytest.param({}, ("fromHandler", None), ("fromHandler", "service"), id="declared-name-only"),
        pytest.param({"name": "configured"}, ("fromHandler", "user"), ("configured", "user"), id="configured-name"),
        pytest.param({"name": "configured", "type": "service"}, ("fromHandler", "user"), ("configured", "service"),
                     id="configured-both"),
    ],
)
def test_the_registered_name_is_configured_or_declared(configured, declared, registered, mini_engine):
    engine = mini_engine()
    serve_until_registered(engine, FakeBackend(*declared), fallback_name="fallback", **configured)
    assert engine.registrations == [registered]


@pytest.mark.parametrize(
    ("declared", "registered"),
    [
        pytest.param((None, None), ("flow-bridge-call", "service"), id="nothing-declared"),
        pytest.param((None, "user"), ("flow-bridge-call", "user"), id="type-declared"),
    ],
)
def test_a_fallback_name_serves_only_when_none_is_configured_or_declared(declared, registered, mini_engine):
    engine = mini_engine()
    serve_until_registered(engine, FakeBackend(*declared), fallback_name="flow-bridge-call")
    assert engine.registrations == [registered]


@pytest.mark.parametrize("declared", [None, "", "has space"])
def test_no_name_stops_before_registering(declared, mini_engine):
    from flow_bridge.gateway import NameMissing

    engine = mini_engine()
    backend = FakeBackend(declared)
    with pytest.raises(NameMissing) as caught:
        serve_until_registered(engine, backend)
    for way in ("--name", "FLOW_BRIDGE_NAME", "plugin.name in config.yml", "declare it in the adapter"):
        assert way in str(caught.value)
    assert backend.stopped
    assert engine.registrations == []


def test_run_without_a_name_exits_2_before_registering(mini_engine, tmp_path):
    engine = mini_engine()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_BRIDGE_")}
    done = subprocess.run(
        [*FLOW_BRIDGE, "run", "--exec", "--host", "127.0.0.1", "--port", str(engine.port), "--", *EXEC_PROBE],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )
    assert done.returncode == 2, done.stderr
    assert "no plugin name to register with the engine: set one with --name" in done.stderr
    assert "Traceback" not in done.stderr
    assert engine.registrations == []


# --- 11.8: signals -------------------------------------------------------------------------


SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "HUP": signal.SIGHUP}


@pytest.mark.parametrize("times", [1, 2, 3], ids=["once", "twice", "three-times"])
@pytest.mark.parametrize("name", list(SIGNALS))
def test_signals_answer_every_task_in_flight_without_a_traceback(name, times, port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--grace", "10s")
    wait_for(lambda: engine.registrations(), 15, "registration")
    engine.send(*tasks(10, sleep_ms=1500))
    time.sleep(0.5)  # all ten are in the child now
    sent = time.monotonic()
    for _ in range(times):
        bridge.signal(SIGNALS[name])
        time.sleep(0.001)
    try:
        code: int | None = bridge.wait(20)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - sent
    wait_for(lambda: len(engine.answers()) >= 10 or code is not None, 5, "the answers")
    time.sleep(0.2)
    answers = one_each(engine.answers())
    ok = sum(a["status"] for a in answers.values())
    print(f"SIG{name} x{times}: exit {code} after {took:.2f} s; {len(answers)} of 10 answered, {ok} by the handler; "
          f"traceback: {'Traceback' in bridge.log()}")
    assert code is not None, "the bridge hung"
    assert len(answers) == 10
    assert "Traceback" not in bridge.log(), bridge.log()
    assert code == 0, bridge.log()
    assert bridge.leftovers() == []
    if times == 1:
        assert ok == 10
    else:
        assert took < 4.0
        stopped = [a for a in answers.values() if not a["status"]]
        assert all(a["info"] == "[unavailable] the bridge was stopped before the handler answered" for a in stopped)
