"""Exec mode: one process per task, the task as JSON on stdin, the result on stdout."""
from __future__ import annotations

from ._exec import ExecHandler as ExecHandler

__all__ = ["ExecHandler"]
