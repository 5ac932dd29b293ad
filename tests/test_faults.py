"""Fault injection: misbehaving children and engines, real processes and real gRPC.

Every test counts the engine's answers (exactly one per task) and checks that no
process is left behind.
"""

from __future__ import annotations

import collections
import pathlib
import signal
import sys
import time

import pytest

from conftest import ECHO_PY, MISBEHAVE, ROOT, wait_for


def misbehave(scenario: str) -> list[str]:
    return [sys.executable, MISBEHAVE, scenario]


def tasks(n: int, prefix: str = "t", **config: object) -> list[dict[str, object]]:
    return [{"config": {"i": i, "payload": "ab", **config}, "elementJob": f"{prefix}{i}"} for i in range(n)]


def one_each(answers: list[dict]) -> dict[str, dict]:
    jobs = collections.Counter(a["elementJob"] for a in answers)
    assert all(count == 1 for count in jobs.values()), f"duplicate answers: {jobs.most_common(3)}"
    return {a["elementJob"]: a for a in answers}


def stop(bridge) -> None:
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(30) == 0, bridge.log()
    assert bridge.leftovers() == []


# --- child faults ---------------------------------------------------------------------


def test_crash_mid_task_fails_in_flight_tasks_and_restarts(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("crash-mid-task"))
    engine.send({"config": {"i": 0, "sleep_ms": 3000}, "elementJob": "slow"})
    engine.send(*tasks(2, prefix="quick", sleep_ms=3000))  # the third task kills the child
    answers = one_each(engine.wait_answers(3, timeout=15))
    for answer in answers.values():
        assert answer["status"] is False
        assert answer["info"] == "[crash] handler was killed by signal 9 (SIGKILL) while running this task"
        assert answer["detail"].startswith("flow-bridge: kind=crash")
        assert "segfault simulation" in answer["detail"]
    engine.send(*tasks(1, prefix="after"))
    assert engine.wait_answers(4)[-1]["status"] is True, "the restarted child did not serve"
    assert "restarting handler" in bridge.log()
    stop(bridge)


def test_crash_every_10th_task_gives_100_crash_errors_and_900_results(port, engine_factory, bridge_factory):
    # One task at a time, so that a crash takes only its own task with it.
    engine = engine_factory(port, "--concurrency", "1")
    bridge = bridge_factory(port, misbehave("crash-every-10th"))
    engine.send(*tasks(1000))
    engine.close_input()
    assert engine.proc.wait(240) == 0
    answers = one_each(engine.answers())
    assert len(answers) == 1000
    crashed = [a for a in answers.values() if not a["status"]]
    assert len(crashed) == 100
    assert all(a["info"].startswith("[crash] handler exited with status 3") for a in crashed)
    assert all(int(a["elementJob"][1:]) % 10 == 0 for a in crashed)
    assert all(a["result"] == {"i": int(a["elementJob"][1:]), "n": 2} for a in answers.values() if a["status"])
    assert "CRASH-LOOPING" not in bridge.log()  # a child that works between crashes is not looping
    stop(bridge)


def test_crash_loop_is_loud_and_answers_unavailable_without_hanging(port, engine_factory, bridge_factory, tmp_path):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("crash-loop"), env={"CRASH_LOOP_FILE": str(tmp_path / "started")})
    engine.send(*tasks(1, prefix="first"))
    assert engine.wait_answers(1)[0]["info"].startswith("[crash]")
    wait_for(lambda: "CRASH-LOOPING" in bridge.log(), 20, "the crash loop to be reported")
    began = time.monotonic()
    engine.send(*tasks(5, prefix="later"))
    answers = one_each(engine.wait_answers(6, timeout=20))
    assert time.monotonic() - began < 5
    for i in range(5):
        info = answers[f"later{i}"]["info"]
        assert info.startswith("[unavailable] handler unavailable: crashing, last error:"), info
    stop(bridge)


def test_hang_is_cancelled_then_answered_as_timeout(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("hang"), "--timeout", "1s", "--cancel-grace", "1s")
    engine.send(*tasks(2))
    answers = one_each(engine.wait_answers(2, timeout=10))
    for answer in answers.values():
        assert answer["info"] == "[timeout] handler did not answer within 1 s"
        assert "it answered the cancel" in answer["detail"]
    stop(bridge)


