"""`flow-bridge package`: check a plugin project, then write the archive the platform takes."""
from __future__ import annotations

from ._package import package_command as package_command

__all__ = ["package_command"]
