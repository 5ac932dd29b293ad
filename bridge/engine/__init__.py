"""The engine side: every use of gRPC, the SPEC 6 mapping to FlowResponse, and the outbox.

``_link``    register, answer, heartbeat and reconnect, as the plugin's half of engine.PluginService.
``_limits``  what fits in the engine's messages, and the too_large answer for what does not.
"""
from __future__ import annotations

from ._limits import MESSAGE_SLACK as MESSAGE_SLACK
from ._limits import answer_limit as answer_limit
from ._limits import request_limit as request_limit
from ._link import SERVICE as SERVICE
from ._link import EngineLink as EngineLink
from ._link import RequestHandler as RequestHandler

__all__ = ["MESSAGE_SLACK", "SERVICE", "EngineLink", "RequestHandler", "answer_limit", "request_limit"]
