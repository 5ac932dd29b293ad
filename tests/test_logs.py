"""Logs made for operators: every task-related line names the elementJob, a failed task is
logged once at warning with its kind, and --log-format json writes one object per line."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ECHO_PY, FLOW_BRIDGE, wait_for

ZONED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def test_json_logs_name_the_element_job_and_the_failure_kind(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--log-format", "json")
    engine.send({"config": {"i": 1, "log": "reading sensor 7"}, "elementJob": "job-ok-1"},
                {"config": {"fail": "sensor 7 offline"}, "elementJob": "job-failed-2"})
    engine.wait_answers(2)
    wait_for(lambda: any("job-failed-2" in line for line in bridge.err.texts()), 10, "the failure's log line")
    records = [json.loads(line) for line in bridge.err.texts()]  # every line is one JSON object
    assert records and all(ZONED.match(r["time"]) for r in records)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    handler_lines = [r for r in records if r.get("elementJob") == "job-ok-1"]
    assert any("reading sensor 7" in r["message"] and r["logger"] == "flow_bridge.handler" for r in handler_lines)
    failed = [r for r in records if r.get("elementJob") == "job-failed-2" and r["level"] == "WARNING"]
    assert len(failed) == 1, failed
    assert failed[0]["kind"] == "handler" and "sensor 7 offline" in failed[0]["message"]
    assert not [r for r in records if r.get("elementJob") == "job-ok-1" and r["level"] == "WARNING"]


def test_text_logs_carry_the_time_zone_and_the_element_job(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY])
    engine.send({"config": {"fail": "bad input"}, "elementJob": "job-text-3"})
    engine.wait_answers(1)
    wait_for(lambda: any("job-text-3" in line for line in bridge.err.texts()), 10, "the failure's log line")
    line = next(line for line in bridge.err.texts() if "job-text-3" in line)
    stamp = line.split(" ", 1)[0]
    assert ZONED.match(stamp), line
    assert "WARNING" in line and "failed [handler]" in line and "bad input" in line


def test_call_quiet_hides_every_line_of_the_handler_and_shows_them_otherwise(tmp_path):
    import subprocess
    import sys

    from conftest import FLOW_BRIDGE

    handler = tmp_path / "loud.py"
    handler.write_text(
        "import sys\n"
        "from flow_bridge.adapter import serve\n"
        "async def execute(request):\n"
        "    request.log.warning('careful: sensor 7')\n"
        "    request.log.error('sensor 7 is gone')\n"
        "    print('printed text', file=sys.stderr)\n"
        "    return [1, 2]\n"
        "serve(execute, name='loud')\n"
    )
    argv = [*FLOW_BRIDGE, "call", "--", sys.executable, str(handler)]
    loud = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    quiet = subprocess.run([*argv[:2], "--quiet", *argv[2:]], capture_output=True, text=True, timeout=60)
    for done in (loud, quiet):
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == [1, 2]
    for text in ("careful: sensor 7", "sensor 7 is gone", "printed text"):
        assert text in loud.stderr
        assert text not in quiet.stderr


def test_every_json_line_that_names_an_element_job_has_the_field(port, engine_factory, bridge_factory):
    # At debug level, with a request over the limit: the lines about sizes name their task too.
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--log-format", "json", "--log-level", "debug", "--max-frame", "65536")
    engine.send({"config": {"i": 1}, "elementJob": "job-small"},
                {"config": {"i": 2, "payload": "x" * 100_000}, "elementJob": "job-big"})
    engine.wait_answers(2)
    wait_for(lambda: any("job-big" in line for line in bridge.err.texts()), 10, "the big answer's log line")
    records = [json.loads(line) for line in bridge.err.texts()]
    naming = [r for r in records if re.search(r"elementJob (job-\w+)", r["message"])]
    print(f"{len(naming)} lines name a task: " + "; ".join(r["message"][:60] for r in naming[:6]))
    assert len(naming) >= 3
    for record in naming:
        assert record.get("elementJob") == re.search(r"elementJob (job-\w+)", record["message"]).group(1), record


def test_a_handler_log_line_with_a_lone_surrogate_is_spelled_out_not_lost(tmp_path):
    handler = tmp_path / "surrogate.py"
    handler.write_text(
        "from flow_bridge.adapter import serve\n"
        "async def execute(request):\n"
        "    request.log.info('bad byte: \\udcff, 中文 ok')\n"
        "    return {'ok': True}\n"
        "serve(execute)\n", encoding="utf-8",
    )
    done = subprocess.run([*FLOW_BRIDGE, "call", "--log-format", "json", "--", sys.executable, str(handler)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and json.loads(done.stdout)["status"] is True, done.stderr
    assert "Logging error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if "bad byte" in line]
    assert [r["message"].split(": ", 1)[1] for r in lines] == ["bad byte: \\udcff, 中文 ok"], lines
