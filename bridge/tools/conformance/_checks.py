"""The conformance checks, each a short conversation with a fresh child.

Each check takes a started child that has been sent nothing yet. A check marked
`Contract.PROTOCOL` in `CHECKS` asks only what SPEC.md sections 1-4 promise, so it can
grade any handler; the rest rely on the echo contract (section 7). Checks that run in
both modes check the echo's answer when there is one, and otherwise only that the
answer came, once, for the right id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import msgpack

from flow_bridge.protocol import (
    DEFAULT_MAX_FRAME,
    MAX_ID,
    Cancel,
    Debug,
    Error,
    Hello,
    Result,
    State,
    Stop,
    Task,
    message_to_map,
    too_large_message,
)

from ._driver import (
    EXIT_NOTICE,
    GRACE,
    LATE_FRAME_WAIT,
    OUTPUT_CATCH_UP,
    POLL,
    CheckFailed,
    Child,
    Contract,
    describe_status,
    show,
    to_json,
)

# How long the handshake check watches stdout before sending hello: long enough to catch
# a banner printed at start-up, short enough not to slow the suite down.
PRE_HELLO_WINDOW = 0.5
# What the echo contract promises in `ready` (SPEC.md section 7).
MIN_CONCURRENCY = 64
# Requests in one long run: past the 64 of many-in-flight, so that a rule broken late in a
# run (an id answered twice at the 70th request) shows.
LONG_RUN = 200
# At most this many of them in flight at once (and never more than ready.concurrency).
LONG_RUN_WINDOW = 16
# max-frame announces more than the default limit, so that a child that keeps its default
# instead of hello.max_frame cannot read the frame sent at that size.
BIG_MAX_FRAME = DEFAULT_MAX_FRAME + (1 << 20)
# result-too-large announces this: results over it are cheap to build, and the sizes used
# keep every msgpack header in one size class (array16, str8), so sizes add up exactly.
RESULT_MAX_FRAME = 64 * 1024
# Echoed strings between these lengths have a str8 header (2 bytes), whatever the length.
_STR8 = (32, 255)
# An id whose cancel comes before any task with that id was sent.
UNKNOWN_ID = 4242


def same_number(value: object, expected: int) -> bool:
    # A JSON round trip may turn 5 into 5.0 (Go, JavaScript): that is still the number 5.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == expected


def expect_result(answer: Result | Error, what: str) -> Result:
    if isinstance(answer, Error):
        raise CheckFailed(
            f"expected a result for {what}, got error {answer.message!r}"
            + (f" (detail: {show(answer.detail)})" if answer.detail else "")
        )
    return answer


def expect_echo(answer: Result | Error, what: str, i: object, n: int) -> Result:
    result = expect_result(answer, what)
    data = result.data
    if not isinstance(data, dict):
        raise CheckFailed(f"{what}: expected data to be a map with i and n, got {show(data)}")
    if "i" not in data or not (data["i"] == i if i is None else same_number(data["i"], i)):  # type: ignore[arg-type]
        raise CheckFailed(f"{what}: expected data.i = {i!r}, got {show(data.get('i', '<missing>'))} "
                          f"(data: {show(data)})")
    if not same_number(data.get("n"), n):
        raise CheckFailed(f"{what}: expected data.n = {n}, got {show(data.get('n', '<missing>'))}")
    return result


def expect_answer(child: Child, answer: Result | Error, what: str, i: object, n: int = 0) -> None:
    """The echo's answer under the echo contract; under the protocol alone, any answer will do."""
    if child.echo:
        expect_echo(answer, what, i, n)


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
    if child.process.returncode is not None:
        raise CheckFailed(
            f"the child {describe_status(child.process.returncode)} before it was sent hello" + child.stderr_tail(),
            fatal=True,
        )
    started = time.monotonic()
    ready = await child.handshake()
    took = time.monotonic() - started
    problems = []
    if child.echo and ready.concurrency < MIN_CONCURRENCY:
        problems.append(f"ready.concurrency is {ready.concurrency}, the echo contract needs at least "
                        f"{MIN_CONCURRENCY}")
    if child.echo and not ready.debug:
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
    await child.send(Hello(protocols=(99,), plugin="conformance", bridge="flow-bridge conformance"))
    # Whichever comes first: an exit, or bytes on stdout (a ready it should not send).
    with anyio.move_on_after(child.timeout):
        while child.process.returncode is None and not child.stdout_bytes:
            await anyio.sleep(POLL)
    status = child.process.returncode
    if status is not None:
        await child.wait_stdout_closed(EXIT_NOTICE)
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
        raise CheckFailed("hello offered only [99]; expected a non-zero exit status, got 0" + child.stderr_tail())
    with anyio.move_on_after(OUTPUT_CATCH_UP):  # the stderr drain may lag behind the exit
        while "99" not in child.stderr_text:
            await anyio.sleep(POLL)
    if "99" not in child.stderr_text:
        raise CheckFailed(
            f"hello offered only [99]; the child {describe_status(status)} but wrote no stderr line naming "
            "the offered versions: it should say which versions it speaks and which were offered"
            + child.stderr_tail()
        )


