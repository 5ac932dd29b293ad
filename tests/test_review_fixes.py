"""The outside review's three defects, each through the real CLI and real processes.

1. A stop signal during the handshake stops the start at once (exit 0, nothing registers).
2. After SIGKILL of the bridge (and after a normal stop), nothing that carries the run's
   marker survives, `setsid` escapees included (Linux: the watchdog reads /proc).
3. A port that speaks gRPC but is not the flow engine is never reported as registered.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from conftest import ECHO_PY, LineCollector, close_pipes, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Generous: the grace (2 s) plus SIGTERM's wait (2 s) would be the worst case; a stop that
# waited for --start-timeout (40 s) is far beyond it.
STOP_BOUND = 8.0
# How long the watchdog may take to end everything after the bridge is gone.
WATCHDOG_BOUND = 5.0


def run_marker_of(pid: int) -> str | None:
    """The FLOW_BRIDGE_RUN value in a process's environment, if it carries one."""
    try:
        environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in environ.split(b"\0"):
        if item.startswith(b"FLOW_BRIDGE_RUN="):
            return item.split(b"=", 1)[1].decode()
    return None


def carrying(run_id: str) -> list[int]:
    """Live (not zombie) processes whose environment carries FLOW_BRIDGE_RUN=run_id."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit() and run_marker_of(int(entry.name)) == run_id:
            try:
                if (entry / "stat").read_text().split(") ")[-1][:1] != "Z":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def command_line(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def with_command(bridge: object, text: str) -> list[int]:
    return [pid for pid in bridge.leftovers() if text in command_line(pid)]  # type: ignore[attr-defined]


# --- 1. a stop signal during the handshake -----------------------------------------------------


@pytest.mark.parametrize("signals", [1, 2], ids=["once", "twice"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_during_a_long_handshake_stops_at_once(sig, signals, tmp_path, port, engine_factory,
                                                        bridge_factory):
    never = tmp_path / "never.py"
    never.write_text("import time\ntime.sleep(1000)\n")
    engine = engine_factory(port)
    bridge = bridge_factory(port, [sys.executable, str(never)], "--start-timeout", "40s", "--grace", "2s")
    wait_for(lambda: with_command(bridge, "never.py"), 15, "the handler to start")
    began = time.monotonic()
    for _ in range(signals):
        bridge.signal(sig)
        time.sleep(0.2)
    code = bridge.wait(30)
    elapsed = time.monotonic() - began
    print(f"{sig.name} x{signals}: exit {code} after {elapsed:.2f} s")
    assert code == 0, bridge.log()
    assert elapsed < STOP_BOUND, bridge.log()
    assert "Traceback" not in bridge.log()
    assert "did not complete the handshake" not in bridge.log()
    assert "stopped before registering with the engine" in bridge.log()
    wait_for(lambda: not bridge.leftovers(), 5, "no process left behind")
    assert engine.registrations() == [], "the plugin registered although it was stopped during its start"


def test_a_signal_stops_a_handler_that_reaches_serve_late(tmp_path, port, engine_factory, bridge_factory):
    late = tmp_path / "late.py"
    late.write_text(
        "import subprocess, time\n"
        "subprocess.Popen(['sleep', '3003'])\n"
        "time.sleep(6)\n"
        "from flow_bridge.adapter import serve\n"
        "async def execute(request):\n"
        "    return {}\n"
        "serve(execute)\n"
    )
    engine = engine_factory(port)
    bridge = bridge_factory(port, [sys.executable, str(late)], "--start-timeout", "40s", "--grace", "2s")
    wait_for(lambda: with_command(bridge, "sleep 3003"), 15, "the handler to start")
    began = time.monotonic()
    bridge.signal(signal.SIGTERM)
    code = bridge.wait(30)
    elapsed = time.monotonic() - began
    print(f"late handler: exit {code} after {elapsed:.2f} s")
    assert code == 0, bridge.log()
    assert elapsed < 4.0, "the bridge waited for the handshake instead of stopping"
    wait_for(lambda: not bridge.leftovers(), 5, "no process left behind")
    assert engine.registrations() == []


# --- 2. setsid escapees die with the bridge ------------------------------------------------------


def escaped(bridge: object, escapee: str) -> list[int]:
    # `setsid sleep N` shows the escapee's text before it has called setsid() and exec'd
    # sleep: only a process that leads its own group has escaped yet.
    return [pid for pid in with_command(bridge, escapee) if os.getpgid(pid) == pid]


def sigkill_and_check(bridge: object, escapee: str, count: int) -> None:
    wait_for(lambda: len(escaped(bridge, escapee)) >= count, 30, f"{count} {escapee!r} in groups of their own")
    pids = with_command(bridge, escapee)
    assert len(pids) == count, f"more {escapee!r} processes than tasks: {pids}"
    run_ids = {run_marker_of(pid) for pid in pids}
    assert len(run_ids) == 1 and None not in run_ids, f"escapees without the run's marker: {run_ids}"
    run_id = run_ids.pop()
    assert run_id is not None
    for pid in pids:  # they did leave the handler's group: the group kill cannot reach them
        assert os.getpgid(pid) == pid
    bridge.proc.kill()  # type: ignore[attr-defined]
    bridge.proc.wait()  # type: ignore[attr-defined]
    killed = time.monotonic()
    wait_for(lambda: not carrying(run_id), WATCHDOG_BOUND, f"nothing with FLOW_BRIDGE_RUN={run_id} left")
    print(f"{len(pids)} escapees ended {time.monotonic() - killed:.2f} s after the bridge's SIGKILL")
    assert not bridge.leftovers()  # type: ignore[attr-defined]


def test_exec_setsid_escapees_die_with_a_killed_bridge(tmp_path, port, engine_factory, bridge_factory):
    script = tmp_path / "escape.sh"
    script.write_text("#!/bin/sh\ncat > /dev/null\nsetsid sleep 3011 &\nsleep 100\n")
    script.chmod(0o755)
    engine = engine_factory(port)
    bridge = bridge_factory(port, [str(script)], "--exec", "--max-inflight", "10", "--timeout", "off")
    engine.send(*({"config": {"i": i}, "elementJob": f"e{i}"} for i in range(10)))
    sigkill_and_check(bridge, "sleep 3011", 10)


def test_adapter_setsid_escapees_die_with_a_killed_bridge(tmp_path, port, engine_factory, bridge_factory):
    handler = tmp_path / "escape.py"
    handler.write_text(
        "import asyncio, subprocess\n"
        "from flow_bridge.adapter import serve\n"
        "async def execute(request):\n"
        "    subprocess.Popen(['setsid', 'sleep', '3021'])\n"
        "    await asyncio.sleep(60)\n"
        "    return {}\n"
        "serve(execute)\n"
    )
    engine = engine_factory(port)
    bridge = bridge_factory(port, [sys.executable, str(handler)], "--timeout", "off")
    engine.send(*({"config": {"i": i}, "elementJob": f"a{i}"} for i in range(3)))
    sigkill_and_check(bridge, "sleep 3021", 3)


def test_a_stopped_bridge_leaves_no_daemon_with_its_marker(tmp_path, port, engine_factory, bridge_factory):
    # A proper daemon: it left the group and let go of the task's output, so the task ends
    # without it (SPEC 8) and it runs on; the bridge's own stop ends it.
    script = tmp_path / "daemon.sh"
    script.write_text("#!/bin/sh\ncat > /dev/null\nsetsid sleep 3031 < /dev/null > /dev/null 2>&1 &\n"
                      "sleep 0.5\necho '{}'\n")  # the daemon has left the group before the task ends
    script.chmod(0o755)
    engine = engine_factory(port)
    bridge = bridge_factory(port, [str(script)], "--exec")
    engine.send({"config": {}, "elementJob": "d0"})
    assert engine.wait_answers(1, 30)[0]["status"], engine.answers()
    wait_for(lambda: with_command(bridge, "sleep 3031"), 10, "the daemon")
    run_id = run_marker_of(with_command(bridge, "sleep 3031")[0])
    assert run_id
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(30) == 0, bridge.log()
    wait_for(lambda: not carrying(run_id), WATCHDOG_BOUND, "the daemon to be ended with the bridge")
    assert not bridge.leftovers()


# --- 3. a gRPC port that is not the engine ---------------------------------------------------------

NOT_AN_ENGINE = """
import asyncio, sys, grpc

