"""The flow-bridge benchmark: one command, real processes, loopback gRPC.

    python bench/run.py [--quick | --smoke] [--n N] [--cases a,b,c-go,...] [--out bench/out]

Each measurement starts a fresh `flow-bridge engine` (the stand-in engine, real gRPC) on a
fresh port and a plugin process that registers with it: the in-process baseline
(bench/baseline_plugin.py) for case (a), `flow-bridge run ... -- CHILD` for the others.
A first, short engine run on that port warms the plugin up and estimates its rate; the
plugin then registers with a second engine, whose `--stats` (throughput, p50, p99, timed
by the engine from sending a task to receiving its answer) is the measurement. Before the
plugin is stopped its peak RSS (VmHWM) is read from /proc, and so are its children's.

Writes <out>/results.json, <out>/report.md and <out>/throughput.png (see bench/report.py).
bench/README.md explains the cases and how to read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pathlib
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402  (bench/report.py, next to this file)

FLOW_BRIDGE = [sys.executable, "-m", "flow_bridge"]
ECHO = ROOT / "examples" / "echo"
EXEC = ROOT / "examples" / "exec"
CLK_TCK = os.sysconf("SC_CLK_TCK")

KiB = 1024
MiB = 1024 * 1024
PAYLOADS = {16: "16 B", 64 * KiB: "64 KiB", MiB: "1 MiB"}


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    child: tuple[str, ...] = ()  # empty: the in-process baseline
    exec_mode: bool = False
    workers: int = 1
    floor: bool = False  # the baseline with --floor


CASES: dict[str, Case] = {
    c.key: c
    for c in (
        Case("a", "baseline: in-process grpc.aio plugin"),
        # Not judged: how low any process that moves each message through grpc.aio can go.
        Case("f", "floor: the baseline answering in its read loop, no task per request", floor=True),
        Case("b", "bridge + Python child", (str(ECHO / "python" / "run"),)),
        Case("c-node", "bridge + Node child", (str(ECHO / "node" / "run"),)),
        Case("c-go", "bridge + Go child", (str(ECHO / "go" / "run"),)),
        Case("c-rust", "bridge + Rust child", (str(ECHO / "rust" / "run"),)),
        Case("c-java", "bridge + Java child", (str(ECHO / "java" / "run"),)),
        Case("d", "bridge --exec, bash script", (str(EXEC / "bash" / "run"),), exec_mode=True),
        Case("e", "bridge --workers 2, Python child", (str(ECHO / "python" / "run"),), workers=2),
        # Not in the default set: exec mode with a Python script (an interpreter start per task).
        Case("d-py", "bridge --exec, Python script", (str(EXEC / "python" / "run"),), exec_mode=True),
    )
}
DEFAULT_CASES = ["a", "f", "b", "c-node", "c-go", "c-rust", "d", "e"]
# The Java child needs a JDK and Maven to build; without them it is left out, not failed.
if shutil.which("java") and shutil.which("mvn"):
    DEFAULT_CASES.insert(DEFAULT_CASES.index("c-rust") + 1, "c-java")


@dataclass(frozen=True)
class Cell:
    """One point of the sweep: a case at a concurrency, handler sleep and payload size."""

    case: str
    concurrency: int
    sleep_ms: int
    payload: int

    @property
    def max_inflight(self) -> int:
        return max(self.concurrency, 64)


@dataclass
class Plan:
    mode: str
    cells: list[Cell]
    repeats: dict[Cell, int]  # cells measured more than once (the medians are reported)
    seconds: float  # aimed-for length of one measured run
    n: int | None  # fixed task count (--n), else sized from the warm-up rate
    noise_limit: float = 0.0  # measure again when other processes used more CPUs than this
    retries: int = 0
    smoke_n: int = 0
    warm_cap: int = 600
    notes: list[str] = field(default_factory=list)


# --- the sweep ------------------------------------------------------------------------------


def target_cells(cases: list[str]) -> list[Cell]:
    """The cells the targets are judged on, plus every selected case at C=64 for comparison."""
    cells = [Cell(c, 64, 0, 16) for c in cases]
    for c in ("a", "b", "c-go", "c-rust"):
        if c in cases:
            cells.append(Cell(c, 1, 0, 16))
    for c in ("a", "b"):
        if c in cases:
            cells += [Cell(c, 256, 0, 16), Cell(c, 256, 10, 16), Cell(c, 16, 0, MiB)]
    return cells


def cell_order(cell: Cell) -> tuple[int, int, int, int]:
    """Cells of one (sleep, payload, C) next to each other, baseline first: a case and its
    baseline are then measured minutes apart at most, seconds apart usually."""
    return cell.sleep_ms, cell.payload, cell.concurrency, list(CASES).index(cell.case)


def make_plan(args: argparse.Namespace) -> Plan:
    cases = args.cases
    if args.smoke:
        cells = [Cell(c, 4, 0, 16) for c in cases]
        cells += [Cell(c, 1, 0, 16) for c in cases if c in ("a", "b")]
        return Plan("smoke", cells, {}, seconds=0.0, n=args.n or 20, smoke_n=args.n or 20)
    if args.quick:
        cells = sorted(target_cells(cases), key=cell_order)
        return Plan("quick", cells, {cell: 3 for cell in cells}, seconds=3.0, n=args.n)
    cells = [
        Cell(c, conc, sleep, payload)
        for sleep in (0, 10)
        for payload in PAYLOADS
        for conc in (1, 16, 64, 256)
        for c in cases
    ]
    targets = set(target_cells(cases))
    return Plan("full", cells, {cell: 3 for cell in cells if cell in targets}, seconds=2.0, n=args.n)


def size_limits(cell: Cell) -> tuple[int, int]:
    """(most tasks in a measured run, most warm-up tasks) for a payload size."""
    if cell.payload >= MiB:
        return 160, 24
    if cell.payload >= 64 * KiB:
        return 2000, 200
    return 20000, 600


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PYTHONPATH: str | None = None  # set by use_source()
EVENT_LOOP = "asyncio"  # --loop: for the engine, the bridge and the baseline alike


def export_ref(ref: str, dest: pathlib.Path) -> pathlib.Path:
    """bridge/, protocol/ and adapters/python/ as committed at `ref`, unpacked into `dest`."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "bridge", "protocol", "adapters/python"],
                             cwd=ROOT, capture_output=True, check=False)
    if archive.returncode != 0:
        sys.exit(f"bench: git archive {ref}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def use_source(shim: pathlib.Path, src: pathlib.Path = ROOT) -> None:
    """Make every process of the run import flow_bridge from the sources in `src`.

    The repository keeps the package in bridge/, protocol/ and adapters/python/ (pyproject's
    package-dir), so the checkout itself is not importable as `flow_bridge`; and the
    installed copy may be a snapshot (`pip install .`) rather than editable. A folder of
    symbolic links laid out as the installed package fixes both."""
    global _PYTHONPATH
    if shim.exists():
        shutil.rmtree(shim)
    pkg = shim / "flow_bridge"
    pkg.mkdir(parents=True)
    for entry in (src / "bridge").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "protocol").symlink_to(src / "protocol")
    (pkg / "adapter").symlink_to(src / "adapters" / "python" / "flow_bridge_adapter")
    _PYTHONPATH = str(shim)


