"""`flow-bridge init`: write a working plugin project from the templates in templates/.

Theory of operation. templates/common/ holds what every project gets (config.yml, a
README, a .gitignore) and templates/<lang>/ what one language adds (the handler, its `run`
file, for Go and Rust a `build` file). Each file is copied with `{{key}}` placeholders
filled in; `notes.md` is not a file of its own but the language's part of the README.

A project must work outside this repository, and the Node.js, Go and Rust adapters are
not published to any registry yet. So `init` copies the adapter's source into the
project (DIR/adapter/), from the flow-bridge source checkout that this module runs from
or was pip-installed from (or --adapters): the project then builds offline, and `flow-bridge package` can put all
of it into an archive. A reference by absolute path would break as soon as the project
moved to another machine. The Python adapter comes with flow-bridge itself, and exec
mode needs none. Go and Rust handlers are built once at the end, so that the first
`flow-bridge call -- ./run` is not spent compiling within the handshake's time limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import click

from flow_bridge.core import check_plugin_name as core_plugin_name
from flow_bridge.tools._exit import Exit, fail, warn

LANGS = ("python", "node", "go", "rust", "java", "exec")
TYPES = ("service", "user")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
EXECUTABLES = ("run", "build")


class ScaffoldError(Exception):
    """A project cannot be written; the message says what to change."""


def check_plugin_name(name: str | None, where: str = "--name") -> str:
    """The name, if the platform accepts it; else ScaffoldError saying how to fix it.

    core's rule is also what keeps the name safe everywhere it ends up: a file name, a
    Docker image name (lower-cased), a Go module, a Cargo package, a Maven artifact."""
    if name is None or not name.strip():
        raise ScaffoldError(
            f"{where}: the plugin needs a name, the one the platform and the engine know it by: "
            "give one like --name myPlugin (letters, digits, '-' and '_', starting with a letter)"
        )
    try:
        return core_plugin_name(name)  # the platform's rule, as `run` applies it
    except ValueError as exc:
        raise ScaffoldError(f"{where}: {exc}") from None


# --- where the adapters come from --------------------------------------------------


def _is_checkout(root: Path) -> bool:
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return bool(project.get("name") == "flow-bridge")


# flow_bridge itself: this module is flow_bridge/tools/scaffold/_scaffold.py.
_PACKAGE_DIR = Path(__file__).resolve().parents[2]


def running_from_checkout() -> Path | None:
    """The source tree this module runs from, in an editable install; else None."""
    root = _PACKAGE_DIR.parent
    return root if _is_checkout(root) else None


def installed_distribution() -> metadata.Distribution | None:
    """The installed distribution whose files are the ones running now (not a stray egg-info)."""
    here = _PACKAGE_DIR / "__init__.py"
    for dist in metadata.distributions(name="flow-bridge"):
        for file in dist.files or []:
            if file.as_posix() == "flow_bridge/__init__.py" and Path(str(dist.locate_file(file))).resolve() == here:
                return dist
    return None


def installed_from() -> Path | None:
    """The local folder pip installed this flow-bridge from (its direct_url.json), if it still is one."""
    dist = installed_distribution()
    try:
        text = dist.read_text("direct_url.json") if dist is not None else None
        info = json.loads(text) if text else {}
    except ValueError:
        return None
    url = info.get("url", "") if isinstance(info, dict) else ""
    if not url.startswith("file:") or "dir_info" not in info:
        return None
    root = Path(url2pathname(urlparse(url).path))
    return root if _is_checkout(root) else None


def source_checkout() -> Path | None:
    """A flow-bridge source tree: the one this module runs from, or the one it was installed from."""
    return running_from_checkout() or installed_from()


# A file whose presence shows that a folder holds the adapter of that language.
_ADAPTER_MARKERS = {"node": "package.json", "go": "go.mod", "rust": "Cargo.toml", "java": "pom.xml"}


def adapter_source(lang: str, adapters: Path | None = None) -> Path:
    """The folder with the `lang` adapter's source: adapters/<lang> under --adapters or the checkout."""
    if adapters is None:
        root = source_checkout()
        if root is None:
            raise ScaffoldError(
                f"the {lang} adapter's source is not installed with this flow-bridge (a wheel carries only the "
                "Python adapter): install flow-bridge from its source checkout (pip install path/to/flow-bridge), "
                "or pass --adapters path/to/flow-bridge/adapters"
            )
        adapters = root / "adapters"
    folder = adapters / lang
    if not (folder / _ADAPTER_MARKERS[lang]).is_file():
        raise ScaffoldError(
            f"{folder} does not hold the {lang} adapter (no {_ADAPTER_MARKERS[lang]}): "
            "pass --adapters with the adapters/ folder of a flow-bridge checkout"
        )
    return folder


