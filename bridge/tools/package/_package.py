"""`flow-bridge package`: check a plugin project, then write the archive the platform takes.

Theory of operation. `load_project` reads config.yml (through the same settings loader as
`run`, so a file `run` would refuse is refused here) and the `package:` section `init`
wrote: version, description, language. `check_project` makes sure the files the archive
needs are there, and `check_starts` starts the handler exactly as `run` would (the
same backend) and completes the protocol handshake with it (Go and Rust are built
first, outside the handshake's time limit). Before that, `select_files` (_files.py) has
chosen the files without leaving the project, so that a link or a name that must not go in
is refused before anything slow runs. Only then is an archive written, to DIR/dist/,
atomically: into a temporary file there, renamed into place when complete, and removed
(with dist/ itself, if package made it) when anything fails:

- windows: a zip of service.yml (Name, Version, Description, ConfigType, GroupName,
  Command), config.yml pointing at 127.0.0.1, and the handler's files. A Windows host
  cannot run `./run` (a sh script), so Command starts the handler directly: `python
  handler.py`, `node handler.js`, `handler.exe`, which Go cross-compiles here, or `java -jar
  handler.jar`, which Maven builds here.
- linux: a tar.gz of service.yml (Name, Version, Description, GroupName, Service: None),
  config.yml pointing at flow-engine, the handler's files, and a Dockerfile at the root,
  so `docker build - < archive.tar.gz` builds the image from the archive as it is.
  flow-bridge is not on PyPI yet, so the archive carries a wheel of the flow-bridge that
  made it in wheels/ (built from its checkout, or its installed files packed again),
  which the Dockerfile installs.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import click
import yaml

from flow_bridge import __version__
from flow_bridge.child import StartError
from flow_bridge.core import ConfigError, Settings, load_settings
from flow_bridge.tools._exit import fail, warn
from flow_bridge.tools.scaffold import (
    LANGS,
    ScaffoldError,
    check_plugin_name,
    installed_distribution,
    installed_from,
    render,
    running_from_checkout,
)

from ._errors import PackageError, PackageFailed, UnsafeFileError
from ._files import LARGE_FILE, Entry, Selection, check_includes, inside, select_files, shown
from ._service import (
    ServicePlugin,
    check_commands,
    has_plugin_list,
    linux_kind,
    load_plugins,
    windows_config,
    windows_start,
)

TARGETS = ("windows", "linux")
if sys.platform == "win32":
    # Binary, or the C runtime turns \r\n into \n as it reads. Windows has no flag against
    # following a link: there the links refused by select_files are the only guard.
    _READ_FLAGS = os.O_RDONLY | os.O_BINARY
else:
    _READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# Semantic versioning's X.Y.Z with an optional -prerelease; no leading zeros.
_NUMBER = r"(?:0|[1-9]\d*)"
_IDENT = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(rf"{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-{_IDENT}(?:\.{_IDENT})*)?")
HOSTS = {"windows": "127.0.0.1", "linux": "flow-engine"}
HOST_NOTES = {
    "windows": "the engine on this Windows host",
    "linux": "the engine's name on the platform's container network",
}
# Files each language's archive needs; `run` everywhere (the Linux image starts it).
REQUIRED = {
    "python": ("run", "handler.py"),
    "exec": ("run", "handler.py"),
    "node": ("run", "handler.js", "package.json"),
    "go": ("run", "build", "go.mod"),
    "rust": ("run", "build", "Cargo.toml", "src/main.rs"),
    "java": ("run", "build", "pom.xml"),
}
# How a Windows host starts the handler: no sh there, so not ./run.
WINDOWS_HANDLER = {
    "python": "python handler.py",
    "exec": "python handler.py",
    "node": "node handler.js",
    "go": "handler.exe",
    "java": "java -jar handler.jar",
}
# The oldest and newest times a zip entry can carry (its DOS date format).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_ZIP_END = (2107, 12, 31, 23, 59, 58)
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Project:
    dir: Path
    name: str
    version: str
    description: str
    lang: str
    settings: Settings
    config_text: str
    includes: tuple[str, ...] = ()
    # A service project (a plugins: list): every plugin; empty for a single plugin.
    plugins: tuple[ServicePlugin, ...] = ()

    @property
    def exec_mode(self) -> bool:
        return self.lang == "exec"

    def archive_name(self, target: str) -> str:
        return f"{self.name}-{self.version}-{target}.{'zip' if target == 'windows' else 'tar.gz'}"


def check_version(version: object, where: str) -> str:
    text = str(version).strip()
    if not _SEMVER.fullmatch(text):
        raise PackageError(
            f"{where}: {text!r} is not a version X.Y.Z (semantic versioning, like 1.0.0 or 1.2.0-beta.1; "
            "no leading zeros, no 'v'): pass --version 1.0.0, or set package.version in config.yml"
            + (" (quote it there, as \"1.0\" would be read as a number)" if isinstance(version, float) else "")
        )
    return text


def _section(doc: dict[str, Any], key: str, config: Path) -> dict[str, Any]:
    body = doc.get(key) or {}
    if not isinstance(body, dict):
        raise PackageError(f"{config}: '{key}' must be a mapping of settings")
    return body


def load_project(directory: Path, version: str | None = None, description: str | None = None) -> Project:
    """Read and check the project's config.yml: name, version, language, settings."""
    if not directory.is_dir():
        raise PackageError(f"{directory} is not a folder: name the plugin project's folder (made by flow-bridge init)")
    config = directory / "config.yml"
    if config.is_symlink() and not inside(directory, config):
        raise UnsafeFileError(
            f"{config} is a symbolic link to {os.readlink(config)}, outside the project: package reads only the "
            "project's own files; put the config.yml itself in the project"
        )
    if not config.is_file():
        raise PackageError(
            f"{directory} has no config.yml: run package in a project made by `flow-bridge init`, "
            "or give it a config.yml with flow-engine:, plugin: and package: sections"
        )
    try:
        settings = load_settings(str(config), environ={})
    except ConfigError as exc:
        raise PackageError(f"{exc}: fix config.yml and package again") from None
    text = config.read_text(encoding="utf-8")
    doc = yaml.safe_load(text) or {}
    plugin, flow, meta = (_section(doc, key, config) for key in ("plugin", "flow", "package"))
    plugins = load_plugins(config, doc, LANGS) if has_plugin_list(doc) else ()
    # A service is named by package.name, else by its first plugin.
    raw_name = meta.get("name", plugins[0].name) if plugins else plugin.get("name", flow.get("name"))
    try:
        name = check_plugin_name(None if raw_name is None else str(raw_name), f"{config}: plugin.name")
    except ScaffoldError as exc:
        if raw_name is None:
            raise PackageError(
                f"{config} gives the plugin no name: add `name: myPlugin` under `plugin:` "
                "(letters, digits, '-' and '_', starting with a letter)"
            ) from None
        raise PackageError(str(exc)) from None
    if version is not None:
        version = check_version(version, "--version")
    elif meta.get("version") is not None:
        version = check_version(meta["version"], f"{config}: package.version")
    else:
        raise PackageError(f"no version: pass --version X.Y.Z (like 1.0.0), or set package.version in {config}")
    lang = str(meta.get("lang", "")).strip()
    if lang not in LANGS:
        raise PackageError(
            f"{config}: package.lang is {lang or 'missing'}: set it to the handler's language, "
            f"one of {', '.join(LANGS)}, so that package knows how to start and build it"
        )
    if description is None:
        description = str(meta.get("description") or f"{name}, a flow-bridge plugin")
    includes = check_includes(meta.get("include"), f"{config}: package.include")
    return Project(dir=directory, name=name, version=version, description=description, lang=lang,
                   settings=settings, config_text=text, includes=includes, plugins=plugins)


