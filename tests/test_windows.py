"""Windows, without a Windows machine: what can be checked from here, checked.

- every runtime module imports with sys.platform forced to win32 and the POSIX-only parts of
  the standard library taken away (mypy's `--platform win32` run, .ci/mypy-win32.sh, checks
  the types; this checks what runs at import);
- the Windows side of the platform seam (`_windows.JobGroups`) against a fake Win32 layer:
  a child runs only once it is in its job, a graceful stop, a kill after the grace, the job
  closing when it is released or when the bridge dies;
- stop signals handed from `signal.signal` handlers to the loop (the Windows mechanism, run
  here with a POSIX signal);
- the start checks against a fake Windows host: the Windows package's Command resolves to the
  interpreter and script it names, and what Windows cannot start is explained.

None of this has run on Windows itself; README's Windows section says what that leaves.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import ntpath
import os
import pkgutil
import shlex
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import yaml

import flow_bridge
import flow_bridge.adapter
import flow_bridge.protocol
from flow_bridge.child import _windows
from flow_bridge.child._platform import stop_then_kill
from flow_bridge.child._windows import KILLED_EXIT_CODE, JobGroups, WinHost
from flow_bridge.tools.package._package import WINDOWS_HANDLER, service_yml


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- every runtime module imports as it would on Windows -----------------------------------------

# Modules the bridge never imports on Windows: the POSIX implementation and the watchdog program.
POSIX_ONLY = {"flow_bridge.child._posix", "flow_bridge.child._watchdog"}
# Run as programs, not imported: `python -m flow_bridge` and the protocol's maintenance scripts.
NOT_IMPORTED = {"flow_bridge.__main__", "flow_bridge.protocol.regen", "flow_bridge.protocol.make_vectors",
                "flow_bridge.protocol.generate"}
# Standard modules that do not exist on Windows: importing one there raises ImportError.
POSIX_MODULES = ("fcntl", "termios", "resource", "pty", "tty", "pwd", "grp", "posix", "_posixsubprocess",
                 "syslog", "crypt", "nis", "spwd", "readline")
# Attributes of os and signal that Windows builds of Python do not have.
POSIX_ATTRIBUTES = {
    os: ("killpg", "getpgid", "setsid", "setpgid", "getpgrp", "fork", "forkpty", "openpty", "pidfd_open",
         "getuid", "geteuid", "getgid", "getegid", "sysconf", "uname", "mkfifo", "sched_getaffinity",
         "O_NOFOLLOW", "O_CLOEXEC", "O_NONBLOCK", "WNOHANG", "getloadavg", "wait3", "wait4"),
    signal: ("SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGPIPE", "SIGCONT",
             "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH", "pidfd_send_signal", "pthread_kill",
             "pthread_sigmask", "setitimer", "getitimer", "alarm", "pause", "siginterrupt", "sigwait"),
}
# What Windows builds have that POSIX ones do not, with their Windows values.
WINDOWS_ATTRIBUTES = {
    os: {"O_BINARY": 0x8000, "O_TEXT": 0x4000, "O_NOINHERIT": 0x80},
    signal: {"SIGBREAK": 21, "CTRL_C_EVENT": 0, "CTRL_BREAK_EVENT": 1},
    subprocess: {"CREATE_NEW_PROCESS_GROUP": 0x200, "CREATE_NO_WINDOW": 0x08000000},
}


def runtime_modules() -> list[str]:
    # The protocol and the Python adapter install beneath flow_bridge from folders of their
    # own (pyproject's package-dir), so a walk of flow_bridge's folder does not find them.
    names = [flow_bridge.__name__]
    for package in (flow_bridge, flow_bridge.protocol, flow_bridge.adapter):
        names.append(package.__name__)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + ".")]
    return sorted(set(names) - NOT_IMPORTED)


@contextlib.contextmanager
def as_on_windows(
    monkeypatch: pytest.MonkeyPatch, only: list[str] | None = None
) -> Iterator[dict[str, types.ModuleType]]:
    """Fresh copies of flow_bridge's modules (or `only` these), imported with the standard library
    of a Windows Python as far as import time can tell. The modules loaded before come back after."""
    names = only or runtime_modules()  # walked first: the walk imports packages itself
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "flow_bridge"}
    for name in saved:
        del sys.modules[name]
    fresh: dict[str, types.ModuleType] = {}
    try:
        with monkeypatch.context() as patch:
            # sys.platform only: os.name "nt" would turn every pathlib.Path into a WindowsPath,
            # which cannot be made here, and the import machinery itself uses them.
            patch.setattr(sys, "platform", "win32")
            for name in POSIX_MODULES:
                patch.setitem(sys.modules, name, None)  # None in sys.modules: `import name` fails
            for module, attributes in POSIX_ATTRIBUTES.items():
                for attribute in attributes:
                    patch.delattr(module, attribute, raising=False)
            for module, values in WINDOWS_ATTRIBUTES.items():
                for attribute, value in values.items():
                    patch.setattr(module, attribute, value, raising=False)
            patch.setitem(sys.modules, "msvcrt", types.ModuleType("msvcrt"))
            patch.setitem(sys.modules, "winreg", types.ModuleType("winreg"))
            for name in names:
                if name not in POSIX_ONLY:
                    fresh[name] = importlib.import_module(name)
            fresh.update({name: module for name, module in sys.modules.items()
                          if name.split(".")[0] == "flow_bridge" and module is not None})
            yield fresh
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "flow_bridge"]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_every_runtime_module_imports_as_on_windows_and_none_pulls_in_the_posix_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with as_on_windows(monkeypatch) as modules:
        platform_seam = modules["flow_bridge.child._platform"]
        assert platform_seam.GROUPS.__class__.__name__ == "JobGroups"
        assert platform_seam.STOP_SIGNALS == (signal.SIGINT, 21)  # SIGINT and SIGBREAK
        assert not POSIX_ONLY & set(modules), "a module imports the POSIX side on Windows"
        expected = set(runtime_modules()) - POSIX_ONLY
        assert expected <= set(modules)
        assert len(expected) > 50  # the walk found the runtime, not an empty package
    assert sys.platform != "win32" and hasattr(os, "killpg"), "the forced platform leaked out of the test"


# The platform seam, and the watchdog program behind its POSIX side.
SEAM = {"flow_bridge.child._platform", "flow_bridge.child._posix", "flow_bridge.child._windows",
        "flow_bridge.child._win32", "flow_bridge.child._watchdog"}
# What only the seam may use: calls that exist on one platform alone or mean another thing on the
# other (os.kill with SIGTERM is TerminateProcess on Windows), and the loop's POSIX-only signal API.
PLATFORM_ATTRIBUTES = {"killpg", "setsid", "getpgid", "setpgid", "pidfd_open", "pidfd_send_signal",
                       "open_signal_receiver", "add_signal_handler", "CTRL_BREAK_EVENT", "CTRL_C_EVENT"}
PLATFORM_KEYWORDS = {"start_new_session", "creationflags", "preexec_fn", "process_group"}


def platform_uses(module: types.ModuleType) -> list[str]:
    tree = ast.parse(inspect.getsource(module))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (
            node.attr in PLATFORM_ATTRIBUTES or (node.attr.startswith("SIG") and node.attr != "Signals")
        ):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg in PLATFORM_KEYWORDS:
            found.append(f"line {node.value.lineno}: {node.arg}=")
    return found


def test_nothing_outside_the_platform_seam_touches_signals_or_process_groups() -> None:
    uses = {}
    for name in runtime_modules():
        if name not in SEAM and (found := platform_uses(importlib.import_module(name))):
            uses[name] = found
    assert uses == {}, "these should ask flow_bridge.child's platform seam instead"
    assert platform_uses(importlib.import_module("flow_bridge.child._posix")), "the check finds nothing at all"


def test_the_win32_structures_have_the_windows_sdk_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    # x64 sizes from the Windows SDK: a wrong field here would set the wrong limit flags.
    with as_on_windows(monkeypatch, only=["flow_bridge.child._win32"]) as modules:
        win32 = modules["flow_bridge.child._win32"]
        import ctypes

        assert ctypes.sizeof(win32.IO_COUNTERS) == 48
        assert ctypes.sizeof(win32.JOBOBJECT_BASIC_LIMIT_INFORMATION) == 64
        assert ctypes.sizeof(win32.JOBOBJECT_EXTENDED_LIMIT_INFORMATION) == 144
        assert win32.JOBOBJECT_BASIC_LIMIT_INFORMATION.LimitFlags.offset == 16
        assert ctypes.sizeof(win32.THREADENTRY32) == 28
        assert win32.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE == 0x2000


# --- the Windows groups against a fake Win32 layer ---------------------------------------------

# How a console program ends on Ctrl-Break by default: STATUS_CONTROL_C_EXIT.
CTRL_EXIT = 0xC000013A


class FakeProcess:
    def __init__(self, pid: int, leader: int, obeys_break: bool) -> None:
        self.pid = pid
        self.group = leader  # its console process group
        self.obeys_break = obeys_break
        self.suspended = True
        self.exit_code: int | None = None
        self.jobs: list[int] = []  # the jobs it is in, innermost last


class FakeWindows:
    """Processes, console groups and kill-on-close jobs, as far as JobGroups can see them."""

    def __init__(self, nested_jobs: bool = True, console: bool = True) -> None:
        self.processes: dict[int, FakeProcess] = {}
        self.handles: dict[int, tuple[str, int]] = {}  # handle -> ("job", job id) or ("process", pid)
        self.calls: list[tuple[str, int]] = []
        self.nested_jobs = nested_jobs
        self.console = console
        self._next = 1000

    # what the test does: start processes, end the bridge
    def start_child(self, pid: int, obeys_break: bool = True) -> FakeProcess:
        self.processes[pid] = FakeProcess(pid, pid, obeys_break)
        return self.processes[pid]

    def start_grandchild(self, parent: int, pid: int, obeys_break: bool = True) -> FakeProcess:
        proc = FakeProcess(pid, self.processes[parent].group, obeys_break)
        proc.suspended = False
        proc.jobs = list(self.processes[parent].jobs)  # a new process is in its parent's jobs
        self.processes[pid] = proc
        return proc

    def bridge_dies(self) -> None:
        """What Windows does when the bridge exits or is killed: it closes all of its handles."""
        for handle in list(self.handles):
            self.close(handle)

    def alive(self, pid: int) -> bool:
        return self.processes[pid].exit_code is None

    def _handle(self, kind: str, value: int) -> int:
        self._next += 4
        self.handles[self._next] = (kind, value)
        return self._next

    def _exit(self, proc: FakeProcess, code: int) -> None:
        if proc.exit_code is None:
            proc.exit_code = code

    def _members(self, job: int) -> list[FakeProcess]:
        return [proc for proc in self.processes.values() if job in proc.jobs]

    # the WinAPI
    def create_job(self) -> int:
        self.calls.append(("create_job", 0))
        self._next += 1
        return self._handle("job", self._next)

    def open_process(self, pid: int) -> int:
        self.calls.append(("open_process", pid))
        if pid not in self.processes:
            raise OSError(87, "The parameter is incorrect")
        return self._handle("process", pid)

    def assign(self, job: int, process: int) -> None:
        proc = self.processes[self.handles[process][1]]
        self.calls.append(("assign", proc.pid))
        if proc.jobs and not self.nested_jobs:
            raise PermissionError(13, "Access is denied")
        proc.jobs.append(self.handles[job][1])

    def resume(self, pid: int) -> None:
        self.calls.append(("resume", pid))
        if not self.processes[pid].suspended:
            raise OSError(f"process {pid} has no thread to resume")
        self.processes[pid].suspended = False

    def ctrl_break(self, pid: int) -> None:
        self.calls.append(("ctrl_break", pid))
        if not self.console:
            raise OSError(6, "The handle is invalid")
        for proc in self.processes.values():
            if proc.group == pid and proc.obeys_break:
                self._exit(proc, CTRL_EXIT)

    def terminate_job(self, job: int, code: int) -> None:
        self.calls.append(("terminate_job", code))
        for proc in self._members(self.handles[job][1]):
            self._exit(proc, code)

    def terminate_process(self, process: int, code: int) -> None:
        pid = self.handles[process][1]
        self.calls.append(("terminate_process", pid))
        if self.processes[pid].exit_code is not None:
            raise PermissionError(5, "Access is denied")
        self._exit(self.processes[pid], code)

    def close(self, handle: int) -> None:
        kind, value = self.handles.pop(handle)
        self.calls.append(("close_" + kind, value))
        if kind == "job":  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: its last handle is gone
            for proc in self._members(value):
                self._exit(proc, KILLED_EXIT_CODE)


def groups_on(fake: FakeWindows) -> JobGroups:
    return JobGroups(lambda: fake)


def until_exited(fake: FakeWindows, pid: int) -> Any:
    async def exited() -> None:
        while fake.alive(pid):
            await anyio.sleep(0.01)

    return exited


def test_a_child_runs_only_once_it_is_in_a_job_of_its_own() -> None:
    fake = FakeWindows()
    fake.start_child(10)
    groups_on(fake).adopt(10)
    names = [name for name, _ in fake.calls]
    assert names == ["open_process", "create_job", "assign", "resume"]
    assert not fake.processes[10].suspended and len(fake.processes[10].jobs) == 1
    grandchild = fake.start_grandchild(10, 11)
    assert grandchild.jobs == fake.processes[10].jobs, "what the child starts is in its job from the start"
    assert _windows.spawn_options() == {"creationflags": 0x200 | 0x4}  # CREATE_NEW_PROCESS_GROUP | SUSPENDED


@pytest.mark.anyio
async def test_graceful_stop_is_ctrl_break_to_the_childs_group_and_the_job_is_ended_after() -> None:
    fake = FakeWindows()
    fake.start_child(10)
    groups = groups_on(fake)
    groups.adopt(10)
    fake.start_grandchild(10, 11)
    began = time.monotonic()
    await stop_then_kill(10, until_exited(fake, 10), 5.0, groups=groups)
    assert time.monotonic() - began < 2.0, "a child that stops on Ctrl-Break is not waited for"
    assert fake.processes[10].exit_code == CTRL_EXIT and fake.processes[11].exit_code == CTRL_EXIT
    assert ("ctrl_break", 10) in fake.calls
    assert fake.calls[-1] == ("terminate_job", KILLED_EXIT_CODE)  # what is left of the group goes too


@pytest.mark.anyio
async def test_a_group_that_ignores_ctrl_break_is_killed_whole_after_the_grace() -> None:
    fake = FakeWindows()
    fake.start_child(10, obeys_break=False)
    groups = groups_on(fake)
    groups.adopt(10)
    fake.start_grandchild(10, 11, obeys_break=False)
    began = time.monotonic()
    await stop_then_kill(10, until_exited(fake, 10), 0.3, groups=groups)
    assert time.monotonic() - began >= 0.3
    assert fake.processes[10].exit_code == KILLED_EXIT_CODE
    assert fake.processes[11].exit_code == KILLED_EXIT_CODE, "the grandchild outlived the kill"


@pytest.mark.anyio
async def test_without_a_console_to_share_the_stop_falls_through_to_the_kill() -> None:
    fake = FakeWindows(console=False)
    fake.start_child(10)
    groups = groups_on(fake)
    groups.adopt(10)
    await stop_then_kill(10, until_exited(fake, 10), 0.1, groups=groups)
    assert fake.processes[10].exit_code == KILLED_EXIT_CODE


def test_releasing_a_group_closes_its_job_and_ends_what_is_left() -> None:
    fake = FakeWindows()
    fake.start_child(10)
    groups = groups_on(fake)
    groups.adopt(10)
    fake.start_grandchild(10, 11)
    groups.release(10)
    assert not fake.alive(10) and not fake.alive(11)
    assert fake.handles == {}, "a job or process handle was left open"
    calls = len(fake.calls)
    groups.release(10)
    groups.stop(10)
    groups.kill(10)
    assert len(fake.calls) == calls, "a released group was touched again (its pid may be reused)"


def test_when_the_bridge_dies_windows_closes_the_jobs_and_ends_every_group() -> None:
    # The POSIX watchdog's work: here the kernel closes the bridge's handles, and the jobs
    # were made to kill on close.
    fake = FakeWindows()
    groups = groups_on(fake)
    for pid in (10, 20):
        fake.start_child(pid, obeys_break=False)
        groups.adopt(pid)
        fake.start_grandchild(pid, pid + 1, obeys_break=False)
    fake.bridge_dies()
    assert [pid for pid in (10, 11, 20, 21) if fake.alive(pid)] == []


def test_a_child_that_cannot_get_a_job_still_runs_and_is_ended_alone(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeWindows(nested_jobs=False)
    fake.start_child(10).jobs = [1]  # the bridge itself runs in a job, and this Windows cannot nest them
    groups = groups_on(fake)
    groups.adopt(10)
    assert not fake.processes[10].suspended
    assert "could not be put in a job object" in caplog.text
    assert [name for name, _ in fake.calls].count("close_job") == 1  # the unused job is not kept
    groups.kill(10)
    assert fake.processes[10].exit_code == KILLED_EXIT_CODE
    assert ("terminate_process", 10) in fake.calls


def test_a_child_that_cannot_be_resumed_is_ended_and_reported() -> None:
    fake = FakeWindows()
    fake.start_child(10).suspended = False  # nothing to resume: the start went wrong
    groups = groups_on(fake)
    with pytest.raises(OSError, match="no thread to resume"):
        groups.adopt(10)
    assert fake.processes[10].exit_code == KILLED_EXIT_CODE
    assert fake.handles == {} and groups.pids == []


# --- stop signals handed to the loop ------------------------------------------------------------


@pytest.mark.anyio
async def test_signals_reach_the_loop_through_signal_handlers_and_the_old_handlers_come_back() -> None:
    # The Windows mechanism, with a POSIX signal: the handler only schedules, on the loop.
    before = signal.getsignal(signal.SIGUSR1)
    with _windows.handoff_signals([signal.SIGUSR1]) as received:
        assert signal.getsignal(signal.SIGUSR1) is not before
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGUSR1)
        with anyio.fail_after(5):
            got = [await received.__anext__(), await received.__anext__()]
    assert got == [signal.SIGUSR1, signal.SIGUSR1]
    assert signal.getsignal(signal.SIGUSR1) is before


# --- start checks against a fake Windows host ----------------------------------------------------

SERVICE = "C:\\svc\\myPlugin"
PYTHON = "C:\\Program Files\\Python311"
PATH = ";".join([f"{PYTHON}\\Scripts", PYTHON, "C:\\Program Files\\nodejs",
                 "C:\\Program Files\\Eclipse Adoptium\\jdk-17\\bin", "C:\\Windows\\system32"])
INSTALLED = [f"{PYTHON}\\Scripts\\flow-bridge.exe", f"{PYTHON}\\python.exe", "C:\\Program Files\\nodejs\\node.exe",
             "C:\\Program Files\\nodejs\\npm.cmd", "C:\\Program Files\\Eclipse Adoptium\\jdk-17\\bin\\java.exe",
             "C:\\Windows\\system32\\cmd.exe"]
# The files each language's Windows package carries that its Command names.
PACKAGED = {"python": ["handler.py", "run"], "exec": ["handler.py", "run"], "node": ["handler.js", "run"],
            "go": ["handler.exe", "run"], "java": ["handler.jar", "run"]}


def host(*service_files: str, pathext: str = ".COM;.EXE;.BAT;.CMD") -> WinHost:
    files = {path.lower() for path in INSTALLED} | {f"{SERVICE}\\{name}".lower() for name in service_files}
    folders = {ntpath.dirname(path) for path in files}
    # Windows paths are case-insensitive, as is its environment.
    return WinHost(environ={"PATH": PATH, "PATHEXT": pathext}, cwd=SERVICE,
                   is_file=lambda path: path.lower() in files, is_dir=lambda path: path.lower() in folders)


def package_command(lang: str) -> list[str]:
    """service.yml's Command as `flow-bridge package --target windows` writes it, split into words."""
    project = types.SimpleNamespace(name="myPlugin", version="1.0.0", description="d", lang=lang,
                                    exec_mode=lang == "exec", plugins=())
    command = yaml.safe_load(service_yml(project, "windows"))["Command"]  # type: ignore[arg-type]
    return shlex.split(command, posix=False)