def _adapter_files(lang: str, source: Path) -> Iterator[tuple[Path, str]]:
    """(source file, path inside the copy) for what a build of the adapter needs; no tests."""
    if lang == "node":
        # The package's own list of what it publishes, plus package.json itself.
        manifest = json.loads((source / "package.json").read_text(encoding="utf-8"))
        entries = ["package.json", *manifest.get("files", ["index.js", "lib/"])]
        for entry in entries:
            path = source / entry.rstrip("/")
            if path.is_file():
                yield path, entry
            elif path.is_dir():
                for sub in sorted(path.rglob("*")):
                    if sub.is_file() and "node_modules" not in sub.parts:
                        yield sub, sub.relative_to(source).as_posix()
    elif lang == "go":
        for path in sorted(source.iterdir()):
            keep = (path.suffix == ".go" and not path.name.endswith("_test.go")) or path.name in (
                "go.mod", "go.sum", "README.md", "LICENSE")
            if path.is_file() and keep:
                yield path, path.name
    elif lang == "rust":
        for name in ("Cargo.toml", "README.md", "LICENSE"):
            if (source / name).is_file():
                yield source / name, name
        for sub in sorted((source / "src").rglob("*")):
            if sub.is_file():
                yield sub, sub.relative_to(source).as_posix()
    elif lang == "java":
        for name in ("pom.xml", "README.md", "LICENSE"):
            if (source / name).is_file():
                yield source / name, name
        # The library's sources and resources (its SLF4J provider file); not its tests.
        for sub in sorted((source / "src" / "main").rglob("*")):
            if sub.is_file():
                yield sub, sub.relative_to(source).as_posix()


def library_manifest(text: str) -> str:
    """A Cargo.toml without its [[example]], [[test]], [[bench]] and dev-dependency tables.

    The adapter's manifest names an example elsewhere in the repository; its copy must
    stand alone. Comments just above a dropped table go with it.
    """
    dropped = ("[[example]]", "[[test]]", "[[bench]]", "[dev-dependencies]")
    out: list[str] = []
    pending: list[str] = []  # comments and blank lines, kept only if what follows is kept
    keep = True
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            keep = not stripped.startswith(dropped)
            if keep:
                out += pending
                out.append(line)
            pending = []
        elif not stripped or stripped.startswith("#"):
            pending.append(line)
        elif keep:
            out += pending
            out.append(line)
            pending = []
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n"


def rust_lockfile(adapter_lock: str, crate: str) -> str:
    """The project's Cargo.lock: the versions the adapter was tested with, plus the project.

    With it the first build needs no registry index and picks nothing newer than tested;
    cargo rewrites it if anything is off.
    """
    lock = tomllib.loads(adapter_lock)
    packages = [p for p in lock.get("package", []) if p.get("name") != crate]
    if not any(p.get("name") == "serde_json" for p in packages):
        raise ScaffoldError("the Rust adapter's Cargo.lock has no serde_json entry")
    packages.append({"name": crate, "version": "0.1.0", "dependencies": ["flow-bridge-adapter", "serde_json"]})
    packages.sort(key=lambda p: (p["name"], p["version"]))
    lines = [
        "# This file is automatically @generated by Cargo.",
        "# It is not intended for manual editing.",
        f"version = {lock.get('version', 4)}",
    ]
    for p in packages:
        lines += ["", "[[package]]"]
        for key in ("name", "version", "source", "checksum"):
            if key in p:
                lines.append(f"{key} = {json.dumps(p[key])}")
        if p.get("dependencies"):
            lines.append("dependencies = [")
            lines += [f" {json.dumps(d)}," for d in p["dependencies"]]
            lines.append("]")
    return "\n".join(lines) + "\n"