def check_project(project: Project, target: str) -> None:
    """The files the archive needs are there, and the target can run this language."""
    if project.plugins:
        _check_service(project, target)
        return
    if target == "windows" and project.lang not in WINDOWS_HANDLER:
        raise PackageError(
            "the Rust adapter is Unix-only (it moves stdio with libc), so a Rust handler cannot run on a "
            "Windows host: package it with --target linux"
        )
    missing = [f for f in REQUIRED[project.lang] if not (project.dir / f).is_file()]
    if missing:
        raise PackageError(
            f"{project.dir} lacks {', '.join(missing)}, which a {project.lang} plugin needs: restore "
            f"{'it' if len(missing) == 1 else 'them'}, or compare with a fresh "
            f"`flow-bridge init NEWDIR --lang {project.lang} --name {project.name}`"
        )
    for name in ("run", "build"):
        path = project.dir / name
        if path.is_file() and not os.access(path, os.X_OK):
            raise PackageError(f"{path} is not executable: run `chmod +x {path}`")
    dist = project.dir / "dist"
    if dist.is_symlink():
        raise UnsafeFileError(
            f"{dist} is a symbolic link to {os.readlink(dist)}: package writes archives only into the project's "
            f"own dist/ folder; remove the link (rm {dist})"
        )
    if dist.exists() and not dist.is_dir():
        raise PackageError(f"{dist} is a file, but package writes its archives into a folder of that name: "
                           "move the file away")


