"""Stand-in for `airiot_python_sdk.flow_plugin.startup` (tests only).

The vendor's Startup.run parses --config and --log-level, reads config.yml, connects to
the flow engine over gRPC and blocks. This one refuses, so that a plugin answering tasks
shows that flow_bridge.adapter.airiot replaced it.
"""

import sys

STAND_IN_RUN_CALLED = "stand-in airiot_python_sdk: Startup.run was called"


class Startup:
    def run(self, flow_plugin, flow_plugin_config=None):
        print(f"{STAND_IN_RUN_CALLED}: it would dial the flow engine over gRPC here", file=sys.stderr)
        raise SystemExit(86)
