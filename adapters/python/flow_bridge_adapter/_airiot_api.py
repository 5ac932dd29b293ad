"""flow-bridge's own copies of the AIR-IoT Python SDK 4.x plugin classes.

Code written for the vendor SDK (`airiot_python_sdk.flow_plugin`) runs on these after one
import line changes, so a project needs neither the vendor SDK nor its gRPC client. The
names, constructor arguments and attributes follow the vendor's (camelCase attributes
included); the bodies are ours. `flow_bridge.adapter.airiot` re-exports them.
"""

from __future__ import annotations

import abc
import enum
from typing import Any


class FlowPluginType(enum.Enum):
    """How the engine treats the plugin: a user task or a service task."""

    UserTask = "user"
    ServiceTask = "service"


class FlowTask:
    """One task from a flow (the engine's FlowRequest); `config` is the node's raw bytes."""

    __slots__ = ("projectId", "flowId", "job", "elementId", "elementJob", "config")

    def __init__(
        self, project_id: str, flow_id: str, job: str, element_id: str, element_job: str, config: bytes
    ) -> None:
        self.projectId = project_id
        self.flowId = flow_id
        self.job = job
        self.elementId = element_id
        self.elementJob = element_job
        self.config = config

    def __repr__(self) -> str:
        return (
            f"FlowTask(projectId={self.projectId!r}, flowId={self.flowId!r}, job={self.job!r}, "
            f"elementId={self.elementId!r}, elementJob={self.elementJob!r}, config=<{len(self.config)} bytes>)"
        )


class FlowResult:
    """A task's success: `message` and `details` become the engine's info and detail; `data`
    (any JSON value: usually a dict, but a list, a number, a string or None work too) its result."""

    __slots__ = ("message", "details", "data")

    def __init__(self, message: str = "", details: str = "", data: Any = None) -> None:
        self.message = message
        self.details = details
        self.data = data

    def __repr__(self) -> str:
        return f"FlowResult(message={self.message!r}, details={self.details!r}, data={self.data!r})"


class DebugTask:
    """A debug run from the flow editor (the engine's DebugRequest): a task without job ids."""

    __slots__ = ("projectId", "flowId", "elementId", "config")

    def __init__(self, project_id: str, flow_id: str, element_id: str, config: bytes) -> None:
        self.projectId = project_id
        self.flowId = flow_id
        self.elementId = element_id
        self.config = config

    def __repr__(self) -> str:
        return (
            f"DebugTask(projectId={self.projectId!r}, flowId={self.flowId!r}, "
            f"elementId={self.elementId!r}, config=<{len(self.config)} bytes>)"
        )


class DebugLog:
    """One line of a debug run's log, as the flow editor shows it; `time` is the plugin's own
    (RFC 3339 text; empty lets flow-bridge stamp it)."""

    __slots__ = ("level", "time", "msg")

    def __init__(self, level: str, time: str, message: str) -> None:
        self.level = level
        self.time = time
        self.msg = message

    def __repr__(self) -> str:
        return f"DebugLog(level={self.level!r}, time={self.time!r}, message={self.msg!r})"


class DebugResult:
    """A debug run's outcome. On success `value` is the result; on failure `reason` and
    `detail` say why, and `value` and `logs` are kept as well."""

    __slots__ = ("success", "reason", "detail", "value", "logs")

    def __init__(
        self,
        success: bool,
        reason: str = "",
        detail: str = "",
        value: Any = None,
        logs: list[DebugLog] | None = None,
    ) -> None:
        self.success = success
        self.reason = reason
        self.detail = detail
        self.value = value
        self.logs = logs if logs is not None else []

    def __repr__(self) -> str:
        return (
            f"DebugResult(success={self.success!r}, reason={self.reason!r}, detail={self.detail!r}, "
            f"value={self.value!r}, logs={self.logs!r})"
        )


class FlowPlugin(abc.ABC):
    """A flow plugin: subclass it, then `run(plugin)` (or `Startup().run(plugin)`)."""

    @abc.abstractmethod
    def get_name(self) -> str:
        """The name the plugin registers under with the engine."""

    @abc.abstractmethod
    def get_type(self) -> FlowPluginType:
        """Whether the plugin is a user task or a service task."""

    def start(self) -> None:  # noqa: B027 - a hook a plugin may leave alone
        """Called once, before the first connection state change and the first task."""

    def stop(self) -> None:  # noqa: B027
        """Called once at shutdown, after the last task and after `on_connection_state_changed(False)`."""

    def on_connection_state_changed(self, state: bool) -> None:  # noqa: B027
        """Called when the link to the engine comes up (True) or goes down (False)."""

    @abc.abstractmethod
    async def execute(self, request: FlowTask) -> FlowResult:
        """Answer one task; raise to fail it (the exception's text is the engine's info)."""

    async def debug(self, task: DebugTask) -> DebugResult:
        """Answer a debug run. A plugin that leaves this out does not take debug runs."""
        raise NotImplementedError("this plugin does not take debug runs")