@pytest.mark.parametrize(
    ("lang", "program", "rest"),
    [
        pytest.param("python", f"{PYTHON}\\python.exe", ["handler.py"], id="python"),
        pytest.param("exec", f"{PYTHON}\\python.exe", ["handler.py"], id="exec"),
        pytest.param("node", "C:\\Program Files\\nodejs\\node.exe", ["handler.js"], id="node"),
        pytest.param("go", f"{SERVICE}\\handler.exe", [], id="go"),
        pytest.param("java", "C:\\Program Files\\Eclipse Adoptium\\jdk-17\\bin\\java.exe", ["-jar", "handler.jar"],
                     id="java"),
    ],
)
def test_the_windows_package_command_resolves_to_its_interpreter_and_script(
    lang: str, program: str, rest: list[str]
) -> None:
    assert set(PACKAGED) == set(WINDOWS_HANDLER)  # a new language needs a row here
    words = package_command(lang)
    split = words.index("--")
    assert words[:split] == ["flow-bridge", "run", *(["--exec"] if lang == "exec" else []), "--config", "config.yml"]
    the_host = host(*PACKAGED[lang])
    bridge = _windows.resolve_command(words[:split], the_host)
    assert bridge[0].lower() == f"{PYTHON}\\Scripts\\flow-bridge.exe".lower()
    handler = words[split + 1:]
    assert _windows.command_problem(handler, the_host) is None
    assert _windows.file_problem(handler, the_host) is None
    resolved = _windows.resolve_command(handler, the_host)
    assert resolved[0].lower() == program.lower() and resolved[1:] == rest


