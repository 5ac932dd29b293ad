"""The wiring: build the backend (supervised children or exec mode), then the engine link."""
from __future__ import annotations

from ._gateway import Backend as Backend
from ._gateway import make_handler as make_handler
from ._gateway import serve_plugin as serve_plugin

__all__ = ["Backend", "make_handler", "serve_plugin"]