def test_ignoring_cancel_gets_the_child_killed_and_restarted(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("ignore-cancel"), "--timeout", "500ms", "--cancel-grace", "500ms")
    engine.send({"config": {"i": 1, "sleep_ms": 60000}, "elementJob": "stuck"})
    answer = engine.wait_answers(1, timeout=10)[0]
    assert answer["info"] == "[timeout] handler did not answer within 0.5 s"
    assert "it was killed and restarted" in answer["detail"]
    wait_for(lambda: "ready" in bridge.err.texts()[-1] or len(bridge.err.find("ready: protocol")) >= 2,
             10, "the restarted child")
    engine.send(*tasks(1, prefix="next"))
    assert engine.wait_answers(2)[-1]["status"] is True
    stop(bridge)


@pytest.mark.parametrize(
    ("scenario", "expected_info", "log_fragment"),
    [
        pytest.param("garbage-stdout", "[protocol] handler broke the protocol: frame of",
                     "wrote text to stdout: 'DEBUG: value=42", id="garbage-stdout"),
        pytest.param("huge-frame", "[protocol] handler broke the protocol: frame of 67108864 bytes exceeds",
                     "bytes seen: 04 00 00 00", id="huge-frame"),
        pytest.param("wrong-id", "[protocol] handler broke the protocol: the child answered id 1002",
                     "not in flight", id="wrong-id"),
    ],
)
def test_protocol_faults_fail_in_flight_tasks_and_restart(
    scenario, expected_info, log_fragment, port, engine_factory, bridge_factory
):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave(scenario))
    engine.send({"config": {"i": 0, "sleep_ms": 2000}, "elementJob": "in-flight"})
    engine.send({"config": {"i": 1}, "elementJob": "trigger"})
    answers = one_each(engine.wait_answers(2, timeout=15))
    for answer in answers.values():
        assert answer["status"] is False
        assert answer["info"].startswith(expected_info), answer["info"]
        assert answer["detail"].startswith("flow-bridge: kind=protocol")
    assert log_fragment in bridge.log()
    engine.send(*tasks(1, prefix="after"))
    assert engine.wait_answers(3)[-1]["status"] is True
    stop(bridge)


def test_a_good_answer_before_garbage_in_the_same_write_still_counts(port, engine_factory, bridge_factory):
    # Issue 11.7: the outcome must not depend on how the pipe split the bytes.
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("answer-then-garbage"))
    engine.send({"config": {"i": 0, "sleep_ms": 2000}, "elementJob": "in-flight"})
    engine.send({"config": {"i": 1}, "elementJob": "trigger"})
    answers = one_each(engine.wait_answers(2, timeout=15))
    assert answers["trigger"]["status"] is True and answers["trigger"]["result"] == {"i": "good"}
    assert answers["in-flight"]["status"] is False
    assert answers["in-flight"]["info"].startswith("[protocol] handler broke the protocol: frame of")
    engine.send(*tasks(1, prefix="after"))
    assert engine.wait_answers(3)[-1]["status"] is True
    stop(bridge)


def test_ignore_sigterm_child_is_killed_at_shutdown(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("ignore-sigterm"), "--grace", "2s")
    engine.send(*tasks(3))
    engine.wait_answers(3)
    began = time.monotonic()
    stop(bridge)
    assert time.monotonic() - began < 10


def test_requests_answered_by_the_drain_get_no_second_outcome(port, engine_factory, bridge_factory):
    # The child never answers; the drain answers both after its grace, then the stop ends
    # the child, which fails its two requests once more inside the bridge. Those late
    # outcomes must go nowhere: not to the engine, and not to the log as failures of their own.
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("hang"), "--grace", "1s")
    engine.send(*tasks(2, prefix="held"))
    time.sleep(1.0)  # both reach the child (it takes them and says nothing)
    stop(bridge)
    answers = one_each(engine.wait_answers(2))
    assert all(a["status"] is False and "shut down" in a["info"] for a in answers.values()), answers
    assert bridge.err.find(r"2 requests still in flight after the 1 s grace period; answering them as unavailable")
    late = [line for line in bridge.err.texts() if "elementJob held" in line and " failed [" in line]
    assert late == []


def test_slow_start_within_the_limit_is_fine(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("slow-start"), "--start-timeout", "5s", env={"SLOW_START_S": "1.5"})
    engine.send(*tasks(2))
    assert all(a["status"] for a in engine.wait_answers(2, timeout=20))
    stop(bridge)