def _check_service(project: Project, target: str) -> None:
    check_commands(project.dir, project.plugins)
    for plugin in project.plugins:
        if plugin.script:
            continue  # init --from-scripts: the script is all there is
        folder = project.dir / plugin.dir
        missing = [f for f in REQUIRED[plugin.lang] if not (folder / f).is_file()]
        if missing:
            raise PackageError(f"the plugin {plugin.name} lacks {', '.join(missing)} in {folder}, which a "
                               f"{plugin.lang} plugin needs: restore them")
        if target == "windows":
            windows_start(plugin, WINDOWS_HANDLER)
    if target == "linux":
        linux_kind(project.plugins)
    else:
        for plugin in project.plugins:
            windows_start(plugin, WINDOWS_HANDLER)


def _part(project: Project, plugin: ServicePlugin) -> Project:
    """One plugin of a service as a project of its own, for what is built per plugin."""
    return dataclasses.replace(project, dir=project.dir / plugin.dir, lang=plugin.lang, name=plugin.name,
                               settings=plugin.settings, plugins=())


# --- does it start? ----------------------------------------------------------------


def _build(project: Project) -> None:
    build = project.dir / "build"
    if project.lang not in ("go", "rust", "java") or not build.is_file():
        return
    done = subprocess.run([str(build.resolve())], stdin=subprocess.DEVNULL, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise PackageFailed(
            f"the handler does not build ({build} exited with status {done.returncode}; its output is above): "
            "fix what it says, check with `flow-bridge call -- ./run`, then package again"
        )


async def _start_and_stop(argv: list[str], settings: Settings, exec_mode: bool) -> None:
    """Start the handler as `run` does (the same backend, one copy), then stop it."""
    from flow_bridge.gateway import make_handler  # the gRPC side loads only when a package is made

    backend = make_handler(argv, dataclasses.replace(settings, workers=1, exec_mode=exec_mode))
    failed: StartError | None = None
    async with anyio.create_task_group() as tg:
        try:
            await backend.start(tg)  # a supervised child: through the handshake
        except StartError as exc:
            failed = exc
        else:
            await backend.stop(settings.grace)
        tg.cancel_scope.cancel()
    if failed is not None:
        raise failed


def check_starts(project: Project) -> None:
    """Build the handler if it needs it, then start it as `run` would and shake hands.

    Exec mode has no handshake: there, that the command can start is all there is to check.
    """
    if project.plugins:
        for plugin in project.plugins:
            argv = [str((project.dir / plugin.settings.command[0]).resolve()), *plugin.settings.command[1:]]
            call = f"flow-bridge call --plugin {plugin.name}"
            try:
                if not plugin.script:
                    _build(_part(project, plugin))
                anyio.run(_start_and_stop, argv, plugin.settings, plugin.settings.exec_mode)
            except StartError as exc:
                raise PackageFailed(f"the plugin {plugin.name} does not start: {exc}\nFix it, check with "
                                    f"`{call}` in {project.dir}, then package again") from None
        return
    run = str((project.dir / "run").resolve())
    call = "flow-bridge call -- ./run"
    try:
        _build(project)
        anyio.run(_start_and_stop, [run], project.settings, project.exec_mode)
    except StartError as exc:
        raise PackageFailed(
            f"the handler does not start: {exc}\nFix it, check with `{call}` in {project.dir}, then package again"
        ) from None


# --- what goes in -------------------------------------------------------------------


def choose_files(project: Project, say: Callable[[str], None]) -> Selection:
    """The project's files for the archive, with a warning for each kind of thing left out or too big."""
    selection = select_files(project.dir, project.includes)
    if selection.secrets:
        left = ", ".join(f"{shown(name)} ({what.value})" for name, what in selection.secrets)
        count = len(selection.secrets)
        what = "1 file that looks like a secret" if count == 1 else f"{count} files that look like secrets"
        say(f"left out {what}: {left}. If the handler needs one, list it under package.include in config.yml")
    for entry in selection.large:
        say(f"{entry.name} is {entry.size / (1 << 20):.1f} MiB (over {LARGE_FILE >> 20} MiB) and goes into the "
            "archive, to be uploaded with every version: if the handler does not need it, move it out of the "
            "project")
    if selection.special:
        say(f"left out {', '.join(map(shown, selection.special))}: not a regular file or folder")
    for pattern in selection.unused_includes:
        say(f"package.include: {pattern!r} matches no file in {project.dir} (a hidden folder or build output is "
            "never entered)")
    return selection


def config_for(text: str, host: str, note: str = "") -> str:
    """config.yml with flow-engine.host set to `host` (and `note` as its comment).

    The one line is edited (or added) in place, so that the operator sees the file as it
    was written, comments and all; a layout too unusual for that is written out anew.
    """
    doc = yaml.safe_load(text) or {}
    engine = doc.get("flow-engine")
    want = {**doc, "flow-engine": {**(engine if isinstance(engine, dict) else {}), "host": host}}
    comment = f"  # {note}" if note else ""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    section = next((i for i, line in enumerate(lines) if re.match(r"flow-engine:\s*(#.*)?$", line)), None)
    if section is None:
        lines += ["flow-engine:\n", f"  host: {host}{comment}\n"]
    else:
        end = next((i for i in range(section + 1, len(lines)) if re.match(r"[^\s#]", lines[i])), len(lines))
        block = range(section + 1, end)
        found = next((i for i in block if re.match(r"\s+host:", lines[i])), None)
        if found is not None:
            indent = re.match(r"\s+", lines[found])
            lines[found] = f"{indent.group(0) if indent else '  '}host: {host}{comment}\n"
        else:
            first = next((re.match(r"\s+", lines[i]) for i in block if lines[i].strip()), None)
            lines.insert(section + 1, f"{first.group(0) if first else '  '}host: {host}{comment}\n")
    edited = "".join(lines)
    try:
        if yaml.safe_load(edited) == want:
            return edited
    except yaml.YAMLError:
        pass
    name = want.get("plugin", {}).get("name", "the plugin") if isinstance(want.get("plugin"), dict) else "the plugin"
    return f"# flow-bridge settings for {name}\n" + yaml.safe_dump(want, sort_keys=False, allow_unicode=True)


def service_yml(project: Project, target: str) -> str:
    fields: dict[str, str] = {"Name": project.name, "Version": project.version, "Description": project.description}
    if target == "windows":
        fields["ConfigType"] = "config.yml"
        fields["GroupName"] = "server"
        fields["Command"] = windows_command(project)
    else:
        fields["GroupName"] = "server"
        fields["Service"] = "None"
    return yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=1 << 16)


