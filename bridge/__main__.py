"""`python -m flow_bridge` is the same as the `flow-bridge` command."""

from ._cli import main

main()