def test_a_one_mib_stderr_line_is_cut_not_buffered(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("stderr-flood"))
    engine.send(*tasks(3))
    assert all(a["status"] for a in engine.wait_answers(3))
    assert bridge.err.find(r"xxxx \.\.\. \[1040384 more bytes cut\]")
    stop(bridge)


def test_bridge_killed_leaves_no_orphan(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY])
    engine.send(*tasks(2))
    engine.wait_answers(2)
    assert bridge.leftovers(), "the child should be running"
    bridge.signal(signal.SIGKILL)
    bridge.wait()
    wait_for(lambda: bridge.leftovers() == [], 10, "the child to notice stdin EOF and exit")


def test_workers_share_load_and_one_crash_spares_the_other(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("ok"), "--workers", "2")
    wait_for(lambda: len(bridge.err.find("ready: protocol")) == 2, 15, "two workers")
    # Least-loaded dispatch alternates: each copy takes five slow tasks, and the crash task
    # goes to the first copy, which dies with its five.
    engine.send(*tasks(10, sleep_ms=1500))
    engine.send({"config": {"crash": True}, "elementJob": "crash"})
    answers = one_each(engine.wait_answers(11, timeout=20))
    crashed = sorted(job for job, a in answers.items() if a["info"].startswith("[crash]"))
    served = sorted(job for job, a in answers.items() if a["status"])
    assert crashed == ["crash", "t0", "t2", "t4", "t6", "t8"]
    assert served == ["t1", "t3", "t5", "t7", "t9"]
    stop(bridge)


def test_crash_hidden_by_a_setsid_grandchild_is_answered_and_restarted(port, engine_factory, bridge_factory):
    # The grandchild left the child's group and holds its stdout, so end of output never comes:
    # the child's exit alone must be enough.
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("ok"), "--timeout", "60s")
    engine.send({"config": {"i": 0, "sleep_ms": 30000}, "elementJob": "in-flight"})
    began = time.monotonic()
    engine.send({"config": {"i": 1, "escape": True, "crash": True}, "elementJob": "crash"})
    answers = one_each(engine.wait_answers(2, timeout=30))
    took = time.monotonic() - began
    print(f"crash behind a setsid grandchild answered in {took:.2f} s")
    assert took < 10
    for answer in answers.values():
        assert answer["info"] == "[crash] handler exited with status 3 while running this task", answer
        assert "task 2 asked to crash" in answer["detail"]
    warning = bridge.err.find(r"that it started outside its process group \(setsid\) still held its stdout")
    assert warning and "(sleep 300)" in warning[0][1], bridge.log()
    engine.send(*tasks(1, prefix="after"))
    assert engine.wait_answers(3, timeout=30)[-1]["status"] is True, "the restarted child did not serve"
    stop(bridge)  # nothing left behind: the escaped grandchild was killed with the crash


EXEC_PROBE = str(ROOT / "tests" / "handlers" / "exec_probe.py")


