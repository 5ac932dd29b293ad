"""Edge cases from a review of issue 11, through the real CLI, real gRPC and real processes.

Each test sends N tasks and checks N answers, one per task, and that nothing is left running.
"""

from __future__ import annotations

import collections
import signal
import sys
import time

from conftest import MISBEHAVE, wait_for

# An exec command that reads its stdin strictly (no NaN or Infinity, which JSON does not
# have) and then writes the bytes a task's config names, or echoes the config it read.
STRICT_EXEC = r"""
import json, sys
def refuse(name):
    raise ValueError(f"stdin is not JSON: {name}")
document = json.loads(sys.stdin.buffer.read(), parse_constant=refuse)
config = document["config"]
if isinstance(config, dict) and "out" in config:
    sys.stdout.buffer.write(bytes.fromhex(config["out"]))
else:
    json.dump({"config": config}, sys.stdout)
"""


def one_each(answers: list[dict]) -> dict[str, dict]:
    jobs = collections.Counter(a["elementJob"] for a in answers)
    assert all(count == 1 for count in jobs.values()), f"duplicate answers: {jobs.most_common(3)}"
    return {a["elementJob"]: a for a in answers}


def test_exec_output_that_is_json_in_form_but_has_no_json_value_is_text(port, engine_factory, bridge_factory):
    """NaN, Infinity, 1e400 (inf as a double) and a lone surrogate are no JSON value the
    engine can take: the answer is the text, as for any stdout that is not JSON, never a
    protocol error or an internal one."""
    engine = engine_factory(port)
    bridge = bridge_factory(port, [sys.executable, "-c", STRICT_EXEC], "--exec")
    outputs = {
        "nan": b'{"x": NaN}',
        "minus-infinity": b"-Infinity",
        "huge-float": b'{"x": 1e400}',
        "escaped-surrogate": b'{"s": "\\ud800"}',
        "surrogate-key": b'{"\\udfff": 1}',
        "raw-surrogate": b'"\xed\xa0\x80"',
        "fine": b'{"x": 1.5e308, "n": 123456789012345678901234567890}',
    }
    engine.send(*[{"config": {"out": out.hex()}, "elementJob": job} for job, out in outputs.items()])
    answers = one_each(engine.wait_answers(len(outputs), timeout=60))
    assert len(answers) == len(outputs)
    for job, out in outputs.items():
        answer = answers[job]
        assert answer["status"] is True, answer
        if job == "fine":
            assert answer["result"] == {"x": 1.5e308, "n": 123456789012345678901234567890}
        else:
            assert answer["result"] == {"stdout": out.decode("utf-8", "replace")}, answer
    assert "internal error" not in bridge.log()
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(30) == 0, bridge.log()
    assert bridge.leftovers() == []


def test_exec_config_with_a_number_too_large_for_a_double_reaches_the_command_as_text(
    port, engine_factory, bridge_factory
):
    """`{"x": 1e400}` parses as inf in Python; the command must never read `Infinity`."""
    engine = engine_factory(port)
    bridge = bridge_factory(port, [sys.executable, "-c", STRICT_EXEC], "--exec")
    engine.send(
        {"config": '{"x": 1e400, "y": 5}', "elementJob": "huge"},
        {"config": '{"x": -1e999}', "elementJob": "huge-negative"},
        {"config": '{"x": 1e300}', "elementJob": "fine"},
    )
    answers = one_each(engine.wait_answers(3, timeout=60))
    assert answers["huge"]["status"] is True, answers["huge"]
    assert answers["huge"]["result"] == {"config": '{"x": 1e400, "y": 5}'}
    assert answers["huge-negative"]["result"] == {"config": '{"x": -1e999}'}, answers["huge-negative"]
    assert answers["fine"]["result"] == {"config": {"x": 1e300}}
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(30) == 0, bridge.log()
    wait_for(lambda: bridge.leftovers() == [], 5, "no process left")


def test_a_slow_first_task_after_a_crash_does_not_hold_up_the_others(port, engine_factory, bridge_factory):
    """The slow start after a crash bounds what the next crash takes along; it must not queue
    every other task behind a restarted child's first task for as long as that one runs."""
    engine = engine_factory(port)
    bridge = bridge_factory(port, [sys.executable, MISBEHAVE, "ok"], "--timeout", "60s")
    engine.send({"config": {"crash": True}, "elementJob": "crash"})
    assert engine.wait_answers(1, timeout=30)[0]["info"].startswith("[crash]")
    wait_for(lambda: len(bridge.err.find("ready: protocol")) == 2, 15, "the restarted child")
    engine.send({"config": {"i": 0, "sleep_ms": 20_000}, "elementJob": "slow"})
    time.sleep(0.3)  # the restarted child has taken "slow"
    sent = time.monotonic()
    engine.send(*[{"config": {"i": i}, "elementJob": f"quick{i}"} for i in range(1, 11)])
    engine.wait_answers(11, timeout=40)
    took = time.monotonic() - sent
    answers = one_each(engine.answers())
    assert all(answers[f"quick{i}"]["result"] == {"i": i, "n": 0} for i in range(1, 11)), answers
    assert "slow" not in answers, "the slow task was answered before the quick ones"
    assert took < 8, f"the quick tasks waited {took:.1f} s behind the slow one"
    answers = one_each(engine.wait_answers(12, timeout=40))
    assert answers["slow"]["result"] == {"i": 0, "n": 0}
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(30) == 0, bridge.log()
    assert bridge.leftovers() == []
