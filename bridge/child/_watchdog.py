"""The bridge's watchdog: ends its children's process groups when the bridge dies without doing so.

This is a program, not a module to import. flow-bridge starts it once, in a session of its
own, as `python -I -S _watchdog.py BRIDGE_PID NAME=ID`, and keeps the write end of its stdin.
It reads lines `+PGID` (a child's group started) and `-PGID` (that group was ended). End of
input means the bridge is gone, whether it exited or was killed with SIGKILL, since the
kernel closes a dead process's pipes: every group still listed gets SIGTERM, and SIGKILL
after GRACE. A pipe's end of input works on every POSIX system, where a parent-death signal
is Linux-only and reaches only one process, not its group.

Groups miss what left them (`setsid`, a daemon's double fork). So every child of the bridge
is started with the run's marker `NAME=ID` in its environment, which its descendants
inherit, and on Linux the watchdog then also ends every process of its own uid whose
/proc/PID/environ carries that marker, and the group each one leads. /proc is read only
then, once the bridge is gone, never while it runs: a scan costs about 2 ms per hundred
processes (measured). Out of reach: a process that cleared or replaced its environment
(env -i, a sanitised exec), one of another uid (or that we may not read), and, on systems
without /proc (macOS, the BSDs), anything outside the groups.

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
# Where the environment of each process can be read (Linux); elsewhere only groups are ended.
PROC = "/proc"

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


def _carries(pid: int, marker: bytes) -> bool:
    """Whether the process's environment holds the marker (False if gone or unreadable)."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:
        return False  # gone, or not ours to read: out of reach
    return marker in environ.split(b"\0")


def marked(marker: bytes) -> set[int]:
    """Every process of our uid that carries the marker in its environment (Linux; else none)."""
    if not marker or not os.path.isdir(PROC):
        return set()
    me, uid = os.getpid(), os.getuid()
    found = set()
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"{PROC}/{entry}").st_uid != uid:
                continue  # only our own processes: root's watchdog must not reach further
        except OSError:
            continue
        if _carries(int(entry), marker):
            found.add(int(entry))
    return found


def _signal_marked(pid: int, marker: bytes, sig: int) -> None:
    """Signal a marked process, and the group it leads (setsid made one), if it still carries the marker.

    Checked again just before, so a pid reused since the scan is never hit."""
    if not _carries(pid, marker):
        return
    try:
        if os.getpgid(pid) == pid:
            _signal_group(pid, sig)
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_groups(groups: set[int], marker: bytes = b"") -> None:
    """SIGTERM every group and every marked process, then SIGKILL whatever is left after GRACE."""
    alive = {pgid for pgid in groups if _signal_group(pgid, signal.SIGTERM)}
    tagged = marked(marker)
    for pid in tagged:
        _signal_marked(pid, marker, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while (alive or tagged) and time.monotonic() < deadline:
        time.sleep(POLL)
        alive = {pgid for pgid in alive if _signal_group(pgid, 0)}
        tagged = {pid for pid in tagged if _carries(pid, marker)}  # a zombie's environ reads empty
    for pgid in alive:
        _signal_group(pgid, signal.SIGKILL)
    # Scanned again: what ignored SIGTERM, and anything a marked process started meanwhile.
    for pid in marked(marker):
        _signal_marked(pid, marker, signal.SIGKILL)


def main() -> int:
    if sys.stdin.isatty():
        sys.stderr.write(USAGE)
        return 2
    # A Ctrl-C or a hang-up meant for the bridge must not end the watchdog first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # NAME=ID, the run's marker in every child's environment; absent from an older bridge.
    marker = sys.argv[2].encode() if len(sys.argv) > 2 and "=" in sys.argv[2] else b""
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
    end_groups(groups, marker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
