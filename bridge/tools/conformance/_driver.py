"""The bridge's side of one conversation with a handler, for the checks to drive.

Theory of operation. `open_child` starts the handler the way the bridge does (through
flow_bridge.child: its own process group, the bridge's environment, the same start-up
diagnosis) and hands a `Child` to a check. Two tasks run beside the check: one feeds
stdout to the bridge's side of the protocol's own `Connection`, which holds every frame
against the rules and the ids in flight as it arrives, so that a rule broken at any
moment (an id answered twice, an answer nobody asked for) is seen even when the check is
no longer waiting for anything; the other
drains stderr so that the child can never block on a full pipe, keeping the text for
searching and the last lines for reasons. A check waits with `wait_until`, which
raises the first broken rule, or says what it waited for and what came instead.
Leaving `open_child` ends the whole process group.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from enum import Enum
from typing import Any

import anyio
import msgpack

from flow_bridge.child import ExitStatus, LineSplitter, Process, close_writer, handler_env, spawn_process
from flow_bridge.core import TAIL_LINES, Settings
from flow_bridge.protocol import (
    DEFAULT_MAX_FRAME,
    Connection,
    Error,
    ErrorKind,
    Event,
    Hello,
    Log,
    ProtocolError,
    Ready,
    RemoteProtocolError,
    Result,
    Role,
    Task,
    message_to_map,
    pack_frame,
)


def _setting_default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(Settings) if f.name == name)


# How long a child may take to answer a cancel, or to exit after stop or end of input: the
# bridge's own default cancel grace, so a child that passes here is not killed by `run`.
GRACE: float = _setting_default("cancel_grace")
# How long a check waits for the handshake and each answer unless told otherwise: the
# bridge's default start timeout, the time `run` gives a child to answer hello.
DEFAULT_TIMEOUT: float = _setting_default("start_timeout")
# After a check has what it asked for, how long frames are still watched for: a second
# answer sent right after the first is caught, and it costs each check only this much.
SETTLE = 0.2
# How long a killed child may take to be reaped; SIGKILL does not wait for anything.
REAP_WAIT = 5.0
# Once its stdout closed (or a write failed), how long the child may take to be seen to exit:
# the two happen together unless something it started holds the pipe.
EXIT_NOTICE = 1.0
# How often a check looks again at something no event announces (an exit, stderr text).
POLL = 0.02
# How long a log that comes late is waited for: a clearer reason than none at all.
LATE_FRAME_WAIT = 0.5
# How long text the child printed may take to come through its buffers and our stderr drain.
OUTPUT_CATCH_UP = 1.0
STDERR_LINES = TAIL_LINES  # as many as the bridge keeps to explain a failed start
STDERR_KEEP = 1 << 20  # bytes of stderr kept for searching; the tail lines are kept apart
LINE_CAP = 400  # a stderr line is shown cut to this in reasons
SNIPPET = 64
_TAIL_KEEP = 4096  # the last stdout bytes, for a snippet when the stream breaks
_READ_SIZE = 1 << 16
# Broken rules of the conversation, as opposed to bytes that are not frames at all.
_RULES = frozenset({ErrorKind.UNEXPECTED, ErrorKind.UNKNOWN_ID, ErrorKind.DUPLICATE_ID, ErrorKind.BAD_FIELD})
# What to do about each, for the adapter's author.
_ADVICE = {
    ErrorKind.UNEXPECTED: "a child answers hello with ready before it writes anything else, and sends only "
                          "the child's messages",
    ErrorKind.UNKNOWN_ID: "every request gets exactly one answer, and a cancel for an id that is not in flight "
                          "(answered already, or never sent) must be ignored",
}


class Contract(Enum):
    """What the handler under test promises beyond the protocol itself."""

    ECHO = "echo"  # the echo contract of SPEC.md section 7: every example
    PROTOCOL = "protocol"  # nothing more: any handler, such as one made by `flow-bridge init`


class CheckFailed(Exception):
    """A check's verdict: `reason` says what was expected, what came, and a hint."""

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # Fatal: the child cannot even complete a handshake, so other checks are moot.
        self.fatal = fatal


def describe_status(status: int | None) -> str:
    return "is still running" if status is None else ExitStatus.from_returncode(status).describe()


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _looks_like_text(header: bytes) -> bool:
    """Whether a frame header is more likely printed text than a length (a real one starts with 0 or 1)."""
    return len(header) == 4 and all(b in b"\t\n\r" or 0x20 <= b for b in header)