def plugin_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_BRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["FLOW_BRIDGE_EVENT_LOOP"] = EVENT_LOOP
    # The examples' `run` scripts start `${FLOW_BRIDGE_PYTHON:-python3}`; flow-bridge sets it to
    # its own interpreter for a child, and prepare() runs them directly, so set it here too:
    # the benchmark's interpreter (a venv's, say) has msgpack where the system python3 may not.
    env["FLOW_BRIDGE_PYTHON"] = sys.executable
    if _PYTHONPATH:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PYTHONPATH, env.get("PYTHONPATH")]))
    return env


def code_under_test() -> str:
    """Where the benchmark's processes import flow_bridge from."""
    proc = subprocess.run([sys.executable, "-c", "import flow_bridge; print(flow_bridge.__file__)"],
                          capture_output=True, text=True, cwd=ROOT, env=plugin_env())
    return proc.stdout.strip() or proc.stderr.strip()[-300:]


def plugin_command(case: Case, cell: Cell, port: int) -> list[str]:
    if not case.child:
        return [
            sys.executable, str(HERE / "baseline_plugin.py"),
            "--port", str(port), "--max-inflight", str(cell.max_inflight), "--loop", EVENT_LOOP,
            *(["--floor"] if case.floor else []),
        ]
    cmd = [
        *FLOW_BRIDGE, "run", "--host", "127.0.0.1", "--port", str(port), "--name", "bench",
        "--max-inflight", str(cell.max_inflight), "--log-level", "warning", "--grace", "2s",
    ]
    if case.workers != 1:
        cmd += ["--workers", str(case.workers)]
    if case.exec_mode:
        cmd.append("--exec")
    return [*cmd, "--", *case.child]