@pytest.mark.parametrize(
    ("lang", "missing"),
    [pytest.param("python", "handler.py", id="python"), pytest.param("node", "handler.js", id="node"),
     pytest.param("java", "handler.jar", id="java")],
)
def test_an_interpreter_command_whose_script_is_missing_says_so(lang: str, missing: str) -> None:
    handler = package_command(lang)[package_command(lang).index("--") + 1:]
    problem = _windows.file_problem(handler, host("run"))
    assert problem == f"{missing}: no such file in {SERVICE}, which is where {handler[0]} looks for it"


@pytest.mark.parametrize(
    ("argv", "files", "says"),
    [
        pytest.param(["./run"], ["run"], "is the sh script that Linux starts, and Windows has no sh", id="run"),
        pytest.param(["handler.py"], ["handler.py"], "not its extension .PY", id="script"),
        pytest.param(["handler.py"], ["handler.py"], "name the interpreter first: `python handler.py`",
                     id="script-advice"),
        pytest.param(["handler.jar"], ["handler.jar"], "`java -jar handler.jar`", id="jar"),
        pytest.param(["tool"], ["tool"], "not a file without an extension", id="no-extension"),
        pytest.param(["ruby", "handler.rb"], [], "ruby: not found in C:\\svc\\myPlugin nor on PATH (tried with the "
                     "extensions of PATHEXT, .COM;.EXE;.BAT;.CMD)", id="missing"),
        pytest.param(["bin\\handler.exe"], [], "bin\\handler.exe: no such file (the path is resolved from "
                     "C:\\svc\\myPlugin)", id="missing-path"),
        pytest.param(["bin"], ["bin\\handler.exe"], "bin is a folder; name the program inside it", id="folder"),
    ],
)
def test_what_windows_cannot_start_is_explained(argv: list[str], files: list[str], says: str) -> None:
    problem = _windows.command_problem(argv, host(*files))
    assert problem is not None and says in problem


