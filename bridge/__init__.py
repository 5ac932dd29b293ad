"""flow_bridge: run any executable as an AIR-IoT flow-engine plugin.

Where things live, bottom layer first (each may import only the ones below it; CI checks
this with import-linter, see pyproject.toml):

- ``protocol``  the stdio protocol: frozen events and a sans-IO codec. No I/O.
- ``core``      what every runtime layer shares: settings, named limits, the engine answer model.
- ``child``     the child side: processes and start checks, transport, session, supervisor.
- ``exec``      exec mode: one process per task.
- ``engine``    the engine side: all of gRPC, the SPEC 6 mapping, the outbox.
- ``gateway``   the wiring: children first, then the engine link; signals drain both.
- ``tools``     commands built on the runtime: stand-in engine, conformance, scaffold, package.
- ``_cli``      the ``flow-bridge`` command; it imports a tool only when that command runs.

``adapter`` (the Python adapter, for handlers) stands apart and imports only ``protocol``.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
