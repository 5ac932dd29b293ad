"""The wiring: build the backends (supervised children or exec mode), then the engine links."""
from __future__ import annotations

from ._gateway import STOP_SIGNALS as STOP_SIGNALS
from ._gateway import Backend as Backend
from ._gateway import EntryFailed as EntryFailed
from ._gateway import NameMissing as NameMissing
from ._gateway import Plugin as Plugin
from ._gateway import make_handler as make_handler
from ._gateway import resolve_identity as resolve_identity
from ._gateway import serve_plugin as serve_plugin
from ._gateway import serve_service as serve_service

__all__ = [
    "STOP_SIGNALS", "Backend", "EntryFailed", "NameMissing", "Plugin", "make_handler", "resolve_identity",
    "serve_plugin", "serve_service",
]
