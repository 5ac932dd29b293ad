"""Settings: file, then FLOW_BRIDGE_* variables, then flags; and ./config.yml by default."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import FLOW_BRIDGE, ROOT
from flow_bridge.core import ConfigError, load_service, load_settings, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("2m", 120.0), ("500ms", 0.5), ("1.5h", 5400.0), ("30", 30.0), (7, 7.0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_flags_beat_environment_beat_file(tmp_path):
    config = tmp_path / "c.yml"
    config.write_text("flow-engine:\n  host: from-file\n  port: 1111\n  retry-interval: 1m\n"
                      "plugin:\n  name: file-name\n  timeout: 5s\n")
    env = {"FLOW_BRIDGE_PORT": "2222", "FLOW_BRIDGE_NAME": "env-name"}
    settings = load_settings(str(config), {"name": "flag-name", "host": None}, environ=env)
    assert settings.host == "from-file"
    assert settings.port == 2222
    assert settings.name == "flag-name"
    assert settings.retry_interval == 60.0
    assert settings.timeout == 5.0


def test_go_sdk_flow_section_is_understood(tmp_path):
    config = tmp_path / "c.yml"
    config.write_text("flow:\n  name: goPlugin\n  mode: user\n  timeout: 30s\n")
    settings = load_settings(str(config), {}, environ={})
    assert (settings.name, settings.plugin_type, settings.timeout) == ("goPlugin", "user", 30.0)


@pytest.mark.parametrize(
    ("env", "expected"), [("true", True), ("1", True), ("no", False), ("off", False)]
)
def test_exec_mode_from_environment(env, expected):
    assert load_settings(None, {}, environ={"FLOW_BRIDGE_EXEC": env}).exec_mode is expected


def test_bad_boolean_names_its_source():
    with pytest.raises(ConfigError, match=r"^FLOW_BRIDGE_EXEC: 'maybe' must be true or false$"):
        load_settings(None, {}, environ={"FLOW_BRIDGE_EXEC": "maybe"})


def test_config_yml_in_the_working_directory_is_read(tmp_path):
    # exec: true in ./config.yml makes `call` use exec mode without --exec.
    (tmp_path / "config.yml").write_text("plugin:\n  name: here\n  exec: true\n")
    done = subprocess.run(
        [*FLOW_BRIDGE, "call", "--config-json", '{"i": 2, "payload": "abc"}', "--",
         str(ROOT / "examples" / "exec" / "python" / "run")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"i": 2, "n": 3}


def test_an_adapter_handler_is_not_run_in_exec_mode_without_asking(tmp_path):
    done = subprocess.run(
        [*FLOW_BRIDGE, "call", "--config-json", '{"i": 2}', "--", sys.executable,
         str(ROOT / "examples" / "echo" / "python" / "handler.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"i": 2, "n": 0}


# --- vendor SDK config files, as their projects have them -----------------------------

PYTHON_SDK_CONFIG = """\
flow-engine:
  host: 10.1.2.3
  port: 2444
  health-check-interval: 45
log-level: DEBUG
"""

GO_SDK_CONFIG = """\
flow:
  name: goFlowTestNode
  mode: user
  timeout: 120
log:
  level: 5
flowEngine:
  host: 10.9.8.7
  port: 2555
