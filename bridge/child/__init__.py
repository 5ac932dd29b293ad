"""The child side: one long-lived handler process and the layers over it, bottom first.

``_platform``    the one platform seam (``_posix`` or ``_windows``): groups, stop signals, start checks.
``_process``     start a child in its own process group, explain a failed start, end the group.
``_transport``   the only place bytes move between a pipe and the codec.
``_session``     one handshaken child: request ids, the pending map, dispatch by message type.
``_supervisor``  policy over sessions: which child takes a request, timeouts, restarts, crash loops.
"""
from __future__ import annotations

from ._platform import STOP_SIGNALS as STOP_SIGNALS
from ._platform import ignore_stop_signals as ignore_stop_signals
from ._platform import kill_group as kill_group
from ._platform import on_stop_signals as on_stop_signals
from ._platform import open_stop_signals as open_stop_signals
from ._platform import stop_then_kill as stop_then_kill
from ._process import ExitStatus as ExitStatus
from ._process import LineSplitter as LineSplitter
from ._process import Process as Process
from ._process import StartError as StartError
from ._process import check_startable as check_startable
from ._process import close_writer as close_writer
from ._process import handler_env as handler_env
from ._process import handler_logger as handler_logger
from ._process import settle_output as settle_output
from ._process import spawn_process as spawn_process
from ._supervisor import Supervisor as Supervisor

__all__ = [
    "ExitStatus", "LineSplitter", "Process", "STOP_SIGNALS", "StartError", "Supervisor", "check_startable",
    "close_writer", "handler_env", "handler_logger", "ignore_stop_signals", "kill_group", "on_stop_signals",
    "open_stop_signals", "settle_output", "spawn_process", "stop_then_kill",
]