def windows_command(project: Project) -> str:
    if project.plugins:
        return "flow-bridge run --config config.yml"  # every plugin of the list, each with its own command
    mode = " --exec" if project.exec_mode else ""
    return f"flow-bridge run{mode} --config config.yml -- {WINDOWS_HANDLER[project.lang]}"


def linux_command(project: Project) -> list[str]:
    if project.plugins:
        return ["flow-bridge", "run", "--config", "config.yml"]
    return ["flow-bridge", "run", *(["--exec"] if project.exec_mode else []), "--config", "config.yml", "--", "./run"]


def image_name(project: Project) -> str:
    return f"{project.name.lower()}:{project.version}"


_PLAIN_PATH = re.compile(r"[A-Za-z0-9._/*-]+")


def _in(folder: str, path: str) -> str:
    """`path` inside a plugin's folder, as the Dockerfile names it ("." is the project itself)."""
    return path if folder == "." else f"{folder}/{path}"


def _dest(folder: str) -> str:
    """A plugin's folder as a COPY destination (a folder: with its '/')."""
    return "./" if folder == "." else f"{folder}/"


def _copy(source: str, dest: str, stage: str = "") -> str:
    """A COPY line; the JSON form when a path holds anything a plain COPY would split or misread."""
    flag = f"--from={stage} " if stage else ""
    if _PLAIN_PATH.fullmatch(source) and _PLAIN_PATH.fullmatch(dest):
        return f"COPY {flag}{source} {dest}"
    return f"COPY {flag}[{json.dumps(source)}, {json.dumps(dest)}]"


