"""Vendor AIR-IoT SDK plugins on flow-bridge, and the Python adapter features they rely on.

Real processes throughout. The adapter's frame-level promises (any result value, error
data, ready's name and type, the result size limit) are checked by speaking the protocol
to a handler process over its pipes. A vendor-style project (main.py ending in
`Startup().run(plugin)`, a config.yml of the vendor's shape) is run through the real CLI
and the stand-in engine with `python -m flow_bridge.adapter.airiot main.py`, once with
the stand-in vendor SDK of tests/airiot_sdk on PYTHONPATH, once with its import lines
changed to flow_bridge.adapter.airiot and no vendor SDK at all.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import FLOW_BRIDGE, ROOT, LineCollector, close_pipes, processes_with_marker, wait_for
from flow_bridge.protocol import (
    Codec,
    Debug,
    Error,
    Event,
    Hello,
    Log,
    Ready,
    Result,
    State,
    Stop,
    Task,
    too_large_message,
)

SDK = ROOT / "tests" / "airiot_sdk"
LAUNCHER = [sys.executable, "-m", "flow_bridge.adapter.airiot"]
VENDOR_API_IMPORT = "from airiot_python_sdk.flow_plugin import ("
VENDOR_STARTUP_IMPORT = "from airiot_python_sdk.flow_plugin.startup import Startup"
# Not the vendor SDK's own message: the stand-in's (tests/airiot_sdk/.../startup.py).
STAND_IN_RUN_CALLED = "stand-in airiot_python_sdk: Startup.run was called"


# --- a child spoken to over its pipes ----------------------------------------------------


class Child:
    """A handler process driven frame by frame, as the bridge drives it."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})}, cwd=cwd,
        )
        self.codec = Codec()
        self.events: queue.Queue[Event | Exception | None] = queue.Queue()
        self.err = LineCollector(self.proc.stderr)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        try:
            while chunk := self.proc.stdout.read1(1 << 16):
                for event in self.codec.receive_data(chunk):
                    self.events.put(event)
            self.codec.receive_data(b"")
        except Exception as exc:  # a broken frame: the test shows it
            self.events.put(exc)
        self.events.put(None)

    def send(self, *events: Event) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(self.codec.send(e) for e in events))
        self.proc.stdin.flush()

    def next(self, timeout: float = 20) -> Event:
        event = self.events.get(timeout=timeout)
        if event is None or isinstance(event, Exception):
            raise AssertionError(f"the child's output ended ({event!r}); stderr:\n" + "\n".join(self.err.texts()))
        return event

    def handshake(self, max_frame: int = 16 * 1024 * 1024) -> Ready:
        self.send(Hello(protocols=(1,), plugin="", max_frame=max_frame))
        ready = self.next()
        assert isinstance(ready, Ready), ready
        return ready

    def answers(self, n: int) -> tuple[dict[int, Result | Error], list[Log]]:
        """The next n answers by id, and the log frames that came meanwhile."""
        answers: dict[int, Result | Error] = {}
        logs: list[Log] = []
        while len(answers) < n:
            event = self.next()
            if isinstance(event, Log):
                logs.append(event)
            else:
                assert isinstance(event, (Result, Error)) and event.id not in answers, event
                answers[event.id] = event
        return answers, logs

    def stop(self) -> int:
        self.send(Stop())
        code = self.proc.wait(20)
        self.err.join()
        return code

    def stderr(self) -> str:
        return "\n".join(self.err.texts())


