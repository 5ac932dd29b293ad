"""An AIR-IoT Python SDK 4.x plugin project, written as the vendor SDK expects.

Nothing here knows about flow-bridge: `python -m flow_bridge.adapter.airiot main.py`
replaces Startup.run, so the same file runs under the vendor SDK and under flow-bridge.
"""

from airiot_python_sdk.flow_plugin.startup import Startup
from flow_plugin.scale_plugin import ScalePlugin

if __name__ == "__main__":
    plugin = ScalePlugin()
    startup = Startup()
    startup.run(plugin)