async def check_single_task(child: Child) -> None:
    await child.handshake()
    await child.send(Task(id=1, config=to_json({"i": 7, "payload": "hello"}), project_id="p", flow_id="f",
                          job="j", element_id="e", element_job="ej", timeout_ms=30000))
    answers = await child.answers_for([1])
    expect_echo(answers[1], "task 1 {'i': 7, 'payload': 'hello'}", 7, 5)


async def check_id_range(child: Child) -> None:
    await child.handshake()
    ids = [0, MAX_ID]
    for k, id_ in enumerate(ids):
        await child.task(id_, {"i": k})
    answers = await child.answers_for(ids, hint="ids are integers in 0..2**53-1 and must come back exactly")
    for k, id_ in enumerate(ids):
        expect_answer(child, answers[id_], f"task id {id_}", k)


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
        expect_echo(answers[id_], f"task {id_}", k, 0)


async def check_long_run(child: Child) -> list[str]:
    ready = await child.handshake()
    window = max(1, min(LONG_RUN_WINDOW, ready.concurrency))
    started = time.monotonic()
    for first in range(1, LONG_RUN + 1, window):
        ids = list(range(first, min(first + window, LONG_RUN + 1)))
        for id_ in ids:
            await child.task(id_, {"i": id_})
        answers = await child.answers_for(ids, hint=f"in a run of {LONG_RUN} requests, every one gets an answer")
        for id_ in ids:
            expect_answer(child, answers[id_], f"task {id_} of {LONG_RUN}", id_)
    # One more, after all: an answer sent twice before it shows up ahead of its answer.
    await child.task(LONG_RUN + 1, {"i": LONG_RUN + 1})
    await child.answers_for([LONG_RUN + 1], hint="the last request of the run")
    took = time.monotonic() - started
    return [f"{LONG_RUN + 1} requests, at most {window} in flight, in {took:.2f} s"]


def sized_task(id_: int, i: int, key: str, body_size: int) -> tuple[Task, int]:
    """A task whose msgpack body is exactly `body_size` bytes, padded through config[key]."""
    fill = body_size // 2
    for _ in range(4):
        task = Task(id=id_, config=to_json({"i": i, key: "a" * fill}))
        size = len(msgpack.packb(message_to_map(task), use_bin_type=True))
        if size == body_size:
            return task, fill
        fill += body_size - size
    raise AssertionError("could not size the task frame")


