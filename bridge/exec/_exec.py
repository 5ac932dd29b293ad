"""Exec mode: one process per task, the task as JSON on stdin, the result on stdout.

For scripts that know nothing of flow-bridge. The command runs without a shell, its
arguments exactly as given, in a process group of its own; task data travels only on
stdin and in FLOW_* variables, never through a command line. Exit 0 makes stdout the
result; any other end is a handler error whose info is the last stderr line.

A task is over when its command exits (or times out), not when its pipes close: whatever
is left in its process group is killed at once, and the output gets 0.5 s to arrive. A
process that left the group (setsid) but still holds the pipes is named in a warning and
killed (Linux), and the pipes are closed either way, so a background job delays an answer
by about 0.5 s at most (SPEC 8; `settle_output` in the child layer does this).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
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
    handler_logger,
    kill_group,
    settle_output,
    spawn_process,
    stop_then_kill,
)
from flow_bridge.core import (
    BAD_REQUEST,
    CRASH,
    PROTOCOL,
    TERM_GRACE,
    TIMEOUT,
    Answer,
    LogRecord,
    Request,
    Settings,
    failure,
    for_debug,
    metrics,
    success,
)
from flow_bridge.protocol import dump_json, parse_json

logger = logging.getLogger("flow_bridge.exec")

STDERR_TAIL = 8 * 1024
# A debug answer keeps the first this many stderr lines as its logs: the start of a run is
# what explains it, and the rest would only be cut for size later (SPEC 8). The count of
# the lines left out is said in one last record.
MAX_DEBUG_LINES = 1000
# How often stop() looks whether the running commands have finished.
STOP_POLL = 0.05
# Linux refuses an environment string ("NAME=value") of 32 pages or more (MAX_ARG_STRLEN).
MAX_ENV_STRING = 32 * 4096 - 1

# FLOW_* variable -> the Request field it carries, and the engine's name for it.
_ENV_FIELDS = (
    ("FLOW_PROJECT_ID", "project_id", "projectId"),
    ("FLOW_FLOW_ID", "flow_id", "flowId"),
    ("FLOW_JOB", "job", "job"),
    ("FLOW_ELEMENT_ID", "element_id", "elementId"),
    ("FLOW_ELEMENT_JOB", "element_job", "elementJob"),
)


class BadRequest(ValueError):
    """The engine's request cannot be handed to the command as it is; the message says why."""


def parse_config(raw: bytes) -> Any:
    """The config as the command sees it: the JSON value for UTF-8 JSON, else its text."""
    try:
        return parse_json(raw.decode("utf-8"))
    except ValueError:  # not UTF-8, not JSON, or nested too deep to parse
        return raw.decode("utf-8", "replace")


def task_json(request: Request) -> bytes:
    """The stdin document: config parsed when it is UTF-8 JSON, else its text."""
    document = {
        "projectId": request.project_id,
        "flowId": request.flow_id,
        "job": request.job,
        "elementId": request.element_id,
        "elementJob": request.element_job,
        "config": parse_config(request.config),
    }
    # parse_config gives text for NaN, Infinity and 1e400, so nothing here is beyond JSON.
    return dump_json(document)


def task_env(request: Request) -> dict[str, str]:
    """The FLOW_* variables; BadRequest when an id cannot be put in the environment."""
    env = {}
    for variable, attribute, engine_name in _ENV_FIELDS:
        value: str = getattr(request, attribute)
        if "\0" in value:
            raise BadRequest(
                f"{engine_name} contains a NUL byte, which no environment variable can hold "
                f"({variable}); the command was not started"
            )
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise BadRequest(f"{engine_name} is not valid Unicode text; the command was not started") from None
        limit = MAX_ENV_STRING - len(variable) - 1  # the string is NAME=value
        if size > limit:
            raise BadRequest(
                f"{engine_name} is {size} bytes long, more than {variable} can hold ({limit} bytes); "
                "the command was not started"
            )
        env[variable] = value
    env["FLOW_DEBUG"] = "1" if request.debug else "0"
    return env


def data_from_stdout(out: bytes) -> Any:
    """stdout -> result data: an object as is, other JSON under "result", text under "stdout"."""
    if not out.strip():
        return {}
    try:
        value = parse_json(out)
    except ValueError:
        return stdout_text(out)
    return value if isinstance(value, dict) else {"result": value}


def stdout_text(out: bytes) -> dict[str, Any]:
    return {"stdout": out.decode("utf-8", "replace")}


