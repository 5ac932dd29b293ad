"""One side of a conversation: the codec, and the rules of who may send what, and when.

Theory of operation. Everything that decides whether a message may be sent or received
lives here and in the state table it reads (`SENDS`, `AFTER`, `OPENS_ID`, `CLOSES_ID` in
_schema.py, generated from schema.json; SPEC.md section 2 shows the same table). A
`Connection` is built for one role, the bridge or the child, and both sides walk the
same four states: `await_hello` until hello goes by, `await_ready` until ready does,
`open` for the work, and `stopping` once stop went by. A side moves when it sends a
state-changing message and the other when it receives that message; since hello comes
before ready and ready before stop in every causal order, the two stay in step although
frames cross in the pipes.

Besides the state, each side keeps the ids in flight: a task or debug puts its id in
(`duplicate_id` if it is there already) and its result or error takes it out
(`unknown_id` if it is not there). A cancel or a log may name any id; the two messages
cross answers in the pipes all the time. A bounded memory of the last answered ids only
makes the message of an `unknown_id` say "answered twice" where it can.

`send(event)` checks the rules, encodes and only then moves the state, so an event that
cannot be encoded (a frame over the limit, a value msgpack cannot pack) leaves the
connection as it was and the caller may send something else instead. A rule broken by the
caller raises `LocalProtocolError` and changes nothing. `receive_data(data)` decodes and
checks every frame; the first frame that breaks a rule raises `RemoteProtocolError`, and
like the codec the connection then stays broken for input (a peer that broke the rules
cannot be trusted again) while sends still follow the table, so that a child can finish
and answer the requests in flight. As with the codec, events decoded from the same
chunk before the bad frame are not returned: the conversation is over.

Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from ._codec import Codec, map_to_message
from ._errors import ErrorKind, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import DEFAULT_MAX_FRAME, Event, Hello, Ready
from ._schema import AFTER, CLOSES_ID, OPENS_ID, SENDER, SENDS, ConnectionState, Role

# How many answered ids a connection remembers, only to word an unknown_id as "answered
# twice": enough for the usual slip (a second answer soon after the first) without growing
# with the life of a child that answers millions of requests.
RECENT_ANSWERS = 1024

_OTHER = {Role.BRIDGE: Role.CHILD, Role.CHILD: Role.BRIDGE}
# Messages that need more than a look at the table: they move ids or the state.
_CHECKED = CLOSES_ID | OPENS_ID | AFTER.keys()
# How a message out of turn is described, by the state it came in.
_WHEN = {
    ConnectionState.AWAIT_HELLO: "before hello",
    ConnectionState.AWAIT_READY: "before ready",
    ConnectionState.OPEN: "after ready",
    ConnectionState.STOPPING: "after stop",
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class Connection:
    """The protocol as one role sees it: bytes in, events out, events in, bytes out."""

    def __init__(self, role: Role, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.role = Role(role)
        self.peer = _OTHER[self.role]
        self.codec = Codec(max_frame)
        self.state = ConnectionState.AWAIT_HELLO
        self.hello: Hello | None = None
        self.ready: Ready | None = None
        self._in_flight: set[int] = set()
        self._answered: dict[int, str] = {}  # id -> the type of its answer, oldest first
        self._broken: RemoteProtocolError | None = None
        self._ours = SENDS[self.state][self.role]
        self._theirs = SENDS[self.state][self.peer]

    # --- what the connection knows ----------------------------------------------------

    @property
    def in_flight(self) -> Set[int]:
        """The ids of the requests sent and not yet answered (a live, read-only view)."""
        return self._in_flight

    @property
    def max_frame(self) -> int:
        """The frame limit of both directions: the default until hello, hello's after."""
        return self.codec.max_frame

    @property
    def pending_bytes(self) -> int:
        """How many bytes of an incomplete frame are buffered."""
        return self.codec.pending_bytes

    def may_send(self, message_type: str) -> bool:
        """Whether the table lets this side send a message of that type now (ids aside)."""
        return message_type in self._ours

    # --- output -----------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Check `event` against the rules, encode it, and account for it once encoded."""
        problem = self._problem(self.role, event.TYPE, getattr(event, "id", None), event)
        if problem is not None:
            raise LocalProtocolError(problem[1], kind=problem[0])
        frame = self.codec.send(event)
        self._apply(event.TYPE, getattr(event, "id", None), event)
        return frame

    def send_map(self, message: dict[str, Any]) -> bytes:
        """`send` for a map the caller built in canonical order from trusted values.

        The bridge's per-task path uses it to skip building and validating an event.
        A message that changes the state goes through `send`, which keeps the event.
        """
        message_type = message["type"]
        if message_type in AFTER:
            return self.send(map_to_message(message))
        request_id = message.get("id")
        problem = self._problem(self.role, message_type, request_id, None)
        if problem is not None:
            raise LocalProtocolError(problem[1], kind=problem[0])
        frame = self.codec.send_map(message)
        self._apply(message_type, request_id, None)
        return frame

    # --- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the peer (b"": its output ended); the events they complete."""
        if self._broken is not None:
            raise self._broken
        try:
            events = self.codec.receive_data(data)
        except ProtocolError as exc:
            # Frames complete before the bad bytes still count, if they keep the rules.
            self._broken = exc if isinstance(exc, RemoteProtocolError) else None
            exc.events = self._accept(exc.events)
            raise
        return self._accept(events)

    def _accept(self, events: list[Event]) -> list[Event]:
        """The events that keep the rules, applied; the first that breaks one raises (with those before it)."""
        theirs = self._theirs
        for index, event in enumerate(events):
            message_type = event.TYPE
            request_id = getattr(event, "id", None)
            # The common case in one set lookup; the rest only for requests and answers.
            if message_type not in theirs or message_type in _CHECKED:
                problem = self._problem(self.peer, message_type, request_id, event)
                if problem is not None:
                    self._broken = RemoteProtocolError(problem[1], kind=problem[0])
                    self._broken.events = events[:index]
                    raise self._broken
                self._apply(message_type, request_id, event)
                theirs = self._theirs
        return events

    # --- the rules --------------------------------------------------------------------

    def _problem(
        self, sender: Role, message_type: str, request_id: int | None, event: Event | None
    ) -> tuple[ErrorKind, str] | None:
        """What is wrong with `sender` sending this message now, or None."""
        allowed = self._ours if sender is self.role else self._theirs
        if message_type not in allowed:
            return ErrorKind.UNEXPECTED, self._out_of_turn(sender, message_type)
        if message_type in CLOSES_ID:
            if request_id not in self._in_flight:
                first = self._answered.get(request_id) if request_id is not None else None
                if first is not None:
                    why = f"it was answered already (first {first}, then {message_type})"
                else:
                    why = "it is not in flight (never sent, or answered long ago)"
                return ErrorKind.UNKNOWN_ID, f"the {sender} answered id {request_id}: {why}"
        elif message_type in OPENS_ID:
            if request_id in self._in_flight:
                return ErrorKind.DUPLICATE_ID, (
                    f"the {sender} sent {message_type} {request_id} while a request with that id is in flight"
                )
        elif isinstance(event, Ready) and self.hello is not None and event.protocol not in self.hello.protocols:
            offered = list(self.hello.protocols)
            return ErrorKind.BAD_FIELD, (
                f"the child chose protocol {event.protocol}, but the bridge offered {offered}: upgrade "
                f"flow-bridge, or use an adapter that speaks {max(offered)}"
            )
        return None

    def _out_of_turn(self, sender: Role, message_type: str) -> str:
        owner = SENDER.get(message_type)
        if owner is not None and owner is not sender:
            return f"the {sender} sent {_article(message_type)} {message_type} message, which only the {owner} sends"
        if message_type in AFTER and self.state is not ConnectionState.AWAIT_HELLO:
            return f"the {sender} sent a second {message_type} message"
        return f"the {sender} sent {_article(message_type)} {message_type} message {_WHEN[self.state]}"

    def _apply(self, message_type: str, request_id: int | None, event: Event | None) -> None:
        """Account for a message that passed `_problem` and went by."""
        if message_type in CLOSES_ID:
            assert request_id is not None
            self._in_flight.discard(request_id)
            answered = self._answered
            answered[request_id] = message_type
            if len(answered) > RECENT_ANSWERS:
                del answered[next(iter(answered))]
        elif message_type in OPENS_ID:
            assert request_id is not None
            self._in_flight.add(request_id)
            self._answered.pop(request_id, None)  # an id may come back once it was answered
        target = AFTER.get(message_type)
        if target is not None:
            if isinstance(event, Hello):
                self.hello = event
                self.codec.max_frame = event.max_frame  # the limit hello announces holds both ways
            elif isinstance(event, Ready):
                self.ready = event
            self.state = target
            self._ours = SENDS[target][self.role]
            self._theirs = SENDS[target][self.peer]


__all__ = ["RECENT_ANSWERS", "Connection", "ConnectionState", "Role"]
