"""The one type the platform seam's leftover-process lookup returns, on every platform."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Holder:
    """A process outside the child's group that holds one of the child's pipes."""

    pid: int
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})"