def engine_command(port: int, concurrency: int, stats: pathlib.Path) -> list[str]:
    return [
        *FLOW_BRIDGE, "engine", "--host", "127.0.0.1", "--port", str(port),
        "--concurrency", str(concurrency), "--stats", str(stats), "--log-level", "warning",
    ]


def task_line(prefix: str, i: int, sleep_ms: int, payload: str) -> str:
    # `sleep_ms` only when it is not 0: the echo examples would otherwise arm a zero timer
    # (Node's setTimeout(0) waits 1 ms; the bash script runs /bin/sleep), which measures the
    # example rather than the bridge. The echo contract reads a missing sleep_ms as no sleep.
    config: dict[str, Any] = {"i": i, "payload": payload}
    if sleep_ms:
        config["sleep_ms"] = sleep_ms
    return json.dumps({"config": config, "elementJob": f"{prefix}-{i}"}, separators=(",", ":")) + "\n"


def proc_status(pid: int, key: str) -> int | None:
    """A kB figure from /proc/<pid>/status (VmHWM, VmRSS), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own CPU seconds, reaped children's CPU seconds) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14..17.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(CPU seconds all CPUs spent busy, including time stolen by the hypervisor; now)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK, time.monotonic()


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(x) for x in fh.read().split()]
    return sorted(set(found))


class Engine:
    """One `flow-bridge engine` process; waited for with os.wait4 so its CPU time is known."""

    def __init__(self, cmd: list[str], stdin: Any, stdout: Any, stderr: Any) -> None:
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=stderr, cwd=ROOT, env=plugin_env())
        self.returncode: int | None = None
        self.cpu = 0.0

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.cpu = usage.ru_utime + usage.ru_stime
                self.proc.returncode = self.returncode
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            self.proc.kill()
            while self.poll() is None:
                time.sleep(0.01)


class MeasureError(RuntimeError):
    pass


def wait_engine(
    engine: Engine,
    plugin: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    on_first_answer: tuple[pathlib.Path, Any] | None = None,
) -> None:
    """Wait for the engine to end; `on_first_answer` = (its stdout file, a callback run
    once that file is no longer empty)."""
    deadline = time.monotonic() + timeout
    while engine.poll() is None:
        if on_first_answer is not None:
            path, callback = on_first_answer
            with contextlib.suppress(OSError):
                if path.stat().st_size:
                    callback()
                    on_first_answer = None
        if plugin.poll() is not None:
            engine.kill()
            raise MeasureError(f"{what}: the plugin exited with status {plugin.returncode}")
        if time.monotonic() > deadline:
            engine.kill()
            raise MeasureError(f"{what}: no end after {timeout:.0f} s")
        time.sleep(0.005)
    if engine.returncode != 0:
        raise MeasureError(f"{what}: the engine exited with status {engine.returncode}")


def stop_plugin(plugin: subprocess.Popen[bytes]) -> None:
    if plugin.poll() is None:
        plugin.send_signal(signal.SIGTERM)
        try:
            plugin.wait(15)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of its process group (it was started in a session of its own).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(plugin.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        plugin.wait(5)


# --- one measurement -------------------------------------------------------------------------


def warm_up(
    port: int, cell: Cell, plugin: subprocess.Popen[bytes], count: int, work: pathlib.Path, limit: float
) -> float | None:
    """A first engine run of `count` tasks; returns the rate seen (tasks/s) or None."""
    payload = "x" * cell.payload
    with open(work / "warm.err", "wb") as err:
        engine = Engine(engine_command(port, cell.concurrency, work / "warm.json"), subprocess.PIPE,
                        subprocess.PIPE, err)
    assert engine.proc.stdin is not None and engine.proc.stdout is not None
    arrivals: list[float] = []

    def read() -> None:
        assert engine.proc.stdout is not None
        for _ in iter(engine.proc.stdout.readline, b""):
            arrivals.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for i in range(count):
            engine.proc.stdin.write(task_line("warm", i, cell.sleep_ms, payload).encode())
        engine.proc.stdin.flush()
        deadline = time.monotonic() + limit
        while len(arrivals) < count:
            if plugin.poll() is not None:
                raise MeasureError(f"warm-up: the plugin exited with status {plugin.returncode}")
            if engine.poll() is not None or time.monotonic() > deadline:
                raise MeasureError(f"warm-up: {len(arrivals)} of {count} answers")
            time.sleep(0.005)
        # The bridge sends again, on its next stream, the answers it wrote in the last 0.5 s
        # before a stream broke (RESEND_WINDOW); let that window pass so that none of the
        # warm-up answers reach the measured engine.
        time.sleep(0.6)
        engine.proc.stdin.close()
        wait_engine(engine, plugin, 30, "warm-up")
    finally:
        engine.kill()
        reader.join(5)
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        return None
    # First to last answer: the registration wait before the first task is left out.
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def check_answers(path: pathlib.Path, n: int, payload_len: int) -> tuple[int, int, list[str]]:
    """(answers, correct answers, a few problems) of the measured engine's output."""
    seen = correct = 0
    problems: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            seen += 1
            rec = json.loads(line)
            job = rec.get("elementJob", "")
            ok = rec.get("status") is True and not rec.get("unexpected")
            if ok and job.startswith("task-"):
                i = int(job[5:])
                ok = rec.get("result") == {"i": i, "n": payload_len}
            if ok:
                correct += 1
            elif len(problems) < 3:
                problems.append(line.strip()[:300])
    return seen, correct, problems


