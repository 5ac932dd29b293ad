"""A stand-in flow engine on loopback, and the `engine` and `call` commands that use it."""
from __future__ import annotations

from ._command import call_once as call_once
from ._command import run_engine as run_engine
from ._engine import Faults as Faults
from ._engine import TaskLineError as TaskLineError

__all__ = ["Faults", "TaskLineError", "call_once", "run_engine"]
