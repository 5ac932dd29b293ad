"""Benchmark case (a): an in-process flow plugin, with no bridge and no child.

What a concurrent vendor-SDK plugin does (the Go SDK answers each request in its own
goroutine): it opens Register and DebugStream on one grpc.aio channel with the hex
`name`/`mode` metadata, reads requests while fewer than --max-inflight are unanswered,
answers each in its own asyncio task with the echo contract (SPEC.md), and writes the
answers through one writer per stream. When the engine goes away it waits for the
channel and registers again, so one process can serve a warm-up engine and then the
measured one. Its event loop is the standard asyncio one unless `--loop uvloop` is given,
the same choice `flow-bridge run` makes (FLOW_BRIDGE_EVENT_LOOP=uvloop opts it in there).

It depends on grpcio and the generated engine_pb2 only (not on the bridge's code), so it
measures gRPC plus the handler and nothing else.

    python bench/baseline_plugin.py --port P --max-inflight M [--loop asyncio|uvloop] [--floor]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import signal
import time
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio

from flow_bridge.protocol import engine_pb2 as pb

SERVICE = "engine.PluginService"
MAX_MESSAGE = 16 * 1024 * 1024 + 1024 * 1024  # the bridge's default max frame plus its slack

log = logging.getLogger("baseline")


def parse(config_bytes: bytes) -> Any:
    """The config as JSON, or None when it is not JSON."""
    try:
        return json.loads(config_bytes)
    except ValueError:
        return None


def echo(config: Any, config_bytes: bytes) -> tuple[bool, str, dict[str, Any]]:
    """The echo contract, minus sleeping: (ok, error message, data)."""
    if not isinstance(config, dict):
        return True, "", {"raw": base64.b64encode(config_bytes).decode("ascii")}
    if "fail" in config:
        return False, str(config["fail"]), {}
    payload = config.get("payload")
    data: dict[str, Any] = {"i": config.get("i"), "n": len(payload) if isinstance(payload, str) else 0}
    if "echo" in config:
        data["echo"] = config["echo"]
    return True, "", data


async def answer(message: Any, debug: bool) -> Any:
    """One request -> one FlowResponse (or DebugResponse)."""
    config = parse(message.config)
    ok, error, data = echo(config, message.config)
    cls = pb.DebugResponse if debug else pb.FlowResponse
    logs: list[dict[str, str]] = []
    if debug:
        i = config.get("i") if isinstance(config, dict) else None
        logs.append({"level": "info", "time": _now(), "msg": f"debug {json.dumps(i)}"})
    if not ok:
        failed = {"logs": logs, "value": None} if debug else {}
        return cls(elementJob=message.elementJob, status=False, info=error, result=json.dumps(failed).encode())
    sleep_ms = config.get("sleep_ms") if isinstance(config, dict) else None
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000)
    if debug:
        data = {"logs": logs, "value": data}
    return cls(elementJob=message.elementJob, status=True, result=json.dumps(data, ensure_ascii=False).encode())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Plugin:
    def __init__(self, target: str, name: str, mode: str, max_inflight: int, floor: bool = False) -> None:
        self.target = target
        self.metadata = (("name", name.encode().hex()), ("mode", mode.encode().hex()))
        self.slots = asyncio.Semaphore(max_inflight)
        self.floor = floor
        self.answered = 0

    async def run(self) -> None:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            while True:
                await channel.channel_ready()
                await self.serve(channel)
                await asyncio.sleep(0.1)  # the engine went away: register again when it is back

    async def serve(self, channel: grpc.aio.Channel) -> None:
        calls: list[tuple[Any, bool]] = [
            (
                channel.stream_stream(
                    f"/{SERVICE}/Register",
                    request_serializer=pb.FlowResponse.SerializeToString,
                    response_deserializer=pb.FlowRequest.FromString,
                )(metadata=self.metadata),
                False,
            ),
            (
                channel.stream_stream(
                    f"/{SERVICE}/DebugStream",
                    request_serializer=pb.DebugResponse.SerializeToString,
                    response_deserializer=pb.DebugRequest.FromString,
                )(metadata=self.metadata),
                True,
            ),
        ]
        streams = [asyncio.ensure_future(self.serve_stream(call, debug)) for call, debug in calls]
        # Either stream ending means the connection is gone: drop both and start over.
        _, pending = await asyncio.wait(streams, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for call, _ in calls:
            call.cancel()
        await asyncio.gather(*streams, return_exceptions=True)

    async def serve_stream(self, call: Any, debug: bool) -> None:
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        writer = asyncio.ensure_future(self.write(call, outbox))
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self.slots.acquire()
                try:
                    message = await call.read()
                except grpc.aio.AioRpcError:
                    self.slots.release()
                    return
                if message is grpc.aio.EOF:
                    self.slots.release()
                    return
                if self.floor:
                    # --floor: answered in the read loop itself, one request at a time (so only
                    # at echo 0 ms): what the grpc.aio calls and the echo's JSON cost alone.
                    await self.handle(message, debug, outbox)
                    continue
                task = asyncio.create_task(self.handle(message, debug, outbox))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            writer.cancel()
            for task in running:
                task.cancel()

    async def handle(self, message: Any, debug: bool, outbox: asyncio.Queue[Any]) -> None:
        try:
            outbox.put_nowait(await answer(message, debug))
        finally:
            self.slots.release()

    async def write(self, call: Any, outbox: asyncio.Queue[Any]) -> None:
        while True:
            response = await outbox.get()
            await call.write(response)
            self.answered += 1


async def main_async(args: argparse.Namespace) -> None:
    plugin = Plugin(f"{args.host}:{args.port}", args.name, args.mode, args.max_inflight, args.floor)
    loop = asyncio.get_running_loop()
    runner = asyncio.ensure_future(plugin.run())
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runner.cancel)
    began = time.monotonic()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    log.info("answered %d requests in %.1f s", plugin.answered, time.monotonic() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument("--name", default="baseline")
    parser.add_argument("--mode", default="service")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--floor", action="store_true",
                        help="answer each request in the read loop, with no task of its own (case f)")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