def _inside(folder: Path, path: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(folder.resolve())


def copy_adapter(lang: str, source: Path, dest: Path) -> list[Path]:
    """Copy the adapter's files into dest, never reading outside source nor writing outside dest."""
    written = []
    for path, relative in _adapter_files(lang, source):
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts or not _inside(source, path):
            raise ScaffoldError(
                f"{path} leads outside the {lang} adapter's folder {source} (a link, or a '..' in its "
                "package.json files list): init copies only the adapter's own files; fix that entry"
            )
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if lang == "rust" and relative == "Cargo.toml":
            target.write_text(library_manifest(path.read_text(encoding="utf-8")), encoding="utf-8")
        else:
            shutil.copyfile(path, target)
        written.append(target)
    return written


# --- the templates -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """What `init` was asked for."""

    dir: Path
    lang: str
    name: str
    type: str = "service"


def _templates() -> Traversable:
    return resources.files("flow_bridge.tools.scaffold") / "templates"


def _walk(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__" or entry.name.endswith(".pyc"):
            continue
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        else:
            yield f"{prefix}{entry.name}", entry


def render(text: str, values: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{{key}}}}} has no value")
        return values[key]

    return _PLACEHOLDER.sub(fill, text)


_ABOUT = {
    "python": "Its handler, `handler.py`, is written with flow-bridge's Python adapter.",
    "node": "Its handler, `handler.js`, is written with flow-bridge's Node.js adapter (a copy in `adapter/`).",
    "go": "Its handler, `main.go`, is written with flow-bridge's Go adapter (a copy in `adapter/`).",
    "rust": "Its handler, `src/main.rs`, is written with flow-bridge's Rust adapter (a copy in `adapter/`).",
    "java": "Its handler, `src/main/java/plugin/Handler.java`, is written with flow-bridge's Java adapter "
            "(a copy in `adapter/`).",
    "exec": "Its handler, `handler.py`, is a plain script that flow-bridge runs once per task (exec mode).",
}
_FILES = {
    "python": [("handler.py", "the handler: `execute` answers each task"),
               ("requirements.txt", "Python packages the handler needs besides flow-bridge")],
    "exec": [("handler.py", "the handler: reads one task as JSON on stdin, prints the result on stdout"),
             ("requirements.txt", "Python packages the script needs")],
    "node": [("handler.js", "the handler: `execute` answers each task"),
             ("package.json", "the handler's npm package (add dependencies here)"),
             ("adapter/", "a copy of flow-bridge's Node.js adapter")],
    "go": [("main.go", "the handler: `execute` answers each task"),
           ("go.mod", "the Go module; a `replace` line points at adapter/"),
           ("build", "builds .bin/handler when a source is newer; `run` calls it"),
           ("adapter/", "a copy of flow-bridge's Go adapter")],
    "rust": [("src/main.rs", "the handler: `execute` answers each task"),
             ("Cargo.toml, Cargo.lock", "the crate; the adapter is a path dependency"),
             ("build", "builds target/release/handler when a source is newer; `run` calls it"),
             ("adapter/", "a copy of flow-bridge's Rust adapter")],
    "java": [("src/main/java/plugin/Handler.java", "the handler: `execute` answers each task"),
             ("pom.xml", "the Maven project; it depends on the adapter that ./build installs from adapter/"),
             ("build", "builds target/handler.jar when a source is newer; `run` calls it"),
             ("adapter/", "a copy of flow-bridge's Java adapter")],
}


def _values(spec: Spec, notes: str) -> dict[str, str]:
    lower = spec.name.lower()
    return {
        "name": spec.name,
        "type": spec.type,
        "lang": spec.lang,
        "exec": "true" if spec.lang == "exec" else "false",
        "npm_name": lower,
        "go_module": lower,
        "crate_name": lower,
        "java_artifact": lower,
        "about": _ABOUT[spec.lang],
        # No --exec for exec projects: their config.yml says `exec: true`, and flow-bridge
        # reads ./config.yml.
        "call": "flow-bridge call -- ./run",
        "call_config": "flow-bridge call --config-json '{\"name\": \"flow\"}' -- ./run",
        "run": "flow-bridge run --config config.yml -- ./run",
        "package": "\n".join(
            f"flow-bridge package . --target {target:<8}  # dist/{spec.name}-0.1.0-{target}.{ext}"
            for target, ext in (("linux", "tar.gz"), ("windows", "zip"))
            if target == "linux" or spec.lang != "rust"
        ),
        "files": "".join(f"| `{f}` | {what} |\n" for f, what in _FILES[spec.lang]),
        "notes": notes.strip() + "\n",
    }