async def check_large_payload(child: Child) -> list[str]:
    max_frame = 1 << 20
    await child.handshake(max_frame=max_frame)
    # Just under the announced limit, bridge -> child; then a big frame child -> bridge.
    big, n = sized_task(1, 1, "payload", max_frame - 16)
    await child.send(big)
    echo_task, echo_len = sized_task(2, 2, "echo", max_frame // 2)
    await child.send(echo_task)
    await child.task(3, {"i": 3})
    hint = (f"hello announced max_frame {max_frame}; the child must accept frames up to that size "
            "and read them however they are split")
    answers = await child.answers_for([1, 2, 3], hint=hint)
    expect_echo(answers[1], f"task 1 (a {max_frame - 16}-byte frame)", 1, n)
    echoed = expect_echo(answers[2], "task 2 (a big echo)", 2, 0).data.get("echo")
    if echoed != "a" * echo_len:
        size = len(echoed) if isinstance(echoed, str) else "?"
        raise CheckFailed(f"task 2: expected data.echo to be the {echo_len}-character string sent, got "
                          f"{type(echoed).__name__} of length {size}")
    expect_echo(answers[3], "task 3 (after the big ones)", 3, 0)
    return [f"task frames of {max_frame - 16} and {max_frame // 2} bytes"]


async def check_max_frame(child: Child) -> list[str]:
    """hello.max_frame is the limit the child reads by, even past its own default."""
    await child.handshake(max_frame=BIG_MAX_FRAME)
    big, n = sized_task(1, 1, "payload", BIG_MAX_FRAME)
    hint = (f"hello announced max_frame {BIG_MAX_FRAME}, more than the default {DEFAULT_MAX_FRAME}; a frame of "
            "exactly that size must be read (use hello.max_frame, not a default, as the limit)")
    try:
        await child.send(big)
        await child.task(2, {"i": 2})
    except CheckFailed as exc:
        raise CheckFailed(f"{exc.reason}; {hint}") from None
    answers = await child.answers_for([1, 2], hint=hint)
    expect_answer(child, answers[1], f"task 1 (a frame of exactly max_frame, {BIG_MAX_FRAME} bytes)", 1, n)
    expect_answer(child, answers[2], "task 2 (after it)", 2)
    return [f"a task frame of exactly {BIG_MAX_FRAME} bytes"]


@dataclass(frozen=True, slots=True)
class _Sizing:
    """How big the echo's result frame is for `floats` floats in i and `chars` characters of echo."""

    base: int
    per_float: int

    @staticmethod
    def config(floats: int, chars: int) -> bytes:
        # Compact JSON: 4 bytes a float, so that the task stays well under the limit.
        return json.dumps({"i": [0.5] * floats, "echo": "x" * chars}, separators=(",", ":")).encode()

    def fill(self, body_size: int) -> tuple[int, int]:
        floats = (body_size - self.base - _STR8[0]) // self.per_float
        return floats, body_size - self.base - self.per_float * floats


async def _measure(child: Child) -> _Sizing:
    """Learn how the child encodes a result: two echoes that differ only in their float count."""
    floats, more, chars = 1000, 100, 100
    await child.task(1, _Sizing.config(floats, chars))
    await child.task(2, _Sizing.config(floats + more, chars))
    answers = await child.answers_for([1, 2])
    for id_ in (1, 2):
        expect_result(answers[id_], f"task {id_} (an echo of {floats} floats)")
    grew = child.answer_sizes[2] - child.answer_sizes[1]
    if grew % more or grew // more < 5:
        raise CheckFailed(f"100 more floats made the result frame {grew} bytes bigger; a msgpack float takes 5 or 9: "
                          "is the echo's data.i the config's i, unchanged?")
    per_float = grew // more
    return _Sizing(base=child.answer_sizes[1] - per_float * floats - chars, per_float=per_float)


async def check_result_too_large(child: Child) -> list[str]:
    """A result over hello.max_frame is answered at once with the 'result too large' error; one at it is sent."""
    limit = RESULT_MAX_FRAME
    await child.handshake(max_frame=limit)
    # JSON floats grow in msgpack ("0.5," is 4 bytes, a float 5 or 9), so a task that fits
    # can ask for a result that does not.
    sizing = await _measure(child)
    floats, chars = sizing.fill(limit)
    await child.task(3, sizing.config(floats, chars))
    at_limit = (await child.answers_for([3], hint="a result of exactly max_frame bytes fits"))[3]
    if isinstance(at_limit, Error):
        raise CheckFailed(f"a result of exactly max_frame ({limit}) bytes was answered with error "
                          f"{at_limit.message!r}: only a frame over the limit is refused")
    if child.answer_sizes[3] != limit:
        raise CheckFailed(f"the result for task 3 was {child.answer_sizes[3]} bytes, not the {limit} that the "
                          "child's encoding of tasks 1 and 2 predicts: the echo's result must encode the same "
                          "way every time")
    await child.task(4, sizing.config(floats, chars + 1))
    over = (await child.answers_for(
        [4], hint=f"a result of {limit + 1} bytes, over hello.max_frame, must be answered with an error at once, "
                  "not dropped, cut short or sent whole",
    ))[4]
    expected = too_large_message(limit + 1, limit)
    if not isinstance(over, Error):
        raise CheckFailed(f"task 4's result is {limit + 1} bytes, over max_frame {limit}, yet a result came: "
                          f"expected the error {expected!r}")
    if over.message != expected:
        raise CheckFailed(f"task 4 (a result of {limit + 1} bytes): expected the error message {expected!r}, "
                          f"got {over.message!r} (SPEC 4: N is the body size of the result frame)")
    await child.task(5, {"i": 5})
    expect_echo((await child.answers_for([5], hint="after a result too large, the child carries on"))[5],
                "task 5 (after the one too large)", 5, 0)
    if child.process.returncode is not None:
        raise CheckFailed(f"after a result too large the child {describe_status(child.process.returncode)}: it "
                          "must answer with the error and carry on")
    return [f"max_frame {limit}: a result of exactly {limit} bytes sent, {limit + 1} answered 'result too large'"]


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
        result = expect_result(answers[id_], f"task {id_}")
        data = result.data if isinstance(result.data, dict) else {}
        n = data.get("n")
        if not same_number(n, want):
            nbytes = len(UNICODE_PAYLOAD.encode("utf-8"))
            units = len(UNICODE_PAYLOAD.encode("utf-16-le")) // 2
            hint = {nbytes: "that is the count of UTF-8 bytes", units: "that is the count of UTF-16 units"}
            raise CheckFailed(
                f"task {id_} ({how} JSON): payload {UNICODE_PAYLOAD!r} has {want} code points, got data.n = "
                f"{show(n)}" + (f" ({hint[n]}); n counts Unicode code points" if n in hint else "")
            )
        if data.get("echo") != UNICODE_ECHO:
            raise CheckFailed(f"task {id_} ({how} JSON): data.echo should come back unchanged as "
                              f"{UNICODE_ECHO!r}, got {show(data.get('echo'))}")
        if not same_number(data.get("i"), id_):
            raise CheckFailed(f"task {id_}: expected data.i = {id_}, got {show(data.get('i'))}")


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
        result = expect_result(answers[id_], f"task {id_} ({what})")
        raw = result.data.get("raw", "<missing>") if isinstance(result.data, dict) else result.data
        if raw != config or not isinstance(raw, bytes):
            kind = "bin" if isinstance(raw, bytes) else type(raw).__name__
            raise CheckFailed(
                f"task {id_}, config is {what} {config!r}: expected data.raw to be those bytes as msgpack "
                f"bin, got {kind} {show(raw)}: a config that is not a JSON object is echoed as raw bytes"
            )


async def check_handler_error(child: Child) -> None:
    await child.handshake()
    text = "conformance failure 测试 #7"
    await child.task(1, {"i": 1, "fail": text})
    answer = (await child.answers_for([1]))[1]
    if not isinstance(answer, Error):
        raise CheckFailed(f"config {{'fail': {text!r}}}: expected an error frame, got a result with data "
                          f"{show(answer.data)}: an exception raised by the handler must become an error")
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
                          f"result {show(answer.data)}")
    if "cancel" not in answer.message.lower():
        raise CheckFailed(f"task 1 was cancelled; expected the error message 'cancelled', got {answer.message!r}")
    await child.task(3, {"i": 3})
    expect_echo((await child.answers_for([3], hint="the child must keep working after a cancel"))[3],
                "task 3 (after the cancel)", 3, 0)


