#!/usr/bin/env bash
# The runtime type-checked as it would run on Windows (mypy --platform win32): the POSIX-only
# parts of the standard library (os.killpg, signal.SIGKILL, SIGHUP...) are then unknown, and
# the Windows branches of the platform seam are checked instead. The tree of links is
# mypy-tree.sh's: the repository installs bridge/ as flow_bridge.
set -euo pipefail
exec "$(dirname "$0")/mypy-tree.sh" --platform win32