def write_project(spec: Spec, adapters: Path | None = None) -> list[Path]:
    """Write every file of a new project into spec.dir; return them."""
    if spec.lang not in LANGS:
        raise ScaffoldError(f"--lang: {spec.lang!r} is not one of {', '.join(LANGS)}")
    if spec.type not in TYPES:
        raise ScaffoldError(f"--type: {spec.type!r} must be service or user")
    check_plugin_name(spec.name)
    if spec.dir.is_symlink() and not spec.dir.exists():
        raise ScaffoldError(
            f"{spec.dir} is a symbolic link to {os.readlink(spec.dir)}, which does not exist: init writes a new "
            "project into a folder; name a new folder, or create the folder the link points to first"
        )
    if spec.dir.exists() and (not spec.dir.is_dir() or any(spec.dir.iterdir())):
        raise ScaffoldError(
            f"{spec.dir} already exists and is not an empty folder: init writes a new project; "
            "name a new or empty folder"
        )
    source = adapter_source(spec.lang, adapters) if spec.lang in _ADAPTER_MARKERS else None
    templates = _templates()
    lang_files = dict(_walk(templates / spec.lang))
    notes = lang_files.pop("notes.md").read_text(encoding="utf-8")
    values = _values(spec, notes)
    made_dir = not spec.dir.exists()
    written: list[Path] = []
    try:
        _write_files(spec, templates, lang_files, values, source, written)
    except BaseException as exc:
        # Nothing half-made is left: the folder goes if init made it, else what init wrote in it.
        if made_dir:
            shutil.rmtree(spec.dir, ignore_errors=True)
        elif spec.dir.is_dir():  # it was empty before init began, so all that is in it is init's
            for path in spec.dir.iterdir():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ScaffoldError(f"cannot write the project into {spec.dir}: {exc.strerror or exc} "
                                f"({exc.filename}): name a folder you can write to") from None
        raise
    return written


def _write_files(spec: Spec, templates: Traversable, lang_files: dict[str, Traversable], values: dict[str, str],
                 source: Path | None, written: list[Path]) -> None:
    spec.dir.mkdir(parents=True, exist_ok=True)
    for relative, entry in [*_walk(templates / "common"), *lang_files.items()]:
        target = spec.dir / (".gitignore" if relative == "gitignore" else relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(entry.read_text(encoding="utf-8"), values), encoding="utf-8")
        if target.name in EXECUTABLES:
            target.chmod(0o755)
        written.append(target)
    if source is not None:
        written += copy_adapter(spec.lang, source, spec.dir / "adapter")
        lock = source / "Cargo.lock"
        if spec.lang == "rust" and lock.is_file():
            target = spec.dir / "Cargo.lock"
            target.write_text(rust_lockfile(lock.read_text(encoding="utf-8"), values["crate_name"]), encoding="utf-8")
            written.append(target)


_TOOLCHAINS = {"go": ("go", "Go 1.22 or later (https://go.dev/dl/)"), "rust": ("cargo", "Rust (https://rustup.rs)"),
               "java": ("mvn", "a JDK 17 or later and Maven (https://maven.apache.org)")}


def build_project(project: Path, lang: str) -> bool:
    """Run the project's `build` (Go, Rust, Java) with its output on our stderr.

    Returns False when the toolchain is missing (the project is fine; it builds later);
    raises ScaffoldError when the build fails.
    """
    if lang not in _TOOLCHAINS:
        return True
    program, _ = _TOOLCHAINS[lang]
    if shutil.which(program) is None:
        return False
    done = subprocess.run([str(project / "build")], stdin=subprocess.DEVNULL, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise ScaffoldError(
            f"the first build of {project} failed (exit status {done.returncode}); its output is above. "
            f"Fix what it says, then run {project / 'build'}"
        )
    return True


# --- the command -------------------------------------------------------------------


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--lang", type=click.Choice(LANGS), default=None,
              help="The handler's language; exec is a plain script run once per task.  [required, but not with "
                   "--from-scripts]")
