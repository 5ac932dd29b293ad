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
import zipfile
from typing import Any

import pytest
import yaml

from conftest import FLOW_BRIDGE, Archive

TOOLS = {"node": "node", "go": "go", "rust": "cargo", "java": "mvn"}
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
    pytest.param("java", "--config config.yml -- java -jar handler.jar", ["pom.xml", "handler.jar", "lib/"],
                 id="java", marks=needs("java", 600)),
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
    assert {f for f in files if not f.endswith("/")} <= set(archive.files)
    assert not [n for n in archive.files if n.split("/")[0] in ("dist", ".bin", "node_modules", "target")]
    if lang == "java":  # the jar Maven built here, and its class path where its manifest looks
        assert {"lib/flow-bridge-adapter-0.1.0.jar", "lib/msgpack-core-0.9.10.jar"} <= set(archive.files)
    if lang == "go":
        assert archive.files["handler.exe"][:2] == b"MZ"  # a Windows executable, cross-compiled


@pytest.mark.parametrize("lang", [pytest.param("python", id="python"),
                                  pytest.param("node", id="node", marks=needs("node")),
                                  pytest.param("java", id="java", marks=needs("java", 600))])
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
    assert_refused(plugin, done, "Rust adapter is Unix-only", "--target linux")


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
    pytest.param("java", ["FROM maven:3-eclipse-temurin-17 AS build",
                          "COPY --from=jre /opt/java/openjdk /opt/java/openjdk",
                          "COPY --from=build /src/target/handler.jar target/handler.jar"],
                 ["src/main/java/plugin/Handler.java", "pom.xml", "build", "adapter/pom.xml",
                  "adapter/src/main/java/io/flowbridge/adapter/Session.java"],
                 id="java", marks=needs("java", 600)),
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
    if lang in ("go", "rust", "java"):
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


def assert_refused(plugin: pathlib.Path, done: subprocess.CompletedProcess[str], *phrases: str,
                   code: int = 2) -> None:
    """Exit 2 when the project must change, 1 when the handler failed; one error line style, no archive."""
    assert done.returncode == code, done.stderr
    assert "Error: " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
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
                   "cannot open /dev/ttyUSB0", "check with `flow-bridge call -- ./run`", code=1)


@pytest.mark.timeout(60)
def test_exec_script_whose_interpreter_is_missing_does_not_start(project):
    plugin = project("exec")
    (plugin / "run").write_text("#!/usr/bin/env no-such-interpreter\n")
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "the handler does not start:", "names no-such-interpreter, which is not on PATH",
                   "check with `flow-bridge call -- ./run`", code=1)


@pytest.mark.timeout(60)
def test_handler_that_never_shakes_hands_is_refused_in_its_start_timeout(project):
    plugin = project()
    (plugin / "handler.py").write_text("import time\ntime.sleep(60)\n")
    config = plugin / "config.yml"
    config.write_text(config.read_text().replace("  timeout: 600s", "  timeout: 600s\n  start-timeout: 1s"))
    done, _ = package(plugin, "--target", "windows")
    assert_refused(plugin, done, "the handler does not start:", "did not complete the handshake in 1 s", code=1)


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


# --- staying inside the project ---------------------------------------------------------

BOTH = [pytest.param("windows", id="zip"), pytest.param("linux", id="tar")]


def assert_no_archive_left(plugin: pathlib.Path) -> None:
    """Nothing partial: no dist/ when package made none, and no stray file in one that was there."""
    dist = plugin / "dist"
    assert not dist.exists() or [p.name for p in dist.iterdir() if not p.name.endswith((".zip", ".tar.gz"))] == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", BOTH)
@pytest.mark.parametrize("name, points_to", [
    pytest.param("passwd", "/etc/passwd", id="absolute-file"),
    pytest.param("etc", "/etc", id="absolute-folder"),
    pytest.param("lib/up", "../../outside.txt", id="relative-file"),
])
def test_a_link_out_of_the_project_is_refused_with_its_path(name, points_to, target, project, tmp_path):
    plugin = project()
    (tmp_path / "outside.txt").write_text("not the project's")
    (plugin / "lib").mkdir()
    (plugin / name).symlink_to(points_to)
    done, _ = package(plugin, "--target", target)
    assert_refused(plugin, done, f"{name} is a symbolic link to {points_to}, which is outside the project",
                   "Copy what the handler needs into the project, or remove the link")
    assert not (plugin / "dist").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", BOTH)
