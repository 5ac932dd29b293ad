"""The messages of the stdio protocol, version 1, as small frozen dataclasses.

The same classes serve both sides of the pipe: the bridge sends hello, task, debug,
cancel, state and stop; the child sends ready, result, error and log. Each class checks
its fields when it is built, so an invalid message is stopped where it is made, and
`FIELDS` gives the canonical order in which fields are written (SPEC.md, "Encoding").
The field tables come from schema.json through the generated _schema.py;
tests/test_schema.py checks that these classes declare the same fields and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from msgpack import ExtType

from ._errors import LocalProtocolError
from ._schema import ABSENT_IF_NONE as ABSENT_IF_NONE
from ._schema import FIELDS as _FIELDS
from ._schema import LOG_LEVELS as LOG_LEVELS
from ._schema import NIL_ALLOWED as NIL_ALLOWED
from ._schema import OPTIONAL as OPTIONAL

PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
# A hello must fit, and a frame length is a u32; 1 GiB keeps both sides' buffers sane.
MIN_MAX_FRAME = 1024
MAX_MAX_FRAME = 1024 * 1024 * 1024
# Ids travel as msgpack unsigned ints; 2**53 keeps them exact in JavaScript numbers too.
MAX_ID = 2**53 - 1


class PluginType(StrEnum):
    """How the engine treats the plugin (hello.plugin_type, ready.plugin_type)."""

    SERVICE = "service"
    USER = "user"


PLUGIN_TYPES: tuple[str, ...] = tuple(t.value for t in PluginType)
# The Python types a msgpack value decodes to (or that msgpack packs): result and error
# data may be any of them. Checked at the top level only; the packer checks the rest.
DATA_TYPES = (dict, list, tuple, str, bytes, bytearray, int, float, bool, type(None), ExtType)


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise LocalProtocolError(what)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The three checks below run for every field of every frame, both ways: each builds its
# message only when the check fails (formatting it every time was 7 f-strings per task).


def _check_id(value: object) -> None:
    if not (_is_int(value) and 0 <= value <= MAX_ID):  # type: ignore[operator]
        raise LocalProtocolError(f"id must be an integer in 0..2**53-1, got {value!r}")


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be a string, got {type(value).__name__}")


def _check_data(value: object) -> None:
    if not isinstance(value, DATA_TYPES):
        raise LocalProtocolError(f"data must be a msgpack value, got {type(value).__name__}")


def _check_request(event: Task | Debug) -> None:
    """The checks task and debug share; their string fields are all but id, config, timeout_ms."""
    _check_id(event.id)
    _need(isinstance(event.config, bytes), "config must be bytes (msgpack bin)")
    for name in event.FIELDS[2:-1]:
        _check_str(name, getattr(event, name))
    _need(_is_int(event.timeout_ms) and event.timeout_ms >= 0, "timeout_ms must be a non-negative integer")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Bridge -> child, first frame: what the bridge speaks and which plugin this is."""

    TYPE: ClassVar[str] = "hello"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["hello"]
    protocols: tuple[int, ...]
    plugin: str
    plugin_type: str = "service"
    max_frame: int = DEFAULT_MAX_FRAME
    bridge: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocols", tuple(self.protocols))
        _need(len(self.protocols) > 0, "protocols must list at least one version")
        _need(all(_is_int(v) and v > 0 for v in self.protocols), "protocols must be positive integers")
        _check_str("plugin", self.plugin)
        _need(self.plugin_type in PLUGIN_TYPES, f"plugin_type must be one of {PLUGIN_TYPES}")
        _need(
            _is_int(self.max_frame) and MIN_MAX_FRAME <= self.max_frame <= MAX_MAX_FRAME,
            f"max_frame must be an integer in {MIN_MAX_FRAME}..{MAX_MAX_FRAME}",
        )
        _check_str("bridge", self.bridge)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """Child -> bridge, answer to hello: the chosen version and what the child can do."""

    TYPE: ClassVar[str] = "ready"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["ready"]
    protocol: int
    concurrency: int = 1
    debug: bool = False
    # The handler's own plugin name; the bridge registers under it when no name is configured.
    name: str = ""
    version: str = ""
    # The plugin type the handler declares; None: not declared (left out of the frame).
    plugin_type: str | None = None

    def __post_init__(self) -> None:
        _need(_is_int(self.protocol) and self.protocol > 0, "protocol must be a positive integer")
        _need(
            _is_int(self.concurrency) and 1 <= self.concurrency <= 65536,
            "concurrency must be an integer in 1..65536",
        )
        _need(isinstance(self.debug, bool), "debug must be a boolean")
        _check_str("name", self.name)
        _check_str("version", self.version)
        if self.plugin_type is not None:
            _need(self.plugin_type in PLUGIN_TYPES, f"plugin_type must be one of {PLUGIN_TYPES}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """Bridge -> child: one FlowRequest. `config` is the engine's bytes, untouched."""

    TYPE: ClassVar[str] = "task"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["task"]
    id: int
    config: bytes = b""
    project_id: str = ""
    flow_id: str = ""
    job: str = ""
    element_id: str = ""
    element_job: str = ""
    timeout_ms: int = 0

    def __post_init__(self) -> None:
        _check_request(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Debug:
    """Bridge -> child: one DebugRequest. Like a task, without `job`."""

    TYPE: ClassVar[str] = "debug"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["debug"]
    id: int
    config: bytes = b""
    project_id: str = ""
    flow_id: str = ""
    element_id: str = ""
    element_job: str = ""
    timeout_ms: int = 0

    def __post_init__(self) -> None:
        _check_request(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """Child -> bridge: the task or debug request `id` succeeded with `data`.

    `data` is any msgpack value; absent from the frame it is an empty map, and None is
    sent as nil, which the engine gets as JSON null.
    """

    TYPE: ClassVar[str] = "result"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["result"]
    id: int
    data: Any = field(default_factory=dict)
    message: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_data(self.data)
        _check_str("message", self.message)
        _check_str("detail", self.detail)


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """Child -> bridge: the handler raised. `message` becomes the engine's info.

    `data` is a value that goes with the failure (any msgpack value): for a debug
    request the bridge puts it in the response's `value`. None means none, and is left
    out of the frame; nil on the wire means the same.
    """

    TYPE: ClassVar[str] = "error"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["error"]
    id: int
    message: str
    detail: str = ""
    data: Any = None

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_str("message", self.message)
        _check_str("detail", self.detail)
        _check_data(self.data)

    @classmethod
    def too_large(cls, id: int, size: int, max_frame: int) -> Error:
        """The answer a child sends instead of a frame of `size` bytes over the limit (SPEC 4)."""
        return cls(id=id, message=too_large_message(size, max_frame))


def too_large_message(size: int, max_frame: int) -> str:
    """The one wording every adapter uses for a result frame that would not fit (SPEC 4)."""
    return f"result too large: {size} bytes, the limit is {max_frame} (hello.max_frame); return less data"


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    """Child -> bridge: a log record, tied to a task when `id` is set."""

    TYPE: ClassVar[str] = "log"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["log"]
    level: str
    msg: str
    id: int | None = None
    time: str = ""

    def __post_init__(self) -> None:
        _need(self.level in LOG_LEVELS, f"level must be one of {LOG_LEVELS}, got {self.level!r}")
        _check_str("msg", self.msg)
        if self.id is not None:
            _check_id(self.id)
        _check_str("time", self.time)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Bridge -> child: stop working on `id` and answer it soon."""

    TYPE: ClassVar[str] = "cancel"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["cancel"]
    id: int
    reason: str = "timeout"

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_str("reason", self.reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """Bridge -> child: the engine connection went up or down."""

    TYPE: ClassVar[str] = "state"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["state"]
    connected: bool

    def __post_init__(self) -> None:
        _need(isinstance(self.connected, bool), "connected must be a boolean")


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    """Bridge -> child: finish what is in flight, then exit."""

    TYPE: ClassVar[str] = "stop"
    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS["stop"]


Event = Hello | Ready | Task | Debug | Result | Error | Log | Cancel | State | Stop
EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls for cls in (Hello, Ready, Task, Debug, Result, Error, Log, Cancel, State, Stop)
}
