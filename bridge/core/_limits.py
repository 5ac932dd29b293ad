"""Limits and timeouts that more than one layer uses, each named once with its reason.

A layer's own constants stay beside the code they shape (the engine's message sizes in
flow_bridge.engine, the supervisor's restart policy in flow_bridge.child); what the child
side, exec mode and the conformance tool must agree on lives here, next to the settings
whose defaults they complement.
"""

from __future__ import annotations

# Between the polite stop of a child's group (SIGTERM, Ctrl-Break on Windows) and the kill:
# enough for a handler's own cleanup, not for more work. Exec mode's timeout (SPEC 8) and
# `stop` use it alike.
TERM_GRACE = 2.0
# A child's stderr line is cut, not buffered whole, past this: a child that writes a 1 GiB
# line must not make the bridge hold 1 GiB, nor stall until a newline comes.
MAX_LINE = 8 * 1024
# The last stderr lines kept to explain a failed start or a crash, in the log and in answers.
TAIL_LINES = 20
# After a child exits, how long its output may stay open before the bridge looks for who
# holds it: what it wrote before dying is in the pipe already, and reading that is quick.
OUTPUT_AFTER_EXIT = 0.5