class Count(grpc.GenericRpcHandler):
    def service(self, details):
        print(details.method, flush=True)
        return None  # no such method: UNIMPLEMENTED

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Count(),))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    print("listening", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


def test_a_grpc_port_that_is_not_the_engine_is_never_registered(tmp_path, port, bridge_factory):
    script = tmp_path / "not_an_engine.py"
    script.write_text(NOT_AN_ENGINE)
    server = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE)
    calls = LineCollector(server.stdout)
    try:
        wait_for(lambda: calls.find("listening"), 15, "the gRPC server")
        bridge = bridge_factory(port, [ECHO_PY], "--retry-interval", "2s")
        watched = 7.0
        time.sleep(watched)
        bridge.signal(signal.SIGTERM)
        assert bridge.wait(30) == 0, bridge.log()
        log = bridge.log()
        registers = len(calls.find("/engine.PluginService/Register"))
        print(f"{registers} Register calls in {watched:g} s; log:\n{log}")
        assert "registered with the engine" not in log
        advice = ("answers gRPC but has no engine.PluginService/Register: is this the flow engine's port?")
        assert log.count(advice) == 1, log
        assert f"127.0.0.1:{port}" in log.split(advice)[0].splitlines()[-1]
        # On the retry interval (2 s), not in a loop: at most one more than the intervals.
        assert 1 <= registers <= watched / 2 + 1
        assert len(calls.find("/engine.PluginService/DebugStream")) == 0, "DebugStream opened before registering"
    finally:
        close_pipes(server, calls)


def test_the_stand_in_engine_still_registers_at_once(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY])
    wait_for(lambda: bridge.err.find("registered with the engine"), 30, "registered")
    registered_at = bridge.err.find("registered with the engine")[0][0]
    assert engine.registrations(), "the engine saw no registration"
    lag = registered_at - engine.registrations()[0]
    print(f"'registered' logged {lag:.2f} s after the engine took the stream")
    assert lag < 2.0
    engine.send({"config": {"x": 1}, "elementJob": "r0"})
    assert engine.wait_answers(1, 30)[0]["status"]
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(30) == 0
