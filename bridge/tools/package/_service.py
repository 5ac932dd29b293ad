"""`package` for a service project: every plugin of its `plugins:` list in one archive.

The runtime's entries say how to start each plugin on this machine (`./run`,
`./plugins/NAME/run`, `./scripts/x.sh`); `package.plugins` (written by `init --add` and
`init --from-scripts`) says each one's language and folder. From those, each plugin is
checked and started like a single plugin, and the archive's config.yml gets commands the
target can start: a Windows host has no `sh`, so there each entry starts its handler
directly (`python plugins/B/handler.py`, `node ...`, `plugins/B/handler.exe`, `java -jar
...`), and the service's Command is `flow-bridge run --config config.yml`, which starts all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from flow_bridge.core import ConfigError, Settings, load_service

from ._errors import PackageError
from ._files import inside

# What a Windows host can start of an exec-mode script by itself, or through python.
_WINDOWS_SELF_STARTING = (".exe", ".bat", ".cmd", ".com")


@dataclass(frozen=True, slots=True)
class ServicePlugin:
    """One plugin of a service project, with what `package` needs to know about it."""

    name: str
    lang: str
    dir: str  # its folder, relative to the project, POSIX style ("." for the project itself)
    settings: Settings
    script: str = ""  # init --from-scripts: the script itself, relative to the project

    def path(self, file: str) -> str:
        return str(PurePosixPath(self.dir) / file) if self.dir != "." else file


def has_plugin_list(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("plugins"), list)


def load_plugins(config: Path, doc: dict[str, Any], langs: tuple[str, ...]) -> tuple[ServicePlugin, ...]:
    """Each entry of the plugins: list, with its language and folder from package.plugins."""
    try:
        service = load_service(str(config), environ={})
    except ConfigError as exc:
        raise PackageError(f"{exc}: fix config.yml and package again") from None
    meta = doc.get("package") or {}
    known = meta.get("plugins") if isinstance(meta, dict) else None
    known = known if isinstance(known, dict) else {}
    plugins: list[ServicePlugin] = []
    for settings in service:
        assert settings.name is not None  # every entry names itself (load_service checks)
        info = known.get(settings.name)
        if not isinstance(info, dict) or str(info.get("lang", "")) not in langs:
            raise PackageError(
                f"{config}: package.plugins has no language for the plugin {settings.name!r}: add "
                f"`{settings.name}: {{lang: python, dir: plugins/{settings.name}}}` under package.plugins "
                f"(lang one of {', '.join(langs)}), as `flow-bridge init --add` writes it"
            )
        folder = _inside_path(config.parent, info.get("dir", "."), f"{config}: package.plugins.{settings.name}.dir")
        script = info.get("script")
        script = _inside_path(config.parent, script, f"{config}: package.plugins.{settings.name}.script") \
            if script else ""
        plugins.append(ServicePlugin(name=settings.name, lang=str(info["lang"]), dir=folder, settings=settings,
                                     script=script))
    return tuple(plugins)


def _inside_path(project: Path, value: object, where: str) -> str:
    """A folder or file named in package.plugins: a relative path that stays inside the project."""
    text = str(value).strip().removeprefix("./").rstrip("/") or "."
    parts = text.split("/")
    if text.startswith("/") or "\\" in text or ".." in parts or "" in parts:
        raise PackageError(f"{where}: {value!r} is not a path inside the project: write it relative to the "
                           "project's folder, with '/' between folders and no '..', like plugins/myPlugin")
    if not inside(project, project / text) or not (project / text).exists():
        raise PackageError(f"{where}: {value!r} is not in the project {project} (missing, or a link out of it): "
                           "name the plugin's own folder, like plugins/myPlugin")
    return text


def check_commands(directory: Path, plugins: tuple[ServicePlugin, ...]) -> None:
    """Each plugin's command is a file of the project that can be run."""
    for plugin in plugins:
        first = plugin.settings.command[0] if plugin.settings.command else ""
        path = (directory / first).resolve()
        if not first or not path.is_file():
            raise PackageError(f"the plugin {plugin.name}'s command {first or '(none)'} is not a file of "
                               f"{directory}: fix its command in config.yml")
        if not path.is_relative_to(directory.resolve()):
            raise PackageError(f"the plugin {plugin.name}'s command {first} is outside {directory}: package packs "
                               "only the project's own files; move the handler into the project")
        if not os.access(path, os.X_OK):
            raise PackageError(f"{path} is not executable: run `chmod +x {path}`")


def windows_start(plugin: ServicePlugin, handlers: dict[str, str]) -> list[str]:
    """How a Windows host starts this plugin's handler, from the service folder."""
    if plugin.script:
        suffix = PurePosixPath(plugin.script).suffix.lower()
        if suffix == ".py":
            return ["python", plugin.script]
        if suffix in _WINDOWS_SELF_STARTING:
            return [plugin.script]
        raise PackageError(
            f"the plugin {plugin.name}'s script {plugin.script} cannot start on a Windows host (no sh there): "
            "package with --target linux, or make it a .py, .bat or .exe"
        )
    if plugin.lang not in handlers:
        raise PackageError(f"the plugin {plugin.name} is written in {plugin.lang}, which a Windows host cannot "
                           "run here: package with --target linux")
    program, *rest = handlers[plugin.lang].split()
    if program in ("python", "node", "java"):
        return [program, *rest[:-1], plugin.path(rest[-1])]
    return [plugin.path(program), *rest]


def windows_config(text: str, plugins: tuple[ServicePlugin, ...], handlers: dict[str, str]) -> str:
    """config.yml with each entry's command the one a Windows host can start."""
    doc = yaml.safe_load(text) or {}
    starts = {plugin.name: windows_start(plugin, handlers) for plugin in plugins}
    for entry in doc.get("plugins", []):
        if isinstance(entry, dict) and entry.get("name") in starts:
            entry["command"] = starts[str(entry["name"])]
    return ("# flow-bridge settings for this service; each plugin's command starts its handler on Windows\n"
            + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def linux_kind(plugins: tuple[ServicePlugin, ...]) -> str:
    """The one Dockerfile template that can carry every plugin's runtime (python covers exec)."""
    others = sorted({plugin.lang for plugin in plugins} - {"python", "exec"})
    if len(others) > 1:
        raise PackageError(
            f"this service mixes {' and '.join(others)} plugins, and package writes a Dockerfile for one "
            "runtime besides Python: package them as separate services, or write the Dockerfile yourself"
        )
    return others[0] if others else "python"
