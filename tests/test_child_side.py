"""The child side in-process: processes, the watchdog, the supervisor's trust and timeouts.

Real child processes over real pipes, driven by a Supervisor (or spawn_process) inside the
test's own event loop, so a test can look at what the engine side would be handed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from conftest import MISBEHAVE, wait_for
from flow_bridge.child import Supervisor, _watchdog, settle_output, spawn_process
from flow_bridge.child._platform import WATCHDOG, pipe_holders
from flow_bridge.child._supervisor import SLOW_START, TRUST_STEP, Trust
from flow_bridge.child._watchdog import GRACE
from flow_bridge.core import Request, Settings

WATCHDOG_SCRIPT = _watchdog.__file__


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_for, without blocking the event loop that must make it come true."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def request(config: dict[str, object], job: str = "j") -> Request:
    return Request(debug=False, element_job=job, config=json.dumps(config).encode())


def settings(**changes: object) -> Settings:
    return dataclasses.replace(Settings(), **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def supervised(scenario: str, env: dict[str, str] | None = None, **changes: object) -> AsyncIterator[Supervisor]:
    """A started Supervisor over misbehave.py, stopped at the end of the block."""
    sup = Supervisor([sys.executable, MISBEHAVE, scenario], settings(**changes),
                     env={**os.environ, **(env or {})})
    async with anyio.create_task_group() as tg:
        await sup.start(tg)
        try:
            yield sup
        finally:
            await sup.stop(5)
            tg.cancel_scope.cancel()


# --- the process itself ------------------------------------------------------------------


@pytest.mark.anyio
async def test_wait_returns_at_exit_while_a_setsid_grandchild_holds_the_pipes() -> None:
    process = await spawn_process(["sh", "-c", "setsid sleep 300 & sleep 0.2; exit 3"], dict(os.environ))
    try:
        began = time.monotonic()
        with anyio.fail_after(5):
            assert await process.wait() == 3
        assert time.monotonic() - began < 3
        holders = pipe_holders(process.pipe_inodes)
        assert [h.command for h in holders] == ["sleep 300"], holders
    finally:
        for holder in pipe_holders(process.pipe_inodes):
            os.kill(holder.pid, signal.SIGKILL)
        process.end_group()
        process.release_pipes()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("job", "escaped"),
    [
        pytest.param("sleep 300 &", False, id="in-the-group"),
        pytest.param("setsid sleep 300 &", True, id="left-the-group"),
        pytest.param("", False, id="nothing-left"),
    ],
)
async def test_settle_output_ends_whatever_holds_the_pipes(job: str, escaped: bool, caplog) -> None:
    process = await spawn_process(["sh", "-c", f"{job} sleep 0.2; echo done"], dict(os.environ))
    out = bytearray()
    closed = anyio.Event()

    async def read_all() -> None:
        assert process.stdout is not None and process.stderr is not None
        while chunk := await process.stdout.read(1 << 16):
            out.extend(chunk)
        await process.stderr.read()
        closed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_all)
        with anyio.fail_after(10):
            assert await process.wait() == 0
            began = time.monotonic()
            holders = await settle_output(process, closed.wait, "test command")
        tg.cancel_scope.cancel()
    assert time.monotonic() - began < 2
    assert bytes(out) == b"done\n", "what the command wrote before it exited was lost"
    assert [h.command for h in holders] == (["sleep 300"] if escaped else [])
    assert ("outside its process group" in caplog.text) is escaped
    await until(lambda: not any(alive(h.pid) for h in holders), 5, f"{holders} to be killed")
    await until(lambda: not group_members(process.pid), 5, "the group to be gone")


@pytest.mark.anyio
async def test_a_crash_hidden_by_a_setsid_grandchild_is_answered_and_the_grandchild_ended(caplog) -> None:
    async with supervised("ok", timeout=30.0) as sup:
        began = time.monotonic()
        with anyio.fail_after(15):
            answer = await sup.handle(request({"i": 1, "escape": True, "crash": True}))
        assert answer.info == "[crash] handler exited with status 3 while running this task"
        assert time.monotonic() - began < 5
        warning = next(r.getMessage() for r in caplog.records if "outside its process group" in r.getMessage())
        pid = int(warning.split(" but pid ")[1].split()[0])
        await until(lambda: not alive(pid), 5, f"the escaped grandchild {pid} to be ended")
        with anyio.fail_after(15):
            assert (await sup.handle(request({"i": 2}))).status is True, "the restarted child did not serve"


# --- slow start after a crash ------------------------------------------------------------


def test_trust_is_full_until_a_crash_then_grows_one_per_step() -> None:
    trust = Trust()
    assert trust.allowed(64) == 64
    trust.crashed()
    seen = []
    for _ in range(3 * TRUST_STEP):
        seen.append(trust.allowed(64))
        trust.answered(64)
    assert seen == [SLOW_START] * TRUST_STEP + [SLOW_START + 1] * TRUST_STEP + [SLOW_START + 2] * TRUST_STEP
    trust.crashed()
    assert trust.allowed(64) == SLOW_START, "a second crash starts over"


@pytest.mark.parametrize(
    ("capacity", "answers_to_full"),
    [
        pytest.param(1, 0, id="concurrency-1"),
        pytest.param(2, TRUST_STEP, id="concurrency-2"),
        pytest.param(3, 2 * TRUST_STEP, id="concurrency-3"),
    ],
)
def test_trust_comes_back_in_full_at_the_exact_step(capacity: int, answers_to_full: int) -> None:
    trust = Trust()
    trust.crashed()
    assert trust.allowed(capacity) == min(capacity, SLOW_START)
    for _ in range(answers_to_full - 1):
        trust.answered(capacity)
    if answers_to_full:
        assert trust.allowed(capacity) == capacity - 1, "one answer before the step"
        trust.answered(capacity)
    assert trust.allowed(capacity) == capacity
    trust.answered(capacity)
    assert trust.since_crash is None, "back to full trust, forgotten until the next crash"


async def peak_load(sup: Supervisor, n: int) -> int:
    """Send n requests of 200 ms at once; the most the first slot's child held at a time."""
    worker = sup.workers[0]
    peak = 0
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        answer = await sup.handle(request({"i": i, "sleep_ms": 200}, f"s{i}"))
        assert answer.status, answer.info
        done += 1

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
            while done < n:
                if worker.session is not None:
                    peak = max(peak, worker.session.load)
                await anyio.sleep(0.005)
    return peak