def test_links_inside_the_project_are_stored_as_what_they_point_to(target, project):
    plugin = project()
    (plugin / "assets").mkdir()
    (plugin / "assets" / "table.csv").write_text("a,b\n1,2\n")
    (plugin / "alias.py").symlink_to("handler.py")
    (plugin / "data").symlink_to("assets")  # a folder, by a relative link
    (plugin / "assets" / "again.csv").symlink_to(plugin / "assets" / "table.csv")  # an absolute one
    done, archive = package(plugin, "--target", target)
    assert archive is not None, done.stderr  # Archive asserts that every entry is a regular file
    assert archive.files["alias.py"] == (plugin / "handler.py").read_bytes()
    for name in ("assets/table.csv", "assets/again.csv", "data/table.csv", "data/again.csv"):
        assert archive.files[name] == b"a,b\n1,2\n", name


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", BOTH)
def test_a_dangling_link_and_a_loop_are_refused_and_named_together(target, project):
    plugin = project()
    (plugin / "gone.txt").symlink_to("nowhere.txt")
    (plugin / "sub").mkdir()
    (plugin / "sub" / "loop").symlink_to("..")
    (plugin / ".hidden-link").symlink_to("/etc/passwd")  # hidden: never read, so no complaint
    (plugin / "node_modules").symlink_to("/usr/lib")  # build output: never entered
    done, _ = package(plugin, "--target", target)
    assert_refused(plugin, done, "2 files cannot go into the archive:",
                   "gone.txt is a symbolic link to nowhere.txt, which does not exist: remove the link",
                   "sub/loop is a symbolic link to .., a folder that holds the link itself")
    assert ".hidden-link" not in done.stderr and "node_modules" not in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", BOTH)
@pytest.mark.parametrize("raw_name, shown, phrase", [
    pytest.param(b"x\\..\\..\\evil.bat", "x\\..\\..\\evil.bat", "the name has a backslash", id="backslash"),
    pytest.param(b"sub/bad\xff.txt", "sub/bad\\xff.txt", "the file name is not valid UTF-8", id="not-utf8"),
    pytest.param(b"bad\xc3(/ok.txt", "bad\\xc3(", "the file name is not valid UTF-8", id="not-utf8-folder"),
])
def test_a_name_an_unpacker_could_misread_is_refused(raw_name, shown, phrase, target, project):
    plugin = project()
    path = os.fsencode(plugin) + b"/" + raw_name
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"x")
    done, _ = package(plugin, "--target", target)
    assert_refused(plugin, done, f"Error: {shown}: {phrase}", "rename it")
    assert not (plugin / "dist").exists()


@pytest.mark.timeout(60)
def test_a_dist_link_or_a_config_link_out_of_the_project_is_refused(project, tmp_path):
    plugin = project()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (plugin / "dist").symlink_to(elsewhere)
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "dist is a symbolic link to", "remove the link")
    assert list(elsewhere.iterdir()) == []
    (plugin / "dist").unlink()
    (tmp_path / "config.yml").write_bytes((plugin / "config.yml").read_bytes())
    (plugin / "config.yml").unlink()
    (plugin / "config.yml").symlink_to(tmp_path / "config.yml")
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "config.yml is a symbolic link to", "outside the project")


PRIVATE_KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
CERTIFICATE = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


def with_includes(plugin: pathlib.Path, *patterns: str) -> None:
    config = plugin / "config.yml"
    doc = yaml.safe_load(config.read_text())
    doc["package"]["include"] = list(patterns)
    config.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", BOTH)
