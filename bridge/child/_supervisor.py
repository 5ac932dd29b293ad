"""Policy over sessions: which child takes a request, timeouts, restarts, crash loops.

Theory of operation. The supervisor keeps `workers` slots. Each slot starts its child,
waits for the handshake, serves until the child ends, and starts it again after a
backoff (100 ms doubling to 30 s, with jitter). A child that answered at least one
request, or stayed up a minute, was healthy: the backoff starts again from 100 ms and
its crash does not count toward a crash loop, which is a run of children that die
before doing any work. The
very first start of each slot must succeed, or `start()` raises, so `run` fails before
it ever registers with the engine.

`handle()` turns one engine request into exactly one Answer, whatever the child does
(`handle_now()` does the same without a task when a child is free at once):
it picks the least-loaded live slot that may take one more (after a crash a slot's next
child is trusted with one request at first, see `Trust`), waits for the answer until the
deadline (none when the timeout is off; the child is then sent timeout_ms 0), then sends
`cancel`, waits `cancel_grace`, and answers with a timeout; a child that ignored the
cancel is killed (whole process group) and restarted. When no slot is up and the
children are crash-looping (5 crashes in 60 s), requests are answered at once with an
`unavailable` error instead of waiting.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import time
from collections.abc import Callable, Sequence

import anyio

from flow_bridge import __version__
from flow_bridge.core import (
    BAD_REQUEST,
    TIMEOUT,
    TOO_LARGE,
    UNAVAILABLE,
    Answer,
    Failure,
    Request,
    Settings,
    failure,
    for_debug,
    from_failure,
    handler_error,
    internal_error,
    metrics,
    success,
)
from flow_bridge.protocol import Error, LocalProtocolError, Result, State

from ._process import Child, Spawner, StartError, handler_env, spawn_process
from ._session import Pending, Session

logger = logging.getLogger("flow_bridge.supervisor")

BACKOFF_START = 0.1
BACKOFF_CAP = 30.0
HEALTHY_AFTER = 60.0
LOOP_CRASHES = 5
LOOP_WINDOW = 60.0
# Requests a child is given at once right after its slot's previous child crashed (see Trust).
SLOW_START = 1
# Answers that earn a restarted child one more request at once: a crash then takes along at
# most a quarter of what the child answered since the last one.
TRUST_STEP = 4
# Every this many seconds a restarted child stays up, what it may take at once doubles (on
# top of what its answers earned): a slow or hung first task then holds up the others for
# about this long, not for as long as it runs.
TRUST_DOUBLING = 1.0
# How often a request waiting for a slot in slow start looks again (the share grows with time).
TRUST_RECHECK = 0.25


def task_timeout(settings: Settings) -> float | None:
    """The time a request may take, in seconds; None (or 0, from older settings) is no limit."""
    timeout = settings.timeout
    return float(timeout) if timeout else None


class Trust:
    """How many requests a child slot is given at once: a slow start after each crash.

    A crash fails every request in flight on the child with it, and none may be run again
    (execution is at most once). So a slot whose child never crashed gets all it declared,
    but after a crash the next child gets SLOW_START requests at once, and one more for
    every TRUST_STEP it answers, up to what it declared. What the next crash can take along
    is then at most a TRUST_STEP-th of what the child answered since the last one: a
    handler that dies every 10th task loses about 2 neighbours with it instead of all 31.
    Since more answers come faster as the share grows, a healthy child is back at full
    concurrency after about TRUST_STEP * ln(concurrency) task durations. The share also
    doubles every TRUST_DOUBLING seconds the child stays up, so that a first task that runs
    long (or hangs until its timeout) does not hold every other task back while it runs.
    """

    def __init__(self) -> None:
        self.since_crash: int | None = None  # answers since the last crash; None: never crashed
        self.up_since = 0.0  # when the child after the last crash became ready

    def allowed(self, capacity: int) -> int:
        if self.since_crash is None:
            return capacity
        earned = SLOW_START + self.since_crash // TRUST_STEP
        doublings = int((time.monotonic() - self.up_since) / TRUST_DOUBLING)
        return min(capacity, earned << min(doublings, 32))

    def in_slow_start(self) -> bool:
        return self.since_crash is not None

    def crashed(self) -> None:
        self.since_crash = 0
        self.up_since = time.monotonic()

    def started(self) -> None:
        """The child after a crash is ready: its time of trust starts now."""
        self.up_since = time.monotonic()

    def answered(self, capacity: int) -> None:
        if self.since_crash is not None:
            self.since_crash += 1
            if self.allowed(capacity) >= capacity:
                self.since_crash = None  # earned it all back


def backoff_delay(consecutive: int) -> float:
    """Exponential with +-20 % jitter, so a fleet of bridges does not restart in step."""
    base = min(BACKOFF_CAP, BACKOFF_START * float(2 ** max(0, consecutive - 1)))
    return base * random.uniform(0.8, 1.2)


class Worker:
    """One child slot, kept running by restarts."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.sup = supervisor
        self.index = index
        self.session: Session | None = None
        self.first_start = anyio.Event()
        self.first_error: StartError | None = None
        self.consecutive = 0
        self.last_failure = ""
        self.trust = Trust()

    @property
    def label(self) -> str:
        name = os.path.basename(self.sup.argv[0])
        return name if self.sup.settings.workers == 1 else f"{name}#{self.index}"

    async def run(self) -> None:
        while not self.sup.stopping:
            up_since = time.monotonic()
            try:
                session = await self._launch()
            except StartError as exc:
                if not self.first_start.is_set():
                    self.first_error = exc
                    self.first_start.set()
                    return
                metrics.child_exited(self.sup.plugin_label(None), crashed=True, was_up=False)
                self._record_crash(str(exc), up_since, did_work=False)
                self.sup.changed()  # requests waiting for a child learn of a crash loop now
                await anyio.sleep(backoff_delay(self.consecutive))
                continue
            self.first_start.set()
            self.session = session
            self.trust.started()
            label = self.sup.plugin_label(session)
            metrics.child_started(label)
            self.sup.changed()
            if self.sup.connected:
                session.send(State(connected=True))
            await session.finished.wait()
            self.session = None
            metrics.child_exited(label, crashed=not self.sup.stopping)
            self.sup.changed()
            if self.sup.stopping:
                return
            reason = session.end.info if session.end else "ended"
            self.trust.crashed()
            self._record_crash(reason, up_since, did_work=session.answered > 0)
            delay = backoff_delay(self.consecutive)
            logger.warning("restarting handler %s in %.2f s", self.label, delay)
            await anyio.sleep(delay)

    async def _launch(self) -> Session:
        process = await self.sup.spawner(self.sup.argv, self.sup.env)
        child = Child(process, f"{self.label} pid={process.pid}")
        s = self.sup.settings
        session = Session(
            child,
            plugin=s.name or "",
            plugin_type=s.plugin_type,
            max_frame=s.max_frame,
            start_timeout=s.start_timeout,
            bridge_version=f"flow-bridge {__version__}",
        )
        self.sup.task_group.start_soon(session.run)
        await session.started.wait()
        if session.start_error is not None:
            await session.finished.wait()
            raise session.start_error
        ready = session.ready
        assert ready is not None
        logger.info(
            "handler %s ready: protocol %d, concurrency %d, debug %s%s",
            child.label, ready.protocol, ready.concurrency, "yes" if ready.debug else "no",
            f", {ready.name} {ready.version}".rstrip() if ready.name or ready.version else "",
        )
        return session

    def _record_crash(self, reason: str, up_since: float, did_work: bool) -> None:
        now = time.monotonic()
        self.last_failure = reason
        if did_work or now - up_since >= HEALTHY_AFTER:
            self.consecutive = 1
            self.sup.crash_times.clear()
            self.sup.loop_reported = False
            return
        self.consecutive += 1
        crashes = self.sup.crash_times
        crashes.append(now)
        if self.sup.crash_looping() and not self.sup.loop_reported:
            self.sup.loop_reported = True
            logger.error(
                "HANDLER IS CRASH-LOOPING: %d crashes in %.0f s. Requests are answered with "
                "'handler unavailable' while no child is up. Last error: %s",
                len(crashes), LOOP_WINDOW, reason,
            )


