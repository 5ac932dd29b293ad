"""The one gRPC channel to the engine that every plugin of a service shares.

Theory of operation. One grpc.aio channel lives for the whole run; gRPC itself redials a
lost connection (we cap its backoff at one second, so a returning engine is seen within
about a second). Each time the channel is ready the channel starts a connection: every
plugin (`PluginLink`) opens its own Register and DebugStream on it, with its own hex
`name`/`mode` metadata, and the channel calls HealthCheck every heartbeat interval, once
for all of them. HEALTH_FAILURES failed checks in a row end the connection, and with it
every plugin's streams; the channel then waits for the engine again and every plugin
registers anew. A plugin whose own Register breaks reopens it alone: the others' streams
are not touched (see `_link`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import grpc.aio

from flow_bridge.core import Settings, metrics
from flow_bridge.protocol import engine_pb2 as pb

from ._diagnose import unreachable_cause
from ._limits import RECEIVE_LIMIT

if TYPE_CHECKING:
    from ._link import PluginLink

logger = logging.getLogger("flow_bridge.engine")

SERVICE = "engine.PluginService"
# The Java SDK reconnects after 3 failed health checks in a row, the Go SDK after 4: one
# slow or lost check is not a dead engine. A half-open connection is still caught.
HEALTH_FAILURES = 3
# gRPC's loopback or LAN connect takes milliseconds: an engine not ready after this long is
# worth a look (is the name known? is anyone listening?) well before connect-timeout ends.
EARLY_CAUSE = 2.0
# How long that look's own TCP connect may take; a firewall that drops packets shows as this.
CAUSE_CONNECT_TIMEOUT = 3.0


def hex_metadata(name: str, mode: str) -> tuple[tuple[str, str], ...]:
    """The engine wants each metadata value as lower-case hex of its UTF-8 bytes."""
    return (("name", name.encode("utf-8").hex()), ("mode", mode.encode("utf-8").hex()))


def channel_options(max_send: int, max_receive: int = RECEIVE_LIMIT) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_send),
        ("grpc.max_receive_message_length", max_receive),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.enable_retries", 0),
    ]


class EngineChannel:
    """The engine connection of one service: channel, reachability reports, health checks.

    `settings` gives the engine's address and the connection's intervals (the same for
    every plugin: a `plugins:` entry sets only plugin keys). Plugins join with `add()`
    before `run()`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.links: list[PluginLink] = []
        self.closing = False
        self._channel: grpc.aio.Channel | None = None
        self._connection_scope: anyio.CancelScope | None = None

    def add(self, link: PluginLink) -> None:
        if any(other.name == link.name for other in self.links):
            raise ValueError(f"a plugin named {link.name!r} is on this channel already; names must differ")
        self.links.append(link)

    @property
    def shared(self) -> bool:
        """More than one plugin: their log lines then say whose they are."""
        return len(self.links) > 1

    # --- the run loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve every plugin, and reconnect them all after lost health checks, until close()."""
        if not self.links:
            raise ValueError("EngineChannel.run() needs at least one plugin (add() them first)")
        s = self.settings
        max_send = max(link.answer_limit for link in self.links)
        self._channel = grpc.aio.insecure_channel(s.target, options=channel_options(max_send))
        logger.info("dialling the engine at %s", s.target)
        attempt = 0
        try:
            while not self._done():
                attempt += 1
                if not await self.wait_reachable(attempt):
                    continue
                attempt = 0
                reason = await self._serve_connection()
                if self._done():
                    break
                logger.warning("engine connection lost: %s; reconnecting%s", reason,
                               " every plugin" if self.shared else "")
        finally:
            with anyio.CancelScope(shield=True):
                await self._channel.close()

    def _done(self) -> bool:
        return self.closing or all(link.closing for link in self.links)

    async def wait_reachable(self, attempt: int) -> bool:
        """Wait for the channel to connect: connect-timeout the first time, then the retry interval.

        When it is not ready, say why (`unreachable_cause`): after EARLY_CAUSE the first
        time, then after each retry interval.
        """
        s = self.settings
        limit = s.connect_timeout if attempt == 1 else s.retry_interval
        early = min(EARLY_CAUSE, limit) if attempt == 1 else limit
        if await self._ready_within(early):
            return True
        if self._done():
            return False
        cause = await unreachable_cause(s.host, s.port, min(s.connect_timeout, CAUSE_CONNECT_TIMEOUT))
        logger.warning("engine at %s not reachable (attempt %d): %s; retrying every %g s",
                       s.target, attempt, cause, s.retry_interval)
        for link in self.links:  # /readyz gives the cause, not only "not registered"
            if not link.connected:
                metrics.engine_state(link.name, False, f"engine at {s.target} not reachable: {cause}")
        return early < limit and await self._ready_within(limit - early)

    async def _ready_within(self, seconds: float) -> bool:
        assert self._channel is not None
        with anyio.move_on_after(seconds):
            await self._channel.channel_ready()
            return True
        return False

    def open_stream(self, method: str, deserializer: Callable[[bytes], Any], metadata: Any) -> Any:
        """A Register or DebugStream call; answers go out serialized (and size-checked) already."""
        assert self._channel is not None
        return self._channel.stream_stream(
            f"/{SERVICE}/{method}", request_serializer=None, response_deserializer=deserializer,
        )(metadata=metadata)

    async def _serve_connection(self) -> str:
        lost: list[str] = []

        def lose(reason: str) -> None:
            if not lost:
                lost.append(reason)
            scope.cancel()

        with anyio.CancelScope() as scope:
            self._connection_scope = scope
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, lose)

                async def plugins() -> None:
                    async with anyio.create_task_group() as each:
                        for link in self.links:
                            each.start_soon(link.serve, self)
                    scope.cancel()  # every plugin has closed: nothing left to check the health of

                tg.start_soon(plugins)
        self._connection_scope = None
        return lost[0] if lost else "closed"

    async def _heartbeat(self, lose: Callable[[str], None]) -> None:
        """HealthCheck once per channel, in the first plugin's name and metadata."""
        assert self._channel is not None
        s = self.settings
        first = self.links[0]
        health = self._channel.unary_unary(
            f"/{SERVICE}/HealthCheck",
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString,
        )
        failed = 0
        while True:
            await anyio.sleep(s.heartbeat_interval)
            problem = ""
            try:
                reply = await health(
                    pb.HealthCheckRequest(name=first.name),
                    timeout=min(s.connect_timeout, s.heartbeat_interval),
                    metadata=first.metadata,
                )
            except grpc.aio.AioRpcError as exc:
                problem = f"health check failed: {exc.code().name}: {exc.details()}"
            else:
                for error in reply.errors:
                    logger.warning("the engine reports a registration problem: %s", error.message)
                if reply.status != pb.HealthCheckResponse.SERVING:
                    problem = f"health check answered {pb.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            if not problem:
                if failed:
                    logger.info("health check answered again after %d failed", failed)
                failed = 0
                continue
            failed += 1
            if failed >= HEALTH_FAILURES:
                lose(f"{problem} ({failed} in a row)")
                return
            if failed == 1:
                logger.warning("%s; reconnecting if %d in a row fail", problem, HEALTH_FAILURES)

    def close(self) -> None:
        """End at once: every plugin's streams and the health checks (close the plugins first, politely)."""
        self.closing = True
        for link in self.links:
            link.close()
        if self._connection_scope is not None:
            self._connection_scope.cancel()