def to_json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


class FrameSizes:
    """Body sizes of the frames in a byte stream, in order, read from their headers alone."""

    def __init__(self) -> None:
        self.sizes: deque[int] = deque()
        self._header = bytearray()
        self._left = 0  # body bytes of the current frame still to come

    def feed(self, data: bytes) -> None:
        at, end = 0, len(data)
        while at < end:
            if self._left:
                step = min(self._left, end - at)
                self._left -= step
                at += step
                continue
            take = min(4 - len(self._header), end - at)
            self._header += data[at : at + take]
            at += take
            if len(self._header) == 4:
                self._left = int.from_bytes(self._header, "big")
                self.sizes.append(self._left)
                self._header.clear()


class Child:
    """One handler process and the bridge's view of its conversation."""

    def __init__(self, process: Process, timeout: float, contract: Contract) -> None:
        self.process = process
        self.timeout = timeout
        self.contract = contract
        self.conn = Connection(Role.BRIDGE)
        self.answers: dict[int, Result | Error] = {}
        self.answer_sizes: dict[int, int] = {}  # frame body size of each answer
        self.logs: list[tuple[Log, int]] = []  # each with how many answers had come before it
        self.stdout_bytes = 0
        self.stdout_head = b""  # the first bytes the child ever wrote, for snippets
        self._sizes = FrameSizes()
        self._violation: CheckFailed | None = None  # the first rule the child broke
        self._wake = anyio.Event()
        self._eof = False
        self._broken: ProtocolError | None = None
        self._tail = b""
        self._stderr = bytearray()
        self._stderr_lines: deque[str] = deque(maxlen=STDERR_LINES)

    @property
    def echo(self) -> bool:
        return self.contract is Contract.ECHO

    @property
    def ready(self) -> Ready | None:
        return self.conn.ready

    # -- background readers ------------------------------------------------------------

    def _notify(self) -> None:
        self._wake.set()
        self._wake = anyio.Event()

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        try:
            while chunk := await self.process.stdout.read(_READ_SIZE):
                if len(self.stdout_head) < SNIPPET:
                    self.stdout_head += chunk[: SNIPPET - len(self.stdout_head)]
                self.stdout_bytes += len(chunk)
                self._tail = (self._tail + chunk)[-_TAIL_KEEP:]
                self._sizes.feed(chunk)
                try:
                    events = self.conn.receive_data(chunk)
                except RemoteProtocolError as exc:
                    self._on_broken(exc)
                    return
                for event in events:
                    self._record(event, self._sizes.sizes.popleft())
                self._notify()
        except OSError:
            pass
        finally:
            if self._broken is None and self._violation is None:
                try:
                    self.conn.receive_data(b"")
                except RemoteProtocolError as exc:
                    self._on_broken(exc)
            self._eof = True
            self._notify()

    async def drain_stderr(self) -> None:
        assert self.process.stderr is not None
        splitter = LineSplitter(lambda line: self._stderr_lines.append(line[:LINE_CAP].rstrip()))
        try:
            while chunk := await self.process.stderr.read(_READ_SIZE):
                if len(self._stderr) < STDERR_KEEP:
                    self._stderr += chunk[: STDERR_KEEP - len(self._stderr)]
                splitter.feed(chunk)
                self._notify()
        except OSError:
            pass
        splitter.feed(b"")
        self._notify()

    # -- what the Connection let through, and what it refused ----------------------------

    def _record(self, event: Event, size: int) -> None:
        if isinstance(event, (Result, Error)):
            self.answers[event.id] = event
            self.answer_sizes[event.id] = size
        elif isinstance(event, Log):
            self.logs.append((event, len(self.answers)))

    def _on_broken(self, exc: RemoteProtocolError) -> None:
        if exc.kind not in _RULES:
            self._broken = exc  # not frames at all: explained with a snippet of the bytes
            return
        advice = _ADVICE.get(exc.kind)
        reason = f"{exc} ({exc.kind})" + (f": {advice}" if advice else "")
        # Before ready, the conversation never started: every other check would fail the same way.
        self._violation = CheckFailed(reason, fatal=self.ready is None)

    def raise_violation(self) -> None:
        if self._violation is not None:
            raise self._violation

    # -- what the child said, for reasons ------------------------------------------------

    @property
    def stderr_text(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def stderr_tail(self, n: int = 5) -> str:
        lines = [line for line in self._stderr_lines if line][-n:]
        return "; last stderr: " + " | ".join(lines) if lines else "; its stderr was empty"

    def stderr_lines(self) -> list[str]:
        return list(self._stderr_lines)

    def garbage_reason(self, exc: ProtocolError, waiting_for: str) -> str:
        if exc.kind == "frame_too_large" and not _looks_like_text(exc.snippet[:4]):
            return (
                f"the child wrote a frame over the max_frame of {self.conn.max_frame} bytes that hello announced "
                f"(while waiting for {waiting_for}): {exc}. It must use hello.max_frame as the limit for what it "
                "writes, and answer a result over it with the 'result too large' error (SPEC 4)"
                + self.stderr_tail()
            )
        snippet = exc.snippet or self._tail[:SNIPPET]
        return (
            f"stdout is not a stream of frames (while waiting for {waiting_for}): {exc}; "
            f"the bytes there begin {snippet[:SNIPPET]!r}. Text on stdout usually means something "
            "printed instead of logging: the adapter must move fd 1 to stderr before user code runs"
            + self.stderr_tail()
        )

    async def _end_reason(self, waiting_for: str, hint: str) -> str:
        if self._broken is not None:
            return self.garbage_reason(self._broken, waiting_for)
        status = await self.wait_exit(EXIT_NOTICE)
        return (
            f"expected {waiting_for}, but the child closed its stdout (it {describe_status(status)})"
            + (f": {hint}" if hint else "")
            + self.stderr_tail()
        )

    def _silence_reason(self, waiting_for: str, timeout: float, hint: str) -> str:
        reason = f"no {waiting_for} within {timeout:g} s"
        if hint:
            reason += f": {hint}"
        pending = self.conn.pending_bytes
        if pending:
            # Bytes that never became a frame: a short print, or a frame cut short.
            snippet = self._tail[-pending:][:SNIPPET]
            reason += f"; stdout holds {pending} bytes that are not a whole frame, beginning {snippet!r}"
        return reason + self.stderr_tail()

    # -- the conversation ----------------------------------------------------------------

    async def wait_until(
        self,
        done: Callable[[], bool],
        waiting_for: str | Callable[[], str],
        *,
        timeout: float | None = None,
        hint: str = "",
    ) -> None:
        """Wait until `done()` holds, or fail saying why not (a broken rule comes first)."""
        limit = self.timeout if timeout is None else timeout
        with anyio.move_on_after(limit):
            while not done() and not self._eof and self._violation is None:
                await self._wake.wait()
        self.raise_violation()
        if done():
            return
        what = waiting_for() if callable(waiting_for) else waiting_for
        if self._eof:
            raise CheckFailed(await self._end_reason(what, hint))
        raise CheckFailed(self._silence_reason(what, limit, hint))

    async def send(self, event: Event) -> None:
        """Write one frame (the Connection accounts for it: ids in flight, hello's max_frame)."""
        await self._write(self.conn.send(event), f"the {event.TYPE} frame")

    async def send_map(self, message: dict[str, Any]) -> None:
        """Write a message built by hand, such as one with keys this version does not know."""
        await self._write(self.conn.send_map(message), f"the {message['type']} frame")

    async def _write(self, data: bytes, what: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            with anyio.fail_after(self.timeout):
                stdin.write(data)
                await stdin.drain()
        except TimeoutError:
            raise CheckFailed(
                f"the child did not read {what} ({len(data)} bytes) within {self.timeout:g} s: "
                "it must keep reading stdin while it works" + self.stderr_tail()
            ) from None
        except (OSError, RuntimeError):  # a closed pipe; RuntimeError from a transport already closed
            self.raise_violation()
            if self._broken is not None:
                raise CheckFailed(self.garbage_reason(self._broken, f"it to read {what}")) from None
            status = await self.wait_exit(EXIT_NOTICE)
            raise CheckFailed(
                f"could not write {what}: the child closed its stdin (it {describe_status(status)})"
                + self.stderr_tail()
            ) from None

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        await close_writer(self.process.stdin)

    async def wait_exit(self, timeout: float) -> int | None:
        with anyio.move_on_after(timeout):
            return await self.process.wait()
        return self.process.returncode

    async def wait_stdout_closed(self, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while not self._eof:
                await self._wake.wait()
        return self._eof

    async def linger(self, seconds: float) -> None:
        """Let frames come for `seconds` (or until stdout closes), to explain a failure better."""
        with anyio.move_on_after(seconds):
            while not self._eof:
                await self._wake.wait()

    async def vet_remaining(self) -> None:
        """Check the frames that came before stdout closed, once it has."""
        await self.wait_stdout_closed(EXIT_NOTICE)
        self.raise_violation()
        if self._broken is not None:
            raise CheckFailed(self.garbage_reason(self._broken, "the child to exit"))

    async def settle(self) -> None:
        """After a check passed: watch for late frames briefly, then report any broken rule."""
        if self.process.returncode is None:
            with anyio.move_on_after(SETTLE):
                while not self._eof and self._violation is None:
                    await self._wake.wait()
        self.raise_violation()
        if self._broken is not None:
            raise CheckFailed(self.garbage_reason(self._broken, "nothing more"))

    async def handshake(self, protocols: Sequence[int] = (1,), max_frame: int = DEFAULT_MAX_FRAME,
                        extra: dict[str, Any] | None = None) -> Ready:
        """Send hello, wait for ready, and check the version it chose."""
        hello = Hello(protocols=tuple(protocols), plugin="conformance", max_frame=max_frame,
                      bridge="flow-bridge conformance")
        if extra:
            # The Connection keeps hello's own fields (it rebuilds the event); the frame carries the extras.
            self.conn.send(hello)
            await self._write(pack_frame(msgpack.packb({**message_to_map(hello), **extra}, use_bin_type=True)),
                              "the hello frame")
        else:
            await self.send(hello)
        try:
            await self.wait_until(
                lambda: self.ready is not None,
                "ready in answer to hello",
                hint="does the program use a flow-bridge adapter, and does its start hook return?",
            )
        except CheckFailed as exc:
            raise CheckFailed(exc.reason, fatal=True) from None
        assert self.ready is not None  # the Connection refused a ready naming a version not offered
        return self.ready

    async def task(self, id: int, config: object, **fields: Any) -> None:
        """Send a task whose config is `config` as JSON (bytes as they are)."""
        body = config if isinstance(config, bytes) else to_json(config)
        await self.send(Task(id=id, config=body, **fields))

    async def answers_for(self, ids: Sequence[int], *, timeout: float | None = None,
                          hint: str = "") -> dict[int, Result | Error]:
        wanted = list(ids)

        def missing() -> str:
            left = [i for i in wanted if i not in self.answers]
            shown_ids = ", ".join(map(str, left[:8])) + (", ..." if len(left) > 8 else "")
            if len(wanted) == 1:
                return f"answer for id {wanted[0]}"
            return f"answers for ids {shown_ids} ({len(wanted) - len(left)} of {len(wanted)} came)"

        await self.wait_until(lambda: all(i in self.answers for i in wanted), missing,
                              timeout=timeout, hint=hint)
        return {i: self.answers[i] for i in wanted}


async def open_child(argv: Sequence[str], timeout: float, contract: Contract,
                     body: Callable[[Child], Awaitable[None]], env: Mapping[str, str] | None = None) -> Child:
    """Start argv as the bridge would (with `env` on top of our environment), run `body` with
    it, then end its whole process group.

    Raises StartError (from flow_bridge.child) when argv cannot be started at all.
    """
    process = await spawn_process(argv, handler_env(env))
    child = Child(process, timeout, contract)
    # Raised outside the task group, so that callers see a CheckFailed, not an ExceptionGroup.
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(child.read_stdout)
            tg.start_soon(child.drain_stderr)
            try:
                await body(child)
            except Exception as exc:
                failure = exc
            finally:
                process.end_group()
                with anyio.CancelScope(shield=True), anyio.move_on_after(REAP_WAIT):
                    await process.wait()
                tg.cancel_scope.cancel()
    finally:
        process.release_pipes()
    if failure is not None:
        raise failure
    return child


__all__ = [
    "EXIT_NOTICE", "GRACE", "LATE_FRAME_WAIT", "OUTPUT_CATCH_UP", "POLL", "CheckFailed", "Child", "Contract",
    "describe_status", "open_child", "show", "to_json",
]