class Supervisor:
    def __init__(
        self,
        argv: Sequence[str],
        settings: Settings,
        spawner: Spawner = spawn_process,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.settings = settings
        self.spawner = spawner
        self.env = env if env is not None else handler_env()
        self.workers = [Worker(self, i) for i in range(settings.workers)]
        self.stopping = False
        self.connected = False
        self.crash_times: collections.deque[float] = collections.deque(maxlen=LOOP_CRASHES)
        self.loop_reported = False
        self._changed: asyncio.Future[None] | None = None
        self._timeouts: set[asyncio.Task[None]] = set()  # handle_now's requests past their deadline
        self.task_group: anyio.abc.TaskGroup
        # What the first child declared in its ready (after start()): the engine side
        # registers under these when no name or type is configured. None: not declared.
        self.declared_name: str | None = None
        self.declared_type: str | None = None

    # --- start and stop ---------------------------------------------------------

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start every slot and wait for each first handshake; raise StartError on failure."""
        self.task_group = task_group
        for worker in self.workers:
            task_group.start_soon(worker.run)
        for worker in self.workers:
            await worker.first_start.wait()
            if worker.first_error is not None:
                self.stopping = True
                await self.stop(0)
                raise worker.first_error
        first = self.workers[0].session
        ready = first.ready if first is not None else None
        if ready is not None:
            self.declared_name = ready.name or None
            # Read defensively: older protocol packages have no ready.plugin_type.
            declared_type = getattr(ready, "plugin_type", None)
            self.declared_type = declared_type if isinstance(declared_type, str) and declared_type else None

    def plugin_label(self, session: Session | None) -> str:
        """The plugin's name for metrics: configured, else declared at a handshake, else the command."""
        declared = session.ready.name if session is not None and session.ready is not None else None
        return self.settings.name or self.declared_name or declared or os.path.basename(self.argv[0])

    @property
    def capacity(self) -> int:
        """How many requests the live children take at once, in total."""
        return sum(w.session.capacity for w in self.workers if w.session is not None)

    async def stop(self, grace: float) -> None:
        """Ask every child to stop, then end it within `grace` seconds."""
        self.stopping = True
        self.changed()  # requests waiting for a child learn that none will come
        sessions = [w.session for w in self.workers if w.session is not None]
        for session in sessions:
            session.stop()
        with anyio.move_on_after(grace):
            for session in sessions:
                await session.finished.wait()
        for session in sessions:
            if not session.finished.is_set():
                session.child.kill()
        with anyio.CancelScope(shield=True):
            for session in sessions:
                await session.finished.wait()

    def notify_state(self, connected: bool) -> None:
        self.connected = connected
        for worker in self.workers:
            if worker.session is not None and worker.session.alive:
                worker.session.send(State(connected=connected))

    # --- picking a child -----------------------------------------------------------

    def changed(self) -> None:
        """Wake whoever waits for a free child (rare: the engine link rarely outruns them)."""
        waiter, self._changed = self._changed, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_changed(self, timeout: float | None) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        with anyio.move_on_after(timeout):
            await asyncio.shield(self._changed)

    def crash_looping(self) -> bool:
        times = self.crash_times
        return (
            len(times) == LOOP_CRASHES
            and times[-1] - times[0] <= LOOP_WINDOW
            and time.monotonic() - times[-1] <= LOOP_WINDOW
        )

    def _pick(self) -> Worker | None:
        """The live child with the fewest requests, among those trusted with one more."""
        best: Worker | None = None
        best_load = 0
        for worker in self.workers:
            session = worker.session
            if session is None or not session.alive:
                continue
            load = session.load
            if load >= worker.trust.allowed(session.capacity):
                continue
            if best is None or load < best_load:
                best, best_load = worker, load
        return best

    def _unavailable(self) -> Answer:
        last = next((w.last_failure for w in self.workers if w.last_failure), "unknown")
        return failure(
            UNAVAILABLE,
            f"handler unavailable: crashing, last error: {last.splitlines()[0] if last else last}",
            f"{len(self.crash_times)} crashes in the last {LOOP_WINDOW:.0f} s; see the bridge's log.\n{last}",
        )

    # --- one request ---------------------------------------------------------------

    def handle_now(self, request: Request, on_answer: Callable[[Answer], None]) -> bool:
        """handle() for the common case, without a task: when a child can take the request
        now, send it and return True; `on_answer` is then called once, with what handle()
        would have returned, from the child's output (or from the timeout's task). False
        when this needs handle()'s waiting or its wording: no child is free, a debug request
        the child does not take, a request that cannot be framed.

        Why: a task and a future per request, with the child's output read by a task of its
        own, cost the bridge 0.204 ms of CPU per task at echo 0 ms, C=64 (Rust child); this
        and the callback reading of _transport made it 0.177 (bench/README.md, levers).
        """
        if self.stopping:
            return False
        worker = self._pick()
        session = worker.session if worker is not None else None
        if worker is None or session is None or (request.debug and not (session.ready and session.ready.debug)):
            return False
        timeout = task_timeout(self.settings)
        try:
            pending = session.submit(request, 0 if timeout is None else max(1, int(timeout * 1000)))
        except (LocalProtocolError, ValueError):
            return False  # handle() finds the same and words the answer
        timer: asyncio.TimerHandle | None = None

        def done(pending: Pending) -> None:
            if timer is not None:
                timer.cancel()
            self._deliver(on_answer, lambda: self._outcome(worker, session, pending), pending.request)

        def expired(timeout: float) -> None:
            pending.on_done = None  # from here on the timeout's task answers
            task = asyncio.get_running_loop().create_task(
                self._time_out_now(worker, session, pending, timeout, on_answer)
            )
            self._timeouts.add(task)
            task.add_done_callback(self._timeouts.discard)

        pending.on_done = done
        if timeout is not None:
            timer = asyncio.get_running_loop().call_later(timeout, expired, timeout)
        return True

    def _outcome(self, worker: Worker, session: Session, pending: Pending) -> Answer:
        """The child's own answer, crediting its slot's trust as handle() does."""
        if isinstance(pending.outcome, (Result, Error)) and worker.session is session:
            worker.trust.answered(session.capacity)
        return self._shape(pending)

    async def _time_out_now(
        self, worker: Worker, session: Session, pending: Pending, timeout: float, on_answer: Callable[[Answer], None]
    ) -> None:
        # The deadline and the answer can come in one loop turn: as in handle(), an answer
        # read by the next turn is the answer.
        await asyncio.sleep(0)
        make: Callable[[], Answer]
        if pending.outcome is not None:
            make = lambda: self._outcome(worker, session, pending)  # noqa: E731
        else:
            if self.stopping:
                # After stop nothing more may be sent to a child (SPEC 2.5): no cancel to wait
                # for, and no kill in the middle of a graceful stop, which ends the child anyway.
                answer = failure(TIMEOUT, f"handler did not answer within {timeout:g} s", "The bridge was stopping.")
            else:
                try:
                    answer = await self._time_out(session, pending, timeout)
                except Exception as exc:
                    answer = self._internal_error(pending.request, exc)
            make = lambda: answer  # noqa: E731
        self._deliver(on_answer, make, pending.request)

    @staticmethod
    def _internal_error(request: Request, exc: Exception) -> Answer:
        job = request.element_job
        logger.error("internal error while answering elementJob %s", job, exc_info=exc, extra={"element_job": job})
        return internal_error(exc)

    def _deliver(self, on_answer: Callable[[Answer], None], make: Callable[[], Answer], request: Request) -> None:
        """on_answer(make()), once. This runs in the child's output callback: a bug of ours
        must cost this one request, never the reading of the others' answers."""
        try:
            answer = make()
        except Exception as exc:
            answer = self._internal_error(request, exc)
        try:
            on_answer(answer)
        except Exception as exc:
            self._internal_error(request, exc)  # logged; on_answer guards its own answer
        finally:
            self.changed()

    async def handle(self, request: Request) -> Answer:
        """Exactly one answer for one request (see the module docstring)."""
        timeout = task_timeout(self.settings)
        deadline = time.monotonic() + timeout if timeout is not None else None
        worker = self._pick()
        while worker is None or worker.session is None:
            if self.stopping:
                return failure(UNAVAILABLE, "handler unavailable: the bridge is shutting down")
            if self.crash_looping():
                return self._unavailable()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if any(w.trust.in_slow_start() for w in self.workers):
                wait = TRUST_RECHECK if wait is None else min(wait, TRUST_RECHECK)
            await self._wait_changed(wait)
            if deadline is not None and time.monotonic() >= deadline:
                return failure(
                    TIMEOUT,
                    f"no handler became available within {timeout:g} s",
                    "Every child was busy or restarting; raise --workers or --timeout.",
                )
            worker = self._pick()
        session = worker.session
        if request.debug and not (session.ready and session.ready.debug):
            return for_debug(
                failure(UNAVAILABLE, "this handler does not take debug requests (its ready said debug: false)"),
                [],
            )
        # timeout_ms 0 tells the child there is no limit (SPEC 3, task).
        timeout_ms = 0 if deadline is None else max(1, int((deadline - time.monotonic()) * 1000))
        try:
            pending = session.submit(request, timeout_ms)
        except LocalProtocolError as exc:
            kind = TOO_LARGE if exc.kind == "frame_too_large" else BAD_REQUEST
            return failure(kind, f"the request cannot be sent to the handler: {exc}",
                           "Raise the frame limit (plugin.max-frame) or send a smaller config.")
        except ValueError as exc:  # text msgpack cannot encode, such as a lone surrogate
            return failure(BAD_REQUEST, f"the request cannot be sent to the handler: {exc}",
                           "Its ids must be valid Unicode text.")
        try:
            if not await pending.wait(None if deadline is None else deadline - time.monotonic()):
                assert timeout is not None  # without a deadline, wait() returns only with the outcome
                return await self._time_out(session, pending, timeout)
            if isinstance(pending.outcome, (Result, Error)) and worker.session is session:
                worker.trust.answered(session.capacity)
            return self._shape(pending)
        finally:
            self.changed()

    async def _time_out(self, session: Session, pending: Pending, timeout: float) -> Answer:
        session.cancel(pending)
        grace = self.settings.cancel_grace
        if not await pending.wait(grace):
            job = pending.request.element_job
            logger.warning(
                "handler %s ignored the cancel of elementJob %s for %g s: killing it and its process group",
                session.label, job, grace, extra={"element_job": job},
            )
            session.child.kill()
            how = f"it did not answer the cancel within {grace:g} s, so it was killed and restarted"
        else:
            how = "it answered the cancel"
        answer = failure(TIMEOUT, f"handler did not answer within {timeout:g} s", how)
        if pending.logs is not None:
            return for_debug(answer, pending.logs)
        return answer

    @staticmethod
    def _shape(pending: Pending) -> Answer:
        outcome = pending.outcome
        if isinstance(outcome, Result):
            answer = success(outcome.data, outcome.message, outcome.detail)
        elif isinstance(outcome, Error):
            # error.data, when the handler sent one, is a failed debug request's value.
            if outcome.data is None:
                answer = handler_error(outcome.message, outcome.detail)
            else:
                answer = handler_error(outcome.message, outcome.detail, outcome.data)
        else:
            assert isinstance(outcome, Failure)
            answer = from_failure(outcome)
        if pending.logs is not None:
            return for_debug(answer, pending.logs)
        return answer
