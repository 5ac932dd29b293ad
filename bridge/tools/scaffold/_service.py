"""Service projects: several plugins in one project, served by one `flow-bridge run --config config.yml`.

`init DIR --add` puts a new plugin's project into DIR/plugins/NAME/ and lists it in DIR's
config.yml, turning a single-plugin config.yml into a `plugins:` list first (the project's
own plugin becomes the entry whose command is `./run`). `init DIR --from-scripts FOLDER`
makes an exec-mode service with one plugin per executable script of FOLDER, copied into
DIR/scripts/ and named after its file.

`package` needs each plugin's language and folder, which the runtime's `plugins:` entries
do not carry, so they go under `package.plugins` (a section only the tools read):
`{NAME: {lang: node, dir: plugins/NAME}}`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from flow_bridge.core import check_plugin_name as core_plugin_name
from flow_bridge.tools._exit import warn

from ._scaffold import ScaffoldError, Spec, write_project

# Where `--add` puts each added plugin's own files, relative to the service project.
PLUGINS_DIR = "plugins"
# Where `--from-scripts` copies the scripts.
SCRIPTS_DIR = "scripts"
# What an entry takes over from a single plugin's `plugin:` section; the rest stays shared.
_PER_PLUGIN = ("name", "type", "exec", "command", "env")
_HEADER = (
    "# A flow-bridge service: every plugin below registers with the engine under its own name;\n"
    "# `flow-bridge run --config config.yml` serves them all. What an entry leaves out comes from plugin:.\n"
)
_ENGINE = {"host": "127.0.0.1", "port": 2333, "connect-timeout": "15s", "retry-interval": "30s",
           "heartbeat-interval": "30s"}


def _read_config(project: Path) -> dict[str, Any]:
    config = project / "config.yml"
    if not config.is_file():
        raise ScaffoldError(
            f"{project} has no config.yml: --add adds a plugin to a project made by `flow-bridge init`; "
            "drop --add to make a new project"
        )
    try:
        doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ScaffoldError(f"{config} cannot be read as YAML ({exc}): fix it, then add the plugin again") from None
    if not isinstance(doc, dict):
        raise ScaffoldError(f"{config}: the top level must be a mapping with flow-engine: and plugin: sections")
    return doc


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    body = doc.get(key)
    if body is None:
        body = doc[key] = {}
    if not isinstance(body, dict):
        raise ScaffoldError(f"config.yml: '{key}' must be a mapping of settings")
    return body


def as_service(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The config's plugins: list, made from its single plugin first when it has none (in place)."""
    if isinstance(doc.get("plugins"), list):
        return list(doc["plugins"])
    plugin = _section(doc, "plugin")
    meta = _section(doc, "package")
    name = plugin.get("name")
    if not name:
        raise ScaffoldError("config.yml gives its plugin no name (plugin.name): name it before adding another")
    entry: dict[str, Any] = {"name": str(name), "command": plugin.get("command", "./run")}
    for key in _PER_PLUGIN[1:]:
        if key in plugin and key != "command":
            entry[key] = plugin[key]
    for key in _PER_PLUGIN:
        plugin.pop(key, None)
    plugins_meta = meta.setdefault("plugins", {})
    if meta.get("lang"):
        plugins_meta[str(name)] = {"lang": meta["lang"], "dir": "."}
    return [entry]


def _write_config(project: Path, doc: dict[str, Any]) -> Path:
    config = project / "config.yml"
    text = _HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
    config.write_text(text, encoding="utf-8")
    return config


def add_plugin(project: Path, lang: str, name: str, type_: str, adapters: Path | None) -> list[Path]:
    """Write plugin `name` into project/plugins/NAME and list it in project/config.yml."""
    doc = _read_config(project)
    entries = as_service(doc)
    taken = {str(entry.get("name")) for entry in entries if isinstance(entry, dict)}
    if name in taken:
        raise ScaffoldError(f"{project}/config.yml already has a plugin named {name!r}: each plugin registers "
                            "under its own name; pick another --name")
    target = project / PLUGINS_DIR / name
    written = write_project(Spec(dir=target, lang=lang, name=name, type=type_), adapters)
    # One config for the whole service: the new plugin's own copy would only mislead.
    (target / "config.yml").unlink(missing_ok=True)
    written = [path for path in written if path != target / "config.yml"]
    entry: dict[str, Any] = {"name": name, "type": type_, "command": f"./{PLUGINS_DIR}/{name}/run"}
    if lang == "exec":
        entry["exec"] = True
    doc["plugins"] = [*entries, entry]
    meta = _section(doc, "package")
    meta.setdefault("plugins", {})[name] = {"lang": lang, "dir": f"{PLUGINS_DIR}/{name}"}
    return [*written, _write_config(project, doc)]


