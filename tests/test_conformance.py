"""`flow-bridge conformance`, run as a user runs it: a real CLI process against real handlers.

The suite must pass every echo example, name the right check when an example is broken
on purpose (ECHO_BREAK, SPEC.md section 7), and say clearly what is wrong with programs
that are not handlers at all. Misbehaving programs are small shell scripts written to
pytest's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow_bridge.tools.conformance import CHECK_NAMES

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
        pytest.param(["--", "/nonexistent/handler"], "cannot start '/nonexistent/handler': no such file",
                     id="missing-path"),
        pytest.param(["--", "no-such-command-flow-bridge"], "not found on PATH", id="missing-command"),
        pytest.param(["--", str(REPO / "examples")], "it is a directory", id="directory"),
        pytest.param([], "no command given", id="empty"),
        pytest.param(["--"], "no command given", id="empty-after-dashes"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    proc = run_conformance(*argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "passed" not in proc.stdout


def test_not_executable(tmp_path: Path) -> None:
    path = script(tmp_path, "exit 0\n")
    path.chmod(0o644)
    proc = run_conformance("--", str(path))
    assert proc.returncode == 2
    assert "is not executable" in proc.stderr


def test_script_without_shebang(tmp_path: Path) -> None:
    path = tmp_path / "handler"
    path.write_text("echo hello\n")
    path.chmod(0o755)
    proc = run_conformance("--check", "single-task", "--", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Exec format error (a script needs a #! line" in proc.stderr


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
    _assert_handshake_fails(proc, "expected ready as the first frame, got hello")


# An echo handler that breaks one rule, switched by MISBEHAVE, for the checks that the
# ECHO_BREAK modes do not reach. Written to tmp_path; it speaks through the repo's codec.
MISBEHAVING = r"""
import asyncio, json, os, sys
from flow_bridge.protocol import Cancel, Codec, Debug, Error, Hello, Log, Ready, Result, Stop, Task

MODE = os.environ["MISBEHAVE"]
if MODE == "banner":
    print("echo handler starting", flush=True)
out = os.dup(1)
if MODE != "no-redirect":
    os.dup2(2, 1)
codec = Codec()
running = {}
answered = set()

def write(event):
    os.write(out, codec.send(event))

async def handle(ev):
    try:
        cfg = json.loads(ev.config.decode()) if ev.config else None
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        raw = ev.config.decode("latin-1") if MODE == "raw-as-str" else ev.config
        return write(Result(id=ev.id, data={"raw": raw}))
    if "fail" in cfg:
        return write(Error(id=ev.id, message=cfg["fail"]))
    if "print" in cfg:
        print(cfg["print"], flush=True)
    if "log" in cfg:
        write(Log(level="info", msg=cfg["log"], id=ev.id))
    try:
        await asyncio.sleep(cfg.get("sleep_ms", 0) / 1000)
    except asyncio.CancelledError:
        return write(Error(id=ev.id, message="cancelled"))
    payload = cfg.get("payload", "")
    n = len(payload.encode("utf-16-le")) // 2 if MODE == "count-utf16" else len(payload)
    data = {"i": cfg.get("i"), "n": n}
    if "echo" in cfg:
        data["echo"] = cfg["echo"]
    if isinstance(ev, Debug) and MODE != "debug-log-late":
        write(Log(level="info", msg=f"debug {cfg.get('i')}", id=ev.id))
    write(Result(id=ev.id + (1 if MODE == "wrong-id" else 0), data=data))
    if isinstance(ev, Debug) and MODE == "debug-log-late":
        write(Log(level="info", msg=f"debug {cfg.get('i')}", id=ev.id))
    answered.add(ev.id)

async def main():
    loop = asyncio.get_running_loop()
    while chunk := await loop.run_in_executor(None, os.read, 0, 1 << 20):
        if MODE == "strict-keys" and b"x_future" in chunk:
            sys.exit("unknown key")
        for ev in codec.receive_data(chunk):
            if isinstance(ev, Hello):
                if 1 not in ev.protocols and MODE != "any-version":
                    sys.exit(f"speaks [1], offered {list(ev.protocols)}")
                write(Ready(protocol=1, concurrency=64, debug=True))
            elif isinstance(ev, (Task, Debug)):
                if MODE == "sequential":
                    await handle(ev)
                else:
                    running[ev.id] = asyncio.ensure_future(handle(ev))
            elif isinstance(ev, Cancel):
                if ev.id in answered and MODE == "answer-late-cancel":
                    write(Error(id=ev.id, message="cancelled"))
                elif ev.id in running:
                    running[ev.id].cancel()
            elif isinstance(ev, Stop):
                break
        else:
            continue
        break
    await asyncio.gather(*running.values())
    sys.exit(1 if MODE == "exit-1" else 0)

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("mode", "check", "reason_has"),
    [
        # Whether the banner lands before or after hello depends on how fast Python starts;
        # either way the bytes must be shown.
        pytest.param("banner", "handshake", "b'echo handler starting", id="banner"),
        pytest.param("no-redirect", "stdout-protection", "stdout is not a stream of frames", id="no-redirect"),
        pytest.param("raw-as-str", "binary-config", "as msgpack bin, got str", id="raw-as-str"),
        pytest.param("count-utf16", "unicode", "that is the count of UTF-16 units", id="count-utf16"),
        pytest.param("debug-log-late", "debug", "after the result, too late", id="debug-log-late"),
        pytest.param("wrong-id", "single-task", "got a result for id 2, which is not in flight", id="wrong-id"),
        pytest.param("answer-late-cancel", "late-cancel", "id 1 was answered twice", id="answer-late-cancel"),
        pytest.param("sequential", "many-in-flight", "so they must run concurrently", id="sequential"),
        pytest.param("strict-keys", "unknown-fields", "exited with status 1", id="strict-keys"),
        pytest.param("any-version", "version-mismatch", "must not answer ready", id="any-version"),
        pytest.param("exit-1", "stop", "expected exit status 0, the child exited with status 1", id="exit-1"),
    ],
)
def test_misbehaviour_is_caught(tmp_path: Path, mode: str, check: str, reason_has: str) -> None:
    handler = tmp_path / "misbehaving.py"
    handler.write_text(MISBEHAVING)
    proc = run_conformance(
        "--timeout", "3", "--check", check, "--", sys.executable, str(handler), env={"MISBEHAVE": mode}
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = fail_lines(proc.stdout)
    assert list(fails) == [check], proc.stdout
    assert reason_has in fails[check], proc.stdout


def test_misbehaving_handler_is_otherwise_conformant(tmp_path: Path) -> None:
    # Keeps the table above honest: with no misbehaviour switched on, everything passes.
    handler = tmp_path / "misbehaving.py"
    handler.write_text(MISBEHAVING)
    proc = run_conformance("--", sys.executable, str(handler), env={"MISBEHAVE": "none"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


EXAMPLES = sorted(ECHO.glob("*/run"))
assert PY_ECHO in EXAMPLES, f"{PY_ECHO} is missing"


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
@pytest.mark.parametrize("run", [pytest.param(p, id=p.parent.name) for p in EXAMPLES])
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
@pytest.mark.parametrize("run", [pytest.param(p, id=p.parent.name) for p in EXAMPLES])
def test_every_echo_example_passes(run: Path) -> None:
    warm_up(run)
    proc = run_conformance("--", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert check_lines(proc.stdout) == [f"PASS {name}" for name in CHECK_NAMES]
    assert proc.stdout.splitlines()[-1] == SUMMARY_ALL
