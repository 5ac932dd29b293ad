"""`flow-bridge conformance`: drive any echo handler as a black box and grade it.

Theory of operation. Each check starts a fresh child (no shell, its own process group,
stdin/stdout/stderr pipes), plays the bridge's side of SPEC.md over the child's real
pipes, and asserts on what comes back, relying on the echo contract (SPEC.md section 7).
A `Child` owns one process: a reader task feeds stdout through the sans-IO `Codec` and
checks every frame against what is in flight, a second task drains stderr so that the
child can never block on a full pipe (the last lines are kept for failure reasons), and
leaving the `Child` kills the whole process group. A check raises `CheckFailed` with a
reason written for the adapter's author: what was expected, what came, and what to fix.

`handshake` runs first and alone: it also warms up examples that build themselves on
their first run. If it fails in a way that makes every other check meaningless (no
`ready` at all, garbage on stdout, the child exits), the other checks are reported as
not run instead of timing out one by one. The rest run concurrently, bounded by `jobs`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import click
import msgpack

from flow_bridge.protocol import (
    DEFAULT_MAX_FRAME,
    MAX_ID,
    Cancel,
    Codec,
    Debug,
    Error,
    Event,
    Hello,
    Log,
    ProtocolError,
    Ready,
    Result,
    State,
    Stop,
    Task,
    message_to_map,
    pack_frame,
)

# How long a child may take to answer a cancel, or to exit after stop / end of input.
# Independent of --timeout: these are promises of the protocol ("soon"), not start-up costs.
GRACE = 5.0
# How long the handshake check watches stdout before sending hello: long enough to catch
# a banner printed at start-up, short enough not to slow the suite down.
PRE_HELLO_WINDOW = 0.5
# What the echo contract promises in `ready` (SPEC.md section 7).
MIN_CONCURRENCY = 64
STDERR_LINES = 20
STDERR_KEEP = 1 << 20  # bytes of stderr kept for searching; the tail lines are kept apart
LINE_CAP = 400  # a stderr line longer than this is truncated in reasons, never waited on
SNIPPET = 64


class CheckFailed(Exception):
    """A check's verdict: `reason` says what was expected, what came, and a hint."""

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # Fatal: the child cannot even complete a handshake, so other checks are moot.
        self.fatal = fatal


