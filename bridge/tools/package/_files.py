"""Which of a project's files go into its archive, chosen without ever leaving the project.

Theory of operation. `select_files` walks the project once, before anything is written,
and returns a `Selection`: each file to pack as the real file to read and its name in the
archive, plus what was left out and why. The archive holds no links: a symbolic link that
stays inside the project is packed as what it points to (a file's bytes, a folder's files),
and one that leads out of the project, to nothing, or around in a loop is refused with its
name. So are names an unpacker could misread: invalid UTF-8, a backslash (a folder
separator on Windows, so `x\\..\\..\\evil.bat` would land outside the service folder), a
`..` part. Files that look like secrets are left out with a warning unless `package.include`
in config.yml lists them; hidden files and build output are left out silently, as before.
Nothing here writes anything; refusals are UnsafeFileError (exit 2).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ._errors import PackageError, UnsafeFileError

# Never packed: build output, caches, earlier archives (any depth). Hidden folders neither.
SKIP_DIRS = frozenset({"dist", "target", "node_modules", "__pycache__", "build"})
# Written by package itself at the archive's root, so the project's own copies are not packed.
GENERATED = frozenset({"service.yml", "config.yml", "Dockerfile", "wheels"})
# Past this a file gets a warning: a handler's own files are rarely over a few MiB, so a
# bigger one is usually data, a model or build output left in the folder, and every byte
# of it is uploaded through the console with each version.
LARGE_FILE = 10 * 1024 * 1024
# How much of a file is searched for a PEM private key's armour; keys sit at the top.
SNIFF_BYTES = 64 * 1024
_KEY_MARKERS = (b"PRIVATE KEY-----", b"PuTTY-User-Key-File-")


class Secret(Enum):
    """What a left-out file looks like; the value is how a warning names it."""

    KEY = "a private key"
    ENV = "environment variables"
    CREDENTIALS = "credentials"


# File names that usually hold secrets, matched case-insensitively against the name alone.
# Public halves (id_rsa.pub) and certificates (*.crt, a *.pem without a key) are fine.
SECRET_NAMES: tuple[tuple[str, Secret], ...] = (
    *((name, Secret.KEY) for name in ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "*.key", "*.p12",
                                      "*.pfx", "*.jks", "*.keystore", "*.ppk", "*.kdbx")),
    *((name, Secret.ENV) for name in (".env", ".env.*", "*.env")),
    *((name, Secret.CREDENTIALS) for name in (
        "credentials", "credentials.*", "*credentials*.json", "*.credentials", "secret", "secrets", "secret.*",
        "secrets.*", "*.secret", "service-account*.json", ".netrc", "_netrc", ".pgpass", ".git-credentials",
        ".pypirc", ".npmrc", ".htpasswd",
    )),
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One file to pack: the real file to read (inside the project) and its name in the archive."""

    source: Path
    name: str
    size: int


@dataclass(slots=True)
class Selection:
    entries: list[Entry] = field(default_factory=list)
    secrets: list[tuple[str, Secret]] = field(default_factory=list)  # left out
    special: list[str] = field(default_factory=list)  # pipes, sockets, devices: left out
    unused_includes: list[str] = field(default_factory=list)

    @property
    def large(self) -> list[Entry]:
        return [e for e in self.entries if e.size > LARGE_FILE]


def shown(name: str) -> str:
    """A name as it can be printed: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def check_name(name: str) -> None:
    """Refuse an archive name that an unpacker could misread or that cannot be stored."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeFileError(
            f"{shown(name)}: the file name is not valid UTF-8, so the archive cannot carry it (zip names are "
            "UTF-8, and the platform would show it garbled): rename it with a UTF-8 name, or move it out of "
            "the project"
        ) from None
    if "\\" in name:
        raise UnsafeFileError(
            f"{name}: the name has a backslash, which Windows reads as a folder separator, so an unpacker could "
            "write it somewhere else than the service folder: rename it without '\\'"
        )
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UnsafeFileError(f"{name}: a name with an empty, '.' or '..' part could land outside the service "
                              "folder when unpacked: rename it")


def check_includes(patterns: object, where: str) -> tuple[str, ...]:
    """package.include: a list of paths or patterns inside the project."""
    if patterns is None:
        return ()
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p.strip() for p in patterns):
        raise PackageError(f"{where}: expected a list of paths inside the project, like [keys/ca.key, 'certs/*.pem']")
    cleaned = []
    for pattern in patterns:
        text = pattern.strip().removeprefix("./")
        if text.startswith("/") or "\\" in text or ".." in text.split("/"):
            raise PackageError(f"{where}: {pattern!r} is not a path inside the project: write it relative to the "
                               "project's folder, with '/' between folders and no '..'")
        cleaned.append(text)
    return tuple(cleaned)


