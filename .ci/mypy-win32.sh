#!/usr/bin/env bash
# The runtime type-checked as it would run on Windows (mypy --platform win32): the POSIX-only
# parts of the standard library (os.killpg, signal.SIGKILL, SIGHUP...) are then unknown, and
# the Windows branches of the platform seam are checked instead. Same tree of links as
# mypy-tree.sh: the repository installs bridge/ as flow_bridge.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/flow_bridge"
for f in "$root"/bridge/*; do ln -s "$f" "$tree/flow_bridge/"; done
ln -s "$root/protocol" "$tree/flow_bridge/protocol"
ln -s "$root/adapters/python/flow_bridge_adapter" "$tree/flow_bridge/adapter"
cd "$tree"
python3 -m mypy --config-file "$root/pyproject.toml" --platform win32 -p flow_bridge