pprof: {enable: false, host: "", port: ""}
"""


def test_python_sdk_config_yml_reads_as_it_is(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(PYTHON_SDK_CONFIG)
    settings = load_settings(str(config), {}, environ={})
    assert (settings.host, settings.port, settings.heartbeat_interval, settings.log_level) == (
        "10.1.2.3", 2444, 45.0, "DEBUG")
    assert settings.notes == ()


def test_go_sdk_etc_config_yaml_reads_as_it_is(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(GO_SDK_CONFIG)
    settings = load_settings(str(config), {}, environ={})
    assert (settings.name, settings.plugin_type, settings.timeout) == ("goFlowTestNode", "user", 120.0)
    assert (settings.host, settings.port, settings.log_level) == ("10.9.8.7", 2555, "DEBUG")
    assert settings.notes == () and len(settings.infos) == 1 and "pprof" in settings.infos[0]


@pytest.mark.parametrize(("level", "expected"), [(0, "ERROR"), (3, "WARNING"), (4, "INFO"), (6, "DEBUG")])
def test_go_numeric_log_levels(tmp_path, level, expected):
    config = tmp_path / "config.yaml"
    config.write_text(f"log:\n  level: {level}\n")
    assert load_settings(str(config), {}, environ={}).log_level == expected


def test_go_log_level_out_of_range_is_refused(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("log:\n  level: 7\n")
    with pytest.raises(ConfigError, match=r"log\.level: 7 is not a log level"):
        load_settings(str(config), {}, environ={})


def test_config_folder_names_its_config_yaml(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "config.yaml").write_text(GO_SDK_CONFIG)
    assert load_settings(str(tmp_path / "etc"), {}, environ={}).name == "goFlowTestNode"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m30s", 90.0), ("PT15S", 15.0), ("PT1M30S", 90.0), ("pt0.5s", 0.5), ("1h2m3.5s", 3723.5), ("0.25", 0.25)],
)
def test_more_duration_forms(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "15x", "-1s", "s", "1m-30s", "fifteen"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="write it like 15s, 1m30s, 500ms, PT15S"):
        parse_duration(text)


@pytest.mark.parametrize(("value", "expected"), [
    ("0", None), ("0s", None), ("none", None), ("off", None), ("1", 1.0), ("600", 600.0), ("1ms", 0.001),
])
def test_task_timeout_zero_none_or_off_means_no_limit(tmp_path, value, expected):
    config = tmp_path / "c.yml"
    config.write_text(f"plugin:\n  timeout: {value}\n")
    assert load_settings(str(config), {}, environ={}).timeout == expected
    assert load_settings(None, {"timeout": value}, environ={}).timeout == expected


def test_default_timeout_stays_600_seconds():
    assert load_settings(None, {}, environ={}).timeout == 600.0


@pytest.mark.parametrize("key", ["connect-timeout", "heartbeat-interval", "retry-interval"])
def test_intervals_must_be_greater_than_zero(tmp_path, key):
    config = tmp_path / "c.yml"
    config.write_text(f"flow-engine:\n  {key}: 0s\n")
    with pytest.raises(ConfigError, match=rf"flow-engine\.{key}: '0s' must be greater than 0"):
        load_settings(str(config), {}, environ={})


@pytest.mark.parametrize(("yaml_text", "wrong", "suggested"), [
    ("plugin:\n  timout: 5s\n", "plugin.timout", "timeout"),
    ("plugin:\n  nmae: x\n", "plugin.nmae", "name"),
    ("flow-engine:\n  hots: x\n", "flow-engine.hots", "host"),
    ("flowEngine:\n  prot: 1\n", "flowEngine.prot", "port"),
])
def test_a_misspelled_key_names_the_closest_one(tmp_path, yaml_text, wrong, suggested):
    config = tmp_path / "c.yml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=rf"c\.yml: {re.escape(wrong)}: .*did you mean '{suggested}'\?"):
        load_settings(str(config), {}, environ={})


def test_an_unknown_section_is_a_warning_not_an_error(tmp_path):
    config = tmp_path / "c.yml"
    config.write_text("plugin:\n  name: ok\nmysql:\n  host: db\npluign:\n  x: 1\n")
    settings = load_settings(str(config), {}, environ={})
    assert settings.name == "ok"
    assert any("'mysql'" in note for note in settings.notes)
    assert any("'pluign'" in note and "did you mean 'plugin'" in note for note in settings.notes)


@pytest.mark.parametrize("name", ["a", "myPlugin", "x" * 64, "b-_1"])
def test_good_plugin_names(name):
    assert load_settings(None, {"name": name}, environ={}).name == name


@pytest.mark.parametrize("name", ["x" * 65, "1abc", "my plugin", "温度", "-x"])
def test_bad_plugin_names_say_what_would_do(name):
    with pytest.raises(ConfigError, match="not a plugin name the platform accepts"):
        load_settings(None, {"name": name}, environ={})


def test_no_name_anywhere_is_none_not_invented():
    assert load_settings(None, {}, environ={}).name is None


# --- the same rules through the real CLI (exit 2 with the message) --------------------


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOW_BRIDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_cli_misspelled_key_exits_2_naming_file_key_and_fix(tmp_path):
    (tmp_path / "config.yml").write_text("plugin:\n  timout: 5s\n")
    done = _cli("run", "--", "true", cwd=tmp_path)
    assert done.returncode == 2
    assert "config.yml: plugin.timout" in done.stderr and "did you mean 'timeout'?" in done.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["--timeout", "soon"], "'soon' is not a duration"),
    (["--port", "0"], "0 is not in the range 1<=x<=65535"),
    (["--port", "65536"], "65536 is not in the range 1<=x<=65535"),
    (["--max-inflight", "0"], "0 is not in the range x>=1"),
    (["--workers", "0"], "0 is not in the range x>=1"),
    (["--start-timeout", "0"], "must be greater than 0"),
    (["--name", "bad name"], "not a plugin name the platform accepts"),
    (["--type", "daemon"], "'daemon' is not one of 'service', 'user'"),
])
def test_cli_bad_values_exit_2(args, needle):
    done = _cli("run", *args, "--", "true")
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


def test_help_shows_defaults_and_variables():
    done = _cli("run", "--help")
    assert done.returncode == 0
    flat = " ".join(done.stdout.split())
    for fragment in ["FLOW_BRIDGE_TIMEOUT", "default: 600s]", "FLOW_BRIDGE_MAX_INFLIGHT", "default: 64;",
                     "--port INTEGER RANGE", "--timeout DURATION"]:
        assert fragment in flat, fragment
    # One style: a value bare, as click shows a real default; a description in parentheses.
    assert "default: (the name the handler declares)" in flat and "default: 2333;" in flat
    for command in ("run", "call", "engine", "conformance"):
        text = " ".join(_cli(command, "--help").stdout.split())
        assert not re.search(r"default: \((\d+|\d+(ms|s|m|h)|none|info|text|flow-engine)\)", text), (command, text)
    assert "--host" not in _cli("call", "--help").stdout


# --- several plugins in one service (a plugins: list) ---------------------------------

SERVICE = """\
flow-engine:
  host: 127.0.0.1
