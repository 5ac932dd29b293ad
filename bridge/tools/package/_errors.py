"""Why `flow-bridge package` stops, split by who has to act, and so by exit status."""

from __future__ import annotations

from flow_bridge.tools._exit import Exit


class PackageError(Exception):
    """The project cannot be packaged as it is; the message says what to fix."""

    exit_code = Exit.USAGE


class UnsafeFileError(PackageError):
    """A file would take the archive outside the project: a link out of it, or a name an unpacker misreads."""


class PackageFailed(PackageError):
    """Something package ran failed (a build, the handler's start, a wheel, reading a file); the project may be fine."""

    exit_code = Exit.FAILED


__all__ = ["PackageError", "PackageFailed", "UnsafeFileError"]