@pytest.mark.anyio
async def test_a_restarted_child_is_given_one_request_at_first() -> None:
    async with supervised("ok") as sup:
        assert await peak_load(sup, 6) == 6, "a child that never crashed takes all it declared"
        with anyio.fail_after(15):
            assert (await sup.handle(request({"crash": True}))).info.startswith("[crash]")
        worker = sup.workers[0]
        await until(lambda: worker.session is not None and worker.session.alive, 15, "the restart")
        assert await peak_load(sup, 6) == SLOW_START + (6 - 1) // TRUST_STEP


# --- timeouts: none -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("timeout", [pytest.param(None, id="none"), pytest.param(0.0, id="zero")])
async def test_no_timeout_sends_timeout_ms_0_and_never_cancels(timeout: float | None) -> None:
    async with supervised("ok", timeout=timeout, cancel_grace=0.1) as sup:
        with anyio.fail_after(20):
            answers = [await sup.handle(request({"i": i, "report": True, "sleep_ms": 300}, f"n{i}")) for i in range(3)]
        for answer in answers:
            assert answer.status is True, answer.info
            assert json.loads(answer.result)["timeout_ms"] == 0
        session = sup.workers[0].session
        assert session is not None and session.alive and session.answered == 3, "the child was restarted"


@pytest.mark.anyio
async def test_a_timeout_sends_its_milliseconds() -> None:
    async with supervised("ok", timeout=30.0) as sup:
        with anyio.fail_after(15):
            answer = await sup.handle(request({"i": 1, "report": True}))
        assert 25_000 < json.loads(answer.result)["timeout_ms"] <= 30_000


# --- what the child declares, and what hello says -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("declare", "expected_type"),
    [pytest.param("", None, id="type-not-declared"), pytest.param("user", "user", id="type-user")],
)
async def test_declared_name_and_type_come_from_the_first_ready(declare: str, expected_type: str | None) -> None:
    async with supervised("ok", env={"DECLARE_TYPE": declare}, name=None) as sup:
        assert sup.declared_name == "misbehave-ok"
        assert sup.declared_type == expected_type
        with anyio.fail_after(15):
            answer = await sup.handle(request({"i": 1, "report": True}))
        data = json.loads(answer.result)
        assert data["plugin"] == "", "hello.plugin must be a string, empty when no name is configured"
        assert data["plugin_type"] == "service"


