"""Metrics and health over real HTTP during a real run (--metrics-port)."""

from __future__ import annotations

import re
import signal
import urllib.error
import urllib.request

from conftest import ECHO_PY, free_port, wait_for


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening (yet)


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_healthz_and_readyz_during_a_run(port, engine_factory, bridge_factory):
    metrics_port = free_port()
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1")
    wait_for(lambda: _get(metrics_port, "/readyz")[0] == 200, 30, "/readyz to say ready")
    assert _get(metrics_port, "/healthz") == (200, "ok\n")
    engine.send(*[{"config": {"i": i, "payload": "温度"}, "elementJob": f"ok{i}"} for i in range(5)],
                {"config": {"fail": "no"}, "elementJob": "bad1"})
    engine.wait_answers(6)

    status, text = _get(metrics_port, "/metrics")
    assert status == 200
    ok = _sample(text, "flow_bridge_requests_total", plugin="test-plugin", request="task", outcome="ok")
    failed = _sample(text, "flow_bridge_requests_total", plugin="test-plugin", outcome="failed", kind="handler")
    assert (ok, failed) == (5.0, 1.0), text
    assert _sample(text, "flow_bridge_request_duration_seconds_count", plugin="test-plugin", request="task") == 6.0
    assert _sample(text, "flow_bridge_requests_in_flight", plugin="test-plugin") == 0.0
    assert _sample(text, "flow_bridge_child_starts_total", plugin="test-plugin") == 1.0
    assert _sample(text, "flow_bridge_engine_connected", plugin="test-plugin") == 1.0
    assert _get(metrics_port, "/nowhere")[0] == 404

    engine.kill()  # the engine goes away: not ready, and it says why
    wait_for(lambda: _get(metrics_port, "/readyz")[0] == 503, 30, "/readyz to say not ready")
    status, reason = _get(metrics_port, "/readyz")
    assert "test-plugin" in reason and "not ready" in reason
    assert _get(metrics_port, "/healthz")[0] == 200  # alive all the same
    assert _sample(_get(metrics_port, "/metrics")[1], "flow_bridge_engine_connected", plugin="test-plugin") == 0.0
    assert bridge.proc.poll() is None


def test_readyz_is_503_until_the_engine_answers(port, bridge_factory):
    metrics_port = free_port()
    bridge_factory(port, [ECHO_PY], "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1")
    wait_for(lambda: _get(metrics_port, "/healthz")[0] == 200, 30, "/healthz")
    status, reason = _get(metrics_port, "/readyz")
    assert status == 503 and "not ready" in reason


def test_readyz_gives_the_cause_when_the_engine_is_unreachable(port, bridge_factory):
    metrics_port = free_port()
    bridge_factory(port, [ECHO_PY], "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1")
    # Nothing listens on `port`: after the early look (2 s) the cause is known.
    wait_for(lambda: "not reachable" in _get(metrics_port, "/readyz")[1], 30, "the cause in /readyz")
    status, reason = _get(metrics_port, "/readyz")
    print(f"/readyz {status}: {reason.strip()}")
    assert status == 503 and f"engine at 127.0.0.1:{port} not reachable: " in reason and "refused" in reason


def test_readyz_is_503_while_draining_and_healthz_stays_200(port, engine_factory, bridge_factory):
    metrics_port = free_port()
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1",
                            "--grace", "30s")
    wait_for(lambda: _get(metrics_port, "/readyz")[0] == 200, 30, "/readyz to say ready")
    engine.send({"config": {"sleep_ms": 4000}, "elementJob": "slow"})
    wait_for(lambda: _sample(_get(metrics_port, "/metrics")[1], "flow_bridge_requests_in_flight") == 1.0, 15,
             "the slow task in flight")
    bridge.signal(signal.SIGTERM)
    wait_for(lambda: _get(metrics_port, "/readyz")[0] == 503, 5, "/readyz to say draining")
    status, reason = _get(metrics_port, "/readyz")
    print(f"draining: /readyz {status}: {reason.strip()}; /healthz {_get(metrics_port, '/healthz')[0]}")
    assert "draining after SIGTERM" in reason
    assert _get(metrics_port, "/healthz")[0] == 200
    assert engine.wait_answers(1)[0]["status"], "the task in flight is still answered"
    assert bridge.wait(30) == 0