def test_files_that_look_like_secrets_are_left_out_with_a_warning(target, project):
    plugin = project()
    (plugin / "keys").mkdir()
    for name, data in [("id_rsa", PRIVATE_KEY), ("id_rsa.pub", b"ssh-ed25519 AAAA me"), (".env", b"TOKEN=1"),
                       ("credentials.json", b"{}"), ("keys/deploy.txt", PRIVATE_KEY), ("keys/ca.pem", CERTIFICATE),
                       ("keys/client.key", b"binary")]:
        (plugin / name).write_bytes(data)
    done, archive = package(plugin, "--target", target)
    assert archive is not None, done.stderr
    assert {"id_rsa.pub", "keys/ca.pem"} <= set(archive.files)
    assert not {"id_rsa", ".env", "credentials.json", "keys/deploy.txt", "keys/client.key"} & set(archive.files)
    warning = next(line for line in done.stderr.splitlines() if "like secrets" in line)
    assert warning.startswith("Warning: left out 5 files that look like secrets: ")
    for named in (".env (environment variables)", "credentials.json (credentials)", "id_rsa (a private key)",
                  "keys/client.key (a private key)", "keys/deploy.txt (a private key)"):
        assert named in warning
    assert "list it under package.include in config.yml" in warning


@pytest.mark.timeout(60)
def test_package_include_lets_listed_files_in(project):
    plugin = project()
    (plugin / "keys").mkdir()
    (plugin / "keys" / "client.key").write_bytes(b"binary")
    (plugin / "id_rsa").write_bytes(PRIVATE_KEY)
    (plugin / ".env").write_bytes(b"MODE=prod")
    with_includes(plugin, "keys/*.key", ".env", "certs/")
    done, archive = package(plugin, "--target", "linux")
    assert archive is not None, done.stderr
    assert archive.files["keys/client.key"] == b"binary" and archive.files[".env"] == b"MODE=prod"
    assert "id_rsa" not in archive.files
    assert "left out 1 file that looks like a secret: id_rsa (a private key)." in done.stderr
    assert "package.include: 'certs/' matches no file" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("include", [["../outside.txt"], ["/etc/passwd"], "keys/*", [3]])
def test_package_include_must_name_paths_inside_the_project(include, project):
    plugin = project()
    config = plugin / "config.yml"
    doc = yaml.safe_load(config.read_text())
    doc["package"]["include"] = include
    config.write_text(yaml.safe_dump(doc))
    done, _ = package(plugin, "--target", "linux")
    assert_refused(plugin, done, "package.include:")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("extra, warned", [
    pytest.param(0, False, id="at-the-limit"),
    pytest.param(1, True, id="one-past"),
])
def test_a_large_file_is_warned_about(extra, warned, project):
    from flow_bridge.tools.package._files import LARGE_FILE

    plugin = project()
    with open(plugin / "model.bin", "wb") as fh:
        fh.truncate(LARGE_FILE + extra)
    done, archive = package(plugin, "--target", "windows")
    assert archive is not None, done.stderr
    assert len(archive.files["model.bin"]) == LARGE_FILE + extra
    line = f"Warning: model.bin is 10.0 MiB (over {LARGE_FILE >> 20} MiB)"
    assert (line in done.stderr) is warned, done.stderr
    if warned:
        assert "if the handler does not need it, move it out of the project" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", BOTH)
@pytest.mark.parametrize("had_dist", [pytest.param(False, id="new-dist"), pytest.param(True, id="old-archive")])
def test_nothing_partial_is_left_when_writing_fails(had_dist, target, project):
    """A file that goes away after it was chosen (here the handler's start removes it) fails the write."""
    plugin = project()
    (plugin / "vanishing.txt").write_text("here while the files are chosen")
    run = plugin / "run"
    run.write_text(run.read_text().replace("\nexec ", '\nrm -f "$here/vanishing.txt"\nexec ', 1))
    if had_dist:
        (plugin / "dist").mkdir()
        (plugin / "dist" / "older-1.0.0-linux.tar.gz").write_bytes(b"an older archive")
    done, _ = package(plugin, "--target", target)
    assert done.returncode == 1, done.stderr
    assert "Error: could not read vanishing.txt while writing the archive" in done.stderr
    assert "Package again" in done.stderr and "Traceback" not in done.stderr
    if had_dist:
        assert [p.name for p in (plugin / "dist").iterdir()] == ["older-1.0.0-linux.tar.gz"]
    else:
        assert not (plugin / "dist").exists()
