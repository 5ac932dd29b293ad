"""Exec mode: one process per task, the task as JSON on stdin, the result on stdout.

For scripts that know nothing of flow-bridge. The command runs without a shell, its
arguments exactly as given, in a process group of its own; task data travels only on
stdin and in FLOW_* variables, never through a command line. Exit 0 makes stdout the
result; any other end is a handler error whose info is the last stderr line. The whole
group is killed when the task times out and when the command has exited, so nothing a
task started outlives it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc

from flow_bridge.child import (
    ExitStatus,
    LineSplitter,
    Process,
    StartError,
    check_startable,
    close_writer,
    handler_env,
    kill_group,
    spawn_process,
)
from flow_bridge.core import CRASH, PROTOCOL, TIMEOUT, Answer, LogRecord, Request, Settings, failure, for_debug, success

logger = logging.getLogger("flow_bridge.exec")

STDERR_TAIL = 8 * 1024
MAX_DEBUG_LINES = 1000
# After the command exits, how long its output pipes may stay open (held by something
# it started) before the group is killed to close them.
PIPE_LINGER = 0.5


def task_json(request: Request) -> bytes:
    """The stdin document: config parsed when it is UTF-8 JSON, else its text."""
    try:
        config: Any = json.loads(request.config)
    except ValueError:
        config = request.config.decode("utf-8", "replace")
    return json.dumps(
        {
            "projectId": request.project_id,
            "flowId": request.flow_id,
            "job": request.job,
            "elementId": request.element_id,
            "elementJob": request.element_job,
            "config": config,
        },
        ensure_ascii=False,
    ).encode("utf-8")


def task_env(request: Request) -> dict[str, str]:
    return {
        "FLOW_PROJECT_ID": request.project_id,
        "FLOW_FLOW_ID": request.flow_id,
        "FLOW_JOB": request.job,
        "FLOW_ELEMENT_ID": request.element_id,
        "FLOW_ELEMENT_JOB": request.element_job,
        "FLOW_DEBUG": "1" if request.debug else "0",
    }


def data_from_stdout(out: bytes) -> Any:
    """stdout -> result data: an object as is, other JSON under "result", text under "stdout"."""
    if not out.strip():
        return {}
    try:
        value = json.loads(out)
    except ValueError:
        return {"stdout": out.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"result": value}


class _Run:
    """What one process said and how it ended."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.overflow = False
        self.stderr_tail = bytearray()
        self.lines: list[str] = []
        self.status: ExitStatus | None = None
        self.timed_out = False


class ExecHandler:
    def __init__(self, argv: Sequence[str], settings: Settings) -> None:
        self.argv = list(argv)
        self.settings = settings
        self.label = os.path.basename(self.argv[0])
        self.env = handler_env()
        self.running: set[int] = set()

    # --- the interface the gateway expects ---------------------------------------------

    @property
    def capacity(self) -> int:
        return self.settings.max_inflight

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        check_startable(self.argv)
        logger.info("exec mode: each task starts %s", " ".join(self.argv))

    def notify_state(self, connected: bool) -> None:
        pass  # a process per task has nobody long-lived to tell

    async def stop(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        for pid in list(self.running):
            kill_group(pid)

    async def handle(self, request: Request) -> Answer:
        try:
            process = await spawn_process(self.argv, {**self.env, **task_env(request)})
        except StartError as exc:
            return failure(CRASH, f"cannot start the command: {exc}")
        run = _Run()
        self.running.add(process.pid)
        try:
            await self._drive(process, request, run)
        finally:
            self.running.discard(process.pid)
            kill_group(process.pid)  # whatever the task started goes with it
        answer = self._answer(run)
        if request.debug:
            logs = [LogRecord("info", line) for line in run.lines[:MAX_DEBUG_LINES]]
            return for_debug(answer, logs)
        return answer

    # --- one process -------------------------------------------------------------------

    async def _drive(self, process: Process, request: Request, run: _Run) -> None:
        label = f"{self.label} pid={process.pid}"

        def on_line(line: str) -> None:
            logger.info("[%s] %s", label, line)
            if request.debug and len(run.lines) < MAX_DEBUG_LINES:
                run.lines.append(line)

        async def feed() -> None:
            assert process.stdin is not None
            try:
                process.stdin.write(task_json(request))
                await process.stdin.drain()
            except (OSError, RuntimeError):
                # The command exited, or closed stdin, without reading all of its input:
                # its business (uvloop says so with RuntimeError on a closed pipe).
                pass
            await close_writer(process.stdin)

        stdout_done, stderr_done = anyio.Event(), anyio.Event()

        async def read_stdout() -> None:
            assert process.stdout is not None
            limit = self.settings.max_output
            try:
                while chunk := await process.stdout.read(1 << 16):
                    if len(run.stdout) + len(chunk) > limit:
                        run.overflow = True
                        kill_group(process.pid)
                        return
                    run.stdout += chunk
            finally:
                stdout_done.set()

        async def read_stderr() -> None:
            assert process.stderr is not None
            splitter = LineSplitter(on_line)
            try:
                while chunk := await process.stderr.read(1 << 16):
                    splitter.feed(chunk)
                    run.stderr_tail += chunk
                    if len(run.stderr_tail) > 2 * STDERR_TAIL:
                        del run.stderr_tail[:-STDERR_TAIL]
                splitter.feed(b"")
            finally:
                stderr_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            tg.start_soon(read_stdout)
            tg.start_soon(read_stderr)
            with anyio.move_on_after(self.settings.timeout) as scope:
                returncode = await process.wait()
            if scope.cancelled_caught:
                run.timed_out = True
                await self._terminate(process)
                returncode = await process.wait()
            run.status = ExitStatus.from_returncode(returncode)
            with anyio.move_on_after(PIPE_LINGER):
                await stdout_done.wait()
                await stderr_done.wait()
            kill_group(process.pid)

    async def _terminate(self, process: Process) -> None:
        """Ask politely (SIGTERM to the group), then SIGKILL the group."""
        kill_group(process.pid, signal.SIGTERM)
        with anyio.move_on_after(min(self.settings.cancel_grace, 2.0)):
            await process.wait()
        kill_group(process.pid, signal.SIGKILL)

    def _answer(self, run: _Run) -> Answer:
        tail = bytes(run.stderr_tail[-STDERR_TAIL:]).decode("utf-8", "replace")
        if run.timed_out:
            return failure(
                TIMEOUT,
                f"the command did not finish within {self.settings.timeout:g} s",
                f"its process group was killed\n{tail}".rstrip(),
            )
        if run.overflow:
            return failure(
                PROTOCOL,
                f"the command wrote more than {self.settings.max_output} bytes to stdout",
                "Write the result only; raise --max-output if it really is that large.",
            )
        assert run.status is not None
        if run.status.code == 0:
            return success(data_from_stdout(bytes(run.stdout)))
        last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
        how = run.status.describe()
        status_line = f"exit status {run.status.code}" if run.status.code is not None else how
        info = last or (status_line if run.status.code is not None else how.replace("was ", ""))
        return failure("handler", info, f"{status_line}\n{tail}".rstrip())