def _secret_by_name(name: str) -> Secret | None:
    lowered = name.lower()
    return next((what for pattern, what in SECRET_NAMES if fnmatch.fnmatchcase(lowered, pattern)), None)


class _Walker:
    def __init__(self, top: Path, includes: Sequence[str]) -> None:
        self.top = top
        self.includes = includes
        self.matched: set[str] = set()
        self.selection = Selection()
        self.problems: list[str] = []  # every refusal, so that one run names them all

    def _included(self, name: str) -> bool:
        for pattern in self.includes:
            folder = pattern.rstrip("/") + "/"
            if fnmatch.fnmatchcase(name, pattern) or name.startswith(folder):
                self.matched.add(pattern)
                return True
        return False

    def _skipped(self, name: str, at_top: bool, is_dir: bool | None) -> bool:
        """Left out by name alone; `is_dir` None when the kind is unknown (a broken link)."""
        if name.startswith(".") or (at_top and name in GENERATED):
            return True
        if is_dir is not False and name in SKIP_DIRS:
            return True
        return is_dir is not True and name.endswith(".pyc")

    def _follow(self, path: str, rel: str) -> Path:
        """Where a link that leads somewhere leads, if that is inside the project; else refused."""
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(self.top):
            raise UnsafeFileError(
                f"{shown(rel)} is a symbolic link to {os.readlink(path)}, which is outside the project ({target}): "
                "package takes only the project's own files. Copy what the handler needs into the project, or "
                "remove the link"
            )
        return target

    def walk(self, folder: Path, prefix: str, chain: tuple[Path, ...]) -> None:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            try:
                self._entry(entry, prefix, chain)
            except UnsafeFileError as exc:
                self.problems.append(str(exc))

    def _entry(self, entry: os.DirEntry[str], prefix: str, chain: tuple[Path, ...]) -> None:
        rel = prefix + entry.name
        at_top = not prefix
        target = Path(entry.path)
        if entry.is_symlink():
            dangling = not os.path.exists(entry.path)
            if dangling and self._skipped(entry.name, at_top, None):
                return
            if dangling:
                raise UnsafeFileError(
                    f"{shown(rel)} is a symbolic link to {os.readlink(entry.path)}, which does not exist: "
                    "remove the link, or restore what it points to"
                )
            if self._skipped(entry.name, at_top, os.path.isdir(entry.path)) and not self._included(rel):
                return  # never read, so it may point anywhere
            target = self._follow(entry.path, rel)
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            if self._skipped(entry.name, at_top, True):
                return
            if target in chain:
                raise UnsafeFileError(
                    f"{shown(rel)} is a symbolic link to {os.readlink(entry.path)}, a folder that holds the "
                    "link itself, so packing it would never end: remove the link"
                )
            check_name(rel)
            self.walk(target, rel + "/", (*chain, target))
        elif stat.S_ISREG(mode):
            self._file(target, rel, at_top, entry.name)
        elif not entry.name.startswith("."):
            self.selection.special.append(rel)

    def _file(self, source: Path, rel: str, at_top: bool, name: str) -> None:
        if at_top and name in GENERATED:
            return  # package writes its own; a listed one would be a second entry of that name
        if not self._included(rel):
            hidden = name.startswith(".") or name.endswith(".pyc")
            secret = _secret_by_name(name) or (None if hidden else self._sniff(source, rel))
            if secret is not None:
                self.selection.secrets.append((rel, secret))
            if secret is not None or hidden:
                return
        check_name(rel)
        self.selection.entries.append(Entry(source=source, name=rel, size=source.stat().st_size))

    @staticmethod
    def _sniff(source: Path, rel: str) -> Secret | None:
        try:
            with open(source, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
        except OSError as exc:
            raise PackageError(f"{shown(rel)}: cannot read it ({exc.strerror}): fix its permissions, or move it "
                               "out of the project") from None
        return Secret.KEY if any(marker in head for marker in _KEY_MARKERS) else None


def select_files(project: Path, includes: Sequence[str] = ()) -> Selection:
    """The project's files for its archive; raises UnsafeFileError for what must not go in."""
    top = project.resolve(strict=True)
    walker = _Walker(top, includes)
    walker.walk(top, "", (top,))
    if len(walker.problems) == 1:
        raise UnsafeFileError(walker.problems[0])
    if walker.problems:
        raise UnsafeFileError(f"{len(walker.problems)} files cannot go into the archive:\n  "
                              + "\n  ".join(walker.problems))
    walker.selection.unused_includes = [p for p in includes if p not in walker.matched]
    return walker.selection


def inside(project: Path, path: Path) -> bool:
    """Whether `path`, links resolved, is in the project."""
    return Path(os.path.realpath(path)).is_relative_to(project.resolve())


__all__ = ["LARGE_FILE", "Entry", "Secret", "Selection", "check_includes", "check_name", "inside", "select_files",
           "shown"]
