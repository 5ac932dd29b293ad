"""The protocol's error tree.

`ProtocolError` is the base. `LocalProtocolError` means we were about to break the
rules (a bad field in a message we built); `RemoteProtocolError` means the peer did.
Each carries a `kind`, the short name that the shared vectors and SPEC.md use.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every stdio protocol error."""

    kind: str = "protocol"

    def __init__(self, message: str, *, kind: str | None = None, snippet: bytes = b"") -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        # The first bytes of the offending input, for diagnostics.
        self.snippet = snippet


class LocalProtocolError(ProtocolError):
    """We tried to build or send something the protocol does not allow."""

    kind = "bad_field"


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid frame or message."""
