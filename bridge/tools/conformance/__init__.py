"""`flow-bridge conformance`: drive any handler over its real stdin/stdout and grade it."""
from __future__ import annotations

from ._conformance import CHECK_NAMES as CHECK_NAMES
from ._conformance import conformance_command as conformance_command

__all__ = ["CHECK_NAMES", "conformance_command"]
