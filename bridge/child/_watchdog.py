"""The bridge's watchdog: ends its children's process groups when the bridge dies without doing so.

This is a program, not a module to import. flow-bridge starts it once, in a session of its
own, as `python -I -S _watchdog.py BRIDGE_PID`, and keeps the write end of its stdin. It
reads lines `+PGID` (a child's group started) and `-PGID` (that group was ended). End of
input means the bridge is gone, whether it exited or was killed with SIGKILL, since the
kernel closes a dead process's pipes: every group still listed gets SIGTERM, and SIGKILL
after GRACE. A pipe's end of input works on every POSIX system, where a parent-death signal
is Linux-only and reaches only one process, not its group.

It imports nothing from flow-bridge, so that it starts in a few milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
import time

# A POSIX program (Windows ends a bridge's children through their job objects instead);
# mypy reads this assert as "skip the rest" in its `--platform win32` run.
assert sys.platform != "win32", "the process-group watchdog is for POSIX systems"

# Long enough for a handler to exit on SIGTERM, short enough that all is gone within 5 s.
GRACE = 1.0
# How often the groups are checked during GRACE.
POLL = 0.05

USAGE = (
    "This is flow-bridge's watchdog; flow-bridge starts it by itself and it is not meant to be "
    "run by hand. Run `flow-bridge run -- CMD` instead.\n"
)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send sig to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # the pgid was reused by someone else's group: not ours to end
    return True


def end_groups(groups: set[int]) -> None:
    """SIGTERM every group, then SIGKILL whatever is left of them after GRACE."""
    alive = {pgid for pgid in groups if _signal_group(pgid, signal.SIGTERM)}
    deadline = time.monotonic() + GRACE
    while alive and time.monotonic() < deadline:
        time.sleep(POLL)
        alive = {pgid for pgid in alive if _signal_group(pgid, 0)}
    for pgid in alive:
        _signal_group(pgid, signal.SIGKILL)


def main() -> int:
    if sys.stdin.isatty():
        sys.stderr.write(USAGE)
        return 2
    # A Ctrl-C or a hang-up meant for the bridge must not end the watchdog first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        text = line.strip()
        if len(text) < 2 or not text[1:].isdigit():
            continue
        pgid = int(text[1:])
        if pgid <= 1:
            continue  # 0 would be the watchdog's own group, 1 is init: never a child's
        if text[:1] == b"+":
            groups.add(pgid)
        elif text[:1] == b"-":
            groups.discard(pgid)
    end_groups(groups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
