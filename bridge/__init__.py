"""flow_bridge: run any executable as an AIR-IoT flow-engine plugin."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
