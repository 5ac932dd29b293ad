#!/usr/bin/env python3
"""One misbehaving handler, switched by scenario name (argv[1]); speaks the raw protocol.

Scenarios: ok, crash-mid-task, crash-at-start, crash-loop, crash-every-10th, hang, ignore-cancel,
ignore-sigterm, garbage-stdout, answer-then-garbage, huge-frame, wrong-id, slow-start, stderr-flood,
bad-version, silent, grandchild-hang. Each behaves well except for the one fault it names,
so a test can tell that the bridge handled exactly that fault.

Any scenario also obeys a task's config: `grandchild` starts `sleep 300` in the child's own
process group, `escape` starts `setsid sleep 300` (a new session, out of the group), both
holding the child's stdout and stderr; `crash` then exits with status 3; `report` adds the
task's timeout_ms and hello's plugin and plugin_type to the result. With TASK_LOG set, each
task's config `i` is appended to that file as it starts, so a test can see what ran twice.
DECLARE_TYPE sets ready.plugin_type.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from flow_bridge.protocol import Cancel, Codec, Error, Hello, Ready, Result, Stop, Task

scenario = sys.argv[1] if len(sys.argv) > 1 else "ok"
codec = Codec()
out = sys.stdout.buffer
lock = threading.Lock()
cancelled: set[int] = set()
workers: list[threading.Thread] = []
hello: Hello | None = None


def send(event: object) -> None:
    with lock:
        out.write(codec.send(event))  # type: ignore[arg-type]
        out.flush()


def config_of(task: Task) -> dict:
    try:
        value = json.loads(task.config)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def work(task: Task) -> None:
    cfg = config_of(task)
    if os.environ.get("TASK_LOG"):
        with open(os.environ["TASK_LOG"], "a") as log:
            log.write(f"{cfg.get('i')}\n")
    if cfg.get("grandchild"):
        subprocess.Popen(["sleep", "300"])
    if cfg.get("escape"):
        subprocess.Popen(["setsid", "sleep", "300"])
    if cfg.get("crash"):  # any scenario: this task takes the process down
        sys.stderr.write(f"fatal: task {task.id} asked to crash\n")
        sys.stderr.flush()
        os._exit(3)
    sleep_ms = cfg.get("sleep_ms", 0)
    deadline = time.monotonic() + sleep_ms / 1000
    while time.monotonic() < deadline:
        if task.id in cancelled and scenario != "ignore-cancel":
            send(Error(id=task.id, message="cancelled"))
            return
        time.sleep(0.005)
    if scenario == "crash-every-10th" and cfg.get("i", 1) % 10 == 0:
        sys.stderr.write(f"fatal: cannot handle item {cfg.get('i')}\n")
        sys.stderr.flush()
        os._exit(3)
    data = {"i": cfg.get("i"), "n": len(cfg.get("payload", ""))}
    if cfg.get("report") and hello is not None:
        data.update(timeout_ms=task.timeout_ms, plugin=hello.plugin, plugin_type=hello.plugin_type)
    send(Result(id=task.id, data=data))


def main() -> None:
    if scenario == "crash-loop":
        # The first start works until its first task; every later start dies at once.
        marker = os.environ["CRASH_LOOP_FILE"]
        if os.path.exists(marker):
            sys.stderr.write("error: config store is corrupt, giving up\n")
            sys.exit(5)
        open(marker, "w").close()
    if scenario == "crash-at-start":
        sys.stderr.write("error: cannot open /dev/sensor0: permission denied\n")
        sys.exit(4)
    if scenario == "silent":
        time.sleep(3600)
    if scenario == "slow-start":
        time.sleep(float(os.environ.get("SLOW_START_S", "2")))
    if scenario == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if scenario == "stderr-flood":
        sys.stderr.write("x" * (1 << 20) + "\n")
        sys.stderr.flush()
    stdin = sys.stdin.buffer
    tasks = 0
    while True:
        data = os.read(stdin.fileno(), 65536)
        events = codec.receive_data(data)
        for event in events:
            if isinstance(event, Hello):
                global hello
                hello = event
                codec.max_frame = event.max_frame
                if scenario == "bad-version":
                    send(Ready(protocol=99, concurrency=8))
                    continue
                send(Ready(protocol=1, concurrency=64, debug=True, name=f"misbehave-{scenario}",
                           plugin_type=os.environ.get("DECLARE_TYPE") or None))
            elif isinstance(event, Task):
                tasks += 1
                if scenario == "crash-loop":
                    os._exit(5)
                if scenario == "crash-mid-task" and tasks == 3:
                    sys.stderr.write("segfault simulation: dying with task 3 in flight\n")
                    sys.stderr.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                if scenario == "garbage-stdout" and tasks == 2:
                    out.write(b"DEBUG: value=42 oops this went to stdout\n")
                    out.flush()
                    continue
                if scenario == "huge-frame" and tasks == 2:
                    out.write((64 * 1024 * 1024).to_bytes(4, "big") + b"\x80")
                    out.flush()
                    continue
                if scenario == "answer-then-garbage" and tasks == 2:
                    # A good answer and garbage in one write: the answer must still count.
                    with lock:
                        out.write(codec.send(Result(id=event.id, data={"i": "good"})) + b"\xff\xff\xff\xff")
                        out.flush()
                    continue
                if scenario == "wrong-id" and tasks == 2:
                    send(Result(id=event.id + 1000, data={}))
                    continue
                if scenario == "hang":
                    continue  # never answers, but answers cancels
                if scenario == "grandchild-hang":
                    subprocess.Popen(["sleep", "300"])
                    continue
                worker = threading.Thread(target=work, args=(event,), daemon=True)
                worker.start()
                workers.append(worker)
            elif isinstance(event, Cancel):
                cancelled.add(event.id)
                if scenario == "hang":
                    send(Error(id=event.id, message="cancelled"))
            elif isinstance(event, Stop):
                finish()
                return
        if not data:
            finish()
            return


def finish() -> None:
    """SPEC 2.5: answer what is in flight, then exit."""
    if scenario == "ignore-sigterm":
        time.sleep(3600)  # ignores stop and end of input too: only SIGKILL ends it
    if scenario not in ("hang", "grandchild-hang", "ignore-sigterm"):
        for worker in workers:
            worker.join()


if __name__ == "__main__":
    main()