@pytest.fixture
def child_factory():
    made: list[Child] = []

    def make(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Child:
        made.append(Child(argv, env, cwd))
        return made[-1]

    yield make
    for child in made:
        close_pipes(child.proc, child.err)


def task(i: int, config: Any) -> Task:
    return Task(id=i, config=json.dumps(config).encode(), project_id="p1", flow_id="f1", job="j1",
                element_id="e1", element_job=f"ej{i}")


def debug(i: int, config: Any) -> Debug:
    return Debug(id=i, config=json.dumps(config).encode(), project_id="p1", flow_id="f1", element_id="e1",
                 element_job=f"ej{i}")


# --- the adapter: result values, error data, ready, the size limit ------------------------

VALUES_HANDLER = """
from flow_bridge.adapter import HandlerError, Reply, serve

def execute(request):
    config = request.config
    if "fail" in config:
        raise HandlerError(config["fail"], "more", data=config.get("data"))
    if "huge_error" in config:
        raise HandlerError("x" * config["huge_error"], "y" * config["huge_error"], data=["z"] * 1000)
    if "huge_log" in config:
        request.log.info("w" * config["huge_log"])
        return {}
    if "size" in config:  # a result frame of exactly this many bytes is data {"s": "x" * k}
        return {"s": "x" * config["size"]}
    if config.get("reply_null"):
        return Reply(data=None, message="nothing")
    if config.get("nothing"):
        return None
    return config["return"]

serve(execute, name="valuesPlugin", plugin_type="user", concurrency=4)
"""


def result_size(request_id: int, data: Any) -> int:
    """The body size of the result frame the adapter sends for this data (SPEC 1)."""
    return len(Codec().send(Result(id=request_id, data=data))) - 4


def test_result_values_of_every_json_kind_and_error_data(child_factory, tmp_path):
    handler = tmp_path / "handler.py"
    handler.write_text(VALUES_HANDLER)
    child = child_factory([sys.executable, str(handler)])
    ready = child.handshake()
    assert (ready.name, ready.plugin_type, ready.concurrency, ready.debug) == ("valuesPlugin", "user", 4, False)
    values: list[Any] = [[1, "a", None], "text", 42, 2.5, True, False, {"k": {"n": [1]}}]
    child.send(*[task(i, {"return": v}) for i, v in enumerate(values)])
    child.send(task(20, {"reply_null": True}), task(21, {"nothing": True}))
    child.send(task(30, {"fail": "sensor offline", "data": {"partial": [1, 2]}}), task(31, {"fail": "plain"}))
    answers, _ = child.answers(len(values) + 4)
    for i, value in enumerate(values):
        assert answers[i] == Result(id=i, data=value)
    assert answers[20] == Result(id=20, data=None, message="nothing")  # JSON null, not {}
    assert answers[21] == Result(id=21, data={})  # a function that returns nothing: no data, as before
    assert answers[30] == Error(id=30, message="sensor offline", detail="more", data={"partial": [1, 2]})
    assert answers[31] == Error(id=31, message="plain", detail="more")
    assert child.stop() == 0


def test_result_at_the_frame_limit_is_sent_and_one_byte_over_is_answered_too_large(child_factory, tmp_path):
    handler = tmp_path / "handler.py"
    handler.write_text(VALUES_HANDLER)
    child = child_factory([sys.executable, str(handler)])
    limit = 4096
    child.handshake(max_frame=limit)
    # k such that the result frame's body is exactly the limit (str16 headers throughout).
    k = limit - (result_size(1, {"s": "x" * limit}) - limit)
    assert result_size(1, {"s": "x" * k}) == limit
    assert result_size(2, {"s": "x" * (k + 1)}) == limit + 1
    child.send(task(1, {"size": k}), task(2, {"size": k + 1}))
    answers, _ = child.answers(2)
    assert answers[1] == Result(id=1, data={"s": "x" * k})
    assert answers[2] == Error(id=2, message=too_large_message(limit + 1, limit))
    assert answers[2].message.startswith(f"result too large: {limit + 1} bytes, the limit is {limit} (hello.max_frame)")
    # Other frames over the limit are made to fit, and the child goes on answering.
    child.send(task(3, {"huge_error": 3 * limit}), task(4, {"huge_log": 3 * limit}), task(5, {"return": [5]}))
    answers, logs = child.answers(3)
    cut = answers[3]
    assert isinstance(cut, Error) and cut.data is None
    assert cut.message.startswith("xxxx") and "cut" in cut.message and len(Codec().send(cut)) - 4 <= limit
    assert answers[4] == Result(id=4, data={})
    assert any(log.id == 4 and log.msg.startswith("www") and "cut" in log.msg for log in logs)
    assert answers[5] == Result(id=5, data=[5])
    assert child.stop() == 0


# --- a vendor-style project ----------------------------------------------------------------

PLUGIN = '''
import json
import logging
import os

from airiot_python_sdk.flow_plugin import (
    DebugLog, DebugResult, DebugTask, FlowPlugin, FlowPluginType, FlowResult, FlowTask,
)

logger = logging.getLogger("demo-plugin")


def record(line):
    with open(os.environ["DEMO_EVENTS"], "a", encoding="utf-8") as fh:
        fh.write(line + "\\n")


class DemoPlugin(FlowPlugin):
    def get_name(self):
        return "demoPlugin"

    def get_type(self):
        return FlowPluginType.UserTask

    def start(self):
        record("start")

    def stop(self):
        record("stop")

    def on_connection_state_changed(self, state):
        record(f"state {state}")

    async def execute(self, request: FlowTask) -> FlowResult:
        config = json.loads(request.config.decode("utf-8"))
        logger.info("executing %s", request.elementJob)
        print("printed during a task")
        if "fail" in config:
            raise Exception(config["fail"])
        if "return" in config:
            return FlowResult(message="OK", details="", data=config["return"])
        ids = [request.projectId, request.flowId, request.job, request.elementId, request.elementJob]
        return FlowResult(message="OK", details=f"{len(config['input'])} inputs",
                          data={"sum": sum(config["input"]), "ids": ids, "task": type(request).__module__})

    async def debug(self, task: DebugTask) -> DebugResult:
        config = json.loads(task.config.decode("utf-8"))
        logger.info("a record of the plugin's own, kept out of the debug response")
        if "raise" in config:
            raise Exception(config["raise"])
        logs = [DebugLog("INFO", "2024-05-06T07:08:09.000Z", "parsed the input"),
                DebugLog("warn", "2024-05-06T07:08:10.000Z", "the input was short")]
        value = {"sum": sum(config["input"]), "ids": [task.projectId, task.flowId, task.elementId]}
        if config.get("fail"):
            return DebugResult(False, "the script raised", "line 3", value, logs)
        return DebugResult(True, "", "", value, logs)
'''

MAIN = '''
import os
import sys

from airiot_python_sdk.flow_plugin.startup import Startup

from demo.plugin import DemoPlugin, record

print("main.py printed this at import time")

if __name__ == "__main__":
    record(f"argv {sys.argv[1:]} path0 {sys.path[0]} file {os.path.basename(sys.argv[0])}")
    plugin = DemoPlugin()
    startup = Startup()
    startup.run(plugin)
    record("main.py went on after run")
'''

CONFIG = """
flow-engine:
  host: 127.0.0.1
  port: {port}
  health-check-interval: 30
log-level: DEBUG
"""


def make_project(where: Path, port: int = 2333, vendor: bool = True) -> Path:
    """A vendor SDK 4.x project; vendor=False changes its one import line per file."""
    plugin, main = PLUGIN, MAIN
    if not vendor:
        plugin = plugin.replace(VENDOR_API_IMPORT, "from flow_bridge.adapter.airiot import (")
        main = main.replace(VENDOR_STARTUP_IMPORT, "from flow_bridge.adapter.airiot import Startup")
        assert plugin != PLUGIN and main != MAIN
    (where / "demo").mkdir(parents=True)
    (where / "demo" / "__init__.py").write_text("")
    (where / "demo" / "plugin.py").write_text(plugin)
    (where / "main.py").write_text(main)
    (where / "config.yml").write_text(CONFIG.format(port=port))
    return where


def sdk_env(events: Path, sdk: bool = True, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLOW_BRIDGE_AIRIOT_CONCURRENCY")}
    if sdk:
        env["PYTHONPATH"] = str(SDK)
    return {**env, "DEMO_EVENTS": str(events), **extra}


def events_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Run:
    """`flow-bridge run` started in the project folder, as a user starts it there."""

    def __init__(self, project: Path, env: dict[str, str], *args: str) -> None:
        self.marker = uuid.uuid4().hex
        self.proc = subprocess.Popen(
            [*FLOW_BRIDGE, "run", *args, "--", *LAUNCHER, "main.py"],
            cwd=project, env={**env, "FLOW_BRIDGE_TEST_MARKER": self.marker},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.out = LineCollector(self.proc.stdout)
        self.err = LineCollector(self.proc.stderr)

    def log(self) -> str:
        return "\n".join(self.err.texts())


@pytest.fixture
def run_factory():
    made: list[Run] = []

    def make(project: Path, env: dict[str, str], *args: str) -> Run:
        made.append(Run(project, env, *args))
        return made[-1]

    yield make
    for run in made:
        close_pipes(run.proc, run.out, run.err)
        for pid in processes_with_marker(run.marker, exclude=run.proc.pid):
            os.kill(pid, signal.SIGKILL)


def test_stand_in_vendor_startup_refuses_to_serve(tmp_path):
    # The control: without flow_bridge.adapter.airiot the stand-in's Startup.run fails, so a
    # plugin that answers below was served by the adapter, not by it.
    project = make_project(tmp_path / "project")
    events = tmp_path / "events"
    plain = subprocess.run([sys.executable, "main.py"], cwd=project, env=sdk_env(events), capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert plain.returncode == 86
    assert STAND_IN_RUN_CALLED in plain.stderr


def test_unchanged_vendor_project_answers_tasks_and_debug_runs(port, engine_factory, run_factory, tmp_path):
    project = make_project(tmp_path / "project", port)
    events = tmp_path / "events"
    engine = engine_factory(port)
    # No --host, --port or --name: the address comes from the project's config.yml, the
    # name and type from the plugin's get_name() and get_type().
    bridge = run_factory(project, sdk_env(events))
    wait_for(lambda: engine.registrations(), 30, "registration\n" + bridge.log())
    assert engine.err.find(r"plugin registered: name=demoPlugin mode=user"), "\n".join(engine.err.texts())
    wait_for(lambda: "state True" in events_of(events), 15, "state(True) to reach the plugin")
    data_values: list[Any] = [[1, "a"], 42, 2.5, "text", True, None, {}]
    engine.send(
        {"config": {"input": [1, 2, 3]}, "projectId": "p9", "flowId": "f9", "job": "j9", "elementId": "e9",
         "elementJob": "ok"},
        {"config": {"fail": "执行脚本异常, division by zero"}, "elementJob": "failed"},
        {"config": {"input": [4, 5]}, "debug": True, "projectId": "p9", "flowId": "f9", "elementId": "e9",
         "elementJob": "debug-ok"},
        {"config": {"input": [6], "fail": True}, "debug": True, "elementJob": "debug-failed"},
        {"config": {"raise": "no script"}, "debug": True, "elementJob": "debug-raised"},
        *[{"config": {"return": v}, "elementJob": f"data-{i}"} for i, v in enumerate(data_values)],
    )
    answers = {a["elementJob"]: a for a in engine.wait_answers(5 + len(data_values))}

    assert answers["ok"] == {
        "elementJob": "ok", "status": True, "info": "OK", "detail": "3 inputs",
        "result": {"sum": 6, "ids": ["p9", "f9", "j9", "e9", "ok"], "task": "airiot_python_sdk.flow_plugin"},
    }
    failed = answers["failed"]
    assert (failed["status"], failed["info"]) == (False, "执行脚本异常, division by zero")  # unchanged, no prefix
    assert failed["detail"].startswith("flow-bridge: kind=handler\nTraceback")
    assert "demo/plugin.py" in failed["detail"] and "flow_bridge_adapter" not in failed["detail"]

    logs = [
        {"level": "info", "time": "2024-05-06T07:08:09.000Z", "msg": "parsed the input"},
        {"level": "warning", "time": "2024-05-06T07:08:10.000Z", "msg": "the input was short"},
    ]
    ok = answers["debug-ok"]
    assert (ok["status"], ok["info"]) == (True, "")
    assert ok["result"] == {"logs": logs, "value": {"sum": 9, "ids": ["p9", "f9", "e9"]}}
    bad = answers["debug-failed"]
    assert (bad["status"], bad["info"]) == (False, "the script raised")
    assert bad["detail"] == "flow-bridge: kind=handler\nline 3"
    assert bad["result"] == {"logs": logs, "value": {"sum": 6, "ids": ["standin-project", "standin-flow",
                                                                      "element-1"]}}
    raised = answers["debug-raised"]
    assert (raised["status"], raised["info"]) == (False, "no script")

    for i, value in enumerate(data_values):
        assert answers[f"data-{i}"]["status"] is True
        assert answers[f"data-{i}"]["result"] == value, answers[f"data-{i}"]

    bridge.proc.send_signal(signal.SIGTERM)
    assert bridge.proc.wait(30) == 0, bridge.log()[-3000:]
    bridge.err.join()
    log = bridge.log()
    assert STAND_IN_RUN_CALLED not in log
    # print() at import time and in a task reached the log, not the frame channel.
    assert "main.py printed this at import time" in log and "printed during a task" in log
    # A record inside a task came once, as a log frame (the vendor's basicConfig handler was
    # taken away while serving), and the plugin's own record in a debug run stayed out of
    # the debug response (checked above) but reached the log.
    assert len([line for line in log.splitlines() if "executing ok" in line]) == 1
    assert "kept out of the debug response" in log
    lines = events_of(events)
    assert lines[0] == f"argv [] path0 {project} file main.py"
    assert lines[1:] == ["start", "state True", "state False", "stop", "main.py went on after run"]


def test_one_import_line_changed_runs_without_the_vendor_sdk(tmp_path):
    project = make_project(tmp_path / "project", vendor=False)
    events = tmp_path / "events"
    env = sdk_env(events, sdk=False)
    probe = subprocess.run([sys.executable, "-c", "import airiot_python_sdk"], env=env, capture_output=True,
                           timeout=60)
    assert probe.returncode != 0, "the vendor SDK must not be importable in this test"
    answer = subprocess.run(
        [*FLOW_BRIDGE, "call", "--config-json", '{"input": [2, 3]}', "--", *LAUNCHER, "main.py", "--config",
         "config.yml"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert json.loads(answer.stdout) == {
        "elementJob": "element-job-1", "status": True, "info": "OK", "detail": "2 inputs",
        "result": {"sum": 5, "ids": ["standin-project", "standin-flow", "job-1", "element-1", "element-job-1"],
                   "task": "flow_bridge.adapter._airiot_api"},
    }
    assert events_of(events) == [
        f"argv ['--config', 'config.yml'] path0 {project} file main.py",
        "start", "state True", "state False", "stop", "main.py went on after run",
    ]


def test_flow_bridge_call_answers_a_vendor_project(tmp_path):
    project = make_project(tmp_path / "project")
    events = tmp_path / "events"
    answer = subprocess.run(
        [*FLOW_BRIDGE, "call", "--name", "X", "--config-json", '{"input": [1, 1]}', "--", *LAUNCHER, "main.py"],
        cwd=project, env=sdk_env(events), capture_output=True, text=True, timeout=120,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert json.loads(answer.stdout)["result"]["sum"] == 2
    failed = subprocess.run(
        [*FLOW_BRIDGE, "call", "--name", "X", "--config-json", '{"fail": "no device"}', "--", *LAUNCHER, "main.py"],
        cwd=project, env=sdk_env(events), capture_output=True, text=True, timeout=120,
    )
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["info"] == "no device"


# --- the launcher and the mapping, frame by frame ------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param([], {}, 1, id="one-at-a-time-by-default"),
        pytest.param([], {"FLOW_BRIDGE_AIRIOT_CONCURRENCY": "3"}, 3, id="environment"),
        pytest.param(["--concurrency", "5"], {"FLOW_BRIDGE_AIRIOT_CONCURRENCY": "3"}, 5, id="option-wins"),
    ],
)
def test_ready_declares_the_plugins_name_type_and_concurrency(child_factory, tmp_path, args, env, expected):
    project = make_project(tmp_path / "project")
    child = child_factory([*LAUNCHER, *args, "main.py"], sdk_env(tmp_path / "events", **env), project)
    ready = child.handshake()
    assert (ready.name, ready.plugin_type, ready.concurrency, ready.debug) == ("demoPlugin", "user", expected, True)
    assert child.stop() == 0


def test_hooks_follow_the_vendor_order_and_logs_stay_tied(child_factory, tmp_path):
    project = make_project(tmp_path / "project")
    events = tmp_path / "events"
    child = child_factory([*LAUNCHER, "main.py", "--log-level", "INFO"], sdk_env(events), project)
    child.handshake()
    assert events_of(events)[1:] == ["start"]  # before ready, and before any state change
    child.send(State(connected=True), State(connected=True), task(1, {"input": [1]}))
    answers, logs = child.answers(1)
    assert isinstance(answers[1], Result) and answers[1].data["sum"] == 1
    assert [(log.level, log.msg, log.id) for log in logs if "executing" in log.msg] == [("info", "executing ej1", 1)]
    child.send(debug(2, {"input": [1]}))
    answers, logs = child.answers(1)
    assert [(log.msg, log.time, log.id) for log in logs if log.time.startswith("2024")] == [
        ("parsed the input", "2024-05-06T07:08:09.000Z", 2), ("the input was short", "2024-05-06T07:08:10.000Z", 2),
    ]
    assert [log.id for log in logs if "kept out" in log.msg] == [None]
    child.send(State(connected=False), State(connected=True))
    assert child.stop() == 0
    assert events_of(events)[1:] == [
        "start", "state True", "state False", "state True", "state False", "stop", "main.py went on after run",
    ]
    stderr = child.stderr()
    assert "--log-level is read by flow-bridge now" in stderr
    assert "main.py printed this at import time" in stderr  # fd 1 was stderr before main.py ran


def test_missing_vendor_sdk_is_explained(tmp_path):
    project = make_project(tmp_path / "project")
    started = time.monotonic()
    result = subprocess.run([*LAUNCHER, "main.py"], cwd=project, env=sdk_env(tmp_path / "events", sdk=False),
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "imports airiot_python_sdk" in result.stderr and "from flow_bridge.adapter.airiot import" in result.stderr
    assert time.monotonic() - started < 30


def test_the_vendor_python_example_answers(tmp_path):
    example = ROOT / "examples" / "vendor-python"
    env = sdk_env(tmp_path / "events")
    answer = subprocess.run(
        [*FLOW_BRIDGE, "call", "--config-json", '{"readings": [1.5, 2], "factor": 10}', "--", *LAUNCHER, "main.py"],
        cwd=example, env=env, capture_output=True, text=True, timeout=120,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert json.loads(answer.stdout)["result"] == [15.0, 20]
    debug_run = subprocess.run(
        [*FLOW_BRIDGE, "call", "--debug", "--config-json", '{"readings": [1]}', "--", *LAUNCHER, "main.py"],
        cwd=example, env=env, capture_output=True, text=True, timeout=120,
    )
    assert debug_run.returncode == 0, debug_run.stderr[-3000:]
    result = json.loads(debug_run.stdout)["result"]
    assert result["value"] == [1] and [log["msg"] for log in result["logs"]] == ["parsing the config",
                                                                                  "scaled 1 readings"]