class _Run:
    """What one process said and how it ended."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.overflow = False
        self.stderr_tail = bytearray()
        self.lines: list[str] = []
        self.lines_left_out = 0
        self.status: ExitStatus | None = None
        self.timed_out = False


class ExecHandler:
    def __init__(self, argv: Sequence[str], settings: Settings) -> None:
        self.argv = list(argv)
        self.settings = settings
        self.label = os.path.basename(self.argv[0])
        self.env = handler_env()
        self.running: set[int] = set()
        # None: no limit (SPEC 3: timeout_ms 0); 0 from older settings means the same.
        self.timeout: float | None = settings.timeout or None
        # At most max_inflight processes at once (SPEC 8), debug requests included: the
        # engine link gives them slots of their own, and a script run one at a time (a
        # serial port, a lock file) must not see a second copy of itself for a debug run.
        self._processes = anyio.Semaphore(max(1, settings.max_inflight))

    # --- the interface the gateway expects ---------------------------------------------

    @property
    def capacity(self) -> int:
        return self.settings.max_inflight

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        check_startable(self.argv)
        logger.info("exec mode: each task starts %s", " ".join(self.argv))
        metrics.exec_ready(self.plugin_label)

    @property
    def plugin_label(self) -> str:
        """The plugin's name for metrics: exec mode declares none, so configured or the command's."""
        return self.settings.name or os.path.basename(self.argv[0])

    def notify_state(self, connected: bool) -> None:
        pass  # a process per task has nobody long-lived to tell

    async def stop(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            await anyio.sleep(STOP_POLL)
        for pid in list(self.running):
            kill_group(pid)

    def handle_now(self, request: Request, on_answer: Callable[[Answer], None]) -> bool:
        return False  # starting a process per task needs a task anyway

    async def handle(self, request: Request) -> Answer:
        try:
            env = {**self.env, **task_env(request)}
        except BadRequest as exc:
            return failure(
                BAD_REQUEST, str(exc),
                "Exec mode passes each id both on stdin and in a FLOW_* variable, which holds text "
                "without NUL bytes only. Run the handler with an adapter to receive any id.",
            )
        async with self._processes:
            try:
                process = await spawn_process(self.argv, env)
            except StartError as exc:
                return failure(CRASH, f"cannot start the command: {exc}")
            metrics.child_started(self.plugin_label, counts_as_up=False)
            run = _Run()
            self.running.add(process.pid)
            try:
                await self._drive(process, request, run)
            finally:
                self.running.discard(process.pid)
                process.end_group()  # whatever the task started goes with it
                process.release_pipes()
        answer = self._answer(run)
        if request.debug:
            logs = [LogRecord("info", line) for line in run.lines]
            if run.lines_left_out:
                left_out = f"{run.lines_left_out} more stderr lines were left out"
                logs.append(LogRecord("warning", f"{left_out}: a debug answer keeps the first {MAX_DEBUG_LINES} "
                                      "(the bridge's log has them all)"))
            return for_debug(answer, logs)
        return answer

    # --- one process -------------------------------------------------------------------

    async def _drive(self, process: Process, request: Request, run: _Run) -> None:
        label = f"{self.label} pid={process.pid}"

        job = request.element_job
        extra = {"element_job": job}

        def on_line(line: str) -> None:
            handler_logger.info("[%s] elementJob %s: %s", label, job, line, extra=extra)
            if request.debug:
                if len(run.lines) < MAX_DEBUG_LINES:
                    run.lines.append(line)
                else:
                    run.lines_left_out += 1

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
            # Process.wait() returns at the exit, whoever still holds the pipes.
            with anyio.move_on_after(self.timeout) as scope:
                returncode = await process.wait()
            if scope.cancelled_caught:
                run.timed_out = True
                await self._terminate(process)
                returncode = await process.wait()
            run.status = ExitStatus.from_returncode(returncode)

            async def output_closed() -> None:
                await stdout_done.wait()
                await stderr_done.wait()

            # The task is over: background jobs still in its group go now, and whatever left
            # the group holding the pipes goes too (SPEC 8). What they and the command wrote
            # is in the pipes already, and is still read.
            await settle_output(process, output_closed, f"exec command {label}")
            tg.cancel_scope.cancel()

    async def _terminate(self, process: Process) -> None:
        """Ask politely (SIGTERM to the group; Ctrl-Break on Windows), then kill the group."""
        await stop_then_kill(process.pid, process.wait, min(self.settings.cancel_grace, TERM_GRACE))

    def _answer(self, run: _Run) -> Answer:
        tail = bytes(run.stderr_tail[-STDERR_TAIL:]).decode("utf-8", "replace")
        if run.timed_out and self.timeout is not None:
            return failure(
                TIMEOUT,
                f"the command did not finish within {self.timeout:g} s",
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
            out = bytes(run.stdout)
            try:
                answer: Answer | None = success(data_from_stdout(out))
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") has no UTF-8 form
                answer = None
            if answer is None or not answer.status:
                # JSON in form, but no value the engine can take (1e400 parses as inf): text.
                answer = success(stdout_text(out))
            return answer
        last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
        how = run.status.describe()
        status_line = f"exit status {run.status.code}" if run.status.code is not None else how
        info = last or (status_line if run.status.code is not None else how.replace("was ", ""))
        return failure("handler", info, f"{status_line}\n{tail}".rstrip())
