"""The protocol's error tree.

`ProtocolError` is the base. `LocalProtocolError` means we were about to break the
rules (a bad field in a message we built, a message the state table does not allow us
to send); `RemoteProtocolError` means the peer did. Each carries a `kind` from the closed
`ErrorKind` enum (generated from schema.json), the name that the shared vectors, SPEC.md
and every adapter use.
"""

from __future__ import annotations

from typing import Any

from ._schema import ErrorKind


class ProtocolError(Exception):
    """Base of every stdio protocol error."""

    def __init__(self, message: str, *, kind: ErrorKind | str, snippet: bytes = b"") -> None:
        super().__init__(message)
        # A kind's name is accepted too; ErrorKind(...) refuses one that is not in the closed set.
        self.kind = ErrorKind(kind)
        # The first bytes of the offending input, for diagnostics.
        self.snippet = snippet
        # Receiving only: the complete, valid events that came before the error in the same
        # input, so that how a pipe happened to split the bytes never costs a good frame.
        # A receiver delivers these first, then handles the error.
        self.events: list[Any] = []


class LocalProtocolError(ProtocolError):
    """We tried to build or send something the protocol does not allow."""

    def __init__(self, message: str, *, kind: ErrorKind | str = ErrorKind.BAD_FIELD, snippet: bytes = b"") -> None:
        super().__init__(message, kind=kind, snippet=snippet)


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid frame or message, or a message out of turn."""


__all__ = ["ErrorKind", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]
