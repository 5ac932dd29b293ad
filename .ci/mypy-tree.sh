#!/usr/bin/env bash
# mypy sees modules by their folders, but this repository installs bridge/ as flow_bridge
# (and protocol/, adapters/python/ beneath it). Lay out a tree of links with the installed
# names and check that, so the check runs against the sources without an install.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/flow_bridge"
for f in "$root"/bridge/*; do ln -s "$f" "$tree/flow_bridge/"; done
ln -s "$root/protocol" "$tree/flow_bridge/protocol"
ln -s "$root/adapters/python/flow_bridge_adapter" "$tree/flow_bridge/adapter"
cd "$tree"
# Extra arguments go to mypy (mypy-win32.sh passes --platform win32).
python3 -m mypy --config-file "$root/pyproject.toml" "$@" -p flow_bridge