def watchdogs_of(pid: int) -> list[int]:
    """The bridge's watchdog process (its argv names the bridge's pid), if still running."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"_watchdog.py") for arg in argv) and str(pid).encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("command", "extra", "config", "count", "expected"),
    [
        pytest.param([ECHO_PY], (), {"sleep_ms": 60000}, 3, 1, id="adapter-with-work-in-flight"),
        pytest.param(misbehave("ok"), (), {"sleep_ms": 60000, "grandchild": True}, 3, 4, id="child-and-grandchildren"),
        pytest.param([sys.executable, EXEC_PROBE], ("--exec",), {"mode": "grandchild"}, 2, 4, id="exec-tasks"),
    ],
)
def test_bridge_killed_with_work_in_flight_leaves_nothing_within_5s(
    command, extra, config, count, expected, port, engine_factory, bridge_factory
):
    engine = engine_factory(port)
    bridge = bridge_factory(port, command, *extra)
    wait_for(lambda: engine.registrations(), 15, "registration")
    engine.send(*tasks(count, **config))
    wait_for(lambda: len(bridge.leftovers()) >= expected, 15, f"{expected} processes at work")
    assert watchdogs_of(bridge.proc.pid), "no watchdog runs beside the bridge"
    bridge.signal(signal.SIGKILL)
    bridge.proc.wait()
    began = time.monotonic()
    wait_for(lambda: bridge.leftovers() == [], 5, "every process the bridge started to be gone")
    print(f"all {expected} processes gone {time.monotonic() - began:.2f} s after SIGKILL")
    wait_for(lambda: watchdogs_of(bridge.proc.pid) == [], 5, "the watchdog to exit")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2])
def test_crash_on_every_10th_task_at_concurrency_32_spares_most_others(
    workers, port, engine_factory, bridge_factory, tmp_path
):
    # Each crash fails the tasks in flight on that child; none may be run again. A restarted
    # child is given one task at first, so fewer neighbours go down with the next crash.
    started = tmp_path / "started"
    engine = engine_factory(port, "--concurrency", "32")
    bridge = bridge_factory(port, misbehave("crash-every-10th"), "--workers", str(workers),
                            env={"TASK_LOG": str(started)})
    wait_for(lambda: len(bridge.err.find("ready: protocol")) == workers, 15, "the workers")
    began = time.monotonic()
    engine.send(*tasks(500))
    engine.close_input()
    assert engine.proc.wait(240) == 0
    took = time.monotonic() - began
    answers = one_each(engine.answers())
    assert len(answers) == 500
    crash_tasks = {f"t{i}" for i in range(0, 500, 10)}
    assert all(answers[job]["info"].startswith("[crash] handler exited with status 3") for job in crash_tasks)
    others = [a for job, a in answers.items() if job not in crash_tasks]
    served = [a for a in others if a["status"] and a["result"] == {"i": int(a["elementJob"][1:]), "n": 2}]
    assert all(a["info"].startswith("[crash]") for a in others if not a["status"])
    ran = collections.Counter(started.read_text().split())
    assert ran and ran.most_common(1)[0][1] == 1, f"tasks run twice: {[i for i, n in ran.items() if n > 1]}"
    ratio = len(served) / len(others)
    print(f"workers={workers}: {len(served)} of {len(others)} other tasks answered ({ratio:.0%}) in {took:.1f} s")
    assert ratio >= 0.6
    stop(bridge)


@pytest.mark.parametrize("value", ["0s", "none"])
def test_timeout_0_or_none_means_no_limit(value, port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, misbehave("ok"), "--timeout", value, "--cancel-grace", "200ms")
    engine.send(*tasks(3, report=True, sleep_ms=1500))
    answers = one_each(engine.wait_answers(3, timeout=30))
    for answer in answers.values():
        assert answer["status"] is True, answer["info"]
        assert answer["result"]["timeout_ms"] == 0
    engine.send(*tasks(2, prefix="later"))
    assert all(a["status"] for a in engine.wait_answers(5, timeout=30))
    assert len(bridge.err.find("ready: protocol")) == 1, "a healthy child was restarted"
    stop(bridge)


# --- engine faults -----------------------------------------------------------------------


def test_engine_down_at_start_is_retried_and_logged(port, engine_factory, bridge_factory):
    bridge = bridge_factory(port, [ECHO_PY], "--connect-timeout", "500ms", "--retry-interval", "1s")
    wait_for(lambda: len(bridge.err.find("not reachable")) >= 2, 15, "two reported attempts")
    assert bridge.proc.poll() is None, "the bridge gave up"
    engine = engine_factory(port)
    wait_for(lambda: engine.registrations(), 10, "registration once the engine is up")
    delay = engine.registrations()[0] - engine.err.find("listening on")[0][0]
    assert delay < 2.0
    engine.send(*tasks(2))
    assert all(a["status"] for a in engine.wait_answers(2))
    stop(bridge)


def test_engine_restart_mid_run_loses_nothing_sent_after_reregistering(port, engine_factory, bridge_factory):
    first = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY])
    wait_for(lambda: first.registrations(), 15, "registration")
    first.send(*tasks(1000, prefix="a", sleep_ms=300))
    wait_for(lambda: len(first.out.texts()) >= 200, 30, "some answers")
    first.kill()
    answered_first = {a["elementJob"] for a in first.answers()}
    second = engine_factory(port)
    wait_for(lambda: second.registrations(), 10, "registration with the new engine")
    assert second.registrations()[0] - second.err.find("listening on")[0][0] < 2.0
    second.send(*tasks(1000, prefix="b"))
    second.close_input()
    assert second.proc.wait(60) == 0
    later = second.answers(include_unexpected=True)
    expected = [a for a in later if not a.get("unexpected")]
    carried = [a for a in later if a.get("unexpected")]
    assert len(one_each(expected)) == 1000 and all(a["status"] for a in expected)
    # Answers the bridge computed while the engine was away arrive on the new stream.
    assert carried, "no answer computed during the outage reached the new engine"
    carried_jobs = {a["elementJob"] for a in carried}
    assert all(job.startswith("a") for job in carried_jobs)
    # Some were answered to the first engine just before it died, and are repeated in case
    # it never read them; the rest were computed during the outage.
    during_outage = carried_jobs - answered_first
    assert during_outage, "no answer computed during the outage reached the new engine"
    print(f"first engine answered {len(answered_first)}; {len(during_outage)} answers computed during the "
          f"outage and {len(carried_jobs & answered_first)} repeated ones reached the second")
    stop(bridge)


def test_stream_reset_redelivers_answers_on_the_next_stream(port, engine_factory, bridge_factory):
    # Tasks the engine wrote into the stream as it broke never reach the bridge; the
    # engine's own timeout answers those. Everything the bridge did receive must be
    # answered, on the first stream or the next.
    engine = engine_factory(port, "--fault", "reset-after=50", "--concurrency", "32", "--task-timeout", "4s")
    bridge = bridge_factory(port, [ECHO_PY], "--log-level", "debug")
    engine.send(*tasks(300, sleep_ms=50))
    engine.close_input()
    assert engine.proc.wait(60) == 0
    answers = one_each(engine.answers())
    assert len(answers) == 300
    assert len(engine.registrations()) >= 2
    handled = {line.split("elementJob ")[1].split(":")[0] for _, line in bridge.err.find("answer for elementJob")}
    lost_in_transit = {job for job, a in answers.items() if a["info"].startswith("[standin]")}
    assert not handled & lost_in_transit, "the bridge answered a task, but the answer never arrived"
    assert all(answers[job]["status"] for job in handled)
    assert len(lost_in_transit) < 32
    print(f"{len(handled)} answered by the bridge, {len(lost_in_transit)} lost on the way to it")
    stop(bridge)


def test_refused_registration_is_retried(port, engine_factory, bridge_factory):
    engine = engine_factory(port, "--fault", "refuse=3")
    bridge = bridge_factory(port, [ECHO_PY])
    wait_for(lambda: engine.registrations(), 15, "registration after three refusals")
    engine.send(*tasks(3))
    assert all(a["status"] for a in engine.wait_answers(3))
    assert len(bridge.err.find("engine connection lost")) >= 3
    stop(bridge)


def test_heartbeat_detects_an_engine_that_stopped_answering(port, engine_factory, bridge_factory):
    engine = engine_factory(port, "--fault", "health=hang")
    bridge = bridge_factory(port, [ECHO_PY], "--heartbeat-interval", "500ms", "--connect-timeout", "500ms")
    wait_for(lambda: bridge.err.find("health check failed: DEADLINE_EXCEEDED"), 15, "the heartbeat to notice")
    wait_for(lambda: len(engine.registrations()) >= 2, 10, "a fresh registration")
    stop(bridge)


@pytest.mark.timeout(300)
def test_memory_stays_bounded_while_100k_tasks_are_offered(port, engine_factory, bridge_factory):
    engine = engine_factory(port)
    bridge = bridge_factory(port, [ECHO_PY], "--max-inflight", "64")
    wait_for(lambda: engine.registrations(), 15, "registration")
    assert engine.proc.stdin is not None
    line = b'{"config": {"i": 1, "payload": "%s"}}\n' % (b"p" * 200)
    engine.proc.stdin.write(line * 100_000)
    engine.close_input()
    assert engine.proc.wait(240) == 0
    assert len(engine.out.texts()) == 100_000
    with open(f"/proc/{bridge.proc.pid}/status") as fh:
        peak_kb = next(int(row.split()[1]) for row in fh if row.startswith("VmHWM:"))
    print(f"bridge peak RSS {peak_kb / 1024:.1f} MB over 100,000 tasks")
    assert peak_kb < 200 * 1024
    stop(bridge)


def test_outbox_drops_stale_answers_loudly(caplog):
    from flow_bridge.engine._link import REDELIVER_MAX, REDELIVER_TTL, Outbox, _Outgoing

    outbox = Outbox("flow")
    now = time.monotonic()
    outbox.put(_Outgoing(object(), "fresh", now))
    outbox.put(_Outgoing(object(), "old", now - REDELIVER_TTL - 1))
    outbox.put(_Outgoing(object(), "tried", now, failures=REDELIVER_MAX))
    outbox.expire()
    assert [item.element_job for item in outbox.items] == ["fresh"]
    assert "dropping the flow answer for elementJob old" in caplog.text
    assert "elementJob tried" in caplog.text

