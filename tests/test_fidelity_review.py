"""Issue 10 review: vendor SDK users at the edges, through the real CLI and real gRPC.

Each test runs `flow-bridge call` (the stand-in engine, real gRPC, the bridge and a real
child process) on a vendor-style project in a temporary folder, with the stand-in vendor
SDK of tests/airiot_sdk on PYTHONPATH, or `flow-bridge run` for config errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import FLOW_BRIDGE, ROOT, wait_for

SDK = ROOT / "tests" / "airiot_sdk"
LAUNCHER = [sys.executable, "-m", "flow_bridge.adapter.airiot"]

# A plugin written against the vendor SDK: sync execute, async debug; `case` picks the answer.
PLUGIN = '''
import json
from airiot_python_sdk.flow_plugin import DebugLog, DebugResult, FlowPlugin, FlowPluginType, FlowResult
from airiot_python_sdk.flow_plugin.startup import Startup

VALUES = {
    "list": [1, "two", 3.5], "string": "文本", "number": 42, "float": -0.25, "true": True,
    "null": None, "nested": {"设备": [{"温度": 21.5, "ok": False}], "empty": {}},
    "past2to53": 2**53 + 1, "int64max": 2**63 - 1, "int64min": -2**63,
    "nan": float("nan"), "inf": {"x": [float("inf")]},
}


class Edge(FlowPlugin):
    def get_name(self):
        return "edgePlugin"

    def get_type(self):
        return FlowPluginType.ServiceTask

    def start(self):
        pass

    def stop(self):
        pass

    def on_connection_state_changed(self, state):
        pass

    def execute(self, task):  # a plain def: the adapter runs it on a worker thread
        case = json.loads(task.config)["case"]
        if case == "raise":
            raise ValueError("设备离线: device offline")
        return FlowResult("完成", "细节", VALUES[case])

    async def debug(self, task):
        raise KeyError("调试失败")


if __name__ == "__main__":
    Startup().run(Edge())
'''


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_BRIDGE_") and k != "PYTHONPATH"}
    return {**clean, "PYTHONPATH": str(SDK)}


def call(project: Path, config: Any, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLOW_BRIDGE, "call", "-q", *extra, "--config-json", json.dumps(config), "--", *LAUNCHER, "main.py"],
        cwd=project, env=env(), capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("edge")
    (where / "main.py").write_text(PLUGIN, encoding="utf-8")
    return where


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("list", [1, "two", 3.5]), ("string", "文本"), ("number", 42), ("float", -0.25), ("true", True),
        ("null", None), ("nested", {"设备": [{"温度": 21.5, "ok": False}], "empty": {}}),
        ("past2to53", 2**53 + 1), ("int64max", 2**63 - 1), ("int64min", -(2**63)),
    ],
)
def test_flow_result_data_of_every_json_kind_reaches_the_engine_exactly(project, case, expected):
    done = call(project, {"case": case})
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["status"] is True and answer["info"] == "完成" and answer["detail"] == "细节"
    assert answer["result"] == expected and type(answer["result"]) is type(expected)


@pytest.mark.parametrize(("case", "path"), [("nan", "at $"), ("inf", "at $.x[0]")])
def test_a_number_json_cannot_carry_fails_the_task_naming_where(project, case, path):
    done = call(project, {"case": case})
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["status"] is False
    assert "no JSON form" in answer["info"] and answer["info"].endswith(path), answer["info"]


def test_a_chinese_exception_from_a_sync_execute_is_the_info_and_debug_failure_too(project):
    done = call(project, {"case": "raise"})
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["status"] is False and answer["info"] == "设备离线: device offline"
    assert "ValueError" in answer["detail"] and "main.py" in answer["detail"]
    debugged = call(project, {"case": "x"}, "--debug")
    assert debugged.returncode == 1
    answer = json.loads(debugged.stdout)
    assert answer["status"] is False and "调试失败" in answer["info"]


def start_failure(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return call(tmp_path, {})


def test_a_syntax_error_in_main_py_is_named_without_the_launchers_frames(tmp_path):
    done = start_failure(tmp_path, {"main.py": "from airiot_python_sdk.flow_plugin.startup import Startup\n"
                                               "def broken(:\n    pass\n"})
    assert done.returncode == 1
    tail = done.stderr[done.stderr.index("failed to start"):]
    assert "main.py cannot run: a syntax error in main.py, line 2" in tail, tail
    assert "SyntaxError" in tail and "runpy" not in tail and "_airiot.py" not in tail


def test_a_syntax_error_in_a_module_main_py_imports_names_that_file(tmp_path):
    done = start_failure(tmp_path, {
        "main.py": "from plugins.broken import Plugin\n",
        "plugins/__init__.py": "",
        "plugins/broken.py": "x = (1,\n",
    })
    assert done.returncode == 1
    tail = done.stderr[done.stderr.index("failed to start"):]
    assert "a syntax error in " in tail and "broken.py" in tail, tail


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("class NotAPlugin:\n    pass\nStartup().run(NotAPlugin())\n",
         "object of type NotAPlugin, which is not a FlowPlugin: it has no get_name(), get_type(), execute()"),
        ("from airiot_python_sdk.flow_plugin import FlowPlugin\nStartup().run(FlowPlugin)\n",
         "run() was given the class FlowPlugin, not a plugin: pass an instance"),
    ],
    ids=["no-flowplugin-subclass", "a-class-not-an-instance"],
)
def test_startup_run_with_no_flow_plugin_says_what_to_pass(tmp_path, code, message):
    done = start_failure(tmp_path, {"main.py": "from airiot_python_sdk.flow_plugin.startup import Startup\n" + code})
    assert done.returncode == 1
    assert message in done.stderr[done.stderr.index("failed to start"):], done.stderr[-2000:]


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("http://10.0.0.5:2333", "is not a host name: write the host alone"),
        ("flow-engine:2333", "has a port in it: write the host alone (flow-engine)"),
    ],
)
def test_an_engine_host_written_as_a_url_or_with_its_port_exits_2(tmp_path, host, said):
    (tmp_path / "config.yml").write_text(f"flow-engine:\n  host: '{host}'\n  port: 2333\n")
    done = subprocess.run(
        [*FLOW_BRIDGE, "run", "--name", "hostCheck", "--", sys.executable, "-c", "pass"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "config.yml: flow-engine.host" in done.stderr and said in done.stderr, done.stderr


def test_an_ipv6_engine_host_is_dialled_in_brackets():
    from flow_bridge.core import load_settings

    assert load_settings(environ={"FLOW_BRIDGE_HOST": "::1", "FLOW_BRIDGE_PORT": "2334"}).target == "[::1]:2334"
    assert load_settings(environ={"FLOW_BRIDGE_HOST": "[::1]"}).target == "[::1]:2333"
    assert load_settings(environ={"FLOW_BRIDGE_HOST": "10.0.0.5"}).target == "10.0.0.5:2333"


def test_spring_style_dotted_keys_register_at_the_files_address_and_name(port, engine_factory, tmp_path):
    """`flow-engine.host: ...` at the top level, as a Java user copies it from application.yml."""
    (tmp_path / "config.yml").write_text(
        f"flow-engine.host: 127.0.0.1\nflow-engine.port: {port}\nplugin.name: dottedPlugin\nplugin.timeout: PT30S\n"
        "spring.application.name: other\n"
    )
    engine = engine_factory(port)
    handler = [sys.executable, str(ROOT / "tests" / "handlers" / "conformance_echo.py")]
    # No --host/--port/--name: the bridge reads ./config.yml from its working folder.
    bridge = subprocess.Popen(
        [*FLOW_BRIDGE, "run", "--", *handler], cwd=tmp_path, env=env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: engine.registrations(), 30, "a registration from the dotted config")
        assert engine.err.find(r"plugin registered: name=dottedPlugin mode=service"), "\n".join(engine.err.texts())
        engine.send({"config": {"a": 1}, "elementJob": "dotted-1"})
        (answer,) = engine.wait_answers(1)
        assert answer["elementJob"] == "dotted-1" and answer["status"] is True
    finally:
        bridge.terminate()
        _, err = bridge.communicate(timeout=30)
    assert "section 'spring.application.name' is not one flow-bridge reads" in err


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("flow-engine.host: a\nflow-engine:\n  host: b\n", "flow-engine.host is written twice"),
        ("flow-engine:\n  host: a\nflow-engine.host: b\n", "flow-engine.host is written twice"),
        ("flow-engine.hots: a\n", "flow-engine.hots: not a setting flow-bridge knows; did you mean 'host'?"),
    ],
)
def test_dotted_keys_written_twice_or_misspelled_exit_2(tmp_path, text, said):
    (tmp_path / "config.yml").write_text(text)
    done = subprocess.run(
        [*FLOW_BRIDGE, "run", "--name", "dotCheck", "--", sys.executable, "-c", "pass"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert said in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("value", "sent"), [(2**64 - 1, True), (-(2**63), True), (2**64, False), (-(2**63) - 1, False)]
)
def test_integers_at_and_past_64_bits(value, sent, tmp_path):
    handler = tmp_path / "ints.py"
    handler.write_text(
        "from flow_bridge.adapter import serve\n"
        "async def execute(request):\n"
        f"    return {{'v': {value}}}\n"
        "serve(execute)\n"
    )
    done = subprocess.run([*FLOW_BRIDGE, "call", "-q", "--", sys.executable, str(handler)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    answer = json.loads(done.stdout)
    if sent:
        assert answer["status"] is True and answer["result"] == {"v": value}, answer
    else:
        assert answer["status"] is False and "beyond 64 bits" in answer["info"] and "send it as a str" in answer["info"]