def _run_in(folder: str, command: str) -> str:
    return f"RUN {command}" if folder == "." else f"RUN cd {shlex.quote(folder)} && {command}"


def _build_lines(lang: str, folders: list[str]) -> tuple[list[str], list[str]]:
    """(build stage lines, final stage lines) building each plugin of `lang` in its own folder.

    A service's plugins live in plugins/NAME/, each with its own go.mod, Cargo.toml,
    pom.xml or package.json, so each is built there and its output copied to where its
    ./run looks for it. For the project itself (".") the lines are the single plugin's.
    """
    build: list[str] = []
    built: list[str] = []
    for folder in folders:
        out_dir = "/out" if folder == "." else f"/out/{folder}"
        out = f"{out_dir}/handler"
        if lang == "go":
            build.append(_run_in(folder, f"CGO_ENABLED=0 go build -buildvcs=false -trimpath -o {shlex.quote(out)} ."))
            built.append(_copy(out, _in(folder, ".bin/handler"), "build"))
        elif lang == "rust":
            if folder == ".":
                build.append("RUN cargo build --release --locked && cp target/release/handler /handler")
                built.append(_copy("/handler", "target/release/handler", "build"))
            else:
                build.append(_run_in(folder, f"cargo build --release --locked && mkdir -p {shlex.quote(out_dir)} && "
                                             f"cp target/release/handler {shlex.quote(out)}"))
                built.append(_copy(out, _in(folder, "target/release/handler"), "build"))
        elif lang == "java":
            build.append(_run_in(folder, "mvn -B -ntp -q -f adapter/pom.xml -DskipTests install && "
                                         "mvn -B -ntp -q package"))
            for item in ("target/handler.jar", "target/lib"):
                built.append(_copy(f"/src/{_in(folder, item)}", _in(folder, item), "build"))
        elif lang == "node":
            build.append(_copy(_in(folder, "package*.json"), _dest(folder)))
            build.append(_run_in(folder, "npm install --omit=dev --no-audit --no-fund && mkdir -p node_modules"))
            built.append(_copy(f"/src/{_in(folder, 'node_modules')}", f"./{_in(folder, 'node_modules')}", "node"))
    return build, built


def _requirements(project: Project) -> str:
    """Lines installing every requirements.txt of the project's Python and exec plugins (none: none)."""
    if project.plugins:
        folders = [".", *(p.dir for p in project.plugins if p.lang in ("python", "exec"))]
    else:
        folders = ["."] if project.lang in ("python", "exec") else []
    folders = [folder for folder in dict.fromkeys(folders) if (project.dir / folder / "requirements.txt").is_file()]
    if not folders:
        return ""
    files = [_in(folder, "requirements.txt") for folder in folders]
    lines = ["# The handlers' own Python packages." if project.plugins else "# The handler's own Python packages."]
    lines += [_copy(file, _dest(folder)) for file, folder in zip(files, folders, strict=True)]
    lines.append("RUN pip install --no-cache-dir " + " ".join(f"-r {shlex.quote(file)}" for file in files))
    return "\n".join(lines) + "\n"


