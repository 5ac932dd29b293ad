#!/usr/bin/env bash
# Check the layer contracts in pyproject.toml ([tool.importlinter]) against the sources.
# The repository installs bridge/ as flow_bridge with protocol/ and adapters/python/ beneath
# it, so copy a tree with the installed names (import-linter walks real folders) and check that.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
cp -r "$root/bridge" "$tree/flow_bridge"
cp -r "$root/protocol" "$tree/flow_bridge/protocol"
cp -r "$root/adapters/python/flow_bridge_adapter" "$tree/flow_bridge/adapter"
cd "$tree"
PYTHONPATH="$tree" lint-imports "$root/pyproject.toml" "$@"
