"""`flow-bridge package`: what the archives hold, and the errors that stop one being made."""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from typing import Any

import pytest
import yaml

from conftest import FLOW_BRIDGE

TOOLS = {"node": "node", "go": "go", "rust": "cargo"}
WINDOWS_KEYS = ["Name", "Version", "Description", "ConfigType", "GroupName", "Command"]
LINUX_KEYS = ["Name", "Version", "Description", "GroupName", "Service"]


def needs(lang: str, timeout: int = 120) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.timeout(timeout)]
    tool = TOOLS.get(lang)
    if tool and shutil.which(tool) is None:
        marks.append(pytest.mark.skip(reason=f"{tool} is not installed"))
    return marks


def flow_bridge(*args: str, cwd: os.PathLike[str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOW_BRIDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


class Archive:
    """An archive's entries by name, read whole (they are small)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    self.files[info.filename] = zf.read(info)
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


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Projects made by `flow-bridge init`, one per language, made once (Go and Rust build)."""
    cache: dict[str, pathlib.Path] = {}
    root = tmp_path_factory.mktemp("projects")

    def get(lang: str) -> pathlib.Path:
        if lang not in cache:
            done = flow_bridge("init", str(root / lang), "--lang", lang, "--name", f"My_{lang}-plugin")
            assert done.returncode == 0, done.stderr
            cache[lang] = root / lang
        return cache[lang]

    return get


@pytest.fixture
def project(made, tmp_path):
    """A private copy of a project, free to break."""

    def copy(lang: str = "python") -> pathlib.Path:
        dest = tmp_path / lang
        shutil.copytree(made(lang), dest, symlinks=True)
        return dest

    return copy


def package(project: pathlib.Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Archive | None]:
    done = flow_bridge("package", str(project), *args)
    if done.returncode != 0:
        return done, None
    path = pathlib.Path(done.stdout.strip())
    assert path.parent == project / "dist", done.stdout
    return done, Archive(path)


def config_without_host(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    doc["flow-engine"].pop("host")
    return doc


# --- windows ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_windows_zip_for_python(project, tmp_path):
    plugin = project("python")
    done, archive = package(plugin, "--target", "windows", "--version", "1.2.3")
    assert archive is not None, done.stderr
    assert archive.path.name == "My_python-plugin-1.2.3-windows.zip"
    assert sorted(archive.files) == ["README.md", "config.yml", "handler.py", "requirements.txt", "run",
                                     "service.yml"]
    service = archive.yaml("service.yml")
    assert list(service) == WINDOWS_KEYS
    assert service == {
        "Name": "My_python-plugin",
        "Version": "1.2.3",
        "Description": "My_python-plugin, a flow-bridge plugin",
        "ConfigType": "config.yml",
        "GroupName": "server",
        "Command": "flow-bridge run --config config.yml -- python handler.py",
    }
    config = archive.yaml("config.yml")
    assert config["flow-engine"]["host"] == "127.0.0.1"
    assert config_without_host(archive.text("config.yml")) == config_without_host((plugin / "config.yml").read_text())
    assert archive.files["handler.py"] == (plugin / "handler.py").read_bytes()


@pytest.mark.parametrize("lang, handler, files", [
    pytest.param("exec", "--exec --config config.yml -- python handler.py", ["handler.py"], id="exec"),
    pytest.param("node", "--config config.yml -- node handler.js", ["handler.js", "package.json", "adapter/index.js"],
                 id="node", marks=needs("node")),
    pytest.param("go", "--config config.yml -- handler.exe", ["main.go", "go.mod", "adapter/serve.go"],
                 id="go", marks=needs("go", 300)),
])
def test_windows_command_starts_the_handler_without_sh(lang, handler, files, project):
    plugin = project(lang)
    done, archive = package(plugin, "--target", "windows")
    assert archive is not None, done.stderr
    assert archive.path.name == f"My_{lang}-plugin-0.1.0-windows.zip"  # version from config.yml
    service = archive.yaml("service.yml")
    assert list(service) == WINDOWS_KEYS
    assert service["Command"] == f"flow-bridge run {handler}"
    assert (service["ConfigType"], service["GroupName"], service["Version"]) == ("config.yml", "server", "0.1.0")
    assert archive.yaml("config.yml")["flow-engine"]["host"] == "127.0.0.1"
    assert set(files) <= set(archive.files)
    assert not [n for n in archive.files if n.split("/")[0] in ("dist", ".bin", "node_modules", "target")]
    if lang == "go":
        assert archive.files["handler.exe"][:2] == b"MZ"  # a Windows executable, cross-compiled


@pytest.mark.parametrize("lang", [pytest.param("python", id="python"),
                                  pytest.param("node", id="node", marks=needs("node"))])
def test_the_unpacked_windows_zip_answers_a_task_with_its_command(lang, project, tmp_path):
    """The Command's handler part, run from the unpacked files (python -> this interpreter)."""
    done, archive = package(project(lang), "--target", "windows")
    assert archive is not None, done.stderr
    unpacked = archive.extract(tmp_path / "unpacked")
    command = archive.yaml("service.yml")["Command"].split()
    handler = command[command.index("--") + 1:]
    handler = [sys.executable if part == "python" else part for part in handler]
    done = flow_bridge("call", "--config", "config.yml", "--config-json", '{"name": "zip"}', "--", *handler,
                       cwd=unpacked, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"greeting": "hello, zip"}


@pytest.mark.timeout(60)
def test_rust_cannot_target_windows(project):
    plugin = project("python")
    config = (plugin / "config.yml").read_text().replace("lang: python", "lang: rust")
    (plugin / "config.yml").write_text(config)
    done, _ = package(plugin, "--target", "windows")
    assert done.returncode == 1
    assert "Rust adapter is Unix-only" in done.stderr and "--target linux" in done.stderr


# --- linux --------------------------------------------------------------------------------


def dockerfile_lines(archive: Archive) -> list[str]:
    return [line for line in archive.text("Dockerfile").splitlines() if line and not line.startswith("#")]


def check_linux(archive: Archive, name: str, version: str, cmd: list[str]) -> list[str]:
    service = archive.yaml("service.yml")
    assert list(service) == LINUX_KEYS
    assert service == {"Name": name, "Version": version, "Description": f"{name}, a flow-bridge plugin",
                       "GroupName": "server", "Service": "None"}
    assert archive.yaml("config.yml")["flow-engine"]["host"] == "flow-engine"
    lines = dockerfile_lines(archive)
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms[-1] == "FROM python:3.11-slim"  # the image that runs is the last stage
    assert lines[-1] == "CMD " + json.dumps(cmd)
    (wheel,) = [n for n in archive.files if n.startswith("wheels/")]
    assert re.fullmatch(r"wheels/flow_bridge-[\w.]+-py3-none-any\.whl", wheel)
    assert "COPY wheels/ /tmp/wheels/" in lines
    assert "RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels" in lines
    with zipfile.ZipFile(io.BytesIO(archive.files[wheel])) as zf:
        inside = set(zf.namelist())
    templates = "flow_bridge/tools/scaffold/templates"
    assert {"flow_bridge/_cli.py", "flow_bridge/adapter/__init__.py", "flow_bridge/protocol/__init__.py",
            f"{templates}/python/handler.py", f"{templates}/docker/go.Dockerfile", f"{templates}/go/build",
            f"{templates}/rust/build", f"{templates}/rust/src/main.rs"} <= inside
    # Every file the Dockerfile copies from the context is in the archive.
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            source = line.split()[1]
            if source != ".":
                assert any(n == source or n.startswith(source) for n in archive.files) or "*" in source, line
    assert archive.modes["run"] & 0o111
    assert not [n for n in archive.files if n.split("/")[0] in ("dist", ".bin", "node_modules", "target")]
    return lines


@pytest.mark.timeout(60)
def test_linux_tar_gz_for_python(project):
    plugin = project("python")
    done, archive = package(plugin, "--target", "linux", "--version", "2.0.0-rc.1")
    assert archive is not None, done.stderr
    assert archive.path.name == "My_python-plugin-2.0.0-rc.1-linux.tar.gz"
    assert "docker build -t my_python-plugin:2.0.0-rc.1 - <" in done.stderr
    assert sorted(n for n in archive.files if not n.startswith("wheels/")) == [
        "Dockerfile", "README.md", "config.yml", "handler.py", "requirements.txt", "run", "service.yml"]
    lines = check_linux(archive, "My_python-plugin", "2.0.0-rc.1",
                        ["flow-bridge", "run", "--config", "config.yml", "--", "./run"])
    assert lines[:3] == ["FROM python:3.11-slim",
                         "ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore",
                         "WORKDIR /app"]
    assert "RUN pip install --no-cache-dir -r requirements.txt" in lines
    assert "docker build -t my_python-plugin:2.0.0-rc.1 - < My_python-plugin-2.0.0-rc.1-linux.tar.gz" in \
        archive.text("Dockerfile")
    config = archive.text("config.yml")
    assert config_without_host(config) == config_without_host((plugin / "config.yml").read_text())
    assert "# Settings of the My_python-plugin plugin" in config  # comments kept


@pytest.mark.parametrize("lang, stages, files", [
    pytest.param("exec", [], ["handler.py", "requirements.txt"], id="exec"),
    pytest.param("node", ["FROM node:20-bookworm-slim AS node",
                          "COPY --from=node /usr/local/bin/node /usr/local/bin/node",
                          "COPY --from=node /src/node_modules ./node_modules"],
                 ["handler.js", "package.json", "adapter/index.js", "adapter/lib/serve.js"],
                 id="node", marks=needs("node")),
    pytest.param("go", ["FROM golang:1.22-bookworm AS build",
                        "RUN CGO_ENABLED=0 go build -buildvcs=false -trimpath -o /out/handler .",
                        "COPY --from=build /out/handler .bin/handler"],
                 ["main.go", "go.mod", "build", "adapter/go.mod", "adapter/serve.go"],
                 id="go", marks=needs("go", 300)),
    pytest.param("rust", ["FROM rust:1-slim-bookworm AS build",
                          "RUN cargo build --release --locked && cp target/release/handler /handler",
                          "COPY --from=build /handler target/release/handler"],
                 ["src/main.rs", "Cargo.toml", "Cargo.lock", "build", "adapter/Cargo.toml", "adapter/src/lib.rs"],
                 id="rust", marks=needs("rust", 600)),
])
def test_linux_dockerfile_installs_the_handlers_runtime(lang, stages, files, project):
    plugin = project(lang)
    done, archive = package(plugin, "--target", "linux")
    assert archive is not None, done.stderr
    name = f"My_{lang}-plugin"
    cmd = ["flow-bridge", "run", *(["--exec"] if lang == "exec" else []), "--config", "config.yml", "--", "./run"]
    lines = check_linux(archive, name, "0.1.0", cmd)
    for line in stages:
        assert line in lines
    assert set(files) <= set(archive.files)
    for file in files:
        assert archive.files[file] == (plugin / file).read_bytes(), file
    if lang in ("go", "rust"):
        assert archive.modes["build"] & 0o111


@pytest.mark.parametrize("lang", [pytest.param("python", id="python"),
                                  pytest.param("go", id="go", marks=needs("go", 300))])
def test_the_unpacked_linux_archive_answers_a_task(lang, project, tmp_path):
    """What the image runs (CMD, in /app) works from the archive's files alone."""
    done, archive = package(project(lang), "--target", "linux")
    assert archive is not None, done.stderr
    unpacked = archive.extract(tmp_path / "app")
    cmd = json.loads(dockerfile_lines(archive)[-1].removeprefix("CMD "))
    assert cmd[:2] == ["flow-bridge", "run"]
    done = flow_bridge("call", *cmd[2:], cwd=unpacked, timeout=300)  # go builds ./run here, as no stage did
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"greeting": "hello, world"}


@pytest.mark.timeout(60)
def test_description_flag_and_an_older_archive_is_replaced(project):
    plugin = project("python")
    package(plugin, "--target", "linux", "--version", "1.0.0")
    done, archive = package(plugin, "--target", "linux", "--version", "1.0.0", "--description", "温度 scaler")
    assert archive is not None, done.stderr
    assert archive.yaml("service.yml")["Description"] == "温度 scaler"
    assert sorted(p.name for p in (plugin / "dist").iterdir()) == ["My_python-plugin-1.0.0-linux.tar.gz"]
    assert not [n for n in archive.files if n.startswith("dist/")]


# --- errors ---------------------------------------------------------------------------


def assert_refused(plugin: pathlib.Path, done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode == 1, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr
    assert not (plugin / "dist").exists() or not list((plugin / "dist").iterdir())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["windows", "linux"])
def test_missing_name_says_where_to_put_it(target, project):
    plugin = project()
    config = plugin / "config.yml"
    config.write_text(config.read_text().replace("  name: My_python-plugin\n", ""))
    done, _ = package(plugin, "--target", target)
    assert_refused(plugin, done, "gives the plugin no name", "add `name: myPlugin` under `plugin:`")


@pytest.mark.timeout(60)
def test_a_name_the_platform_refuses_is_explained(project):
    plugin = project()
    config = plugin / "config.yml"
    config.write_text(config.read_text().replace("name: My_python-plugin", "name: my plugin"))
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "plugin.name: 'my plugin' is not a plugin name the platform accepts",
                   "(for example my-plugin)")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0+build.5", "latest"])
def test_invalid_version_says_what_a_version_looks_like(version, project):
    plugin = project()
    done, _ = package(plugin, "--target", "windows", "--version", version)
    assert_refused(plugin, done, f"--version: '{version}' is not a version X.Y.Z", "pass --version 1.0.0")


@pytest.mark.timeout(60)
def test_an_unquoted_version_in_config_yml_is_explained(project):
    plugin = project()
    config = plugin / "config.yml"
    config.write_text(config.read_text().replace('version: "0.1.0"', "version: 1.0"))
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "package.version: '1.0' is not a version X.Y.Z", "quote it there")