async def check_late_cancel(child: Child) -> None:
    await child.handshake()
    await child.task(1, {"i": 1})
    await child.answers_for([1])
    # The cancel crossed the answer in the pipes; it must be ignored (SPEC 2.4). A second
    # answer for id 1 would arrive before the answer to task 2, and is caught as it comes.
    await child.send(Cancel(id=1, reason="timeout"))
    await child.task(2, {"i": 2})
    expect_answer(child, (await child.answers_for([2], hint="a cancel for an answered id must be ignored"))[2],
                  "task 2 (after a cancel for answered task 1)", 2)


async def check_unknown_cancel(child: Child) -> None:
    await child.handshake()
    # A cancel for an id that was never sent: nothing to stop, nothing to answer.
    await child.send(Cancel(id=UNKNOWN_ID, reason="timeout"))
    await child.task(1, {"i": 1})
    expect_answer(child, (await child.answers_for(
        [1], hint=f"a cancel for an id that is not in flight ({UNKNOWN_ID}) must be ignored, without an answer"
    ))[1], "task 1 (after a cancel for an unknown id)", 1)


async def _check_ends(child: Child, how: str) -> None:
    await child.handshake()
    # Under the echo contract the task sleeps, so that it is surely in flight when the end comes.
    await child.task(1, {"i": 1, "sleep_ms": 300} if child.echo else {"i": 1})
    if how == "stop":
        await child.send(Stop())
    else:
        await child.close_stdin()
    answer = (await child.answers_for(
        [1], hint=f"after {how}, the child must finish the task in flight and answer it"
    ))[1]
    if child.echo and isinstance(answer, Error):
        raise CheckFailed(f"after {how}, expected task 1 (sleep_ms 300) to finish with a result, got error "
                          f"{answer.message!r}: requests in flight are finished, not cancelled")
    expect_answer(child, answer, "task 1", 1)
    status = await child.wait_exit(GRACE)
    if status is None:
        raise CheckFailed(
            f"after {how}, task 1 was answered but the child had not exited {GRACE:g} s later: it must "
            "finish its work, run its stop hook and exit with status 0" + child.stderr_tail()
        )
    if status != 0:
        raise CheckFailed(f"after {how}, expected exit status 0, the child {describe_status(status)}"
                          + child.stderr_tail())
    if not await child.wait_stdout_closed(EXIT_NOTICE):
        raise CheckFailed(f"after {how}, the child exited but its stdout is still open (a sub-process holds it?)")
    await child.vet_remaining()


