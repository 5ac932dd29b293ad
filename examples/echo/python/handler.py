"""The echo handler (SPEC.md, "The echo contract"), written with the Python adapter."""

from __future__ import annotations

import asyncio
import json
import os
import time

from flow_bridge.adapter import HandlerError, Request, serve

BREAK = os.environ.get("ECHO_BREAK", "")


async def sleep_ignoring_cancel(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            await asyncio.sleep(left)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def execute(request: Request) -> dict[str, object]:
    config = request.config
    if not isinstance(config, dict):
        return {"raw": request.raw_config}
    if "fail" in config:
        raise HandlerError(str(config["fail"]))
    if "print" in config:
        print(config["print"])
    if "log" in config:
        request.log.info(str(config["log"]))
    sleep_ms = config.get("sleep_ms") or 0
    if sleep_ms:
        if BREAK == "ignore-cancel":
            await sleep_ignoring_cancel(sleep_ms / 1000)
        else:
            await asyncio.sleep(sleep_ms / 1000)
    payload = config.get("payload")
    if not isinstance(payload, str):
        payload = ""
    n = len(payload.encode()) if BREAK == "count-bytes" else len(payload)
    data: dict[str, object] = {"i": config.get("i"), "n": n}
    if "echo" in config:
        data["echo"] = config["echo"]
    return data


async def debug(request: Request) -> dict[str, object]:
    config = request.config
    request.log.info(f"debug {json.dumps(config.get('i') if isinstance(config, dict) else None)}")
    return await execute(request)


def stop() -> None:
    if BREAK == "hang-on-stop":
        time.sleep(3600)


if __name__ == "__main__":
    serve(
        execute,
        debug=None if BREAK == "no-debug" else debug,
        stop=stop,
        concurrency=256,
        name="echo-python",
    )