def measure(cell: Cell, plan: Plan, work: pathlib.Path) -> dict[str, Any]:
    case = CASES[cell.case]
    work.mkdir(parents=True, exist_ok=True)
    n_cap, warm_cap = size_limits(cell)
    if plan.mode == "smoke":
        n, warm = plan.smoke_n, 5
    else:
        n = 0
        warm = min(warm_cap, max(20, 2 * cell.concurrency))
    port = free_port()
    record: dict[str, Any] = {
        "case": cell.case, "label": case.label, "concurrency": cell.concurrency, "sleep_ms": cell.sleep_ms,
        "payload": cell.payload, "max_inflight": cell.max_inflight, "port": port,
    }
    plugin_err = open(work / "plugin.err", "wb")
    began = time.monotonic()
    plugin: subprocess.Popen[bytes] | None = None
    try:
        # Start the plugin, then the warm-up engine (the plugin keeps redialling until it is up).
        plugin = subprocess.Popen(
            plugin_command(case, cell, port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=plugin_err, cwd=ROOT, env=plugin_env(), start_new_session=True,
        )
        smoke = plan.mode == "smoke"
        rate = warm_up(port, cell, plugin, warm, work, 20 if smoke else 90)
        record["warmup_tasks"] = warm
        record["warmup_rate"] = round(rate, 1) if rate else None
        if plan.mode != "smoke":
            if plan.n:
                n = plan.n
            else:
                aim = (rate or 50.0) * plan.seconds
                n = int(min(n_cap, max(aim, 4 * cell.concurrency, 50)))
            n = min(n, n_cap)
        record["n"] = n
        payload = "x" * cell.payload
        tasks = work / "tasks.jsonl"
        with open(tasks, "w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(task_line("task", i, cell.sleep_ms, payload))
        stats_path = work / "stats.json"
        answers = work / "answers.jsonl"
        # CPU is counted from the first answer on, so that process start-up (imports, a
        # fresh engine's ~0.3 s) and the registration are left out.
        first: dict[str, Any] = {}

        def sample(engine_pid: int | None) -> None:
            assert plugin is not None
            first["kids"] = {pid: proc_cpu(pid)[0] for pid in children(plugin.pid)}
            first["own"], first["reaped"] = proc_cpu(plugin.pid)
            first["engine"] = sum(proc_cpu(engine_pid)) if engine_pid else 0.0
            first["busy"], first["time"] = machine_busy()
            first["self"] = self_cpu()

        sample(None)  # in case the run is over before the first answer is seen

        with open(tasks, "rb") as stdin, open(answers, "wb") as stdout, open(work / "engine.err", "wb") as err:
            engine = Engine(engine_command(port, cell.concurrency, stats_path), stdin, stdout, err)
            try:
                limit = 20 if smoke else 30 + 5 * n / (rate or 5.0)
                wait_engine(engine, plugin, limit, "measured run",
                            on_first_answer=(answers, lambda: sample(engine.proc.pid)))
            finally:
                engine.kill()
        busy_after, time_after = machine_busy()
        self_after = self_cpu()
        # Peak RSS and CPU now, before the plugin is asked to stop.
        kids = children(plugin.pid)
        own_after, reaped_after = proc_cpu(plugin.pid)
        record["plugin_rss_kb"] = proc_status(plugin.pid, "VmHWM")
        long_lived = case.child and not case.exec_mode
        record["child_rss_kb"] = [proc_status(pid, "VmHWM") for pid in kids] if long_lived else []
        kid_cpu = sum(proc_cpu(pid)[0] - first["kids"].get(pid, 0.0) for pid in kids)
        record["plugin_cpu_s"] = round(own_after - first["own"], 3)
        record["child_cpu_s"] = round(kid_cpu + (reaped_after - first["reaped"]), 3)
        record["engine_cpu_s"] = round(engine.cpu - first["engine"], 3)
        # What the rest of the machine used meanwhile (other people's work on a shared
        # machine, and the hypervisor's steal), in CPUs: a measure of how noisy this run was.
        ours = (record["plugin_cpu_s"] + record["child_cpu_s"] + record["engine_cpu_s"]
                + self_after - first["self"])
        window = time_after - first["time"]
        record["other_load"] = round(max(0.0, busy_after - first["busy"] - ours) / window, 2) if window > 0 else None
        stats = json.loads(stats_path.read_text())
        record.update({k: stats.get(k) for k in ("answered", "seconds", "tasks_per_s", "p50_ms", "p99_ms",
                                                 "duplicates", "unknown", "registrations")})
        seen, correct, problems = check_answers(answers, n, cell.payload)
        record["correct"] = correct
        record["ok"] = correct == n and seen == n and stats.get("answered") == n
        if problems:
            record["problems"] = problems
        tasks.unlink()
        answers.unlink()
    except MeasureError as exc:
        record["ok"] = False
        record["error"] = str(exc)
    finally:
        if plugin is not None:
            stop_plugin(plugin)
        plugin_err.close()
    record["wall_s"] = round(time.monotonic() - began, 2)
    expected = ("engine connection lost", "skipping fork() handlers")  # the engine restarts by design
    lines = [ln for ln in (work / "plugin.err").read_text(errors="replace").splitlines()
             if ln.strip() and not any(e in ln for e in expected)]
    if lines:
        record["plugin_log_tail"] = lines[-8:]
    return record


# --- preparing the children ------------------------------------------------------------------


def prepare(cases: list[str]) -> None:
    """Start each child once with its stdin closed: the Node, Go, Rust and Java examples build
    themselves on a first run, and every example exits 0 when its input ends before hello."""
    done: set[tuple[str, ...]] = set()
    for key in cases:
        case = CASES[key]
        if not case.child or case.exec_mode or case.child in done:
            continue
        done.add(case.child)
        print(f"preparing {case.child[0]} ...", flush=True)
        started = time.monotonic()
        proc = subprocess.run(list(case.child), input=b"", capture_output=True, cwd=ROOT, timeout=900,
                              env=plugin_env())
        if proc.returncode != 0:
            sys.exit(
                f"bench: {case.child[0]} failed to start (status {proc.returncode}):\n"
                + proc.stderr.decode(errors="replace")[-2000:]
            )
        print(f"  ready in {time.monotonic() - started:.1f} s", flush=True)


# --- the whole run --------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        info["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    with contextlib.suppress(Exception):
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bridge", "protocol", "adapters",
                                "examples"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        info["git_dirty"] = bool(dirty)
    return info


def describe(cell: Cell) -> str:
    return f"{cell.case:7s} C={cell.concurrency:<3d} sleep={cell.sleep_ms:>2d}ms payload={PAYLOADS[cell.payload]:>6s}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="only the target cases (3 repeats each)")
    mode.add_argument("--smoke", action="store_true", help="a tiny run of every case, to prove the harness works")
    parser.add_argument("--n", type=int, default=None,
                        help="tasks per measured run (default: about 2-3 s of work, from the warm-up rate)")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated, from {', '.join(CASES)} [%(default)s]")
    parser.add_argument("--out", default=str(HERE / "out"), help="output folder [bench/out]")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeat count of the target cells")
    parser.add_argument("--noise-limit", type=float, default=0.3,
                        help="measure a cell again (up to --retries times) when other processes on the machine "
                             "used more than this many CPUs during it; 0 turns it off [%(default)s]")
    parser.add_argument("--retries", type=int, default=2, help="[%(default)s]")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ref", default=None,
                        help="measure flow_bridge as committed at this git ref (e.g. HEAD) instead of the working tree")
    source.add_argument("--installed", action="store_true",
                        help="measure the installed flow_bridge package, not this checkout's bridge/ and protocol/")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop of every Python process (FLOW_BRIDGE_EVENT_LOOP) [asyncio, as the bridge]")
    args = parser.parse_args()
    global EVENT_LOOP
    EVENT_LOOP = args.loop
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    if "a" not in args.cases:
        args.cases.insert(0, "a")  # every ratio needs the baseline of the same run
    plan = make_plan(args)
    if args.repeats is not None:
        plan.repeats = {cell: args.repeats for cell in plan.repeats}
    if plan.mode != "smoke":
        plan.noise_limit, plan.retries = args.noise_limit, args.retries
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)

    if args.ref:
        rev = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=ROOT, capture_output=True, text=True)
        use_source(out / "pythonpath", export_ref(args.ref, out / "src"))
        source_note = f"git {args.ref} ({rev.stdout.strip()})"
    elif args.installed:
        source_note = "the installed package"
    else:
        use_source(out / "pythonpath")
        source_note = "the working tree"
    code = code_under_test()
    print(f"flow_bridge under test: {code}", flush=True)
    prepare(args.cases)
    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "mode": plan.mode,
        "cases": {k: CASES[k].label for k in args.cases},
        "machine": machine(),
        "flow_bridge": code,
        "source": source_note,
        "seconds_per_run": plan.seconds,
        "event_loop": EVENT_LOOP,
        "noise_limit": plan.noise_limit,
    }
    # Round 1 measures every cell; rounds 2.. measure again the cells with repeats,
    # case after case, so that a noisy moment on the shared machine hits all cases alike.
    rounds = [plan.cells]
    for r in range(2, max(plan.repeats.values(), default=1) + 1):
        rounds.append([cell for cell in plan.cells if plan.repeats.get(cell, 1) >= r])
    total = sum(len(r) for r in rounds)
    runs: list[dict[str, Any]] = []
    began = time.monotonic()
    k = 0
    for number, cells in enumerate(rounds, 1):
        for cell in cells:
            k += 1
            rec = measure(cell, plan, work / f"{k:03d}-{cell.case}")
            loads = [rec.get("other_load")]
            while (plan.noise_limit and rec.get("ok") and (rec.get("other_load") or 0) > plan.noise_limit
                   and len(loads) <= plan.retries):
                print(f"[{k}/{total}] {describe(cell)}  other processes used {rec['other_load']:.2f} CPUs: "
                      "measuring again", flush=True)
                again = measure(cell, plan, work / f"{k:03d}-{cell.case}-{len(loads)}")
                loads.append(again.get("other_load"))
                if again.get("ok") and (again.get("other_load") or 0) < (rec.get("other_load") or 0):
                    rec = again
            rec["other_load_attempts"] = loads
            rec["repeat"] = number
            runs.append(rec)
            if rec.get("ok"):
                rss = (rec.get("plugin_rss_kb") or 0) / 1000
                print(
                    f"[{k}/{total}] {describe(cell)}  n={rec['n']:<5d} {rec['tasks_per_s']:>8.1f} tasks/s  "
                    f"p50 {rec['p50_ms']:.2f} ms  p99 {rec['p99_ms']:.2f} ms  rss {rss:.0f} MB  "
                    f"other load {rec.get('other_load')}",
                    flush=True,
                )
            else:
                print(f"[{k}/{total}] {describe(cell)}  FAILED: {rec.get('error') or rec.get('problems')}",
                      flush=True)
            # Save as we go, so that an interrupted sweep still leaves its numbers.
            meta["elapsed_s"] = round(time.monotonic() - began, 1)
            (out / "results.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    with contextlib.suppress(OSError):
        meta["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    data: dict[str, Any] = {"meta": meta, "runs": runs}
    data["summary"] = report.summarize(runs)
    data["targets"] = report.targets(data["summary"])
    (out / "results.json").write_text(json.dumps(data, indent=1))
    md = report.markdown(data)
    (out / "report.md").write_text(md)
    try:
        report.chart(data, out / "throughput.png")
    except ImportError:
        print("bench: no chart: matplotlib is missing (pip install '.[bench]')", file=sys.stderr)
    failed = [r for r in runs if not r.get("ok")]
    if not failed:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(report.targets_markdown(data["targets"]))
    print(f"\nwrote {out / 'results.json'}, {out / 'report.md'}, {out / 'throughput.png'} "
          f"in {time.monotonic() - began:.0f} s")
    if failed:
        print(f"{len(failed)} measurement(s) failed; their logs are under {work}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
