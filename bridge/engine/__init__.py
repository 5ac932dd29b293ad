"""The engine side: every use of gRPC, the SPEC 6 mapping to FlowResponse, and the outbox.

``_channel``  the one gRPC channel a service shares: reachability, health checks, reconnects.
``_link``     one plugin's Register and DebugStream on it: slots, answers, outboxes.
``_limits``   what fits in the engine's messages, and the too_large answer for what does not.
"""
from __future__ import annotations

from ._channel import SERVICE as SERVICE
from ._channel import EngineChannel as EngineChannel
from ._limits import MESSAGE_SLACK as MESSAGE_SLACK
from ._limits import answer_limit as answer_limit
from ._limits import request_limit as request_limit
from ._link import PluginLink as PluginLink
from ._link import RequestHandler as RequestHandler

__all__ = [
    "MESSAGE_SLACK", "SERVICE", "EngineChannel", "PluginLink", "RequestHandler", "answer_limit", "request_limit",
]
