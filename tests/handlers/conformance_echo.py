#!/usr/bin/env python3
"""An echo handler (SPEC.md section 7) that breaks one rule, switched by scenario name (argv[1]).

It speaks through the repository's own codec, with no adapter, so that each fault is exactly
the one named. With `ok` it passes every conformance check; tests/test_conformance.py
runs each other scenario and expects the check that should catch it to fail, and no other.

Scenarios: ok, banner, no-redirect, raw-as-str, count-utf16, debug-log-late, wrong-id,
answer-late-cancel, sequential, strict-keys, any-version, exit-1, answer-70th-twice,
ignore-max-frame, too-large-at-the-limit, too-large-wrong-size, answer-unknown-cancel.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import msgpack

from flow_bridge.protocol import (
    Cancel,
    Codec,
    Debug,
    Error,
    Hello,
    LocalProtocolError,
    Log,
    Ready,
    Result,
    Stop,
    Task,
    message_to_map,
    too_large_message,
)

MODE = sys.argv[1] if len(sys.argv) > 1 else "ok"
if MODE == "banner":
    print("echo handler starting", flush=True)
out = os.dup(1)
if MODE != "no-redirect":
    os.dup2(2, 1)
codec = Codec()
running: dict[int, asyncio.Future[None]] = {}
answered: set[int] = set()
count = 0  # requests answered so far


def write(event: Result | Error | Log | Ready) -> None:
    os.write(out, codec.send(event))


def answer(result: Result) -> None:
    """Send a result, or the 'result too large' error when its frame would not fit (SPEC 4)."""
    global count
    count += 1
    size = len(msgpack.packb(message_to_map(result), use_bin_type=True))
    limit = codec.max_frame
    too_big = size >= limit if MODE == "too-large-at-the-limit" else size > limit
    if too_big and MODE != "ignore-max-frame":
        shown = size - 1 if MODE == "too-large-wrong-size" else size
        write(Error(id=result.id, message=too_large_message(shown, limit)))
    else:
        try:
            write(result)
        except LocalProtocolError:
            write(Error(id=result.id, message=too_large_message(size, limit)))
    if MODE == "answer-70th-twice" and count == 70:
        write(result)


async def handle(ev: Task | Debug) -> None:
    try:
        cfg = json.loads(ev.config.decode()) if ev.config else None
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        raw: object = ev.config.decode("latin-1") if MODE == "raw-as-str" else ev.config
        if isinstance(ev, Debug):
            write(Log(level="info", msg="debug null", id=ev.id))
        return answer(Result(id=ev.id, data={"raw": raw}))
    if "fail" in cfg:
        return write(Error(id=ev.id, message=cfg["fail"]))
    if "print" in cfg:
        print(cfg["print"], flush=True)
    if "log" in cfg:
        write(Log(level="info", msg=cfg["log"], id=ev.id))
    try:
        await asyncio.sleep(cfg.get("sleep_ms", 0) / 1000)
    except asyncio.CancelledError:
        return write(Error(id=ev.id, message="cancelled"))
    payload = cfg.get("payload", "")
    if not isinstance(payload, str):
        n = 0
    else:
        n = len(payload.encode("utf-16-le")) // 2 if MODE == "count-utf16" else len(payload)
    data = {"i": cfg.get("i"), "n": n}
    if "echo" in cfg:
        data["echo"] = cfg["echo"]
    debug_line = Log(level="info", msg=f"debug {json.dumps(cfg.get('i'))}", id=ev.id)
    if isinstance(ev, Debug) and MODE != "debug-log-late":
        write(debug_line)
    answer(Result(id=ev.id + (1 if MODE == "wrong-id" else 0), data=data))
    if isinstance(ev, Debug) and MODE == "debug-log-late":
        write(debug_line)
    answered.add(ev.id)


async def main() -> None:
    loop = asyncio.get_running_loop()
    stop = False
    while not stop and (chunk := await loop.run_in_executor(None, os.read, 0, 1 << 20)):
        if MODE == "strict-keys" and b"x_future" in chunk:
            sys.exit("unknown key")
        for ev in codec.receive_data(chunk):
            if isinstance(ev, Hello):
                if 1 not in ev.protocols and MODE != "any-version":
                    sys.exit(f"speaks [1], offered {list(ev.protocols)}")
                if MODE != "ignore-max-frame":
                    codec.max_frame = ev.max_frame
                write(Ready(protocol=1, concurrency=64, debug=True))
            elif isinstance(ev, (Task, Debug)):
                if MODE == "sequential":
                    await handle(ev)
                else:
                    running[ev.id] = asyncio.ensure_future(handle(ev))
            elif isinstance(ev, Cancel):
                if ev.id in answered and MODE == "answer-late-cancel":
                    write(Error(id=ev.id, message="cancelled"))
                elif ev.id in running:
                    running[ev.id].cancel()
                elif MODE == "answer-unknown-cancel":
                    write(Error(id=ev.id, message="cancelled"))
            elif isinstance(ev, Stop):
                stop = True
                break
    await asyncio.gather(*running.values())
    sys.exit(1 if MODE == "exit-1" else 0)


asyncio.run(main())