def name_for_script(filename: str) -> str:
    """A plugin name from a script's file name, made valid by the platform's rule (core's)."""
    stem = filename.rsplit(".", 1)[0] if "." in filename.lstrip(".") else filename
    candidate = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")
    candidate = re.sub(r"^[^A-Za-z]+", "", candidate)[:64]
    try:
        return core_plugin_name(candidate)
    except ValueError:
        raise ScaffoldError(
            f"{filename}: no plugin name can be made from this file name (a name needs an ASCII letter, A to Z, "
            "and keeps only ASCII letters, digits, '-' and '_'); rename the script, like report.py"
        ) from None


def scripts_in(folder: Path, say: Callable[[str], None] = warn) -> list[Path]:
    """The executable regular files of `folder` (not hidden), by name; what is passed over is said."""
    if not folder.is_dir():
        raise ScaffoldError(f"--from-scripts: {folder} is not a folder: name the folder that holds the scripts")
    found: list[Path] = []
    not_executable: list[str] = []
    folders: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            folders.append(path.name + "/")
        elif path.is_file() and os.access(path, os.X_OK):
            found.append(path)
        elif path.is_file():
            not_executable.append(path.name)
    if not found:
        raise ScaffoldError(f"--from-scripts: {folder} has no executable script: `chmod +x` the ones to serve")
    if not_executable:
        say(f"--from-scripts: left out {', '.join(not_executable)}: not executable; if one is a script to serve, "
            "`chmod +x` it and run init again")
    if folders:
        say(f"--from-scripts: left out the folders {', '.join(folders)}: only the scripts directly in "
            f"{folder} become plugins")
    return found


def from_scripts(project: Path, folder: Path, type_: str) -> list[tuple[str, Path]]:
    """A new exec-mode service in `project`: one plugin per executable script of `folder`."""
    scripts = scripts_in(folder)
    names: dict[str, Path] = {}
    for script in scripts:
        name = name_for_script(script.name)
        if name in names:
            raise ScaffoldError(
                f"--from-scripts: {names[name].name} and {script.name} would both be the plugin {name!r}: "
                "rename one of them (names are compared after the platform's rule)"
            )
        names[name] = script
    if project.exists() and (not project.is_dir() or any(project.iterdir())):
        raise ScaffoldError(f"{project} already exists and is not an empty folder: name a new or empty folder")
    (project / SCRIPTS_DIR).mkdir(parents=True, exist_ok=True)
    plugins: list[dict[str, Any]] = []
    meta_plugins: dict[str, Any] = {}
    for name, script in names.items():
        copied = project / SCRIPTS_DIR / script.name
        shutil.copy2(script, copied)  # keeps the execute bit
        # A list, not one string: a file name may hold a space, which a string would split.
        plugins.append({"name": name, "type": type_, "command": [f"./{SCRIPTS_DIR}/{script.name}"], "exec": True})
        meta_plugins[name] = {"lang": "exec", "dir": SCRIPTS_DIR, "script": f"{SCRIPTS_DIR}/{script.name}"}
    doc: dict[str, Any] = {
        "flow-engine": dict(_ENGINE),
        "plugin": {"timeout": "600s"},
        "plugins": plugins,
        "package": {"version": "0.1.0", "description": f"{len(plugins)} scripts as flow plugins", "lang": "exec",
                    "plugins": meta_plugins},
    }
    _write_config(project, doc)
    (project / ".gitignore").write_text("dist/\n", encoding="utf-8")
    return [(name, project / SCRIPTS_DIR / script.name) for name, script in names.items()]