@click.option("--name", help="The plugin's name on the platform: letters, digits, '-', '_', starting with a letter.")
@click.option("--type", "type_", type=click.Choice(TYPES), default="service", show_default=True,
              help="Plugin type: a service task or a user task.")
@click.option("--add", is_flag=True,
              help="Add the plugin to the existing project in DIRECTORY (in plugins/NAME/), making its config.yml "
                   "a plugins: list that `flow-bridge run --config config.yml` serves whole.")
@click.option("--from-scripts", "scripts", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A new exec-mode service with one plugin per executable script of this folder, named after "
                   "its file.")
@click.option("--adapters", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The adapters/ folder of a flow-bridge checkout [the one flow-bridge runs from].")
@click.option("--no-build", is_flag=True,
              help="Do not build a Go, Rust or Java handler now (it builds on first start).")
def init_command(directory: Path, lang: str | None, name: str | None, type_: str, add: bool, scripts: Path | None,
                 adapters: Path | None, no_build: bool) -> None:
    """Write a new plugin project into DIRECTORY: a handler, its run file, config.yml, a README.

    `flow-bridge call -- ./run` answers a task in it straight away (with --exec for exec).
    With --add, the plugin joins the service project in DIRECTORY; with --from-scripts, each
    script of a folder becomes a plugin of a new service.
    """
    from ._service import add_plugin, from_scripts

    if scripts is not None:
        if add or lang not in (None, "exec") or name:
            fail("--from-scripts makes exec-mode plugins named after their files: drop --lang, --name and --add",
                 Exit.USAGE)
        try:
            made = from_scripts(directory, scripts, type_)
        except ScaffoldError as exc:
            fail(str(exc), Exit.USAGE)
        where = os.path.relpath(directory)
        listed = "".join(f"  {plugin_name}: {os.path.relpath(path, directory)}\n" for plugin_name, path in made)
        click.echo(f"Wrote the service {where} with {len(made)} exec-mode plugins:\n{listed}Next:\n"
                   f"  cd {where}\n"
                   f"  flow-bridge call --plugin {made[0][0]}\n"
                   f"  flow-bridge run --config config.yml")
        return
    if lang is None:
        fail("Missing option '--lang': the handler's language, one of " + ", ".join(LANGS), Exit.USAGE)
    assert lang is not None
    try:
        spec = Spec(dir=directory, lang=lang, name=check_plugin_name(name), type=type_)
        if add:
            add_plugin(directory, lang, spec.name, type_, adapters)
        else:
            write_project(spec, adapters)
    except ScaffoldError as exc:
        fail(str(exc), Exit.USAGE)
    home = directory / "plugins" / spec.name if add else directory
    try:
        built = no_build or build_project(home, lang)
    except ScaffoldError as exc:
        fail(str(exc), Exit.FAILED)
    if not built:
        program, what = _TOOLCHAINS[lang]
        warn(f"{program} is not installed here, so the handler is not built yet: install {what}, then run ./build")
    where = os.path.relpath(directory)
    if add:
        click.echo(f"Added the {lang} plugin {spec.name} ({type_}) to the service in {where} "
                   f"(files in {os.path.relpath(home)}). Next:\n"
                   f"  cd {where}\n"
                   f"  flow-bridge call --plugin {spec.name}\n"
                   f"  flow-bridge run --config config.yml")
        return
    click.echo(f"Wrote the {lang} plugin {spec.name} ({type_}) in {where}. Next:\n"
               f"  cd {where}\n"
               f"  flow-bridge call -- ./run\n"
               f"  flow-bridge package . --target linux")


__all__ = ["LANGS", "ScaffoldError", "Spec", "check_plugin_name", "init_command", "installed_distribution",
           "installed_from", "running_from_checkout", "source_checkout", "write_project"]