@pytest.mark.timeout(60)
def test_no_version_anywhere_asks_for_one(project):
    plugin = project()
    config = plugin / "config.yml"
    config.write_text(re.sub(r'  version: "0.1.0".*\n', "", config.read_text()))
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "no version: pass --version X.Y.Z")


@pytest.mark.timeout(60)
def test_handler_that_does_not_start_is_shown_with_its_stderr(project):
    plugin = project()
    (plugin / "handler.py").write_text('raise SystemExit("cannot open /dev/ttyUSB0")\n')
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "the handler does not start:", "exited with status 1 before completing the handshake",
                   "cannot open /dev/ttyUSB0", "check with `flow-bridge call -- ./run`")


@pytest.mark.timeout(60)
def test_exec_script_whose_interpreter_is_missing_does_not_start(project):
    plugin = project("exec")
    (plugin / "run").write_text("#!/usr/bin/env no-such-interpreter\n")
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "the handler does not start:", "names no-such-interpreter, which is not on PATH",
                   "check with `flow-bridge call -- ./run`")


@pytest.mark.timeout(60)
def test_handler_that_never_shakes_hands_is_refused_in_its_start_timeout(project):
    plugin = project()
    (plugin / "handler.py").write_text("import time\ntime.sleep(60)\n")
    config = plugin / "config.yml"
    config.write_text(config.read_text().replace("  timeout: 600s", "  timeout: 600s\n  start-timeout: 1s"))
    done, _ = package(plugin, "--target", "windows")
    assert_refused(plugin, done, "the handler does not start:", "did not complete the handshake in 1 s")


@pytest.mark.timeout(60)
def test_missing_files_and_a_broken_config_are_named(project):
    plugin = project()
    (plugin / "run").unlink()
    done, _ = package(plugin, "--target", "windows")
    assert_refused(plugin, done, "lacks run, which a python plugin needs")
    (plugin / "config.yml").write_text("flow-engine:\n  port: [\n")
    done, _ = package(plugin, "--target", "windows")
    assert_refused(plugin, done, "config.yml: not valid YAML (line", "fix config.yml")
    (plugin / "config.yml").unlink()
    done, _ = package(plugin, "--target", "windows")
    assert_refused(plugin, done, "has no config.yml")


@pytest.mark.timeout(60)
def test_a_run_file_that_is_not_executable(project):
    plugin = project()
    (plugin / "run").chmod(0o644)
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "is not executable: run `chmod +x")
