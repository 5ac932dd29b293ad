"""`flow-bridge conformance`, run as a user runs it: a real CLI process against real handlers.

The suite must pass every echo example, name the right check when an example is broken
on purpose (ECHO_BREAK, SPEC.md section 7) or when tests/handlers/conformance_echo.py breaks
one rule, grade a handler made by `flow-bridge init` with --protocol-only, and say clearly
what is wrong with programs that are not handlers at all (small shell scripts written to
pytest's tmp_path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FLOW_BRIDGE
from flow_bridge.tools.conformance import CHECK_NAMES, PROTOCOL_CHECK_NAMES

REPO = Path(__file__).resolve().parents[1]
ECHO = REPO / "examples" / "echo"
PY_ECHO = ECHO / "python" / "run"
SUMMARY_ALL = f"{len(CHECK_NAMES)} passed, 0 failed"


def _conformance_argv() -> list[str]:
    """The installed console script, the way a user runs the suite."""
    script = Path(sys.executable).with_name("flow-bridge")
    exe = str(script) if script.exists() else shutil.which("flow-bridge")
    assert exe, "the flow-bridge console script is not installed: pip install -e '.[test]'"
    return [exe, "conformance"]


CONFORMANCE = _conformance_argv()


def run_conformance(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ECHO_BREAK"}
    full_env.update(env or {})
    return subprocess.run(
        [*CONFORMANCE, *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


def fail_lines(out: str) -> dict[str, str]:
    """{check name: reason} for every FAIL line."""
    fails = {}
    for line in out.splitlines():
        if line.startswith("FAIL "):
            name, _, reason = line[5:].partition(": ")
            fails[name] = reason
    return fails


def check_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("PASS ", "FAIL "))]


def script(tmp_path: Path, body: str, name: str = "handler") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_verbose_shows_the_ready_frame() -> None:
    proc = run_conformance("--verbose", "--check", "handshake", "--", str(PY_ECHO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("PASS handshake  (")
    assert "protocol 1, concurrency" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "1 passed, 0 failed"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--", "/nonexistent/handler"], "Error: /nonexistent/handler: no such file", id="missing-path"),
        pytest.param(["--", "no-such-command-flow-bridge"],
                     "Error: no-such-command-flow-bridge: command not found on PATH; give a path such as ./",
                     id="missing-command"),
        pytest.param(["--", str(REPO / "examples")], "is a directory; name the executable inside it",
                     id="directory"),
        pytest.param([], "Error: no command given: put the handler's command after --", id="empty"),
        pytest.param(["--"], "Error: no command given", id="empty-after-dashes"),
        pytest.param(["--protocol-only", "--check", "debug", "--", str(PY_ECHO)],
                     "Error: --check debug needs the echo contract, so it cannot run with --protocol-only",
                     id="echo-check-in-protocol-only"),
        pytest.param(["--jobs", "0", "--", str(PY_ECHO)], "0 is not in the range x>=1", id="jobs-0"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    proc = run_conformance(*argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "passed" not in proc.stdout and "Traceback" not in proc.stderr


def test_not_executable(tmp_path: Path) -> None:
    path = script(tmp_path, "exit 0\n")
    path.chmod(0o644)
    proc = run_conformance("--", str(path))
    assert proc.returncode == 2
    assert f"Error: {path} is not executable: run `chmod +x {path}`" in proc.stderr


def test_script_without_shebang(tmp_path: Path) -> None:
    path = tmp_path / "handler"
    path.write_text("echo hello\n")
    path.chmod(0o755)
    proc = run_conformance("--check", "single-task", "--", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot be executed (exec format error)" in proc.stderr and "without a `#!` line" in proc.stderr


def _assert_handshake_fails(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = fail_lines(proc.stdout)
    assert set(fails) == set(CHECK_NAMES), proc.stdout
    for name in CHECK_NAMES[1:]:
        assert fails[name] == "not run: the handshake failed (see above)"
    for needle in needles:
        assert needle in fails["handshake"], proc.stdout
    assert proc.stdout.splitlines()[-1] == f"0 passed, {len(CHECK_NAMES)} failed"
    return fails["handshake"]


def test_garbage_before_hello(tmp_path: Path) -> None:
    path = script(tmp_path, 'echo "this is not a frame"\nexit 0\n')
    proc = run_conformance("--", str(path))
    _assert_handshake_fails(proc, "before it was sent hello", "b'this is not a frame\\n'")


def test_garbage_after_hello(tmp_path: Path) -> None:
    # Reads the hello's length, then answers with text: the usual stray print.
    path = script(tmp_path, 'head -c 4 >/dev/null\necho "Loading model, please wait"\nsleep 30\n')
    proc = run_conformance("--timeout", "5", "--", str(path))
    _assert_handshake_fails(
        proc, "stdout is not a stream of frames", "b'Loading model, please wait\\n'", "move fd 1 to stderr"
    )


def test_short_garbage_is_reported_not_waited_on_forever(tmp_path: Path) -> None:
    # Two bytes are not even a frame header: the codec waits for more, the timeout ends it.
    path = script(tmp_path, "head -c 4 >/dev/null\nprintf ok\nsleep 30\n")
    proc = run_conformance("--timeout", "1", "--", str(path))
    _assert_handshake_fails(
        proc, "no ready in answer to hello within 1 s", "2 bytes that are not a whole frame", "b'ok'"
    )


def test_exit_before_ready_shows_status_and_stderr(tmp_path: Path) -> None:
    path = script(tmp_path, "head -c 4 >/dev/null\necho 'ImportError: no module named handler' >&2\nexit 3\n")
    proc = run_conformance("--", str(path))
    _assert_handshake_fails(proc, "exited with status 3", "ImportError: no module named handler")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def test_never_answers_hello_and_whole_group_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # A grandchild too: the suite must kill the child's whole process group.
    path = script(tmp_path, f"sleep 60 &\necho $! >> {pids}\necho $$ >> {pids}\nexec sleep 60\n")
    started = time.monotonic()
    proc = run_conformance("--timeout", "1", "--", str(path), timeout=30)
    took = time.monotonic() - started
    reason = _assert_handshake_fails(proc, "no ready in answer to hello within 1 s", "flow-bridge adapter")
    assert "stdout holds" not in reason
    assert took < 15
    deadline = time.monotonic() + 5
    left = [int(p) for p in pids.read_text().split()]
    assert len(left) == 2
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        time.sleep(0.05)
    assert not left, f"processes {left} outlived the suite"


def test_child_that_echoes_frames_back(tmp_path: Path) -> None:
    # `cat` answers hello with hello: a valid frame, the wrong one.
    proc = run_conformance("--timeout", "2", "--", "cat")
    _assert_handshake_fails(proc, "the child sent a hello message, which only the bridge sends (unexpected)")


# An echo handler that breaks one rule, switched by scenario name, for the checks that the
# ECHO_BREAK modes do not reach. It speaks through the repository's codec, with no adapter.
BROKEN = [sys.executable, str(REPO / "tests" / "handlers" / "conformance_echo.py")]
MISBEHAVIOURS = [
    # Whether the banner lands before or after hello depends on how fast Python starts;
    # either way the bytes must be shown.
    pytest.param("banner", {"handshake"}, "b'echo handler starting", id="banner"),
    pytest.param("no-redirect", {"stdout-protection"}, "stdout is not a stream of frames", id="no-redirect"),
    pytest.param("raw-as-str", {"binary-config"}, "as msgpack bin, got str", id="raw-as-str"),
    pytest.param("count-utf16", {"unicode"}, "that is the count of UTF-16 units", id="count-utf16"),
    pytest.param("debug-log-late", {"debug"}, "after the result, too late", id="debug-log-late"),
    pytest.param("wrong-id", {"single-task"}, "the child answered id 2: it is not in flight", id="wrong-id"),
    pytest.param("answer-late-cancel", {"late-cancel"},
                 "the child answered id 1: it was answered already (first result, then error) (unknown_id)",
                 id="answer-late-cancel"),
    pytest.param("sequential", {"many-in-flight"}, "so they must run concurrently", id="sequential"),
    pytest.param("strict-keys", {"unknown-fields"}, "exited with status 1", id="strict-keys"),
    pytest.param("any-version", {"version-mismatch"}, "must not answer ready", id="any-version"),
    pytest.param("exit-1", {"stop"}, "expected exit status 0, the child exited with status 1", id="exit-1"),
    pytest.param("answer-70th-twice", {"long-run"},
                 "the child answered id 70: it was answered already (first result, then result)", id="70th-twice"),
    pytest.param("ignore-max-frame", {"max-frame", "result-too-large"}, "max_frame", id="ignore-max-frame"),
    pytest.param("too-large-at-the-limit", {"result-too-large"},
                 "a result of exactly max_frame (65536) bytes was answered with error", id="too-large-at-the-limit"),
    pytest.param("too-large-wrong-size", {"result-too-large"},
                 "expected the error message 'result too large: 65537 bytes, the limit is 65536 (hello.max_frame); "
                 "return less data'", id="too-large-wrong-size"),
    pytest.param("answer-unknown-cancel", {"unknown-cancel"},
                 "the child answered id 4242: it is not in flight",
                 id="answer-unknown-cancel"),
]


@pytest.mark.parametrize(("mode", "checks", "reason_has"), MISBEHAVIOURS)
def test_misbehaviour_is_caught(mode: str, checks: set[str], reason_has: str) -> None:
    only = [arg for name in sorted(checks) for arg in ("--check", name)]
    proc = run_conformance("--timeout", "5", *only, "--", *BROKEN, mode)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = fail_lines(proc.stdout)
    assert set(fails) == checks, proc.stdout
    for name in checks:
        assert reason_has in fails[name], proc.stdout


def test_the_broken_handlers_are_otherwise_conformant() -> None:
    # Keeps the table above honest: with no misbehaviour switched on, every check passes.
    proc = run_conformance("--", *BROKEN, "ok")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert check_lines(proc.stdout) == [f"PASS {name}" for name in CHECK_NAMES]


@pytest.mark.parametrize(("mode", "check", "reason_has"), [
    pytest.param("ignore-max-frame", "max-frame", "frame of 17825792 bytes exceeds the limit of 16777216",
                 id="ignore-max-frame"),
    pytest.param("answer-70th-twice", "long-run", "the child answered id 70: it was answered already",
                 id="70th-twice"),
    pytest.param("answer-unknown-cancel", "unknown-cancel", "the child answered id 4242: it is not in flight",
                 id="answer-unknown-cancel"),
])
def test_protocol_only_catches_what_needs_no_echo(mode: str, check: str, reason_has: str) -> None:
    proc = run_conformance("--protocol-only", "--", *BROKEN, mode)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = fail_lines(proc.stdout)
    assert list(fails) == [check], proc.stdout
    assert reason_has in fails[check], proc.stdout
    assert proc.stdout.splitlines()[-1] == f"{len(PROTOCOL_CHECK_NAMES) - 1} passed, 1 failed"


EXAMPLES = sorted(ECHO.glob("*/run"))
assert PY_ECHO in EXAMPLES, f"{PY_ECHO} is missing"
# Tools an example needs to build itself; without them it is skipped with the reason, not failed.
TOOLCHAINS = {"java": ("java", "mvn")}


def example_param(run: Path) -> object:
    missing = [tool for tool in TOOLCHAINS.get(run.parent.name, ()) if shutil.which(tool) is None]
    marks = [pytest.mark.skip(reason=f"{', '.join(missing)} not installed")] if missing else []
    return pytest.param(run, id=run.parent.name, marks=marks)


BREAKS = [
    pytest.param("ignore-cancel", {"cancel"}, "within 5 s: after cancel", id="ignore-cancel"),
    pytest.param("count-bytes", {"unicode"}, "the count of UTF-8 bytes", id="count-bytes"),
    pytest.param("no-debug", {"debug", "handshake"}, "ready.debug is false", id="no-debug"),
    # SPEC 2.5: the stop hook runs only after the start hook, so a child that refused
    # hello still exits even though its stop hook would hang.
    pytest.param("hang-on-stop", {"stop", "stdin-eof"}, "had not exited", id="hang-on-stop"),
]
_warmed: set[Path] = set()


def warm_up(run: Path) -> None:
    """Some examples build themselves on their first run; let that happen once, unhurried."""
    if run not in _warmed:
        warm = run_conformance("--timeout", "600", "--check", "handshake", "--", str(run), timeout=700)
        assert warm.returncode == 0, warm.stdout + warm.stderr
        _warmed.add(run)


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("mode", "required", "reason_has"), BREAKS)
@pytest.mark.parametrize("run", [example_param(p) for p in EXAMPLES])
def test_each_adapter_fails_clearly_when_broken_on_purpose(
    run: Path, mode: str, required: set[str], reason_has: str
) -> None:
    warm_up(run)
    proc = run_conformance("--timeout", "5", "--", str(run), env={"ECHO_BREAK": mode})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = fail_lines(proc.stdout)
    assert fails.keys() == required, proc.stdout
    for name in required:
        assert reason_has in fails[name] or name == "handshake", proc.stdout
    assert proc.stdout.splitlines()[-1] == f"{len(CHECK_NAMES) - len(fails)} passed, {len(fails)} failed"




@pytest.mark.timeout(900)
@pytest.mark.parametrize("run", [example_param(p) for p in EXAMPLES])
def test_every_echo_example_passes(run: Path) -> None:
    warm_up(run)
    proc = run_conformance("--", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert check_lines(proc.stdout) == [f"PASS {name}" for name in CHECK_NAMES]
    assert proc.stdout.splitlines()[-1] == SUMMARY_ALL


# --- --protocol-only: any handler, such as one made by `flow-bridge init` ---------------

# Each language `init` writes, with the tool its first build needs (None: none). Go and
# Rust build on init, which is slow the first time.
INIT_LANGS = {"python": None, "node": "node", "go": "go", "rust": "cargo"}
INIT_TIMEOUTS = {"go": 300, "rust": 900}


def _init_params() -> list[object]:
    params = []
    for lang, tool in INIT_LANGS.items():
        marks = [pytest.mark.timeout(INIT_TIMEOUTS.get(lang, 120))]
        if lang in INIT_TIMEOUTS:
            marks.append(pytest.mark.slow)
        if tool and shutil.which(tool) is None:
            marks.append(pytest.mark.skip(reason=f"{tool} is not installed"))
        params.append(pytest.param(lang, id=lang, marks=marks))
    return params


@pytest.mark.parametrize("lang", _init_params())
def test_protocol_only_passes_a_handler_made_by_init(lang: str, tmp_path: Path) -> None:
    made = subprocess.run([*FLOW_BRIDGE, "init", str(tmp_path / "p"), "--lang", lang, "--name", "mine"],
                          capture_output=True, text=True, timeout=800, check=False)
    assert made.returncode == 0, made.stderr
    proc = run_conformance("--protocol-only", "--", str(tmp_path / "p" / "run"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert check_lines(proc.stdout) == [f"PASS {name}" for name in PROTOCOL_CHECK_NAMES]
    assert proc.stdout.splitlines()[-1] == f"{len(PROTOCOL_CHECK_NAMES)} passed, 0 failed"
    # The full suite needs the echo contract, which an init handler does not keep: it says where to go.
    full = run_conformance("--check", "single-task", "--", str(tmp_path / "p" / "run"))
    assert full.returncode == 1
    assert "Check it with --protocol-only" in full.stderr


def test_protocol_only_checks_are_named_in_help() -> None:
    proc = run_conformance("--help")
    assert proc.returncode == 0
    assert "--protocol-only" in proc.stdout
    squeezed = "".join(proc.stdout.split())  # help text wraps, even inside a hyphenated name
    assert "With--protocol-only:" + ",".join(PROTOCOL_CHECK_NAMES) in squeezed
    assert {"handshake", "stop", "stdin-eof", "unknown-cancel", "stdout-protection", "max-frame"} <= set(
        PROTOCOL_CHECK_NAMES)
