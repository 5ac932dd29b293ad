"""Exec mode with real processes: examples at load, exit codes, timeouts, data safety."""

from __future__ import annotations

import base64
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


def shell_script(tmp_path: pathlib.Path, body: str) -> str:
    script = tmp_path / "task.sh"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\n{body}\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("job", "warned", "outlives"),
    [
        pytest.param("sleep 1000 &", False, False, id="in-the-group"),
        pytest.param("setsid sleep 1000 &", True, False, id="setsid-holding-stdout"),
        # A daemon that let go of all three pipes is not tracked (SPEC 8): it outlives the task.
        pytest.param("setsid sleep 1000 </dev/null >/dev/null 2>&1 &", False, True, id="setsid-detached"),
    ],
)
def test_a_background_job_does_not_hold_the_answer(job, warned, outlives, port, engine_factory, bridge_factory,
                                                   tmp_path):
    engine = engine_factory(port)
    # The pause lets a setsid job leave the group before the script exits, as it would in life.
    script = shell_script(tmp_path, f"{job}\nsleep 0.3\necho '{{\"ok\": 1}}'")
    bridge = bridge_factory(port, [script], "--exec", "--timeout", "5s")
    wait_for(lambda: engine.registrations(), 15, "registration")
    began = time.monotonic()
    engine.send(*[{"config": {"i": i}, "elementJob": f"j{i}"} for i in range(3)])
    answers = engine.wait_answers(3, timeout=30)
    took = time.monotonic() - began
    print(f"{job}: 3 of 3 answered in {took:.2f} s")
    assert took < 5, "answers waited for the background job (or the timeout)"
    assert [a["result"] for a in answers] == [{"ok": 1}] * 3
    warnings = bridge.err.find(r"outside its process group \(setsid\) still held its stdout or stderr: killing it")
    assert bool(warnings) is warned, bridge.log()
    if warned:
        assert "(sleep 1000)" in warnings[0][1]
    if outlives:
        assert len(bridge.leftovers()) == 3
    else:
        wait_for(lambda: bridge.leftovers() == [], 5, "every process of the tasks to be gone")
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0


def test_timeout_applies_though_a_setsid_job_holds_the_pipes(port, engine_factory, bridge_factory, tmp_path):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [shell_script(tmp_path, "setsid sleep 1000 &\nsleep 1000")],
                            "--exec", "--timeout", "1s", "--cancel-grace", "1s")
    wait_for(lambda: engine.registrations(), 15, "registration")
    began = time.monotonic()
    engine.send({"config": {}, "elementJob": "stuck"})
    answer = engine.wait_answers(1, timeout=30)[0]
    assert time.monotonic() - began < 6
    assert answer["info"] == "[timeout] the command did not finish within 1 s"
    wait_for(lambda: bridge.leftovers() == [], 5, "every process of the task to be gone")
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0


def test_no_timeout_lets_a_slow_command_finish(port, engine_factory, bridge_factory, tmp_path):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [shell_script(tmp_path, "sleep 1.5\necho '{\"slow\": true}'")],
                            "--exec", "--timeout", "0s")
    engine.send({"config": {}, "elementJob": "slow"})
    assert engine.wait_answers(1, timeout=30)[0]["result"] == {"slow": True}
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_bad_bytes_in_ids_and_configs_get_a_typed_answer_never_an_internal_error(port, engine_factory,
                                                                                  bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [sys.executable, PROBE], "--exec")
    stdin_mode = {"mode": "stdin"}
    engine.send(
        {"config": stdin_mode, "elementJob": "nul\u0000job"},
        {"config": stdin_mode, "elementJob": "nul-project", "projectId": "p\u0000"},
        # "FLOW_ELEMENT_JOB=" is 17 bytes: with 131,054 more, the exact limit (MAX_ARG_STRLEN - 1).
        {"config": stdin_mode, "elementJob": "at-limit-" + "y" * (131_054 - 9)},
        {"config": stdin_mode, "elementJob": "past-limit-" + "x" * (131_055 - 11)},
        {"config_base64": b64(b'\xff\xfe{"mode": "stdin"}'), "elementJob": "not-utf8"},
        {"config_base64": b64(b'{"mode": "stdin", "x": "\\ud800"}'), "elementJob": "lone-surrogate"},
        {"config_base64": b64(b'{"mode": "stdin", "x": NaN}'), "elementJob": "nan"},
        {"config_base64": b64(b"[" * 100_000 + b"]" * 100_000), "elementJob": "deep"},
    )
    answers = {a["elementJob"][:20]: a for a in engine.wait_answers(8, timeout=60)}
    assert len(answers) == 8
    assert answers["nul\u0000job"]["info"].startswith("[bad_request] elementJob contains a NUL byte")
    assert answers["nul-project"]["info"].startswith("[bad_request] projectId contains a NUL byte")
    assert answers["past-limit-" + "x" * 9]["info"].startswith(
        "[bad_request] elementJob is 131055 bytes long, more than FLOW_ELEMENT_JOB can hold (131054 bytes)")
    assert answers["at-limit-" + "y" * 11]["status"] is True
    seen = {job: json.loads(answers[job]["result"]["stdin"])["config"]
            for job in ("not-utf8", "lone-surrogate", "nan", "deep")}
    assert seen["not-utf8"] == '\ufffd\ufffd{"mode": "stdin"}'
    assert seen["lone-surrogate"] == {"mode": "stdin", "x": "\ud800"}
    assert seen["nan"] == '{"mode": "stdin", "x": NaN}', "NaN is not JSON: the config arrives as text"
    assert len(seen["deep"]) == 200_000
    assert "internal error" not in bridge.log()
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


def test_a_debug_run_keeps_its_first_stderr_lines_and_says_how_many_more(tmp_path):
    script = tmp_path / "chatty.sh"
    script.write_text("#!/bin/sh\ncat > /dev/null\ni=0\n"
                      "while [ $i -lt 1001 ]; do echo \"line $i\" >&2; i=$((i+1)); done\necho '{}'\n")
    script.chmod(0o755)
    done = subprocess.run([*FLOW_BRIDGE, "call", "--quiet", "--exec", "--debug", "--", str(script)],
                          capture_output=True, text=True, timeout=60)
    logs = json.loads(done.stdout)["result"]["logs"]
    assert [entry["msg"] for entry in logs[:2]] == ["line 0", "line 1"] and logs[999]["msg"] == "line 999"
    assert len(logs) == 1001 and logs[-1]["level"] == "warning" and logs[-1]["msg"].startswith("1 more stderr lines")
