"""A handler that cannot start stops `run` with a clear message and a non-zero exit,
before anything registers with the engine; bad settings exit 2 in click's error style."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ECHO_PY, FLOW_BRIDGE, MISBEHAVE


def run_bridge(port: int, *command: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLOW_BRIDGE, "run", "--host", "127.0.0.1", "--port", str(port), *extra, "--", *command],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    ("command", "extra", "expected"),
    [
        pytest.param([sys.executable, MISBEHAVE, "crash-at-start"], (),
                     ["exited with status 4", "permission denied"], id="exits-at-start"),
        pytest.param([sys.executable, MISBEHAVE, "silent"], ("--start-timeout", "1s"),
                     ["did not complete the handshake in 1 s", "adapter", "--exec"], id="never-answers-hello"),
        pytest.param([sys.executable, MISBEHAVE, "bad-version"], (),
                     ["chose protocol 99", "upgrade"], id="bad-version"),
        pytest.param(["sh", "-c", "echo starting up; sleep 5"], (),
                     ["wrote text to stdout", "starting up"], id="prints-text-instead-of-frames"),
        pytest.param(["./no-such-handler"], (), ["no such file"], id="not-found"),
        pytest.param(["no-such-command-anywhere"], (), ["command not found on PATH"], id="not-on-path"),
    ],
)
def test_start_failure_is_explained(port, engine_factory, command, extra, expected):
    engine = engine_factory(port)
    done = run_bridge(port, *command, extra=extra)
    assert done.returncode == 1, done.stderr
    message = done.stderr.strip().splitlines()
    text = done.stderr
    assert any(line.startswith("Error: the handler failed to start") for line in message), text
    for fragment in expected:
        assert fragment in text, text
    assert engine.registrations() == [], "it registered although the handler never started"


def test_not_executable_and_bad_interpreter(port, tmp_path):
    plain = tmp_path / "handler.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    done = run_bridge(port, str(plain))
    assert done.returncode == 1
    assert "is not executable: run `chmod +x" in done.stderr

    bad = tmp_path / "bad.py"
    bad.write_text("#!/opt/nowhere/python9\nprint('hi')\n")
    bad.chmod(0o755)
    done = run_bridge(port, str(bad))
    assert done.returncode == 1
    assert "interpreter line `#!/opt/nowhere/python9`" in done.stderr


@pytest.mark.parametrize(
    ("args", "option", "fragment"),
    [
        pytest.param(["--timeout", "soon"], "Invalid value for '--timeout'", "'soon' is not a duration", id="duration"),
        pytest.param(["--port", "99999"], "Invalid value for '--port'", "99999 is not in the range", id="port"),
        pytest.param(["--type", "daemon"], "Invalid value for '--type'", "'daemon' is not one of", id="type"),
        pytest.param(["--max-inflight", "0"], "Invalid value for '--max-inflight'", "0 is not in the range x>=1",
                     id="inflight"),
    ],
)
def test_bad_flag_is_a_usage_error_and_exit_2(args, option, fragment):
    done = subprocess.run([*FLOW_BRIDGE, "run", *args, "--", ECHO_PY], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: {option}") and fragment in last, done.stderr


def test_bad_config_file_names_file_and_key(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("flow-engine:\n  host: 127.0.0.1\n  port: not-a-port\n")
    done = subprocess.run([*FLOW_BRIDGE, "run", "--config", str(config), "--", ECHO_PY],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"{config}: flow-engine.port: 'not-a-port' is not a whole number" in done.stderr

    config.write_text("flow-engine: [unclosed\n")
    done = subprocess.run([*FLOW_BRIDGE, "run", "--config", str(config), "--", ECHO_PY],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "not valid YAML (line" in done.stderr


def test_no_command_given():
    done = subprocess.run([*FLOW_BRIDGE, "run"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "no handler command given" in done.stderr


def test_a_start_timeout_during_a_build_says_build_first_or_wait_longer(port, engine_factory, tmp_path):
    engine = engine_factory(port)
    slow = tmp_path / "run"
    slow.write_text("#!/bin/sh\necho 'building the handler (first start, or the sources changed)...' >&2\n"
                    "echo '   Compiling handler v0.1.0' >&2\nsleep 30\n")
    slow.chmod(0o755)
    done = run_bridge(port, str(slow), extra=("--start-timeout", "1s"))
    assert done.returncode == 1, done.stderr
    assert "it was still building" in done.stderr and "--start-timeout" in done.stderr
    assert "use exec mode" not in done.stderr
    assert engine.registrations() == []


def test_call_with_a_declared_name_the_platform_refuses_exits_2_as_run_does(tmp_path):
    handler = tmp_path / "spaced.py"
    handler.write_text(
        "from flow_bridge.adapter import serve\n"
        "async def execute(request):\n"
        "    return {}\n"
        "serve(execute, name='my plugin')\n"
    )
    done = subprocess.run([*FLOW_BRIDGE, "call", "--", sys.executable, str(handler)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "the handler declared its name as 'my plugin'" in done.stderr and "--name" in done.stderr