async def check_stop(child: Child) -> None:
    await _check_ends(child, "stop")


async def check_stdin_eof(child: Child) -> None:
    await _check_ends(child, "end of input")


async def check_stdout_protection(child: Child) -> None:
    if not child.echo:
        await _check_stdout_clean(child)
        return
    await child.handshake()
    texts = {k: f"conformance-stdout-probe-{k} 日志" for k in range(1, 5)}
    for k, text in texts.items():
        await child.task(k, {"i": k, "print": text})
    answers = await child.answers_for(list(texts), hint="printing to stdout must not disturb the frames")
    for k in texts:
        expect_echo(answers[k], f"task {k} (which printed)", k, 0)

    def all_seen() -> bool:
        return all(text in child.stderr_text for text in texts.values())

    # The printed text may sit in the handler's stdout buffer until it flushes or exits.
    with anyio.move_on_after(OUTPUT_CATCH_UP):
        while not all_seen():
            await anyio.sleep(POLL)
    note = ""
    if not all_seen():
        await child.close_stdin()
        if await child.wait_exit(GRACE) is None:
            note = " (the child did not exit after end of input, so buffered output may not have been flushed)"
        with anyio.move_on_after(OUTPUT_CATCH_UP):
            while not all_seen():
                await anyio.sleep(POLL)
    if not all_seen():
        missing = [text for text in texts.values() if text not in child.stderr_text]
        raise CheckFailed(
            f"the handler printed {missing[0]!r} to stdout; expected that text on stderr, but it did not "
            f"show up{note}: the adapter must point fd 1 at stderr" + child.stderr_tail()
        )


async def _check_stdout_clean(child: Child) -> None:
    """Without the echo's print: from start to exit, stdout holds frames and nothing else."""
    await child.handshake()
    ids = [1, 2, 3]
    for id_ in ids:
        await child.task(id_, {"i": id_})
    await child.answers_for(ids, hint="stdout must carry only frames")
    await child.close_stdin()
    if await child.wait_exit(GRACE) is None:
        raise CheckFailed(f"the child had not exited {GRACE:g} s after end of input" + child.stderr_tail())
    await child.vet_remaining()
    if child.conn.pending_bytes:
        raise CheckFailed(f"after its last frame, stdout held {child.conn.pending_bytes} more bytes that are "
                          "not a frame: was something printed? The adapter must point fd 1 at stderr")


