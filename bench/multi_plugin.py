"""Benchmark case `multi`: ten plugins in one service against ten separate bridges.

    python bench/multi_plugin.py [--plugins 10] [--n 6000] [--concurrency 64] [--repeats 3]

The same load both ways: one stand-in engine (`flow-bridge engine --concurrency C`) sends
N tasks spread round-robin over the plugins by name (`"plugin"` in each task line), to

- `service`: one `flow-bridge run --config service.yml` whose plugins: list has P entries,
  each a Python echo child (examples/echo/python/run), over one gRPC channel;
- `separate`: P `flow-bridge run --name pK -- examples/echo/python/run` processes.

Throughput is timed here from writing the first measured task line to reading the last
answer line (after a warm-up of W tasks per plugin, answered first, on the same engine).
Memory is the sum of the peak RSS (VmHWM) of every bridge process and every process under
it (the children, the watchdog), read before the bridges are stopped. Rounds alternate the
two setups so that a busy moment of a shared machine hits both alike; the medians decide.

The issue's targets: the service's throughput within 10% of the separate bridges', and its
total RSS at most half of theirs. Writes <out>/multi_plugin.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as harness  # noqa: E402  (bench/run.py: process helpers shared with the main sweep)

ECHO_PY = str(harness.ECHO / "python" / "run")
# Tasks per plugin answered before the clock starts: the children's imports and the first
# requests' allocations are start-up, not throughput.
WARM_UP_PER_PLUGIN = 30
# The bars.
THROUGHPUT_WITHIN = 0.10
RSS_AT_MOST = 0.5
# How long one phase may take before the round is called failed (a loaded 2-core machine).
PHASE_TIMEOUT = 300.0


class Answers:
    """The engine's answer lines, counted on a thread as they arrive."""

    def __init__(self, stream: Any) -> None:
        self.count = 0
        self.failed: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            record = json.loads(raw)
            with self._cond:
                self.count += 1
                if not record.get("status"):
                    self.failed.append(f"{record.get('elementJob')}: {record.get('info')}")
                self._cond.notify_all()

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"only {self.count} of {n} answers after {timeout:.0f} s")
                self._cond.wait(left)