def test_pathext_decides_which_names_are_found_and_the_extension_which_can_start() -> None:
    the_host = host()
    assert _windows.resolve_command(["npm", "ci"], the_host) == ["C:\\Program Files\\nodejs\\npm.cmd", "ci"]
    assert _windows.command_problem(["npm"], the_host) is None  # .cmd starts, through cmd.exe
    assert _windows.command_problem(["PYTHON.EXE", "handler.py"], host("handler.py")) is None
    # An extension in PATHEXT is found, but CreateProcess still cannot start a .py by itself.
    with_py = host("tool.py", pathext=".COM;.EXE;.BAT;.CMD;.PY")
    assert _windows.resolve_command(["tool"], with_py)[0] == f"{SERVICE}\\tool.py"
    problem = _windows.command_problem(["tool"], with_py)
    assert problem is not None and "`python tool`" in problem
    # Without PATHEXT, Windows' own default applies.
    no_pathext = WinHost({"PATH": PATH}, SERVICE, host().is_file, host().is_dir)
    assert _windows.resolve_command(["node"], no_pathext)[0] == "C:\\Program Files\\nodejs\\node.exe"


@pytest.mark.parametrize(
    ("winerror", "says"),
    [
        pytest.param(193, "is not a program this Windows can run", id="bad-exe-format"),
        pytest.param(216, "built for another system or architecture", id="machine-mismatch"),
        pytest.param(206, "longer than Windows allows", id="command-line-too-long"),
        pytest.param(5, "Windows denied starting it", id="access-denied"),
    ],
)
def test_a_failed_createprocess_is_explained(winerror: int, says: str) -> None:
    error = OSError(22, "Windows error")
    error.winerror = winerror  # type: ignore[attr-defined]  (set by Python on Windows)
    assert says in _windows.explain_start_error("handler.exe", error)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(["--lang", "python", "--name", "pyA", "--no-build"],
                     {"pyA": ["python.exe", "handler.py"], "exB": ["python.exe", "plugins/exB/handler.py"]},
                     id="init-add"),
        pytest.param(["--from-scripts", "scripts"],
                     {"clean": ["scripts\\clean.bat"], "report": ["python.exe", "scripts/report.py"]},
                     id="from-scripts"),
    ],
)
def test_every_command_of_a_service_package_resolves_on_windows(
    make: list[str], expected: dict[str, list[str]], tmp_path: Any
) -> None:
    """A service made by init: the zip's Command and each entry's command in its config.yml
    start on the fake host, from the files the zip carries."""
    import zipfile

    from conftest import FLOW_BRIDGE

    def cli(*args: str) -> None:
        done = subprocess.run([*FLOW_BRIDGE, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "report.py").write_text("import json, sys\njson.load(sys.stdin)\nprint(json.dumps({}))\n")
    (scripts / "clean.bat").write_text("@echo {}\r\n")
    for script in scripts.iterdir():
        script.chmod(0o755)
    cli("init", "svc", *make)
    if "--lang" in make:
        cli("init", "svc", "--lang", "exec", "--name", "exB", "--add")
    cli("package", "svc", "--target", "windows", "--version", "1.0.0")
    (zipped,) = (tmp_path / "svc" / "dist").glob("*-windows.zip")
    with zipfile.ZipFile(zipped) as archive:
        names = [name.replace("/", "\\") for name in archive.namelist()]
        command = yaml.safe_load(archive.read("service.yml"))["Command"]
        entries = yaml.safe_load(archive.read("config.yml"))["plugins"]
    the_host = host(*names)
    assert shlex.split(command, posix=False) == ["flow-bridge", "run", "--config", "config.yml"]
    assert _windows.resolve_command(["flow-bridge"], the_host)[0].lower() == \
        f"{PYTHON}\\Scripts\\flow-bridge.exe".lower()
    resolved = {}
    for entry in entries:
        argv = [str(word) for word in entry["command"]]
        assert _windows.command_problem(argv, the_host) is None, argv
        assert _windows.file_problem(argv, the_host) is None, argv
        program, *rest = _windows.resolve_command(argv, the_host)
        resolved[entry["name"]] = [ntpath.relpath(program, PYTHON if program.startswith(PYTHON) else SERVICE), *rest]
    assert resolved == expected