async def check_debug(child: Child) -> None:
    ready = await child.handshake()
    if not ready.debug:
        raise CheckFailed("ready.debug is false, so the bridge may send no debug request: the echo contract "
                          "needs debug = true and debug requests handled like tasks")
    await child.send(Debug(id=1, config=to_json({"i": 5})))
    answer = (await child.answers_for([1]))[1]
    expect_echo(answer, "debug request 1 {'i': 5}", 5, 0)
    before = [log for log, answered in child.logs if log.id == 1 and answered == 0]
    if not any("debug 5" in log.msg for log in before):
        await child.linger(LATE_FRAME_WAIT)
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
    expect_echo((await child.answers_for([1]))[1], "task 1", 1, 0)
    mine = [(log, answered) for log, answered in child.logs if text in log.msg]
    if not mine:
        await child.linger(LATE_FRAME_WAIT)
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
    expect_answer(child, answers[1], "task 1 (after state connected)", 1)
    expect_answer(child, answers[2], "task 2 (after state disconnected)", 2)


async def check_unknown_fields(child: Child) -> None:
    extra = {"x_future": {"nested": [1, "two"]}}
    await child.handshake(extra=extra)
    await child.send_map({**message_to_map(Task(id=1, config=to_json({"i": 1}))), **extra})
    await child.send_map({**message_to_map(State(connected=True)), **extra})
    await child.task(2, {"i": 2})
    answers = await child.answers_for([1, 2], hint="receivers must ignore keys they do not know (SPEC 1)")
    expect_answer(child, answers[1], "task 1 (with an unknown key)", 1)
    expect_answer(child, answers[2], "task 2", 2)


CheckFunc = Callable[[Child], Awaitable[list[str] | None]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    run: CheckFunc
    # PROTOCOL: any handler can be graded by it; ECHO: it needs the echo contract.
    needs: Contract


CHECKS: tuple[Check, ...] = (
    Check("handshake", check_handshake, Contract.PROTOCOL),
    Check("version-choice", check_version_choice, Contract.PROTOCOL),
    Check("version-mismatch", check_version_mismatch, Contract.PROTOCOL),
    Check("single-task", check_single_task, Contract.ECHO),
    Check("id-range", check_id_range, Contract.PROTOCOL),
    Check("many-in-flight", check_many_in_flight, Contract.ECHO),
    Check("long-run", check_long_run, Contract.PROTOCOL),
    Check("large-payload", check_large_payload, Contract.ECHO),
    Check("max-frame", check_max_frame, Contract.PROTOCOL),
    Check("result-too-large", check_result_too_large, Contract.ECHO),
    Check("unicode", check_unicode, Contract.ECHO),
    Check("binary-config", check_binary_config, Contract.ECHO),
    Check("handler-error", check_handler_error, Contract.ECHO),
    Check("cancel", check_cancel, Contract.ECHO),
    Check("late-cancel", check_late_cancel, Contract.PROTOCOL),
    Check("unknown-cancel", check_unknown_cancel, Contract.PROTOCOL),
    Check("stop", check_stop, Contract.PROTOCOL),
    Check("stdin-eof", check_stdin_eof, Contract.PROTOCOL),
    Check("stdout-protection", check_stdout_protection, Contract.PROTOCOL),
    Check("debug", check_debug, Contract.ECHO),
    Check("log", check_log, Contract.ECHO),
    Check("state", check_state, Contract.PROTOCOL),
    Check("unknown-fields", check_unknown_fields, Contract.PROTOCOL),
)
CHECK_NAMES = tuple(check.name for check in CHECKS)
PROTOCOL_CHECK_NAMES = tuple(check.name for check in CHECKS if check.needs is Contract.PROTOCOL)


def checks_for(contract: Contract) -> tuple[Check, ...]:
    """The checks that can grade a handler that keeps `contract`."""
    return CHECKS if contract is Contract.ECHO else tuple(c for c in CHECKS if c.needs is Contract.PROTOCOL)


__all__ = ["CHECKS", "CHECK_NAMES", "PROTOCOL_CHECK_NAMES", "Check", "checks_for"]
