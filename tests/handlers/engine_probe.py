#!/usr/bin/env python3
"""A handler for the engine-side tests; speaks the raw protocol, one request at a time.

Its ready leaves `concurrency` out (SPEC default 1), like a vendor plugin that awaits each
execute, unless ENGINE_PROBE_CONCURRENCY says otherwise (it still answers in arrival order),
and declares the name and type in ENGINE_PROBE_NAME / ENGINE_PROBE_TYPE when set.
A task's config (JSON) picks the answer:

- {"bytes": N}: result data {"blob": <N bytes>} (base64 in the engine's JSON: 4/3 larger);
- {"ctrl": N}: result data {"text": N times U+0001} (each `\\u0001` in JSON: 6 bytes);
- {"logs": N}: N log records tied to the request, then a small result;
- {"sleep_ms": N}: wait that long first;
- anything else: {"i": config.i}.

Every result carries "overlap": how many requests had arrived and were not answered yet
when this one arrived, itself included. A reader thread takes frames off the pipe as they
come, so a test can see whether the bridge ever sent more than one at a time.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time

from flow_bridge.protocol import Codec, Debug, Hello, Log, Ready, Result, Stop, Task

codec = Codec()
out = sys.stdout.buffer


def send(event: object) -> None:
    out.write(codec.send(event))  # type: ignore[arg-type]
    out.flush()


lock = threading.Lock()
unanswered = 0


def answer(request: Task | Debug, overlap: int) -> None:
    global unanswered
    try:
        config = json.loads(request.config)
    except ValueError:
        config = {}
    if not isinstance(config, dict):
        config = {}
    time.sleep(config.get("sleep_ms", 0) / 1000)
    data: dict[str, object] = {"i": config.get("i"), "overlap": overlap}
    if "bytes" in config:
        data["blob"] = b"\xab" * config["bytes"]
    if "ctrl" in config:
        data["text"] = "\u0001" * config["ctrl"]
    for n in range(config.get("logs", 0)):
        send(Log(level="info", msg=f"log line {n:06d} of the probe's debug run", id=request.id))
    with lock:
        unanswered -= 1
    send(Result(id=request.id, data=data))


def read(work: queue.Queue[tuple[Task | Debug, int] | None]) -> None:
    global unanswered
    while True:
        chunk = os.read(0, 1 << 16)
        for event in codec.receive_data(chunk):
            if isinstance(event, Hello):
                codec.max_frame = event.max_frame
                send(Ready(
                    protocol=1,
                    concurrency=int(os.environ.get("ENGINE_PROBE_CONCURRENCY", "1")),
                    debug=True,
                    name=os.environ.get("ENGINE_PROBE_NAME", ""),
                    plugin_type=os.environ.get("ENGINE_PROBE_TYPE") or None,
                ))
            elif isinstance(event, (Task, Debug)):
                with lock:
                    unanswered += 1
                    overlap = unanswered
                work.put((event, overlap))
            elif isinstance(event, Stop):
                work.put(None)
                return
        if not chunk:
            work.put(None)
            return


def main() -> None:
    work: queue.Queue[tuple[Task | Debug, int] | None] = queue.Queue()
    threading.Thread(target=read, args=(work,), daemon=True).start()
    while (item := work.get()) is not None:
        answer(*item)


if __name__ == "__main__":
    main()
