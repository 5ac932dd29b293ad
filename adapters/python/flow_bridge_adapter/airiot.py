"""Run AIR-IoT Python SDK 4.x flow plugins on flow-bridge.

An unchanged vendor project (its main.py ends in `Startup().run(plugin)`, the vendor SDK
installed)::

    flow-bridge run -- python -m flow_bridge.adapter.airiot main.py

Without the vendor SDK, change the import lines to this module and keep the rest::

    from flow_bridge.adapter.airiot import FlowPlugin, FlowPluginType, FlowResult, Startup

`run(plugin)` (or `Startup().run(plugin)`) serves the plugin: tasks one at a time unless
`--concurrency N` (before main.py), FLOW_BRIDGE_AIRIOT_CONCURRENCY, or
`run(plugin, concurrency=N)` allows more.
"""

from __future__ import annotations

from ._airiot import CONCURRENCY_ENV as CONCURRENCY_ENV
from ._airiot import Startup as Startup
from ._airiot import main as main
from ._airiot import run as run
from ._airiot_api import DebugLog as DebugLog
from ._airiot_api import DebugResult as DebugResult
from ._airiot_api import DebugTask as DebugTask
from ._airiot_api import FlowPlugin as FlowPlugin
from ._airiot_api import FlowPluginType as FlowPluginType
from ._airiot_api import FlowResult as FlowResult
from ._airiot_api import FlowTask as FlowTask

__all__ = [
    "CONCURRENCY_ENV",
    "DebugLog",
    "DebugResult",
    "DebugTask",
    "FlowPlugin",
    "FlowPluginType",
    "FlowResult",
    "FlowTask",
    "Startup",
    "main",
    "run",
]

if __name__ == "__main__":
    # `python -m` runs this file as __main__, a second copy of it; everything it uses comes
    # from the private modules, which exist once, so the project sees the same classes.
    main()
