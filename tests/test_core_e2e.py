"""The core issue's end-to-end claims, with real processes and real gRPC on loopback."""

from __future__ import annotations

import base64
import json
import random
import signal
import subprocess
import time

import pytest

from conftest import ECHO_PY, FLOW_BRIDGE, wait_for


def echo_task(i: int, **extra: object) -> dict[str, object]:
    return {"config": {"i": i, "payload": "x" * (i % 37), **extra}, "elementJob": f"job-{i}"}


def test_thousand_tasks_64_at_a_time(port, engine_factory, bridge_factory):
    engine = engine_factory(port, "--concurrency", "64")
    bridge = bridge_factory(port, [ECHO_PY])
    rng = random.Random(7)
    tasks = [echo_task(i, sleep_ms=rng.randint(0, 15)) for i in range(1000)]
    tasks.append({"config": {"fail": "sensor 7 offline"}, "elementJob": "job-fail"})
    tasks.append({"config": "this is {not json", "elementJob": "job-raw"})
    tasks.append({"config": {"i": 5}, "debug": True, "elementJob": "job-debug"})
    engine.send(*tasks)
    engine.close_input()
    assert engine.proc.wait(60) == 0, "\n".join(engine.err.texts())
    answers = engine.answers()
    by_job = {a["elementJob"]: a for a in answers}
    assert len(answers) == len(tasks) == len(by_job), "an answer is missing or duplicated"
    for i in range(1000):
        a = by_job[f"job-{i}"]
        assert a["status"] is True
        assert a["result"] == {"i": i, "n": i % 37}
    failed = by_job["job-fail"]
    assert failed["status"] is False
    assert "sensor 7 offline" in failed["info"]
    assert failed["detail"].startswith("flow-bridge: kind=handler")
    raw = by_job["job-raw"]
    assert raw["status"] is True
    assert base64.b64decode(raw["result"]["raw"]) == b"this is {not json"  # bin -> base64 (SPEC 5)
    debug = by_job["job-debug"]
    assert debug["status"] is True
    assert debug["result"]["value"] == {"i": 5, "n": 0}
    assert [entry["msg"] for entry in debug["result"]["logs"]] == ["debug 5"]
    assert engine.err.find(r"answered 1003 tasks .* duplicates 0, unknown 0")
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0


def test_a_flood_with_big_tasks_among_small_ones_answers_each_rightly(port, engine_factory, bridge_factory):
    # Echo 0 ms at C=64 puts the child transport in its batching mode (frames wait for
    # company), and a 200 KiB config now and then goes at once, past the frames waiting:
    # every answer must still be its own task's.
    engine = engine_factory(port, "--concurrency", "64")
    bridge = bridge_factory(port, [ECHO_PY])
    sizes = {i: (200 * 1024 if i % 50 == 7 else i % 37) for i in range(1500)}
    engine.send(*({"config": {"i": i, "payload": "y" * n}, "elementJob": f"job-{i}"} for i, n in sizes.items()))
    engine.close_input()
    assert engine.proc.wait(90) == 0, "\n".join(engine.err.texts())
    answers = engine.answers()
    by_job = {a["elementJob"]: a for a in answers}
    assert len(answers) == len(sizes) == len(by_job), "an answer is missing or duplicated"
    for i, n in sizes.items():
        assert by_job[f"job-{i}"]["status"] is True, by_job[f"job-{i}"]
        assert by_job[f"job-{i}"]["result"] == {"i": i, "n": n}
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0


def test_engine_restart_registers_again_quickly(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--heartbeat-interval", "1s")
    wait_for(lambda: engine.registrations(), 15, "the first registration")
    engine.send(echo_task(1))
    assert engine.wait_answers(1)[0]["status"] is True
    engine.kill()
    time.sleep(1.5)  # the bridge notices and keeps trying
    again = engine_factory(port)
    up = again.err.find("listening on")[0][0]
    wait_for(lambda: again.registrations(), 15, "registration with the restarted engine")
    delay = again.registrations()[0] - up
    print(f"registered again {delay:.2f} s after the engine came back")
    assert delay < 5.0
    again.send(echo_task(2))
    assert again.wait_answers(1)[0]["result"] == {"i": 2, "n": 2}
    assert "engine connection lost" in bridge.log()
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0


def test_sigterm_with_32_in_flight_answers_all_and_leaves_nothing(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--grace", "10s")
    wait_for(lambda: engine.registrations(), 15, "registration")
    engine.send(*[echo_task(i, sleep_ms=1500) for i in range(32)])
    time.sleep(0.5)  # all 32 are now in the child
    sent = time.monotonic()
    bridge.signal(signal.SIGTERM)
    code = bridge.wait(20)
    took = time.monotonic() - sent
    answers = engine.wait_answers(32, timeout=5)
    assert code == 0, bridge.log()
    assert took < 10.0, f"exit took {took:.1f} s, past the grace period"
    assert sorted(a["result"]["i"] for a in answers) == list(range(32))
    assert all(a["status"] for a in answers)
    assert bridge.leftovers() == []
    print(f"32 answered; bridge exited 0 after {took:.2f} s")


def test_print_in_a_handler_reaches_the_log_not_the_channel(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY])
    engine.send(*[echo_task(i, print=f"printed by task {i}") for i in range(20)])
    answers = engine.wait_answers(20)
    assert all(a["status"] for a in answers)
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0
    log = bridge.log()
    assert all(f"printed by task {i}" in log for i in range(20))


def test_call_runs_one_task_and_sets_the_exit_code():
    ok = subprocess.run(
        [*FLOW_BRIDGE, "call", "--config-json", '{"i": 3, "payload": "温度计"}', "--", ECHO_PY],
        capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "elementJob": "element-job-1", "status": True, "info": "", "detail": "", "result": {"i": 3, "n": 3},
    }
    bad = subprocess.run(
        [*FLOW_BRIDGE, "call", "--config-json", '{"fail": "no such device"}', "--", ECHO_PY],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["info"] == "no such device"


@pytest.mark.parametrize("config, says", [
    ('{"x": NaN}', "NaN is not JSON"),
    ('{"x": [1e400]}', "the number 1e400 is beyond a double"),
    ("Infinity", "Infinity is not JSON"),
    ("[" * 100_000, "not JSON the engine can send"),  # deeper than the parser goes
    ('{"x": 1', "quote it for your shell"),
    ('"raw \\ud800"', "holds a lone surrogate"),  # raw text with no UTF-8 form (a traceback before)
])
def test_call_refuses_a_config_the_engine_could_not_send_as_a_usage_error(config, says):
    """Python's json takes NaN and Infinity and reads 1e400 as inf; the platform's configs are JSON."""
    done = subprocess.run([*FLOW_BRIDGE, "call", "--config-json", config, "--", ECHO_PY],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--config-json" in done.stderr and says in done.stderr, done.stderr
    assert done.stdout == ""