def dockerfile(project: Project, wheel: str | None) -> str:
    kind = linux_kind(project.plugins) if project.plugins else ("python" if project.lang == "exec" else project.lang)
    dockerfiles = resources.files("flow_bridge.tools.scaffold") / "templates" / "docker"
    template = (dockerfiles / f"{kind}.Dockerfile").read_text("utf-8")
    if wheel is not None:
        install = (
            "# flow-bridge is not on PyPI yet: the archive carries a wheel of the flow-bridge that made it\n"
            "# (wheels/), and pip fetches its dependencies (grpcio, msgpack, ...) from PyPI.\n"
            "COPY wheels/ /tmp/wheels/\n"
            "RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels"
        )
    else:
        install = f'RUN pip install --no-cache-dir "flow-bridge=={__version__}"'
    folders = list(dict.fromkeys(p.dir for p in project.plugins if p.lang == kind and not p.script)) \
        if project.plugins else ["."]
    build, built = _build_lines(kind, folders)
    go_version = "1.22"
    go_mod = project.dir / folders[0] / "go.mod" if folders else project.dir / "go.mod"
    if kind == "go" and go_mod.is_file():
        match = re.search(r"^go\s+(\d+\.\d+)", go_mod.read_text(encoding="utf-8"), re.M)
        go_version = match.group(1) if match else go_version
    cmd = "[" + ", ".join(f'"{part}"' for part in linux_command(project)) + "]"
    return render(template, {
        "name": project.name, "version": project.version, "image": image_name(project),
        "archive": project.archive_name("linux"), "install": install, "cmd": cmd, "go_version": go_version,
        "build": "\n".join(build), "built": "\n".join(built), "requirements": _requirements(project),
    })


def build_wheel(dest: Path) -> Path | None:
    """A wheel of the flow-bridge that runs this; None when there is no way to make one.

    Run from a source checkout (editable), it is built from the checkout; installed, it is
    the installed files packed again as they are; failing that, it is built from the
    folder pip installed it from.
    """
    dest.mkdir(parents=True, exist_ok=True)
    checkout = running_from_checkout()
    if checkout is not None:
        return _wheel_from_source(checkout, dest)
    return _repack_installed(dest) or (_wheel_from_source(root, dest) if (root := installed_from()) else None)


def _wheel_from_source(root: Path, dest: Path) -> Path | None:
    def skip(folder: str, names: list[str]) -> set[str]:
        # Caches and build output; `build` and `dist` only at the top (templates have `build` files).
        dirs = {"node_modules", "target", "__pycache__"} | ({"build", "dist"} if Path(folder) == root else set())
        return {n for n in names if n.startswith(".") or n.endswith((".pyc", ".egg-info"))
                or (n in dirs and os.path.isdir(os.path.join(folder, n)))}

    with tempfile.TemporaryDirectory(prefix="flow-bridge-wheel-") as tmp:
        # A copy, so that the build writes nothing into the checkout.
        source = Path(tmp) / "src"
        shutil.copytree(root, source, ignore=skip, symlinks=True)
        base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
                "-w", str(dest)]
        for extra in (["--no-build-isolation"], []):  # offline first; isolation needs PyPI
            done = subprocess.run([*base, *extra, str(source)], stdin=subprocess.DEVNULL, stdout=sys.stderr,
                                  stderr=subprocess.PIPE, text=True, check=False)
            if done.returncode == 0:
                break
        else:
            raise PackageFailed(
                f"could not build a wheel of flow-bridge from {root} for the image:\n{done.stderr.strip()}\n"
                "install setuptools (pip install 'setuptools>=68'), or pass --wheel with a flow-bridge wheel"
            )
    wheels = sorted(dest.glob("flow_bridge-*.whl"))
    return wheels[-1] if wheels else None


