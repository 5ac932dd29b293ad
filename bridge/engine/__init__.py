"""The engine side: every use of gRPC, the SPEC 6 mapping to FlowResponse, and the outbox.

``_link``  register, answer, heartbeat and reconnect, as the plugin's half of engine.PluginService.
"""
from __future__ import annotations

from ._link import MESSAGE_SLACK as MESSAGE_SLACK
from ._link import SERVICE as SERVICE
from ._link import EngineLink as EngineLink
from ._link import RequestHandler as RequestHandler

__all__ = ["MESSAGE_SLACK", "SERVICE", "EngineLink", "RequestHandler"]
