"""`flow-bridge conformance`: drive any handler over its real stdin/stdout and grade it.

``_driver``   the bridge's side of one conversation: a child started through flow_bridge.child,
              every frame held against the protocol as it arrives.
``_checks``   the checks, and which of them need the echo contract (SPEC.md section 7).
``_command``  the suite runner and the click command.
"""
from __future__ import annotations

from ._checks import CHECK_NAMES as CHECK_NAMES
from ._checks import CHECKS as CHECKS
from ._checks import PROTOCOL_CHECK_NAMES as PROTOCOL_CHECK_NAMES
from ._command import CheckResult as CheckResult
from ._command import conformance_command as conformance_command
from ._command import run_suite as run_suite
from ._driver import CheckFailed as CheckFailed
from ._driver import Contract as Contract

__all__ = [
    "CHECKS", "CHECK_NAMES", "PROTOCOL_CHECK_NAMES", "CheckFailed", "CheckResult", "Contract", "conformance_command",
    "run_suite",
]