class StartError(Exception):
    """The command cannot be started at all (not found, not executable)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    reason: str = ""
    seconds: float = 0.0
    details: tuple[str, ...] = ()

    def line(self) -> str:
        return f"PASS {self.name}" if self.passed else f"FAIL {self.name}: {self.reason}"


def describe_status(status: int | None) -> str:
    if status is None:
        return "still running"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return f"killed by signal {name}"
    return f"exited with status {status}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _same_number(value: object, expected: int) -> bool:
    # A JSON round trip may turn 5 into 5.0 (Go, JavaScript): that is still the number 5.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == expected


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


class Child:
    """One handler process and the bridge's view of its conversation."""

    def __init__(self, proc: anyio.abc.Process, timeout: float) -> None:
        self.proc = proc
        self.timeout = timeout
        self.codec = Codec()
        self.ready: Ready | None = None
        self.in_flight: set[int] = set()
        self.answers: dict[int, Result | Error] = {}
        self.logs: list[tuple[Log, int]] = []  # each with how many answers had come before it
        self.stdout_bytes = 0
        self.stdout_head = b""  # the first bytes the child ever wrote, for snippets
        self._queue: deque[Event] = deque()
        self._wake = anyio.Event()
        self._eof = False
        self._broken: ProtocolError | None = None
        self._tail = b""  # the last bytes read from stdout, for snippets
        self._stderr = bytearray()
        self._stderr_lines: deque[str] = deque(maxlen=STDERR_LINES)

    # -- background readers ------------------------------------------------------------

    def _notify(self) -> None:
        self._wake.set()
        self._wake = anyio.Event()

    async def read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for chunk in self.proc.stdout:
                if len(self.stdout_head) < SNIPPET:
                    self.stdout_head += chunk[: SNIPPET - len(self.stdout_head)]
                self.stdout_bytes += len(chunk)
                self._tail = (self._tail + chunk)[-4096:]
                try:
                    events = self.codec.receive_data(chunk)
                except ProtocolError as exc:
                    self._broken = exc
                    return
                self._queue.extend(events)
                self._notify()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            if self._broken is None:
                try:
                    self.codec.receive_data(b"")
                except ProtocolError as exc:
                    self._broken = exc
            self._eof = True
            self._notify()

    async def drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        partial = b""
        try:
            async for chunk in self.proc.stderr:
                if len(self._stderr) < STDERR_KEEP:
                    self._stderr += chunk[: STDERR_KEEP - len(self._stderr)]
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    self._stderr_lines.append(line[:LINE_CAP].decode("utf-8", "replace").rstrip())
                # A line without an end is cut, never buffered without bound.
                partial = partial[: LINE_CAP * 4]
                self._notify()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        if partial:
            self._stderr_lines.append(partial[:LINE_CAP].decode("utf-8", "replace").rstrip())
        self._notify()

    # -- what the child said, for reasons ------------------------------------------------

    @property
    def stderr_text(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def stderr_tail(self, n: int = 5) -> str:
        lines = [line for line in self._stderr_lines if line][-n:]
        if not lines:
            return "; its stderr was empty"
        return "; last stderr: " + " | ".join(lines)

    def stderr_lines(self) -> list[str]:
        return list(self._stderr_lines)

    def _garbage_reason(self, exc: ProtocolError, waiting_for: str) -> str:
        snippet = exc.snippet or self._tail[:SNIPPET]
        return (
            f"stdout is not a stream of frames (while waiting for {waiting_for}): {exc}; "
            f"the bytes there begin {snippet[:SNIPPET]!r}. Text on stdout usually means something "
            "printed instead of logging: the adapter must move fd 1 to stderr before user code runs"
            + self.stderr_tail()
        )

    async def _end_reason(self, waiting_for: str, hint: str) -> str:
        if self._broken is not None:
            return self._garbage_reason(self._broken, waiting_for)
        status = await self.wait_exit(1.0)
        return (
            f"expected {waiting_for}, but the child closed its stdout ({describe_status(status)})"
            + (f": {hint}" if hint else "")
            + self.stderr_tail()
        )

    def _silence_reason(self, waiting_for: str, timeout: float, hint: str) -> str:
        reason = f"no {waiting_for} within {timeout:g} s"
        if hint:
            reason += f": {hint}"
        pending = self.codec.pending_bytes
        if pending:
            # Bytes that never became a frame: a short print, or a frame cut short.
            snippet = self._tail[-pending:][:SNIPPET]
            reason += f"; stdout holds {pending} bytes that are not a whole frame, beginning {snippet!r}"
        return reason + self.stderr_tail()

    # -- the conversation ----------------------------------------------------------------

    def _accept(self, event: Event) -> None:
        """Check one frame from the child against the protocol and record it."""
        if self.ready is None:
            if not isinstance(event, Ready):
                raise CheckFailed(
                    f"expected ready as the first frame, got {event.TYPE}: the child must answer hello "
                    "with ready before it writes anything else",
                    fatal=True,
                )
            self.ready = event
            return
        if isinstance(event, (Result, Error)):
            if event.id not in self.in_flight:
                if event.id in self.answers:
                    raise CheckFailed(
                        f"id {event.id} was answered twice (first {self.answers[event.id].TYPE}, then "
                        f"{event.TYPE}): every request gets exactly one answer, and a cancel for an "
                        "answered id must be ignored"
                    )
                raise CheckFailed(f"got a {event.TYPE} for id {event.id}, which is not in flight")
            self.in_flight.discard(event.id)
            self.answers[event.id] = event
        elif isinstance(event, Log):
            self.logs.append((event, len(self.answers)))
        elif isinstance(event, Ready):
            raise CheckFailed("got a second ready frame: ready is sent once, in answer to hello")
        else:
            raise CheckFailed(f"got a {event.TYPE} frame, which only the bridge sends")

    async def wait_until(
        self,
        done: Callable[[], bool],
        waiting_for: str | Callable[[], str],
        *,
        timeout: float | None = None,
        hint: str = "",
    ) -> None:
        """Take frames from the child until `done()` holds, or fail saying why not."""
        limit = self.timeout if timeout is None else timeout
        with anyio.move_on_after(limit):
            while not done():
                if self._queue:
                    self._accept(self._queue.popleft())
                    continue
                if self._eof:
                    break
                await self._wake.wait()
        if done():
            return
        what = waiting_for() if callable(waiting_for) else waiting_for
        if self._eof and not self._queue:
            raise CheckFailed(await self._end_reason(what, hint))
        raise CheckFailed(self._silence_reason(what, limit, hint))

    async def send(self, frame: Event | bytes, *, request_id: int | None = None) -> None:
        """Write one frame; `request_id` marks a hand-built request frame as in flight."""
        data = frame if isinstance(frame, bytes) else self.codec.send(frame)
        if isinstance(frame, (Task, Debug)):
            self.in_flight.add(frame.id)
        if request_id is not None:
            self.in_flight.add(request_id)
        assert self.proc.stdin is not None
        what = "a frame" if isinstance(frame, bytes) else f"the {frame.TYPE} frame"
        try:
            with anyio.fail_after(self.timeout):
                await self.proc.stdin.send(data)
        except TimeoutError:
            raise CheckFailed(
                f"the child did not read {what} ({len(data)} bytes) within {self.timeout:g} s: "
                "it must keep reading stdin while it works" + self.stderr_tail()
            ) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            if self._broken is not None:
                raise CheckFailed(self._garbage_reason(self._broken, f"it to read {what}")) from None
            status = await self.wait_exit(1.0)
            raise CheckFailed(
                f"could not write {what}: the child closed its stdin ({describe_status(status)})"
                + self.stderr_tail()
            ) from None

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.aclose()

    async def wait_exit(self, timeout: float) -> int | None:
        with anyio.move_on_after(timeout):
            return await self.proc.wait()
        return self.proc.returncode

    async def linger(self, seconds: float) -> None:
        """Take whatever frames come within `seconds`, to explain a failure better."""
        with anyio.move_on_after(seconds):
            while True:
                while self._queue:
                    self._accept(self._queue.popleft())
                if self._eof:
                    return
                await self._wake.wait()

    async def vet_remaining(self) -> None:
        """Check the frames that came before stdout closed, once it has."""
        await self.wait_stdout_closed(1.0)
        while self._queue:
            self._accept(self._queue.popleft())
        if self._broken is not None:
            raise CheckFailed(self._garbage_reason(self._broken, "the child to exit"))

    async def wait_stdout_closed(self, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while not self._eof:
                await self._wake.wait()
        return self._eof

    async def handshake(self, protocols: Sequence[int] = (1,), max_frame: int = DEFAULT_MAX_FRAME,
                        extra: dict[str, Any] | None = None) -> Ready:
        """Send hello, wait for ready, and check the version it chose."""
        hello = Hello(protocols=tuple(protocols), plugin="conformance", max_frame=max_frame,
                      bridge="flow-bridge conformance")
        self.codec.max_frame = max_frame
        if extra:
            await self.send(pack_frame(msgpack.packb({**message_to_map(hello), **extra}, use_bin_type=True)))
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
        assert self.ready is not None
        if self.ready.protocol not in protocols:
            raise CheckFailed(
                f"ready names protocol {self.ready.protocol}, which hello did not offer "
                f"(offered {list(protocols)}): the child must choose one of the offered versions",
                fatal=True,
            )
        return self.ready

    async def task(self, id: int, config: dict[str, Any] | bytes, **fields: Any) -> None:
        body = config if isinstance(config, bytes) else _json(config)
        await self.send(Task(id=id, config=body, **fields))

    async def answers_for(self, ids: Sequence[int], *, timeout: float | None = None,
                          hint: str = "") -> dict[int, Result | Error]:
        wanted = list(ids)

        def missing() -> str:
            left = [i for i in wanted if i not in self.answers]
            shown = ", ".join(map(str, left[:8])) + (", ..." if len(left) > 8 else "")
            if len(wanted) == 1:
                return f"answer for id {wanted[0]}"
            return f"answers for ids {shown} ({len(wanted) - len(left)} of {len(wanted)} came)"

        await self.wait_until(lambda: all(i in self.answers for i in wanted), missing,
                              timeout=timeout, hint=hint)
        return {i: self.answers[i] for i in wanted}


async def _spawn(argv: Sequence[str]) -> anyio.abc.Process:
    # The same environment the bridge gives its children, so a run script that picks the
    # bridge's interpreter (examples/echo/python/run) behaves here as it does there.
    env = dict(os.environ)
    env.setdefault("FLOW_BRIDGE_PYTHON", sys.executable)
    try:
        return await anyio.open_process(
            list(argv), stdin=-1, stdout=-1, stderr=-1, start_new_session=True, env=env
        )
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ENOEXEC:
            why += " (a script needs a #! line; a binary may be built for another machine)"
        raise StartError(f"cannot start {argv[0]!r}: {why}") from None


def _kill_group(proc: anyio.abc.Process) -> None:
    # The child leads its own process group (start_new_session), so this also reaches
    # anything it started; until it is reaped its pid cannot name anyone else's group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _with_child(argv: Sequence[str], timeout: float, body: Callable[[Child], Awaitable[None]]) -> Child:
    proc = await _spawn(argv)
    child = Child(proc, timeout)
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
                _kill_group(proc)
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await proc.wait()
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await proc.aclose()
    if failure is not None:
        raise failure
    return child


# -- the checks --------------------------------------------------------------------------
# Each takes a started child that has not been sent anything yet.


def _expect_result(answer: Result | Error, what: str) -> Result:
    if isinstance(answer, Error):
        raise CheckFailed(
            f"expected a result for {what}, got error {answer.message!r}"
            + (f" (detail: {_show(answer.detail)})" if answer.detail else "")
        )
    return answer


def _expect_echo(answer: Result | Error, what: str, i: object, n: int) -> Result:
    result = _expect_result(answer, what)
    data = result.data
    if "i" not in data or not (data["i"] == i if i is None else _same_number(data["i"], i)):  # type: ignore[arg-type]
        raise CheckFailed(f"{what}: expected data.i = {i!r}, got {_show(data.get('i', '<missing>'))} "
                          f"(data: {_show(data)})")
    if not _same_number(data.get("n"), n):
        raise CheckFailed(f"{what}: expected data.n = {n}, got {_show(data.get('n', '<missing>'))}")
    return result


async def check_handshake(child: Child) -> list[str]:
    # Watch stdout before hello: a banner printed at start-up corrupts the stream.
    await anyio.sleep(PRE_HELLO_WINDOW)
    if child.stdout_bytes:
        raise CheckFailed(
            f"the child wrote {child.stdout_bytes} bytes to stdout before it was sent hello, beginning "
            f"{child.stdout_head!r}: nothing may be written to stdout before hello (was something "
            "printed at start-up?)" + child.stderr_tail(),
            fatal=True,
        )
    if child.proc.returncode is not None:
        raise CheckFailed(
            f"the child {describe_status(child.proc.returncode)} before it was sent hello"
            + child.stderr_tail(),
            fatal=True,
        )
    started = time.monotonic()
    ready = await child.handshake()
    took = time.monotonic() - started
    problems = []
    if ready.concurrency < MIN_CONCURRENCY:
        problems.append(f"ready.concurrency is {ready.concurrency}, the echo contract needs at least "
                        f"{MIN_CONCURRENCY}")
    if not ready.debug:
        problems.append("ready.debug is false, the echo contract needs true")
    if problems:
        raise CheckFailed("; ".join(problems))
    return [f"ready after {took:.2f} s: protocol {ready.protocol}, concurrency {ready.concurrency}, "
            f"debug {ready.debug}, name {ready.name!r}, version {ready.version!r}"]


async def check_version_choice(child: Child) -> None:
    ready = await child.handshake(protocols=(1, 99))
    if ready.protocol != 1:
        raise CheckFailed(f"hello offered [1, 99]; expected ready.protocol = 1, got {ready.protocol}")


async def check_version_mismatch(child: Child) -> None:
    child.codec.max_frame = DEFAULT_MAX_FRAME
    await child.send(Hello(protocols=(99,), plugin="conformance", bridge="flow-bridge conformance"))
    # Whichever comes first: an exit, or bytes on stdout (a ready it should not send).
    with anyio.move_on_after(child.timeout):
        while child.proc.returncode is None and not child.stdout_bytes:
            await anyio.sleep(0.02)
    status = child.proc.returncode
    if status is not None:
        await child.wait_stdout_closed(1.0)
    if child.stdout_bytes:
        raise CheckFailed(
            f"hello offered only [99]; expected no frame and a non-zero exit, but the child wrote "
            f"{child.stdout_bytes} bytes to stdout, beginning {child.stdout_head!r}: a child that speaks "
            "none of the offered versions must not answer ready"
        )
    if status is None:
        raise CheckFailed("hello offered only [99]; expected the child to exit with a non-zero status, but "
                          f"it was still running after {child.timeout:g} s" + child.stderr_tail())
    if status == 0:
        raise CheckFailed("hello offered only [99]; expected a non-zero exit status, got 0"
                          + child.stderr_tail())
    await anyio.sleep(0.1)  # let the stderr drain catch up with the exit
    if "99" not in child.stderr_text:
        raise CheckFailed(
            f"hello offered only [99]; the child {describe_status(status)} but wrote no stderr line naming "
            "the offered versions: it should say which versions it speaks and which were offered"
            + child.stderr_tail()
        )


async def check_single_task(child: Child) -> None:
    await child.handshake()
    await child.send(Task(id=1, config=_json({"i": 7, "payload": "hello"}), project_id="p", flow_id="f",
                          job="j", element_id="e", element_job="ej", timeout_ms=30000))
    answers = await child.answers_for([1])
    _expect_echo(answers[1], "task 1 {'i': 7, 'payload': 'hello'}", 7, 5)


async def check_id_range(child: Child) -> None:
    await child.handshake()
    ids = [0, MAX_ID]
    for k, id_ in enumerate(ids):
        await child.task(id_, {"i": k})
    answers = await child.answers_for(ids, hint="ids are integers in 0..2**53-1 and must come back exactly")
    for k, id_ in enumerate(ids):
        _expect_echo(answers[id_], f"task id {id_}", k, 0)


async def check_many_in_flight(child: Child) -> None:
    ready = await child.handshake()
    # Never send more than the child declared (SPEC 2.3); the handshake check grades the number.
    count = min(MIN_CONCURRENCY, ready.concurrency)
    ids = [1000 + k for k in range(count)]
    # Decreasing sleeps: the later tasks finish first, so answers come out of order, and a
    # child that runs them one after the other needs far longer than the timeout.
    for k, id_ in enumerate(ids):
        await child.task(id_, {"i": k, "sleep_ms": 8 * (count - k)})
    answers = await child.answers_for(
        ids, hint=f"the {count} tasks sleep at most {8 * count} ms each, so they must run concurrently"
    )
    for k, id_ in enumerate(ids):
        _expect_echo(answers[id_], f"task {id_}", k, 0)


def _sized_task(id_: int, i: int, key: str, body_size: int) -> tuple[Task, int]:
    """A task whose msgpack body is exactly `body_size` bytes, padded through config[key]."""
    fill = body_size // 2
    for _ in range(4):
        task = Task(id=id_, config=_json({"i": i, key: "a" * fill}))
        size = len(msgpack.packb(message_to_map(task), use_bin_type=True))
        if size == body_size:
            return task, fill
        fill += body_size - size
    raise AssertionError("could not size the task frame")


async def check_large_payload(child: Child) -> list[str]:
    max_frame = 1 << 20
    await child.handshake(max_frame=max_frame)
    # Just under the announced limit, bridge -> child; then a big frame child -> bridge.
    big, n = _sized_task(1, 1, "payload", max_frame - 16)
    await child.send(big)
    echo_task, echo_len = _sized_task(2, 2, "echo", max_frame // 2)
    await child.send(echo_task)
    await child.task(3, {"i": 3})
    hint = (f"hello announced max_frame {max_frame}; the child must accept frames up to that size "
            "and read them however they are split")
    answers = await child.answers_for([1, 2, 3], hint=hint)
    _expect_echo(answers[1], f"task 1 (a {max_frame - 16}-byte frame)", 1, n)
    echoed = _expect_echo(answers[2], "task 2 (a big echo)", 2, 0).data.get("echo")
    if echoed != "a" * echo_len:
        size = len(echoed) if isinstance(echoed, str) else "?"
        raise CheckFailed(f"task 2: expected data.echo to be the {echo_len}-character string sent, got "
                          f"{type(echoed).__name__} of length {size}")
    _expect_echo(answers[3], "task 3 (after the big ones)", 3, 0)
    return [f"task frames of {max_frame - 16} and {max_frame // 2} bytes"]


UNICODE_PAYLOAD = "流程引擎插件测试🙂"  # 9 code points, 28 UTF-8 bytes, 10 UTF-16 units
UNICODE_ECHO = "你好，世界 🌍🎉 Grüße e\u0301 \U0001f468\u200d\U0001f469\u200d\U0001f467"


async def check_unicode(child: Child) -> None:
    await child.handshake()
    cfg = {"i": 1, "payload": UNICODE_PAYLOAD, "echo": UNICODE_ECHO}
    await child.task(1, cfg)
    # The same config with \u escapes (surrogate pairs for the emoji): JSON parsers must join them.
    await child.task(2, json.dumps({**cfg, "i": 2}, ensure_ascii=True).encode("ascii"))
    answers = await child.answers_for([1, 2])
    want = len(UNICODE_PAYLOAD)
    for id_, how in ((1, "UTF-8"), (2, "\\u-escaped")):
        result = _expect_result(answers[id_], f"task {id_}")
        n = result.data.get("n")
        if not _same_number(n, want):
            nbytes = len(UNICODE_PAYLOAD.encode("utf-8"))
            units = len(UNICODE_PAYLOAD.encode("utf-16-le")) // 2
            hint = {nbytes: "that is the count of UTF-8 bytes", units: "that is the count of UTF-16 units"}
            raise CheckFailed(
                f"task {id_} ({how} JSON): payload {UNICODE_PAYLOAD!r} has {want} code points, got data.n = "
                f"{_show(n)}" + (f" ({hint[n]}); n counts Unicode code points" if n in hint else "")
            )
        if result.data.get("echo") != UNICODE_ECHO:
            raise CheckFailed(f"task {id_} ({how} JSON): data.echo should come back unchanged as "
                              f"{UNICODE_ECHO!r}, got {_show(result.data.get('echo'))}")
        if not _same_number(result.data.get("i"), id_):
            raise CheckFailed(f"task {id_}: expected data.i = {id_}, got {_show(result.data.get('i'))}")


BINARY_CONFIGS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x01binary\x80\xc3(", "non-UTF-8 bytes"),
    ("not json: naïve".encode(), "UTF-8 text that is not JSON"),
    (b"[1, 2, 3]", "a JSON array"),
    (b"", "an empty config"),
)


async def check_binary_config(child: Child) -> None:
    await child.handshake()
    for id_, (config, _) in enumerate(BINARY_CONFIGS, start=1):
        await child.task(id_, config)
    answers = await child.answers_for(range(1, len(BINARY_CONFIGS) + 1))
    for id_, (config, what) in enumerate(BINARY_CONFIGS, start=1):
        result = _expect_result(answers[id_], f"task {id_} ({what})")
        raw = result.data.get("raw", "<missing>")
        if raw != config or not isinstance(raw, bytes):
            kind = "bin" if isinstance(raw, bytes) else type(raw).__name__
            raise CheckFailed(
                f"task {id_}, config is {what} {config!r}: expected data.raw to be those bytes as msgpack "
                f"bin, got {kind} {_show(raw)}: a config that is not a JSON object is echoed as raw bytes"
            )


async def check_handler_error(child: Child) -> None:
    await child.handshake()
    text = "conformance failure 测试 #7"
    await child.task(1, {"i": 1, "fail": text})
    answer = (await child.answers_for([1]))[1]
    if not isinstance(answer, Error):
        raise CheckFailed(f"config {{'fail': {text!r}}}: expected an error frame, got a result with data "
                          f"{_show(answer.data)}: an exception raised by the handler must become an error")
    if text not in answer.message:
        raise CheckFailed(f"expected the error message to contain {text!r}, got {answer.message!r}")


async def check_cancel(child: Child) -> None:
    await child.handshake()
    await child.task(1, {"i": 1, "sleep_ms": 60000})
    await child.task(2, {"i": 2})
    # Once task 2 is answered, the child has certainly read task 1 too.
    await child.answers_for([2])
    await child.send(Cancel(id=1, reason="timeout"))
    answer = (await child.answers_for(
        [1], timeout=GRACE,
        hint="after cancel, the handler must stop the work and answer the task (error 'cancelled')",
    ))[1]
    if not isinstance(answer, Error):
        raise CheckFailed("task 1 (sleep_ms 60000) was cancelled; expected an error 'cancelled', got a "
                          f"result {_show(answer.data)}")
    if "cancel" not in answer.message.lower():
        raise CheckFailed("task 1 was cancelled; expected the error message 'cancelled', got "
                          f"{answer.message!r}")
    await child.task(3, {"i": 3})
    _expect_echo((await child.answers_for([3], hint="the child must keep working after a cancel"))[3],
                 "task 3 (after the cancel)", 3, 0)


async def check_late_cancel(child: Child) -> None:
    await child.handshake()
    await child.task(1, {"i": 1})
    await child.answers_for([1])
    # The cancel crossed the answer in the pipes; it must be ignored (SPEC 2.4). A second
    # answer for id 1 would arrive before the answer to task 2, and _accept rejects it.
    await child.send(Cancel(id=1, reason="timeout"))
    await child.task(2, {"i": 2})
    _expect_echo((await child.answers_for([2], hint="a cancel for an answered id must be ignored"))[2],
                 "task 2 (after a cancel for answered task 1)", 2, 0)


async def _check_ends(child: Child, how: str) -> None:
    await child.handshake()
    await child.task(1, {"i": 1, "sleep_ms": 300})
    if how == "stop":
        await child.send(Stop())
    else:
        await child.close_stdin()
    answer = (await child.answers_for(
        [1], hint=f"after {how}, the child must finish the task in flight and answer it"
    ))[1]
    if isinstance(answer, Error):
        raise CheckFailed(f"after {how}, expected task 1 (sleep_ms 300) to finish with a result, got error "
                          f"{answer.message!r}: requests in flight are finished, not cancelled")
    _expect_echo(answer, "task 1", 1, 0)
    status = await child.wait_exit(GRACE)
    if status is None:
        raise CheckFailed(
            f"after {how}, task 1 was answered but the child had not exited {GRACE:g} s later: it must "
            "finish its work, run its stop hook and exit with status 0" + child.stderr_tail()
        )
    if status != 0:
        raise CheckFailed(f"after {how}, expected exit status 0, the child {describe_status(status)}"
                          + child.stderr_tail())
    if not await child.wait_stdout_closed(1.0):
        raise CheckFailed(f"after {how}, the child exited but its stdout is still open (a sub-process "
                          "holds it?)")
    await child.vet_remaining()


async def check_stop(child: Child) -> None:
    await _check_ends(child, "stop")


async def check_stdin_eof(child: Child) -> None:
    await _check_ends(child, "end of input")


async def check_stdout_protection(child: Child) -> None:
    await child.handshake()
    texts = {k: f"conformance-stdout-probe-{k} 日志" for k in range(1, 5)}
    for k, text in texts.items():
        await child.task(k, {"i": k, "print": text})
    answers = await child.answers_for(
        list(texts), hint="printing to stdout must not disturb the frames"
    )
    for k in texts:
        _expect_echo(answers[k], f"task {k} (which printed)", k, 0)

    def all_seen() -> bool:
        return all(text in child.stderr_text for text in texts.values())

    # The printed text may sit in the handler's stdout buffer until it flushes or exits.
    with anyio.move_on_after(1.0):
        while not all_seen():
            await anyio.sleep(0.05)
    note = ""
    if not all_seen():
        await child.close_stdin()
        if await child.wait_exit(GRACE) is None:
            note = (" (the child did not exit after end of input, so buffered output may not have been"
                    " flushed)")
        await anyio.sleep(0.1)
    if not all_seen():
        missing = [text for text in texts.values() if text not in child.stderr_text]
        raise CheckFailed(
            f"the handler printed {missing[0]!r} to stdout; expected that text on stderr, but it did not "
            f"show up{note}: the adapter must point fd 1 at stderr" + child.stderr_tail()
        )


async def check_debug(child: Child) -> None:
    ready = await child.handshake()
    if not ready.debug:
        raise CheckFailed("ready.debug is false, so the bridge may send no debug request: the echo contract "
                          "needs debug = true and debug requests handled like tasks")
    await child.send(Debug(id=1, config=_json({"i": 5})))
    answer = (await child.answers_for([1]))[1]
    _expect_echo(answer, "debug request 1 {'i': 5}", 5, 0)
    before = [log for log, answered in child.logs if log.id == 1 and answered == 0]
    if not any("debug 5" in log.msg for log in before):
        await child.linger(0.5)  # a log that comes late is a clearer reason than none at all
        after = [log for log, answered in child.logs if log.id == 1 and answered > 0]
        seen = "; ".join(f"{log.level} {log.msg!r}" for log in before) or "none"
        raise CheckFailed(
            "expected a log frame with id 1 containing 'debug 5' before the result (logs go into the debug "
            f"response), got logs for id 1: {seen}"
            + (f" (and {len(after)} after the result, too late)" if after else "")
        )
    level = next(log.level for log in before if "debug 5" in log.msg)
    if level != "info":
        raise CheckFailed(f"the 'debug 5' log frame has level {level!r}; the echo contract logs it at info")


async def check_log(child: Child) -> None:
    await child.handshake()
    text = "conformance log line 日志"
    await child.task(1, {"i": 1, "log": text})
    _expect_echo((await child.answers_for([1]))[1], "task 1", 1, 0)
    mine = [(log, answered) for log, answered in child.logs if text in log.msg]
    if not mine:
        await child.linger(0.5)
        mine = [(log, answered) for log, answered in child.logs if text in log.msg]
    if not mine:
        raise CheckFailed(f"expected a log frame containing {text!r} before the answer to task 1, got "
                          f"{len(child.logs)} log frames: logs made inside a request must become log frames")
    log, answered = mine[0]
    problems = []
    if log.id != 1:
        problems.append(f"id {log.id!r} instead of 1 (logs made inside a request carry its id)")
    if log.level != "info":
        problems.append(f"level {log.level!r} instead of 'info'")
    if answered:
        problems.append("it came after the answer (a request's logs come before its answer)")
    if problems:
        raise CheckFailed(f"the log frame {log.msg!r} has " + "; ".join(problems))


async def check_state(child: Child) -> None:
    await child.handshake()
    await child.send(State(connected=True))
    await child.task(1, {"i": 1})
    await child.send(State(connected=False))
    await child.task(2, {"i": 2})
    answers = await child.answers_for([1, 2], hint="state frames must be accepted (and may be ignored)")
    _expect_echo(answers[1], "task 1 (after state connected)", 1, 0)
    _expect_echo(answers[2], "task 2 (after state disconnected)", 2, 0)


async def check_unknown_fields(child: Child) -> None:
    extra = {"x_future": {"nested": [1, "two"]}}
    await child.handshake(extra=extra)
    task = {**message_to_map(Task(id=1, config=_json({"i": 1}))), **extra}
    await child.send(pack_frame(msgpack.packb(task, use_bin_type=True)), request_id=1)
    await child.send(pack_frame(msgpack.packb({**message_to_map(State(connected=True)), **extra})))
    await child.task(2, {"i": 2})
    answers = await child.answers_for([1, 2], hint="receivers must ignore keys they do not know (SPEC 1)")
    _expect_echo(answers[1], "task 1 (with an unknown key)", 1, 0)
    _expect_echo(answers[2], "task 2", 2, 0)


CheckFunc = Callable[[Child], Awaitable[list[str] | None]]

CHECKS: tuple[tuple[str, CheckFunc], ...] = (
    ("handshake", check_handshake),
    ("version-choice", check_version_choice),
    ("version-mismatch", check_version_mismatch),
    ("single-task", check_single_task),
    ("id-range", check_id_range),
    ("many-in-flight", check_many_in_flight),
    ("large-payload", check_large_payload),
    ("unicode", check_unicode),
    ("binary-config", check_binary_config),
    ("handler-error", check_handler_error),
    ("cancel", check_cancel),
    ("late-cancel", check_late_cancel),
    ("stop", check_stop),
    ("stdin-eof", check_stdin_eof),
    ("stdout-protection", check_stdout_protection),
    ("debug", check_debug),
    ("log", check_log),
    ("state", check_state),
    ("unknown-fields", check_unknown_fields),
)
CHECK_NAMES = tuple(name for name, _ in CHECKS)


async def run_check(
    argv: Sequence[str], name: str, func: CheckFunc, timeout: float
) -> tuple[CheckResult, bool]:
    """Run one check in a fresh child; returns its result and whether a failure was fatal."""
    started = time.monotonic()
    details: list[str] = []
    fatal = False
    passed = True
    reason = ""
    # A safety net over the per-step limits, so that no check can hang the suite.
    budget = 2 * timeout + 2 * GRACE + 10

    child: Child | None = None

    async def body(started: Child) -> None:
        nonlocal child
        child = started
        details.extend(await func(started) or [])

    try:
        with anyio.fail_after(budget):
            await _with_child(argv, timeout, body)
    except CheckFailed as exc:
        passed, reason, fatal = False, exc.reason, exc.fatal
    except TimeoutError:
        passed, reason = False, f"the check did not finish within {budget:g} s"
    except StartError:
        raise
    except Exception as exc:  # a bug in the suite itself: say so rather than blame the child
        passed = False
        reason = f"internal error in the conformance suite ({type(exc).__name__}: {exc}); please report it"
        details.extend(traceback.format_exc().splitlines())
    if child is not None:
        details.extend(f"stderr: {line}" for line in child.stderr_lines())
    result = CheckResult(name, passed, reason, time.monotonic() - started, tuple(details))
    return result, fatal


def resolve_command(argv: Sequence[str]) -> list[str]:
    """Check that argv[0] names an executable, as a usage error rather than 19 failures."""
    if not argv:
        raise StartError("no command given: usage: flow-bridge conformance [OPTIONS] -- CMD [ARGS...]")
    path = shutil.which(argv[0])
    if path is None:
        if os.sep in argv[0] and os.path.exists(argv[0]):
            why = "it is a directory" if os.path.isdir(argv[0]) else "it is not executable (chmod +x?)"
        elif os.sep in argv[0]:
            why = "no such file"
        else:
            why = "not found on PATH"
        raise StartError(f"cannot start {argv[0]!r}: {why}")
    return list(argv)


async def run_suite(
    argv: Sequence[str],
    *,
    timeout: float = 10.0,
    jobs: int = 8,
    only: Sequence[str] = (),
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run the checks against the command `argv`; `on_result` sees results in check order."""
    argv = resolve_command(argv)
    checks = [(name, func) for name, func in CHECKS if not only or name in only]
    results: list[CheckResult | None] = [None] * len(checks)
    shown = 0

    def record(index: int, result: CheckResult) -> None:
        nonlocal shown
        results[index] = result
        while shown < len(results) and results[shown] is not None:
            if on_result is not None:
                on_result(results[shown])  # type: ignore[arg-type]
            shown += 1

    start_index = 0
    if checks and checks[0][0] == "handshake":
        result, fatal = await run_check(argv, *checks[0], timeout)
        record(0, result)
        start_index = 1
        if fatal:
            for index in range(1, len(checks)):
                reason = "not run: the handshake failed (see above)"
                record(index, CheckResult(checks[index][0], False, reason))
            return [r for r in results if r is not None]

    limiter = anyio.CapacityLimiter(max(1, jobs))
    start_error: StartError | None = None

    async def one(index: int) -> None:
        nonlocal start_error
        async with limiter:
            if start_error is not None:
                return
            try:
                result, _ = await run_check(argv, *checks[index], timeout)
            except StartError as exc:  # kept out of the task group's ExceptionGroup
                start_error = exc
                return
        record(index, result)

    async with anyio.create_task_group() as tg:
        for index in range(start_index, len(checks)):
            tg.start_soon(one, index)
    if start_error is not None:
        raise start_error
    return [r for r in results if r is not None]


def summary(results: Sequence[CheckResult]) -> str:
    passed = sum(r.passed for r in results)
    return f"{passed} passed, {len(results) - passed} failed"


@click.command(
    "conformance",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog="Checks: " + ", ".join(CHECK_NAMES) + ".",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds the child may take to answer hello, and to answer each request.")
@click.option("--verbose", "-v", is_flag=True, help="Show timings, the ready frame and the child's stderr.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=8, show_default=True,
              help="How many checks run at once.")
@click.option("--check", "only", multiple=True, type=click.Choice(CHECK_NAMES), metavar="NAME",
              help="Run only this check (repeatable).")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS...]")
@click.pass_context
def conformance_command(ctx: click.Context, timeout: float, verbose: bool, jobs: int,
                        only: tuple[str, ...], cmd: tuple[str, ...]) -> None:
    """Check that CMD, an echo handler (SPEC.md section 7), speaks the stdio protocol.

    Each check starts CMD afresh and prints PASS or FAIL with a reason. Exit status:
    0 when every check passed, 1 when one failed, 2 when CMD cannot be started.
    """

    def show(result: CheckResult) -> None:
        click.echo(result.line() + (f"  ({result.seconds:.2f} s)" if verbose else ""))
        if verbose:
            for line in result.details:
                click.echo(f"    {line}")

    if not cmd:
        raise click.UsageError("no command given: put the handler's command after --")
    try:
        results = anyio.run(lambda: run_suite(cmd, timeout=timeout, jobs=jobs, only=only, on_result=show))
    except StartError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(2)
    click.echo(summary(results))
    ctx.exit(0 if all(r.passed for r in results) else 1)


__all__ = ["CHECKS", "CheckFailed", "CheckResult", "StartError", "conformance_command", "run_suite"]