@pytest.mark.anyio
async def test_hello_carries_the_configured_name_and_type() -> None:
    async with supervised("ok", name="my-plugin", type="user") as sup:
        with anyio.fail_after(15):
            data = json.loads((await sup.handle(request({"i": 1, "report": True}))).result)
        assert (data["plugin"], data["plugin_type"]) == ("my-plugin", "user")


# --- the watchdog ---------------------------------------------------------------------------


def start_group(*extra: str) -> subprocess.Popen[bytes]:
    """A group: sh, its background sleep and its foreground command, in a session of their own."""
    return subprocess.Popen(["sh", "-c", f"sleep 300 & {' '.join(extra) or 'sleep 300'}"], start_new_session=True)


def group_members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().split(") ")[-1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.append(int(entry))
    return found


def ignores_sigint(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        ignored = next(int(line.split()[1], 16) for line in fh if line.startswith("SigIgn:"))
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def test_watchdog_ends_listed_groups_at_end_of_input_and_spares_forgotten_ones() -> None:
    listed, forgotten = start_group(), start_group()
    try:
        wait_for(lambda: len(group_members(listed.pid)) >= 2 and len(group_members(forgotten.pid)) >= 2, 10,
                 "both groups to start")
        members = group_members(forgotten.pid)
        dog = subprocess.Popen([sys.executable, "-I", "-S", WATCHDOG_SCRIPT, "0"], stdin=subprocess.PIPE)
        assert dog.stdin is not None
        dog.stdin.write(b"+%d\n+%d\n-%d\n+0\n+1\nnonsense\n" % (listed.pid, forgotten.pid, forgotten.pid))
        dog.stdin.flush()
        wait_for(lambda: ignores_sigint(dog.pid), 10, "the watchdog to set itself up")
        dog.send_signal(signal.SIGINT)  # a Ctrl-C meant for the bridge
        time.sleep(0.2)
        assert dog.poll() is None, "the watchdog died of a SIGINT meant for the bridge"
        began = time.monotonic()
        dog.stdin.close()  # what the kernel does when the bridge dies
        assert dog.wait(10) == 0
        wait_for(lambda: group_members(listed.pid) == [], 5, "the listed group to be gone")
        assert time.monotonic() - began < GRACE + 2
        assert group_members(forgotten.pid) == members, "a forgotten group was ended"
    finally:
        for proc in (listed, forgotten):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_watchdog_kills_a_group_that_ignores_sigterm_after_its_grace() -> None:
    stubborn = start_group("trap '' TERM; sleep 300 & wait")
    try:
        wait_for(lambda: len(group_members(stubborn.pid)) >= 2, 10, "the group to start")
        dog = subprocess.Popen([sys.executable, "-I", "-S", WATCHDOG_SCRIPT, "0"], stdin=subprocess.PIPE)
        assert dog.stdin is not None
        dog.stdin.write(b"+%d\n" % stubborn.pid)
        dog.stdin.close()
        assert dog.wait(10) == 0
        wait_for(lambda: group_members(stubborn.pid) == [], 5, "the group to be killed")
    finally:
        try:
            os.killpg(stubborn.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stubborn.wait()


def test_watchdog_run_by_hand_says_what_it_is() -> None:
    controller, terminal = os.openpty()
    try:
        done = subprocess.run([sys.executable, "-I", "-S", WATCHDOG_SCRIPT, "0"], stdin=terminal,
                              capture_output=True, text=True, timeout=30)
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 2
    assert "not meant to be run by hand" in done.stderr


@pytest.mark.anyio
async def test_spawned_groups_are_reported_to_the_watchdog_and_forgotten_when_ended() -> None:
    process = await spawn_process(["sleep", "300"], dict(os.environ))
    try:
        assert WATCHDOG.pid is not None and alive(WATCHDOG.pid)
    finally:
        process.end_group()
        with anyio.fail_after(5):
            await process.wait()
        process.release_pipes()
