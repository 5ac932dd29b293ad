"""Settings: file, then FLOW_BRIDGE_* variables, then flags; and ./config.yml by default."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FLOW_BRIDGE, ROOT
from flow_bridge.core import ConfigError, load_settings, parse_duration


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
    assert (settings.name, settings.type, settings.timeout) == ("goPlugin", "user", 30.0)


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
