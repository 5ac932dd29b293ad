"""Shared helpers: real `flow-bridge engine` and `flow-bridge run` processes on loopback."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
ECHO_PY = str(ROOT / "examples" / "echo" / "python" / "run")
MISBEHAVE = str(ROOT / "tests" / "handlers" / "misbehave.py")
# The installed console script, as a user runs it; `python -m` only when it is not on PATH.
_SCRIPT = shutil.which("flow-bridge")
FLOW_BRIDGE = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "flow_bridge"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str | Callable[[], str], interval: float = 0.02) -> None:
    """Poll `predicate` until it holds; `what` may be a callable, to describe the state at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")


class LineCollector:
    """Reads a pipe on a thread, keeping each line and when it arrived."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))

    def texts(self) -> list[str]:
        with self._lock:
            return [t for _, t in self.lines]

    def find(self, pattern: str) -> list[tuple[float, str]]:
        rx = re.compile(pattern)
        with self._lock:
            return [(t, line) for t, line in self.lines if rx.search(line)]

    def join(self, timeout: float = 5) -> None:
        self._thread.join(timeout)


class Engine:
    """`flow-bridge engine` as a subprocess: write task lines, collect answer lines."""

    def __init__(self, port: int, *args: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [*FLOW_BRIDGE, "engine", "--port", str(port), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = LineCollector(self.proc.stdout)
        self.err = LineCollector(self.proc.stderr)
        wait_for(lambda: self.err.find("listening on"), 15, "the engine to listen")

    def send(self, *tasks: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(json.dumps(t).encode() + b"\n" for t in tasks))
        self.proc.stdin.flush()

    def close_input(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def answers(self, include_unexpected: bool = False) -> list[dict[str, Any]]:
        """Answer lines; those for tasks this engine never sent only when asked for."""
        records = [json.loads(line) for line in self.out.texts()]
        return [r for r in records if include_unexpected or not r.get("unexpected")]

    def wait_answers(self, n: int, timeout: float = 60) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.answers()) >= n, timeout, lambda: f"{n} answers (have {len(self.answers())})")
        return self.answers()

    def registrations(self) -> list[float]:
        return [t for t, _ in self.err.find("plugin registered")]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Bridge:
    """`flow-bridge run` as a subprocess, with a marker so leftover processes can be found."""

    def __init__(self, port: int, command: list[str], *args: str, env: dict[str, str] | None = None) -> None:
        self.marker = uuid.uuid4().hex
        full_env = {**os.environ, "FLOW_BRIDGE_TEST_MARKER": self.marker, **(env or {})}
        self.proc = subprocess.Popen(
            [*FLOW_BRIDGE, "run", "--host", "127.0.0.1", "--port", str(port), "--name", "test-plugin",
             *args, "--", *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self.out = LineCollector(self.proc.stdout)
        self.err = LineCollector(self.proc.stderr)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self.err.join()
        return code

    def log(self) -> str:
        return "\n".join(self.err.texts())

    def leftovers(self) -> list[int]:
        return processes_with_marker(self.marker, exclude=self.proc.pid)


def close_pipes(proc: subprocess.Popen[bytes], *collectors: LineCollector) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for collector in collectors:
        collector.join()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def processes_with_marker(marker: str, exclude: int | None = None) -> list[int]:
    """Pids of live processes whose environment carries the marker."""
    found = []
    needle = f"FLOW_BRIDGE_TEST_MARKER={marker}".encode()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().split(") ")[-1][:1]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def engine_factory() -> Iterator[Any]:
    made: list[Engine] = []

    def make(port: int, *args: str) -> Engine:
        engine = Engine(port, *args)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        close_pipes(engine.proc, engine.out, engine.err)


@pytest.fixture
def bridge_factory() -> Iterator[Any]:
    made: list[Bridge] = []

    def make(port: int, command: list[str], *args: str, env: dict[str, str] | None = None) -> Bridge:
        bridge = Bridge(port, command, *args, env=env)
        made.append(bridge)
        return bridge

    yield make
    for bridge in made:
        close_pipes(bridge.proc, bridge.out, bridge.err)
        for pid in bridge.leftovers():
            os.kill(pid, signal.SIGKILL)


# What each language's example needs on PATH to build and run; tests parametrized by
# `lang` skip with the reason when it is missing instead of waiting on a build that
# cannot happen.
TOOLCHAINS = {"node": ("node", "npm"), "go": ("go",), "rust": ("cargo",), "java": ("java", "mvn")}


def missing_toolchain(lang: str) -> list[str]:
    return [tool for tool in TOOLCHAINS.get(lang, ()) if shutil.which(tool) is None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        lang = params.get("lang")
        run = params.get("run")
        if lang is None and isinstance(run, pathlib.Path) and run.parent.parent.name == "echo":
            lang = run.parent.name  # examples/echo/<lang>/run
        if isinstance(lang, str) and (missing := missing_toolchain(lang)):
            item.add_marker(pytest.mark.skip(
                reason=f"{lang}: {', '.join(missing)} not on PATH; install it to test the {lang} adapter"))


def from_json(value: Any) -> Any:
    """A value of protocol/vectors.json as msgpack has it: {"$bin": hex} stands for bytes."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


class Archive:
    """A packaged zip or tar.gz: its entries by name, read whole (they are small), and their
    permission bits; every entry must be a regular file."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    mode = info.external_attr >> 16
                    assert stat.S_ISREG(mode), f"{info.filename} is not stored as a regular file"
                    self.files[info.filename] = zf.read(info)
                    self.modes[info.filename] = stat.S_IMODE(mode)
        else:
            with tarfile.open(path, "r:gz") as tf:
                for member in tf.getmembers():
                    assert member.isfile(), member.name
                    extracted = tf.extractfile(member)
                    assert extracted is not None
                    self.files[member.name] = extracted.read()
                    self.modes[member.name] = member.mode

    def yaml(self, name: str) -> Any:
        return yaml.safe_load(self.files[name].decode())

    def text(self, name: str) -> str:
        return self.files[name].decode()

    def extract(self, dest: pathlib.Path) -> pathlib.Path:
        for name, data in self.files.items():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(self.modes.get(name, 0o755 if name in ("run", "build") else 0o644))
        return dest
