"""flow_bridge.protocol: the stdio protocol between the bridge and a handler.

A pure codec and its messages; it does no I/O and imports only msgpack. SPEC.md at
the top of the repository is the normative description; `vectors.json` beside this
file holds the shared test vectors that every adapter's tests load.
"""

from __future__ import annotations

from ._codec import Codec as Codec
from ._codec import map_to_message as map_to_message
from ._codec import message_to_map as message_to_map
from ._codec import pack_frame as pack_frame
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._events import DEFAULT_MAX_FRAME as DEFAULT_MAX_FRAME
from ._events import EVENT_TYPES as EVENT_TYPES
from ._events import MAX_ID as MAX_ID
from ._events import MAX_MAX_FRAME as MAX_MAX_FRAME
from ._events import MIN_MAX_FRAME as MIN_MAX_FRAME
from ._events import PROTOCOL_VERSIONS as PROTOCOL_VERSIONS
from ._events import Cancel as Cancel
from ._events import Debug as Debug
from ._events import Error as Error
from ._events import Event as Event
from ._events import Hello as Hello
from ._events import Log as Log
from ._events import PluginType as PluginType
from ._events import Ready as Ready
from ._events import Result as Result
from ._events import State as State
from ._events import Stop as Stop
from ._events import Task as Task
from ._events import too_large_message as too_large_message
from ._jsonmap import NotJSONError as NotJSONError
from ._jsonmap import to_json_bytes as to_json_bytes

__all__ = [
    "DEFAULT_MAX_FRAME",
    "EVENT_TYPES",
    "MAX_ID",
    "MAX_MAX_FRAME",
    "MIN_MAX_FRAME",
    "PROTOCOL_VERSIONS",
    "Cancel",
    "Codec",
    "Debug",
    "Error",
    "Event",
    "Hello",
    "LocalProtocolError",
    "Log",
    "NotJSONError",
    "PluginType",
    "ProtocolError",
    "Ready",
    "RemoteProtocolError",
    "Result",
    "State",
    "Stop",
    "Task",
    "map_to_message",
    "message_to_map",
    "pack_frame",
    "to_json_bytes",
    "too_large_message",
]
