"""{{name}}: the plugin's handler, written with flow-bridge's Python adapter.

flow-bridge starts this program once and sends it every task; `execute` answers each.
Return a dict (the task's result data) or raise HandlerError (a failed task whose message
the flow shows). `print()` is safe: the adapter moves stdout to the bridge's log.
"""

from __future__ import annotations

from flow_bridge.adapter import HandlerError, Request, serve


async def execute(request: Request) -> dict[str, object]:
    config = request.config  # the flow node's configuration, parsed as JSON
    if not isinstance(config, dict):
        raise HandlerError("the node's config must be a JSON object", detail=repr(request.raw_config[:200]))
    name = config.get("name", "world")
    request.log.info(f"greeting {name}")  # a log line tied to this task
    return {"greeting": f"hello, {name}"}


if __name__ == "__main__":
    # The same function answers the flow editor's debug runs.
    serve(execute, debug=execute, name="{{name}}")