# Written by the installer, not part of the wheel; RECORD is written anew.
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _repack_installed(dest: Path) -> Path | None:
    """The installed flow-bridge as a wheel again: its files as RECORD lists them."""
    dist = installed_distribution()
    if dist is None:
        return None  # an editable install: no installed files of its own
    files = dist.files or []
    info = next((f.parent.as_posix() for f in files if f.name == "WHEEL" and f.parent.name.endswith(".dist-info")),
                None)
    if info is None:
        return None  # not installed from a wheel (an egg-info): no WHEEL file to carry over
    record: list[str] = []
    wheel = dest / f"{info.removesuffix('.dist-info')}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in files:
            name = file.as_posix()
            # Console scripts live outside site-packages (../../bin) and are made again on install.
            if name.startswith("../") or "__pycache__/" in name or name.endswith(".pyc"):
                continue
            if name.startswith(f"{info}/") and file.name in _INSTALLER_FILES:
                continue
            data = Path(str(dist.locate_file(file))).read_bytes()
            zf.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def _cross_compile_go(project: Project, out: Path) -> Path:
    if shutil.which("go") is None:
        raise PackageFailed(
            "packaging a Go handler for Windows cross-compiles handler.exe, which needs Go here: "
            "install Go 1.22 or later (https://go.dev/dl/)"
        )
    exe = out / "handler.exe"
    env = {**os.environ, "GOOS": "windows", "GOARCH": "amd64", "CGO_ENABLED": "0"}
    done = subprocess.run(["go", "build", "-buildvcs=false", "-trimpath", "-o", str(exe), "."], cwd=project.dir,
                          env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise PackageFailed("cross-compiling handler.exe for Windows failed (output above): fix it, then package again")
    return exe


def _java_jars(project: Project) -> list[Entry]:
    """The jar that check_starts built, and its class path: handler.jar and lib/ at the root,
    where the jar's manifest looks for lib/ (a Windows host has Java, not Maven)."""
    target = project.dir / "target"
    jar = target / "handler.jar"
    if not jar.is_file():
        raise PackageFailed(f"{jar} was not built: run ./build and check what it says, then package again")
    entries = [Entry(source=jar, name="handler.jar", size=jar.stat().st_size)]
    for lib in sorted((target / "lib").glob("*.jar")):
        entries.append(Entry(source=lib, name=f"lib/{lib.name}", size=lib.stat().st_size))
    return entries


# --- writing the archive ------------------------------------------------------------


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    when = tuple(time.localtime(mtime)[:6])
    return min(max(when, _ZIP_EPOCH), _ZIP_END)  # type: ignore[return-value]


class _Archive:
    """Entries of a zip or a tar.gz, added as files or text, at the archive's root.

    Files are stored as regular files only, read through a descriptor opened without
    following links, so that what was checked is what goes in.
    """

    def __init__(self, fileobj: io.BufferedRandom, target: str) -> None:
        self.target = target
        self.names: list[str] = []
        if target == "windows":
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(fileobj, "w", zipfile.ZIP_DEFLATED)
            self._tar: tarfile.TarFile | None = None
        else:
            self._zip = None
            self._tar = tarfile.open(fileobj=fileobj, mode="w:gz", format=tarfile.PAX_FORMAT)

    def add_file(self, entry: Entry) -> None:
        try:
            fd = os.open(entry.source, _READ_FLAGS)
        except OSError as exc:
            raise PackageFailed(f"could not read {entry.name} while writing the archive ({exc.strerror}); did "
                                "something change the project meanwhile? Package again") from None
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise PackageFailed(f"{entry.name} stopped being a regular file while the archive was written: "
                                    "package again")
            mode = 0o755 if info.st_mode & 0o111 else 0o644
            self.names.append(entry.name)
            try:
                self._write(fh, entry.name, info.st_size, info.st_mtime, mode)
            except (OSError, tarfile.TarError) as exc:
                raise PackageFailed(f"could not read {entry.name} while writing the archive ({exc}); did something "
                                    "change the project meanwhile? Package again") from None

    def _write(self, fh: io.BufferedReader, name: str, size: int, mtime: float, mode: int) -> None:
        if self._zip is not None:
            zinfo = zipfile.ZipInfo(name, _zip_time(mtime))
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            zinfo.external_attr = (stat.S_IFREG | mode) << 16
            zinfo.file_size = size
            with self._zip.open(zinfo, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as out:
                shutil.copyfileobj(fh, out, _COPY_CHUNK)
        else:
            assert self._tar is not None
            tinfo = tarfile.TarInfo(name)
            tinfo.size = size
            tinfo.mtime = int(mtime)
            tinfo.mode = mode
            self._tar.addfile(tinfo, fh)

    def add_text(self, name: str, text: str) -> None:
        self.names.append(name)
        data = text.encode("utf-8")
        if self._zip is not None:
            zinfo = zipfile.ZipInfo(name, _zip_time(time.time()))
            zinfo.external_attr = (stat.S_IFREG | 0o644) << 16
            self._zip.writestr(zinfo, data, zipfile.ZIP_DEFLATED)
        else:
            assert self._tar is not None
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()


def write_archive(project: Project, target: str, selection: Selection,
                  wheel: Path | None = None) -> tuple[Path, list[str]]:
    """Write DIR/dist/<name>-<version>-<target>.<ext>; return its path and entry names.

    On any failure nothing is left: no partial file, and no dist/ if this call made it.
    """
    dist = project.dir / "dist"
    final = dist / project.archive_name(target)
    made_dist = not dist.exists()
    with tempfile.TemporaryDirectory(prefix="flow-bridge-package-") as tmp:
        work = Path(tmp)
        extra: list[Entry] = []
        parts: list[tuple[Project, ServicePlugin | None]] = [
            (_part(project, p), p) for p in project.plugins if not p.script] or [(project, None)]
        for part, plugin in parts:
            prefix = "" if plugin is None or plugin.dir == "." else f"{plugin.dir}/"
            if target == "windows" and part.lang == "go":
                exe = _cross_compile_go(part, Path(tempfile.mkdtemp(dir=work)))
                extra.append(Entry(source=exe, name=f"{prefix}handler.exe", size=exe.stat().st_size))
            if target == "windows" and part.lang == "java":
                extra += [dataclasses.replace(entry, name=prefix + entry.name) for entry in _java_jars(part)]
        if target == "linux":
            if wheel is None:
                wheel = build_wheel(work / "wheels")
            if wheel is not None:
                extra.append(Entry(source=wheel, name=f"wheels/{wheel.name}", size=wheel.stat().st_size))
            else:
                warn("found no flow-bridge files or source checkout to make a wheel of: the Dockerfile "
                     f"installs flow-bridge=={__version__} from PyPI (or pass --wheel)")
        dist.mkdir(exist_ok=True)
        # A name of our own in dist/, made with O_EXCL: never a file or link that was there.
        fd, partial = tempfile.mkstemp(dir=dist, prefix=f".{final.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "w+b") as fh:
                archive = _Archive(fh, target)
                try:
                    archive.add_text("service.yml", service_yml(project, target))
                    config_text = project.config_text
                    if project.plugins and target == "windows":
                        config_text = windows_config(config_text, project.plugins, WINDOWS_HANDLER)
                    archive.add_text("config.yml", config_for(config_text, HOSTS[target], HOST_NOTES[target]))
                    if target == "linux":
                        archive.add_text("Dockerfile", dockerfile(project, wheel.name if wheel else None))
                    for entry in [*selection.entries, *extra]:
                        archive.add_file(entry)
                finally:
                    archive.close()
            os.chmod(partial, 0o644)
            os.replace(partial, final)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            if made_dist:
                with contextlib.suppress(OSError):
                    dist.rmdir()
            raise
    return final, archive.names


def package(directory: Path, target: str, version: str | None = None, description: str | None = None,
            wheel: Path | None = None, say: Callable[[str], None] = warn) -> tuple[Project, Path, list[str]]:
    """Check everything (files first: they are quick), then write the archive."""
    project = load_project(directory, version, description)
    check_project(project, target)
    selection = choose_files(project, say)
    check_starts(project)
    path, names = write_archive(project, target, selection, wheel)
    return project, path, names


# --- the command -------------------------------------------------------------------


@click.command("package")
@click.argument("directory", default=".", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--target", type=click.Choice(TARGETS), required=True,
              help="windows: a zip the platform runs with Command; linux: a tar.gz with a Dockerfile.")
@click.option("--version", "version", help="X.Y.Z [package.version in config.yml].")
@click.option("--description", help="The service's description [package.description in config.yml].")
@click.option("--wheel", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="linux: the flow-bridge wheel to put in the image [built from this flow-bridge's checkout].")
def package_command(directory: Path, target: str, version: str | None, description: str | None,
                    wheel: Path | None) -> None:
    """Check the plugin project in DIRECTORY [.] and write its archive to DIRECTORY/dist/.

    The checks: a valid name, a X.Y.Z version, the required files, a config.yml that
    parses, files that stay inside the project, and a handler that starts and completes
    the handshake. Files that look like secrets are left out unless package.include in
    config.yml lists them. Exit status: 0 written, 1 the handler failed to build or start,
    2 the project must change first.
    """
    try:
        project, path, names = package(directory, target, version, description, wheel)
    except PackageError as exc:
        fail(str(exc), exc.exit_code)
    click.echo(str(path))
    shown_names = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    click.echo(f"  {len(names)} files: {shown_names}", err=True)
    if target == "linux":
        click.echo(f"  build the image: docker build -t {image_name(project)} - < {path}", err=True)


__all__ = ["PackageError", "PackageFailed", "Project", "UnsafeFileError", "load_project", "package",
           "package_command"]
