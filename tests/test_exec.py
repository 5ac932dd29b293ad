"""Exec mode with real processes: examples at load, exit codes, timeouts, data safety."""

from __future__ import annotations

import json
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import FLOW_BRIDGE, ROOT, wait_for

PROBE = str(ROOT / "tests" / "handlers" / "exec_probe.py")


def call_exec(config: object, *extra: str, command: list[str] | None = None) -> tuple[int, dict]:
    done = subprocess.run(
        [*FLOW_BRIDGE, "call", "--exec", "--config-json", json.dumps(config), *extra, "--",
         *(command or [sys.executable, PROBE])],
        capture_output=True, text=True, timeout=60,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize("example", ["bash", "python"])
def test_examples_answer_500_tasks_16_at_a_time(example, port, engine_factory, bridge_factory):
    engine = engine_factory(port, "--concurrency", "16")
    bridge = bridge_factory(port, [str(ROOT / "examples" / "exec" / example / "run")],
                            "--exec", "--max-inflight", "16")
    rng = random.Random(3)
    payloads = {i: "温度x" * rng.randint(0, 5) for i in range(500)}
    engine.send(*[{"config": {"i": i, "payload": p, "sleep_ms": rng.randint(0, 5)}, "elementJob": f"e{i}"}
                  for i, p in payloads.items()])
    engine.close_input()
    started = time.monotonic()
    assert engine.proc.wait(120) == 0
    took = time.monotonic() - started
    answers = {a["elementJob"]: a for a in engine.answers()}
    assert len(answers) == 500 == len(engine.answers())
    for i, payload in payloads.items():
        assert answers[f"e{i}"]["result"] == {"i": i, "n": len(payload)}, answers[f"e{i}"]
    print(f"{example}: 500 tasks in {took:.1f} s ({500 / took:.0f} tasks/s)")
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0


def test_exit_3_with_bad_input_on_stderr():
    code, answer = call_exec({"mode": "exit3"})
    assert code == 1
    assert answer["status"] is False
    assert answer["info"] == "bad input"
    assert answer["detail"].splitlines()[:2] == ["flow-bridge: kind=handler", "exit status 3"]
    assert "reading config" in answer["detail"]


def test_silent_failure_and_signal_death_are_named():
    _, answer = call_exec({"mode": "silent-exit"})
    assert answer["info"] == "exit status 7"
    _, answer = call_exec({"mode": "kill9"})
    assert answer["info"] == "killed by signal 9 (SIGKILL)"


@pytest.mark.parametrize(
    ("mode", "result"),
    [
        pytest.param("text", {"stdout": "plain text, not JSON\n"}, id="text"),
        pytest.param("list", {"result": [1, 2, 3]}, id="json-non-object"),
        pytest.param("empty", {}, id="empty"),
    ],
)
def test_stdout_becomes_data(mode, result):
    code, answer = call_exec({"mode": mode})
    assert code == 0
    assert answer["result"] == result


def test_output_over_the_limit_is_an_error_not_a_blowup():
    code, answer = call_exec({"mode": "flood", "bytes": 3_000_000}, "--max-output", "1000000")
    assert code == 1
    assert answer["info"].startswith("[protocol] the command wrote more than 1000000 bytes")


def test_config_reaches_the_script_byte_for_byte_and_runs_nothing(tmp_path):
    canary = tmp_path / "pwned"
    nasty = f"""it's "quoted" $(touch {canary}) `touch {canary}` ; touch {canary}
second line\ttab \\ backslash 中文 ${{HOME}} && rm -rf /nonexistent"""
    config = {"mode": "stdin", "value": nasty}
    code, answer = call_exec(config, command=[sys.executable, PROBE, "$(touch x)", "a b"])
    assert code == 0, answer
    seen = json.loads(answer["result"]["stdin"])
    assert seen["config"] == config
    assert seen["elementJob"] == "element-job-1"
    assert answer["result"]["argv"] == ["$(touch x)", "a b"]
    env = answer["result"]["env"]
    assert env["FLOW_ELEMENT_JOB"] == "element-job-1"
    assert env["FLOW_PROJECT_ID"] == "standin-project"
    assert {"FLOW_FLOW_ID", "FLOW_JOB", "FLOW_ELEMENT_ID"} <= set(env)
    assert not any(nasty in value for value in env.values())  # config travels on stdin only
    assert not canary.exists()
    assert not pathlib.Path("x").exists()


def test_non_json_config_arrives_as_text():
    code, answer = call_exec("not {json")
    assert code == 0
    assert json.loads(answer["result"]["stdin"])["config"] == "not {json"


def test_timeout_kills_the_whole_group(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [sys.executable, PROBE], "--exec", "--timeout", "1s")
    engine.send({"config": {"mode": "grandchild"}})
    wait_for(lambda: len(bridge.leftovers()) >= 2, 10, "the script and its grandchild to run")
    answer = engine.wait_answers(1, timeout=15)[0]
    assert answer["status"] is False
    assert answer["info"] == "[timeout] the command did not finish within 1 s"
    wait_for(lambda: bridge.leftovers() == [], 5, "every process of the task to be gone")
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0


def test_debug_request_returns_stderr_as_logs():
    code, answer = call_exec({"i": 2}, "--debug", command=[str(ROOT / "examples" / "exec" / "python" / "run")])
    assert code == 0
    assert answer["result"]["value"] == {"i": 2, "n": 0}
    assert answer["result"]["logs"][0]["msg"] == "echo task element-job-1"


def test_a_command_that_cannot_start_stops_run_before_registering(port, engine_factory, tmp_path):
    engine = engine_factory(port)
    script = tmp_path / "tool"
    script.write_text("#!/usr/bin/env no-such-interpreter-xyz\n")
    script.chmod(0o755)
    done = subprocess.run([*FLOW_BRIDGE, "run", "--exec", "--port", str(port), "--host", "127.0.0.1",
                           "--", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "names no-such-interpreter-xyz, which is not on PATH" in done.stderr
    assert engine.registrations() == []