def tree(pid: int) -> list[int]:
    """The process and everything under it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += harness.children(current)
    return found


def start_bridges(setup: str, plugins: int, port: int, work: pathlib.Path) -> list[subprocess.Popen[bytes]]:
    common = ["--log-level", "warning", "--grace", "2s"]
    if setup == "service":
        config = work / "service.yml"
        config.write_text(json.dumps({
            "flow-engine": {"host": "127.0.0.1", "port": port},
            "plugins": [{"name": f"p{k}", "command": [ECHO_PY]} for k in range(plugins)],
        }))
        commands = [[*harness.FLOW_BRIDGE, "run", "--config", str(config), *common]]
    else:
        commands = [[*harness.FLOW_BRIDGE, "run", "--host", "127.0.0.1", "--port", str(port), "--name", f"p{k}",
                     *common, "--", ECHO_PY] for k in range(plugins)]
    return [subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=harness.ROOT, env=harness.plugin_env(), start_new_session=True)
            for cmd in commands]


def lines(prefix: str, n: int, plugins: int) -> bytes:
    return b"".join(
        json.dumps({"plugin": f"p{i % plugins}", "config": {"i": i, "payload": "x" * 16},
                    "elementJob": f"{prefix}-{i}"}, separators=(",", ":")).encode() + b"\n"
        for i in range(n)
    )


def measure(setup: str, plugins: int, n: int, concurrency: int) -> dict[str, Any]:
    port = harness.free_port()
    with tempfile.TemporaryDirectory(prefix="flow-bridge-multi-") as tmp:
        bridges = start_bridges(setup, plugins, port, pathlib.Path(tmp))
        engine = subprocess.Popen(
            [*harness.FLOW_BRIDGE, "engine", "--host", "127.0.0.1", "--port", str(port),
             "--concurrency", str(concurrency), "--log-level", "warning"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=harness.ROOT,
            env=harness.plugin_env(),
        )
        assert engine.stdin is not None
        try:
            answers = Answers(engine.stdout)
            warm = WARM_UP_PER_PLUGIN * plugins
            engine.stdin.write(lines("warm", warm, plugins))
            engine.stdin.flush()
            answers.wait(warm, PHASE_TIMEOUT)
            began = time.monotonic()
            engine.stdin.write(lines("task", n, plugins))
            engine.stdin.flush()
            answers.wait(warm + n, PHASE_TIMEOUT)
            took = time.monotonic() - began
            pids = [pid for bridge in bridges for pid in tree(bridge.pid)]
            rss_kb = sum(harness.proc_status(pid, "VmHWM") or 0 for pid in pids)
            if answers.failed:
                raise RuntimeError(f"{len(answers.failed)} failed answers, first: {answers.failed[0]}")
        finally:
            engine.stdin.close()
            engine.kill()
            engine.wait()
            for bridge in bridges:
                bridge.send_signal(signal.SIGTERM)
            for bridge in bridges:
                harness.stop_plugin(bridge)
    return {"setup": setup, "tasks_per_s": round(n / took, 1), "seconds": round(took, 3),
            "rss_mb": round(rss_kb / 1024, 1), "processes": len(pids), "bridges": len(bridges)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugins", type=int, default=10, help="plugins per setup [%(default)s]")
    parser.add_argument("--n", type=int, default=6000, help="measured tasks per run, over all plugins [%(default)s]")
    parser.add_argument("--concurrency", type=int, default=64, help="the engine's tasks in flight [%(default)s]")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of both setups [%(default)s]")
    parser.add_argument("--out", default=str(HERE / "out"), help="output folder [bench/out]")
    args = parser.parse_args()
    harness.use_source(pathlib.Path(tempfile.mkdtemp(prefix="flow-bridge-shim-")))
    runs: list[dict[str, Any]] = []
    for round_number in range(args.repeats):
        for setup in ("service", "separate") if round_number % 2 == 0 else ("separate", "service"):
            result = measure(setup, args.plugins, args.n, args.concurrency)
            runs.append(result)
            print(f"round {round_number + 1} {setup:>8}: {result['tasks_per_s']:8.1f} tasks/s, "
                  f"RSS {result['rss_mb']:7.1f} MB over {result['processes']} processes", flush=True)
    medians = {setup: {key: statistics.median(r[key] for r in runs if r["setup"] == setup)
                       for key in ("tasks_per_s", "rss_mb")} for setup in ("service", "separate")}
    throughput_ratio = medians["service"]["tasks_per_s"] / medians["separate"]["tasks_per_s"]
    rss_ratio = medians["service"]["rss_mb"] / medians["separate"]["rss_mb"]
    targets = {
        "throughput_within_10pct": throughput_ratio >= 1 - THROUGHPUT_WITHIN,
        "rss_at_most_half": rss_ratio <= RSS_AT_MOST,
    }
    summary = {"plugins": args.plugins, "n": args.n, "concurrency": args.concurrency, "medians": medians,
               "throughput_ratio": round(throughput_ratio, 3), "rss_ratio": round(rss_ratio, 3),
               "targets": targets, "runs": runs, "machine": harness.machine()}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "multi_plugin.json").write_text(json.dumps(summary, indent=2))
    print(f"median: service {medians['service']['tasks_per_s']:.0f} tasks/s, {medians['service']['rss_mb']:.0f} MB; "
          f"{args.plugins} separate {medians['separate']['tasks_per_s']:.0f} tasks/s, "
          f"{medians['separate']['rss_mb']:.0f} MB")
    print(f"throughput ratio {throughput_ratio:.2f} (target >= {1 - THROUGHPUT_WITHIN:.2f}): "
          f"{'MET' if targets['throughput_within_10pct'] else 'MISSED'}; "
          f"RSS ratio {rss_ratio:.2f} (target <= {RSS_AT_MOST:.2f}): "
          f"{'MET' if targets['rss_at_most_half'] else 'MISSED'}")
    raise SystemExit(0 if all(targets.values()) else 1)


if __name__ == "__main__":
    os.chdir(harness.ROOT)
    main()