plugin:
  timeout: 30s
  max-inflight: 8
plugins:
  - name: first
    command: ./first --flag "two words"
  - name: second
    type: user
    command: [node, handler.js]
    exec: true
    timeout: none
    workers: 2
    env: {MODE: fast, LEVEL: 3}
"""


def test_a_plugins_list_gives_one_settings_each_with_the_shared_rest(tmp_path):
    config = tmp_path / "service.yml"
    config.write_text(SERVICE)
    first, second = load_service(str(config), {}, environ={})
    assert (first.name, first.command, first.timeout, first.max_inflight, first.plugin_type) == (
        "first", ("./first", "--flag", "two words"), 30.0, 8, "service")
    assert (second.name, second.command, second.timeout, second.exec_mode, second.workers) == (
        "second", ("node", "handler.js"), None, True, 2)
    assert second.plugin_type == "user" and dict(second.env) == {"MODE": "fast", "LEVEL": "3"}
    assert first.host == second.host == "127.0.0.1"


def test_an_entry_wins_over_flags_which_win_over_the_shared_section(tmp_path):
    config = tmp_path / "service.yml"
    config.write_text(SERVICE)
    first, second = load_service(str(config), {"timeout": "5s"}, environ={})
    assert first.timeout == 5.0 and second.timeout is None


def test_without_a_plugins_list_there_is_one_plugin(tmp_path):
    config = tmp_path / "c.yml"
    config.write_text("plugin:\n  name: solo\n  command: ./run\n")
    (solo,) = load_service(str(config), {}, environ={})
    assert (solo.name, solo.command) == ("solo", ("./run",))


@pytest.mark.parametrize(("entries", "message"), [
    ("  - name: a\n    command: ./a\n  - name: a\n    command: ./b\n",
     r"plugins\[1\] \(a\): the name 'a' is taken by .*plugins\[0\] \(a\)"),
    ("  - command: ./a\n", r"plugins\[0\]: every entry of plugins: needs its own name"),
    ("  - name: a\n", r"plugins\[0\] \(a\): every entry of plugins: needs its own command"),
    ("  - name: a\n    command: ./a\n    timout: 3s\n", r"plugins\[0\] \(a\)\.timout: .*did you mean 'timeout'\?"),
    ("  - name: bad name\n    command: ./a\n", r"plugins\[0\] \(bad name\)\.name: .*not a plugin name"),
    ("  - name: a\n    command: []\n", r"command: must name the handler to run"),
    ("  - name: a\n    command: 'x \"unclosed'\n", r"cannot be split into arguments"),
    ("  - name: a\n    command: ./a\n    env: [A]\n", r"env: must be a mapping"),
    ("  []\n", r"plugins: must be a list of plugins"),
])
def test_bad_plugin_entries_name_the_entry(tmp_path, entries, message):
    config = tmp_path / "service.yml"
    config.write_text("plugins:\n" + entries)
    with pytest.raises(ConfigError, match=message):
        load_service(str(config), {}, environ={})


def test_name_flag_with_a_plugins_list_is_refused(tmp_path):
    config = tmp_path / "service.yml"
    config.write_text(SERVICE)
    with pytest.raises(ConfigError, match="--name names a single plugin"):
        load_service(str(config), {"name": "x"}, environ={})


def test_the_package_section_of_an_init_project_is_not_warned_about(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("plugin:\n  name: p\npackage:\n  version: '0.1.0'\n  lang: python\n")
    assert load_settings(str(config), {}, environ={}).notes == ()


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("plugin:\n  name: a\nflow:\n  name: b\n", r"flow\.name: sets the same thing as plugin\.name"),
    ("flow-engine:\n  port: 2333\nflowEngine:\n  port: 2444\n",
     r"flowEngine\.port: sets the same thing as flow-engine\.port"),
    ("log:\n  level: info\nlog-level: DEBUG\n", r"log-level: sets the same thing as log\.level"),
    ("flow-engine:\n  heartbeat-interval: 5s\n  health-check-interval: 5\n", r"health-check-interval: sets the same"),
])
def test_two_keys_for_one_setting_are_refused(tmp_path, yaml_text, message):
    config = tmp_path / "config.yml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_settings(str(config), {}, environ={})


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("plugin:\n  timeout: 5s\n  timeout: 6s\n")
    with pytest.raises(ConfigError, match=r"the key 'timeout' is written twice \(lines 2 and 3\); keep one"):
        load_settings(str(config), {}, environ={})
