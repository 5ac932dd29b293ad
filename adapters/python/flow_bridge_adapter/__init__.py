"""flow_bridge.adapter: write a flow-bridge handler in Python.

    from flow_bridge.adapter import serve

    def execute(request):
        return {"doubled": request.config["x"] * 2}

    serve(execute)

Imports only the standard library, msgpack and the protocol codec, never grpc, so a
handler's environment needs nothing else.
"""

from __future__ import annotations

from ._plugin import ADAPTER_VERSION as ADAPTER_VERSION
from ._plugin import HandlerError as HandlerError
from ._plugin import Reply as Reply
from ._plugin import Request as Request
from ._plugin import serve as serve

__all__ = ["ADAPTER_VERSION", "HandlerError", "Reply", "Request", "serve"]
