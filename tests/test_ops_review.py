"""The operator's surface tried as outside clients use it: a Prometheus scraper, curl -I,
an IPv6 bind, a busy port, jq over JSON logs with awkward handler output, and a shell
reading exit codes and --help."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ECHO_PY, FLOW_BRIDGE, free_port, wait_for


def _request(port: int, method: str, path: str, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _status(port: int, path: str, host: str = "127.0.0.1") -> int:
    try:
        return _request(port, "GET", path, host)[0]
    except OSError:
        return 0


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([*FLOW_BRIDGE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_scrape_parses_with_prometheus_own_parser_and_head_and_methods_behave(port, engine_factory, bridge_factory):
    metrics_port = free_port()
    engine = engine_factory(port)
    bridge_factory(port, [ECHO_PY], "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1")
    wait_for(lambda: _status(metrics_port, "/readyz") == 200, 30, "/readyz to say ready")

    # Before any crash or reconnect, their series exist at 0: increase() then sees the first one.
    status, headers, body = _request(metrics_port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in ("flow_bridge_child_crashes", "flow_bridge_engine_reconnects", "flow_bridge_answers_resent"):
        assert [s.value for s in families[name].samples if s.name == name + "_total"] == [0.0], name
    ok = [s for s in families["flow_bridge_requests"].samples
          if s.name == "flow_bridge_requests_total" and s.labels.get("outcome") == "ok"
          and s.labels.get("request") == "task"]
    assert [s.value for s in ok] == [0.0]

    engine.send({"config": {"i": 1}, "elementJob": "scrape-1"}, {"config": {"fail": "x"}, "elementJob": "scrape-2"})
    engine.wait_answers(2)
    scraped = _request(metrics_port, "GET", "/metrics")[2].decode()
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    assert families["flow_bridge_request_duration_seconds"].type == "histogram"
    counts = [s.value for s in families["flow_bridge_request_duration_seconds"].samples
              if s.name.endswith("_count") and s.labels["request"] == "task"]
    assert counts == [2.0]

    for path in ("/metrics", "/healthz", "/readyz", "/nowhere"):
        get_status, get_headers, _ = _request(metrics_port, "GET", path)
        head_status, head_headers, head_body = _request(metrics_port, "HEAD", path)
        assert head_status == get_status, path  # prometheus_client alone answers HEAD /metrics with 405
        assert head_body == b"", path
        assert head_headers["content-type"] == get_headers["content-type"], path
    for method in ("POST", "DELETE", "PUT"):
        status, headers, body = _request(metrics_port, method, "/healthz")
        assert status == 405 and headers["allow"] == "GET, HEAD", (method, status)
        assert b"use GET or HEAD" in body


def test_metrics_bind_on_ipv6_and_clear_usage_errors_for_busy_port_or_foreign_address(port, engine_factory,
                                                                                     bridge_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    engine_factory(port)
    metrics_port = free_port()
    bridge = bridge_factory(port, [ECHO_PY], "--metrics-port", str(metrics_port), "--metrics-host", "::1")
    wait_for(lambda: _status(metrics_port, "/healthz", "::1") == 200, 30,
             lambda: "/healthz on [::1]: " + bridge.log())
    assert any(f"http://[::1]:{metrics_port}" in line for line in bridge.err.texts())

    # The same port again: a config error, exit 2, which says what to change.
    busy = _cli("run", "--host", "127.0.0.1", "--port", str(port), "--name", "p", "--metrics-port",
                str(metrics_port), "--metrics-host", "::1", "--", ECHO_PY)
    assert busy.returncode == 2, busy.stderr
    assert f"cannot serve metrics on [::1]:{metrics_port}" in busy.stderr
    assert "pick another --metrics-port" in busy.stderr and "Traceback" not in busy.stderr

    foreign = _cli("run", "--host", "127.0.0.1", "--port", str(port), "--name", "p", "--metrics-port",
                   str(free_port()), "--metrics-host", "192.0.2.1", "--", ECHO_PY)
    assert foreign.returncode == 2, foreign.stderr
    assert "give --metrics-host" in foreign.stderr and "Traceback" not in foreign.stderr


def test_json_logs_stay_one_object_per_line_with_awkward_stderr_in_exec_mode(tmp_path):
    script = tmp_path / "awkward.py"
    script.write_text(
        "import sys\n"
        "e = sys.stderr.buffer\n"
        "e.write(b'bad utf8 \\xff\\xfe end\\n')\n"
        "e.write('\\u6e29\\u5ea6 sensor\\n'.encode())\n"
        "e.write(b'ctrl \\x00\\x01\\x1b[31mred\\x1b[0m tab\\there\\r\\n')\n"
        "e.write(b'z' * 100000 + b'\\n')\n"
        "e.write(b'no newline at the end')\n"
        "sys.exit(3)\n"
    )
    done = _cli("call", "--exec", "--log-format", "json", "--log-level", "info", "--", sys.executable, str(script))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    records = [json.loads(line) for line in lines]  # every line one JSON object, jq-ready
    handler = [r for r in records if r["logger"] == "flow_bridge.handler"]
    assert len(handler) == 5, handler
    assert all(r.get("elementJob") == "element-job-1" for r in handler)
    messages = "\n".join(r["message"] for r in handler)
    assert "温度 sensor" in messages and "\x1b[31mred" in messages and "no newline at the end" in messages
    failed = [r for r in records if r["level"] == "WARNING" and r.get("elementJob") == "element-job-1"]
    assert len(failed) == 1 and failed[0]["kind"] == "handler"


def test_help_names_every_variable_and_describes_every_option():
    for command in ("run", "call"):
        text = " ".join(_cli(command, "--help").stdout.split())
        assert "FLOW_BRIDGE_EXEC; default: off]" in text and "FLOW_BRIDGE_LOG_FORMAT" in text, text
    engine_help = _cli("engine", "-h").stdout
    assert "Least severe log lines to write." in engine_help


@pytest.mark.parametrize("value", ["99999999999999999999s", "P400D", "8761h"])
def test_a_duration_longer_than_a_year_is_a_usage_error_not_an_internal_one(value, tmp_path):
    done = _cli("call", "--timeout", value, "--", ECHO_PY)
    assert done.returncode == 2, done.stderr
    assert "longer than a year" in done.stderr and "0 or none" in done.stderr
    env_done = _cli("call", "--", ECHO_PY, env={"FLOW_BRIDGE_START_TIMEOUT": value})
    assert env_done.returncode == 2 and "FLOW_BRIDGE_START_TIMEOUT" in env_done.stderr
    config = tmp_path / "config.yml"  # the config file is read by the same parser
    config.write_text(f"plugin:\n  name: longOne\n  timeout: {value}\n  grace: {value}\n")
    file_done = _cli("call", "--config", str(config), "--", ECHO_PY)
    assert file_done.returncode == 2 and "plugin.timeout" in file_done.stderr, file_done.stderr
    assert "longer than a year: write at most 8760h; for no limit write 0 or none" in file_done.stderr


def test_a_year_itself_is_taken():
    done = _cli("call", "--timeout", "8760h", "--start-timeout", "P365D", "--", ECHO_PY)
    assert done.returncode == 0 and json.loads(done.stdout)["status"] is True, done.stderr


def test_exec_flag_reads_its_variable():
    exec_run = str(Path(ECHO_PY).parents[2] / "exec" / "python" / "run")
    on = _cli("call", "--", exec_run, env={"FLOW_BRIDGE_EXEC": "on"})
    assert on.returncode == 0 and json.loads(on.stdout)["status"] is True, on.stderr
    bad = _cli("call", "--", exec_run, env={"FLOW_BRIDGE_EXEC": "sometimes"})
    assert bad.returncode == 2 and "FLOW_BRIDGE_EXEC" in bad.stderr


def test_engine_usage_errors_exit_2_with_the_right_cause(tmp_path):
    foreign = _cli("engine", "--host", "192.0.2.1", "--port", str(free_port()))
    assert foreign.returncode == 2, foreign.stderr
    assert "cannot listen on 192.0.2.1" in foreign.stderr and "Traceback" not in foreign.stderr
    # A --stats path that cannot be written is said at once, and is not blamed on the port.
    missing = tmp_path / "no-such-folder" / "stats.json"
    stats = _cli("engine", "--port", "0", "--stats", str(missing))
    assert stats.returncode == 2, stats.stderr
    assert "--stats" in stats.stderr and "no-such-folder" in stats.stderr and "listen" not in stats.stderr


def test_text_logs_escape_control_characters_a_handler_writes(tmp_path):
    script = tmp_path / "colours.py"
    script.write_text(
        "import sys\n"
        "sys.stderr.buffer.write(b'\\x1b[2Jcleared\\rFAKE ERROR line\\ttab\\n')\n"
        "print('{}')\n"
    )
    done = _cli("call", "--exec", "--", sys.executable, str(script))
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if "cleared" in line)
    assert "\\x1b[2Jcleared\\x0dFAKE ERROR line\ttab" in line, line
    assert "\x1b" not in done.stderr and "\r" not in done.stderr
