"""Several plugins in one service: `flow-bridge run --config service.yml` with a plugins: list.

Real processes, real gRPC on loopback, the real CLI: the stand-in engine (`flow-bridge
engine`) routes each task line to the plugin it names, and `flow-bridge run` serves every
entry of a service file over one channel. Each test prints what it measured.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ECHO_PY, FLOW_BRIDGE, MISBEHAVE, ROOT, LineCollector, close_pipes, processes_with_marker, wait_for

PROBE = str(ROOT / "tests" / "handlers" / "engine_probe.py")
EXEC_ECHO = str(ROOT / "examples" / "exec" / "bash" / "run")
NODE_ECHO = str(ROOT / "examples" / "echo" / "node" / "run")
# The fault test's healthy plugin serves this many tasks while its neighbours misbehave.
HEALTHY_TASKS = 1000
MiB = 1024 * 1024


class Service:
    """`flow-bridge run --config FILE` as a subprocess, marked so that leftovers can be found."""

    def __init__(self, config: pathlib.Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.marker = uuid.uuid4().hex
        self.proc = subprocess.Popen(
            [*FLOW_BRIDGE, "run", "--config", str(config), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "FLOW_BRIDGE_TEST_MARKER": self.marker, **(env or {})},
        )
        self.out = LineCollector(self.proc.stdout)
        self.err = LineCollector(self.proc.stderr)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self.err.join()
        return code

    def log(self) -> str:
        return "\n".join(self.err.texts())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        self.proc.send_signal(sig)
        assert self.wait(timeout) == 0, self.log()
        assert "Traceback" not in self.log(), self.log()


@pytest.fixture
def service_factory() -> Iterator[Any]:
    made: list[Service] = []

    def make(config: pathlib.Path, *args: str, env: dict[str, str] | None = None) -> Service:
        service = Service(config, *args, env=env)
        made.append(service)
        return service

    yield make
    for service in made:
        close_pipes(service.proc, service.out, service.err)
        for pid in processes_with_marker(service.marker, exclude=service.proc.pid):
            os.kill(pid, signal.SIGKILL)


def write_service(path: pathlib.Path, port: int, plugins: list[dict[str, Any]], **plugin: Any) -> pathlib.Path:
    """A service file: the engine on loopback, the shared plugin: section, the plugins: list."""
    doc = {
        "flow-engine": {"host": "127.0.0.1", "port": port, "heartbeat-interval": "1s"},
        "plugin": {"grace": "5s", **plugin},
        "plugins": plugins,
    }
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def registered(engine: Any) -> collections.Counter[str]:
    """How many times each plugin name registered with the stand-in engine."""
    return collections.Counter(line.split("name=")[1].split()[0] for _, line in engine.err.find("plugin registered"))


def by_plugin(answers: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for answer in answers:
        grouped[answer.get("plugin", "")].append(answer)
    return grouped


def one_each(answers: list[dict[str, Any]]) -> None:
    jobs = collections.Counter(a["elementJob"] for a in answers)
    assert all(count == 1 for count in jobs.values()), f"duplicate answers: {jobs.most_common(3)}"


# --- serving -------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [pytest.param(1, id="1-plugin"), pytest.param(2, id="2-plugins")])
def test_each_plugin_registers_and_answers_under_its_own_name(count, tmp_path, port, engine_factory,
                                                               service_factory):
    plugins = [{"name": f"echo{n}", "command": [ECHO_PY], "type": "user" if n else "service"} for n in range(count)]
    service = service_factory(write_service(tmp_path / "service.yml", port, plugins))
    engine = engine_factory(port)
    wait_for(lambda: len(registered(engine)) == count, 30, f"{count} registrations")
    engine.send(*[{"plugin": f"echo{n}", "config": {"i": i}, "elementJob": f"p{n}-{i}"}
                  for i in range(20) for n in range(count)])
    answers = engine.wait_answers(20 * count)
    one_each(answers)
    grouped = by_plugin(answers)
    for n in range(count):
        mine = grouped[f"echo{n}"]
        assert len(mine) == 20 and all(a["status"] for a in mine), mine[:2]
        assert {a["elementJob"].split("-")[0] for a in mine} == {f"p{n}"}
    modes = {line.split("name=")[1] for _, line in engine.err.find("plugin registered")}
    assert {m.split(" (")[0] for m in modes} == {f"echo{n} mode={'user' if n else 'service'}" for n in range(count)}
    print(f"{count} plugin(s): {len(answers)} answers, registrations {dict(registered(engine))}")
    service.stop()


def test_python_node_and_exec_plugins_in_one_service(tmp_path, port, engine_factory, service_factory):
    if not os.path.exists("/usr/bin/node") and not any(
        os.access(os.path.join(d, "node"), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep)
    ):
        pytest.skip("node is not on PATH; install Node.js 20+ to run the Node plugin")
    plugins = [
        {"name": "pyEcho", "command": ECHO_PY},
        {"name": "nodeEcho", "command": [NODE_ECHO], "start-timeout": "120s"},
        {"name": "shEcho", "command": EXEC_ECHO, "exec": True},
    ]
    service = service_factory(write_service(tmp_path / "service.yml", port, plugins))
    engine = engine_factory(port)
    wait_for(lambda: len(registered(engine)) == 3, 150, "3 registrations")
    names = [p["name"] for p in plugins]
    engine.send(*[{"plugin": name, "config": {"i": i, "payload": name}, "elementJob": f"{name}-{i}"}
                  for i in range(5) for name in names])
    engine.send({"plugin": "pyEcho", "config": {"i": 99}, "elementJob": "dbg", "debug": True})
    answers = engine.wait_answers(16)
    one_each(answers)
    grouped = by_plugin(answers)
    for name in names:
        assert all(a["status"] and a["elementJob"].startswith(name) for a in grouped[name] if not a.get("debug"))
        assert len([a for a in grouped[name] if not a.get("debug")]) == 5
    assert [a["result"]["value"]["i"] for a in answers if a.get("debug")] == [99]
    service.stop()


def test_engine_plugin_option_routes_unnamed_lines(tmp_path, port, engine_factory, service_factory):
    plugins = [{"name": "first", "command": [ECHO_PY]}, {"name": "second", "command": [ECHO_PY]}]
    service = service_factory(write_service(tmp_path / "service.yml", port, plugins))
    engine = engine_factory(port, "--plugin", "second")
    wait_for(lambda: len(registered(engine)) == 2, 30, "2 registrations")
    engine.send(*[{"config": {"i": i}, "elementJob": f"u{i}"} for i in range(10)])
    answers = engine.wait_answers(10)
    assert {a["plugin"] for a in answers} == {"second"} and all(a["status"] for a in answers)
    service.stop()


@pytest.mark.parametrize("timeout", ["3s", None], ids=["task-timeout", "no-timeout"])
def test_a_task_for_a_plugin_that_never_registers_is_named_and_timed_out(timeout, tmp_path, port, engine_factory,
                                                                         service_factory):
    plugins = [{"name": "one", "command": [ECHO_PY]}, {"name": "two", "command": [ECHO_PY]}]
    service = service_factory(write_service(tmp_path / "service.yml", port, plugins))
    engine = engine_factory(port, "--plugin", "nope", *(["--task-timeout", timeout] if timeout else []))
    wait_for(lambda: len(registered(engine)) == 2, 30, "2 registrations")
    engine.send({"config": {"i": 0}, "elementJob": "unnamed"},
                {"config": {"i": 1}, "elementJob": "typo", "plugin": "oen"},
                {"config": {"i": 2}, "elementJob": "right", "plugin": "one"})
    hint = "which has not registered; registered: one, two"
    wait_for(lambda: len(engine.err.find(hint)) == 2, 15, "a hint for each name that is not registered")
    if timeout is None:  # no limit: they wait, as for a plugin that registers later, and the rest is served
        assert [a["elementJob"] for a in engine.wait_answers(1)] == ["right"]
        engine.kill()
    else:
        engine.close_input()
        answers = {a["elementJob"]: a for a in engine.wait_answers(3, timeout=30)}
        assert engine.proc.wait(30) == 0, engine.err.texts()
        assert answers["right"]["status"] and answers["right"]["plugin"] == "one"
        for job, name in (("unnamed", "nope"), ("typo", "oen")):
            assert answers[job]["status"] is False and answers[job]["plugin"] == name
            assert answers[job]["info"] == (f"[standin] no plugin named {name!r} registered to take it within 3 s "
                                            "(registered: one, two)"), answers[job]
    print(f"task-timeout {timeout}: {[(a['elementJob'], a['status']) for a in engine.answers()]}")
    service.stop()


# --- refused before anything registers ---------------------------------------------------


def run_to_exit(config: pathlib.Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOW_BRIDGE, "run", "--config", str(config), *extra], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        pytest.param([{"name": "same", "command": ECHO_PY}, {"name": "same", "command": ECHO_PY}],
                     r"plugins\[1\] \(same\): the name 'same' is taken by .*plugins\[0\]", id="duplicate-names"),
        pytest.param([], "plugins: must be a list of plugins", id="no-entries"),
        pytest.param([{"name": "ok", "command": ECHO_PY}, {"name": "gone", "command": "/nonexistent/handler"}],
                     r"plugins\[1\] \(gone\) cannot start: .*nonexistent", id="command-missing"),
        pytest.param([{"name": "ok", "command": ECHO_PY},
                      {"name": "broken", "command": [sys.executable, MISBEHAVE, "crash-at-start"]}],
                     r"plugins\[1\] \(broken\) cannot start: .*permission denied", id="crashes-at-start"),
    ],
)
def test_a_bad_entry_is_refused_before_anything_registers(plugins, expected, tmp_path, port, engine_factory):
    engine = engine_factory(port)
    marker = uuid.uuid4().hex
    config = write_service(tmp_path / "service.yml", port, plugins)
    began = time.monotonic()
    result = subprocess.run([*FLOW_BRIDGE, "run", "--config", str(config)], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, "FLOW_BRIDGE_TEST_MARKER": marker})
    took = time.monotonic() - began
    assert result.returncode == 2, result.stderr
    assert re.search(expected, result.stderr, re.DOTALL), result.stderr
    assert "Traceback" not in result.stderr
    time.sleep(0.5)
    assert not registered(engine), "a plugin registered although the service was refused"
    assert processes_with_marker(marker) == [], "a child of the refused service is still running"
    print(f"refused in {took:.2f} s: {result.stderr.strip().splitlines()[-1]}")


def test_a_command_after_dashes_with_a_plugins_list_is_a_usage_error(tmp_path, port):
    config = write_service(tmp_path / "service.yml", port, [{"name": "a", "command": ECHO_PY}])
    result = run_to_exit(config, "--", ECHO_PY)
    assert result.returncode == 2
    assert "has a plugins: list" in result.stderr and "drop the command after `--`" in result.stderr


def test_a_single_plugin_config_with_its_command_needs_no_dashes(tmp_path, port, engine_factory, service_factory):
    config = tmp_path / "config.yml"
    config.write_text(json.dumps({"flow-engine": {"host": "127.0.0.1", "port": port},
                                  "plugin": {"name": "solo", "command": [ECHO_PY]}}))
    service = service_factory(config)
    engine = engine_factory(port)
    engine.send({"config": {"i": 1}})
    assert engine.wait_answers(1)[0]["status"] is True
    assert registered(engine) == {"solo": 1}
    service.stop()


# --- isolation -----------------------------------------------------------------------------


def test_a_crash_loop_a_hang_and_an_oversize_answer_cost_the_healthy_plugin_nothing(
    tmp_path, port, engine_factory, service_factory
):
    plugins = [
        {"name": "healthy", "command": [ECHO_PY]},
        {"name": "crashy", "command": [sys.executable, MISBEHAVE, "crash-loop"],
         "env": {"CRASH_LOOP_FILE": str(tmp_path / "crashed")}},
        {"name": "stuck", "command": [sys.executable, MISBEHAVE, "hang"], "timeout": "60s"},
        {"name": "big", "command": [sys.executable, PROBE], "max-frame": 4 * MiB,
         "env": {"ENGINE_PROBE_CONCURRENCY": "4"}},
    ]
    service = service_factory(write_service(tmp_path / "service.yml", port, plugins))
    engine = engine_factory(port)
    wait_for(lambda: len(registered(engine)) == 4, 30, "4 registrations")
    # The neighbours first: the crash loop starts, the hang holds its tasks, the big answers are cut.
    engine.send(*[{"plugin": "crashy", "config": {"i": i}, "elementJob": f"crashy-{i}"} for i in range(50)])
    engine.send(*[{"plugin": "stuck", "config": {"i": i}, "elementJob": f"stuck-{i}"} for i in range(5)])
    engine.send(*[{"plugin": "big", "config": {"bytes": 4_100_000}, "elementJob": f"big-{i}"} for i in range(3)])
    began = time.monotonic()
    for start in range(0, HEALTHY_TASKS, 100):  # interleaved with more crash-loop tasks
        engine.send(*[{"plugin": "healthy", "config": {"i": i, "payload": "x"}, "elementJob": f"healthy-{i}"}
                      for i in range(start, start + 100)])
        engine.send(*[{"plugin": "crashy", "config": {"i": i}, "elementJob": f"crashy-{start}-{i}"} for i in range(5)])
    wait_for(lambda: len(by_plugin(engine.answers())["healthy"]) >= HEALTHY_TASKS, 120, "the healthy plugin's answers")
    took = time.monotonic() - began
    answers = engine.answers()
    one_each(answers)
    grouped = by_plugin(answers)
    healthy = grouped["healthy"]
    failed = [a for a in healthy if not a["status"]]
    assert len(healthy) == HEALTHY_TASKS and not failed, failed[:3]
    assert "stuck" not in grouped, "the hanging plugin answered before its timeout"
    try:
        wait_for(lambda: len(by_plugin(engine.answers())["crashy"]) == 100
                 and len(by_plugin(engine.answers())["big"]) == 3, 60, "the crash loop's and the big answers")
    except AssertionError:
        counts = {name: len(items) for name, items in by_plugin(engine.answers()).items()}
        raise AssertionError(f"answers by plugin: {counts}\n{service.log()[-3000:]}") from None
    grouped = by_plugin(engine.answers())
    crashy = grouped["crashy"]
    assert all(not a["status"] for a in crashy[1:]), "the crash loop answered a task"
    assert any("[unavailable]" in a["info"] for a in crashy), [a["info"] for a in crashy[:5]]
    assert all(a["info"].startswith("[too_large]") for a in grouped["big"]), grouped["big"][0]["info"]
    assert registered(engine) == {"healthy": 1, "crashy": 1, "stuck": 1, "big": 1}, "a stream broke"
    assert "HANDLER IS CRASH-LOOPING" in service.log()
    kinds = collections.Counter(a["info"].split("]")[0] + "]" for a in crashy if not a["status"])
    print(f"healthy: {len(healthy)} tasks, {len(failed)} failed, in {took:.2f} s "
          f"({len(healthy) / took:.0f} tasks/s) beside a crash loop ({dict(kinds)}), "
          f"5 hanging tasks, 3 oversize answers")
    service.stop()


# --- the connection ------------------------------------------------------------------------


def test_health_checks_are_once_per_channel_and_reconnect_every_plugin(tmp_path, port, engine_factory,
                                                                         service_factory):
    plugins = [{"name": "one", "command": [ECHO_PY]}, {"name": "two", "command": [ECHO_PY]}]
    config = write_service(tmp_path / "service.yml", port, plugins)
    doc = json.loads(config.read_text())
    doc["flow-engine"]["heartbeat-interval"] = "300ms"
    config.write_text(json.dumps(doc))
    service = service_factory(config)
    engine = engine_factory(port, "--fault", "health=not-serving")
    wait_for(lambda: min(registered(engine).get("one", 0), registered(engine).get("two", 0)) >= 2, 30,
             "both plugins registered again after the failed health checks")
    checks = service.err.find("health check answered NOT_SERVING; reconnecting if 3")
    lost = service.err.find("engine connection lost: health check")
    # One warning per round of checks, not one per plugin: the channel checks, not each plugin.
    assert lost and len(checks) <= len(lost) + 1, service.log()
    engine.send({"plugin": "one", "config": {"i": 1}}, {"plugin": "two", "config": {"i": 2}, "elementJob": "x2"})
    assert all(a["status"] for a in engine.wait_answers(2))
    print(f"registrations after failed health checks: {dict(registered(engine))}; rounds lost: {len(lost)}")
    service.stop()


def test_a_broken_register_stream_reconnects_only_its_plugin(tmp_path, port, engine_factory, service_factory):
    plugins = [{"name": "one", "command": [ECHO_PY]}, {"name": "two", "command": [ECHO_PY]}]
    service = service_factory(write_service(tmp_path / "service.yml", port, plugins))
    engine = engine_factory(port, "--fault", "reset-after=5")
    wait_for(lambda: len(registered(engine)) == 2, 30, "2 registrations")
    engine.send(*[{"plugin": "one", "config": {"i": i}, "elementJob": f"one-{i}"} for i in range(5)])
    engine.wait_answers(5)
    wait_for(lambda: registered(engine).get("one", 0) == 2, 15, "plugin one registering again")
    engine.send(*[{"plugin": name, "config": {"i": i}, "elementJob": f"{name}-late-{i}"}
                  for i in range(5) for name in ("one", "two")])
    answers = engine.wait_answers(15)
    assert all(a["status"] for a in answers)
    assert registered(engine) == {"one": 2, "two": 1}, registered(engine)
    service.stop()


# --- stopping ------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_drains_every_plugin_within_one_grace(sig, tmp_path, port, engine_factory, service_factory):
    plugins = [{"name": f"slow{n}", "command": [sys.executable, MISBEHAVE, "ok"]} for n in range(3)]
    service = service_factory(write_service(tmp_path / "service.yml", port, plugins, grace="6s"))
    engine = engine_factory(port)
    wait_for(lambda: len(registered(engine)) == 3, 30, "3 registrations")
    engine.send(*[{"plugin": f"slow{n}", "config": {"i": i, "sleep_ms": 2500}, "elementJob": f"s{n}-{i}"}
                  for n in range(3) for i in range(4)])
    wait_for(lambda: len(service.err.find("ready: protocol")) == 3, 10, "the children")
    time.sleep(0.5)  # the tasks are in the children now
    began = time.monotonic()
    service.proc.send_signal(sig)
    assert service.wait(30) == 0, service.log()
    took = time.monotonic() - began
    answers = engine.wait_answers(12, timeout=10)
    one_each(answers)
    assert all(a["status"] for a in answers), [a["info"] for a in answers if not a["status"]]
    # Three plugins drained side by side: about one task's 2.5 s, far below three graces.
    assert took < 6 + 3, f"took {took:.1f} s"
    print(f"{signal.Signals(sig).name}: 12 tasks in 3 plugins answered, stopped in {took:.2f} s (grace 6 s)")


# --- local use -----------------------------------------------------------------------------


def test_call_picks_one_plugin_of_a_service(tmp_path):
    plugins = [{"name": "echoPy", "command": [ECHO_PY]}, {"name": "echoSh", "command": EXEC_ECHO, "exec": True}]
    config = write_service(tmp_path / "service.yml", 2333, plugins)
    for name in ("echoPy", "echoSh"):
        result = subprocess.run([*FLOW_BRIDGE, "call", "--config", str(config), "--plugin", name,
                                 "--config-json", '{"i": 7, "payload": "abc"}'],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        assert answer["status"] is True and answer["result"]["i"] == 7, answer
    unnamed = subprocess.run([*FLOW_BRIDGE, "call", "--config", str(config)], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
    assert unnamed.returncode == 2 and "pick one with --plugin NAME" in unnamed.stderr, unnamed.stderr
    unknown = subprocess.run([*FLOW_BRIDGE, "call", "--config", str(config), "--plugin", "nope"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert unknown.returncode == 2 and "it has: echoPy, echoSh" in unknown.stderr, unknown.stderr


@pytest.mark.parametrize(
    ("host", "cause"),
    [
        pytest.param("127.0.0.1", "refused the connection on port", id="refused-port"),
        pytest.param("no-such-engine.invalid", "does not resolve", id="unresolvable-name"),
    ],
)
def test_an_unreachable_engine_is_explained_early(host, cause, port, tmp_path, service_factory):
    config = tmp_path / "config.yml"
    config.write_text(json.dumps({"flow-engine": {"host": host, "port": port, "connect-timeout": "15s"},
                                  "plugin": {"name": "lonely", "command": [ECHO_PY]}}))
    service = service_factory(config)
    wait_for(lambda: service.err.find("dialling the engine at"), 30, "the address dialled")
    dialled = service.err.find("dialling the engine at")[0]
    assert f"{host}:{port}" in dialled[1]
    wait_for(lambda: service.err.find("not reachable"), 12, "the cause, well before connect-timeout (15 s)")
    reported, line = service.err.find("not reachable")[0]
    assert cause in line and "retrying every" in line, line
    print(f"{host}: cause after {reported - dialled[0]:.1f} s: {line.split('WARNING')[-1].strip()}")
    service.stop()


def test_conformance_checks_one_plugin_of_a_service(tmp_path):
    plugins = [{"name": "echoPy", "command": [ECHO_PY]}, {"name": "echoSh", "command": EXEC_ECHO, "exec": True}]
    config = write_service(tmp_path / "service.yml", 2333, plugins)
    checked = subprocess.run([*FLOW_BRIDGE, "conformance", "--plugin", "echoPy", "--config", str(config)],
                             capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().splitlines()[-1].endswith("passed, 0 failed")
    exec_plugin = subprocess.run([*FLOW_BRIDGE, "conformance", "--plugin", "echoSh", "--config", str(config)],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert exec_plugin.returncode == 2 and "exec-mode plugin" in exec_plugin.stderr
    unknown = subprocess.run([*FLOW_BRIDGE, "conformance", "--plugin", "nope", "--config", str(config)],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert unknown.returncode == 2 and "it has: echoPy, echoSh" in unknown.stderr


def test_conformance_gives_the_plugin_its_env_from_the_config(tmp_path):
    # A handler that cannot start without a variable its entry sets, as `run` would give it.
    picky = tmp_path / "picky.sh"
    picky.write_text(f'#!/bin/sh\n[ "$FB_NEEDED" = "是 yes" ] || {{ echo "FB_NEEDED unset" >&2; exit 3; }}\n'
                     f'exec {shlex.quote(ECHO_PY)}\n')
    picky.chmod(0o755)
    plugins = [{"name": "picky", "command": [str(picky)], "env": {"FB_NEEDED": "是 yes"}},
               {"name": "bare", "command": [str(picky)]}]
    config = write_service(tmp_path / "service.yml", 2333, plugins)
    runs = {name: subprocess.run([*FLOW_BRIDGE, "conformance", "--plugin", name, "--config", str(config),
                                  "--check", "handshake", "--check", "single-task"],
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            for name in ("picky", "bare")}
    print({name: run.stdout.strip().splitlines()[-1:] for name, run in runs.items()})
    assert runs["picky"].returncode == 0, runs["picky"].stdout + runs["picky"].stderr
    assert runs["bare"].returncode == 1 and "FAIL handshake" in runs["bare"].stdout, runs["bare"].stdout


# --- scaffold and package ------------------------------------------------------------------


def cli(*args: str, cwd: pathlib.Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOW_BRIDGE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def call_plugin(project: pathlib.Path, name: str) -> dict[str, Any]:
    done = cli("call", "--plugin", name, "-q", "--config-json", '{"name": "flow"}', cwd=project)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_init_add_turns_a_project_into_a_service_that_packages_whole(tmp_path):
    project = tmp_path / "svc"
    assert cli("init", str(project), "--lang", "python", "--name", "first").returncode == 0
    added = cli("init", str(project), "--lang", "exec", "--name", "second", "--add")
    assert added.returncode == 0, added.stderr
    again = cli("init", str(project), "--lang", "python", "--name", "second", "--add")
    assert again.returncode == 2 and "already has a plugin named 'second'" in again.stderr
    import yaml

    doc = yaml.safe_load((project / "config.yml").read_text())
    assert [(p["name"], p["command"]) for p in doc["plugins"]] == [("first", "./run"),
                                                                    ("second", "./plugins/second/run")]
    assert "name" not in doc["plugin"], "the shared section still names one plugin"
    for name in ("first", "second"):
        assert call_plugin(project, name)["status"] is True
    packed = cli("package", ".", "--target", "windows", "--version", "1.2.3", cwd=project)
    assert packed.returncode == 0, packed.stderr
    import zipfile

    with zipfile.ZipFile(project / "dist" / "first-1.2.3-windows.zip") as archive:
        service = yaml.safe_load(archive.read("service.yml"))
        config = yaml.safe_load(archive.read("config.yml"))
        names = set(archive.namelist())
    assert service["Command"] == "flow-bridge run --config config.yml"
    assert [p["command"] for p in config["plugins"]] == [["python", "handler.py"],
                                                         ["python", "plugins/second/handler.py"]]
    assert {"handler.py", "plugins/second/handler.py"} <= names


def test_init_from_scripts_makes_one_plugin_per_script(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "clean-up.sh").write_text('#!/bin/sh\ncat > /dev/null\necho \'{"cleaned": true}\'\n')
    (scripts / "2nd report.py").write_text(
        "#!/usr/bin/env python3\nimport json, sys\njson.load(sys.stdin)\nprint(json.dumps({'reported': 1}))\n")
    (scripts / "notes.txt").write_text("not executable: not a plugin\n")
    for script in ("clean-up.sh", "2nd report.py"):
        (scripts / script).chmod(0o755)
    project = tmp_path / "svc"
    made = cli("init", str(project), "--from-scripts", str(scripts))
    assert made.returncode == 0, made.stderr
    assert "clean-up: scripts/clean-up.sh" in made.stdout and "nd-report: scripts/2nd report.py" in made.stdout
    assert call_plugin(project, "clean-up")["result"] == {"cleaned": True}
    assert call_plugin(project, "nd-report")["result"] == {"reported": 1}
    windows = cli("package", ".", "--target", "windows", cwd=project)
    assert windows.returncode == 2 and "clean-up's script scripts/clean-up.sh cannot start on a Windows host" \
        in windows.stderr, windows.stderr
    (scripts / "clean_up.py").write_text((scripts / "2nd report.py").read_text())
    (scripts / "clean_up.py").chmod(0o755)
    (scripts / "clean_up.sh").write_text((scripts / "clean-up.sh").read_text())
    (scripts / "clean_up.sh").chmod(0o755)
    clash = cli("init", str(tmp_path / "other"), "--from-scripts", str(scripts))
    assert clash.returncode == 2 and "would both be the plugin 'clean_up'" in clash.stderr, clash.stderr
    assert not (tmp_path / "other").exists()
