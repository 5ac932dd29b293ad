"""Stand-in for `airiot_python_sdk.flow_plugin`: the plugin API of the vendor SDK 4.x,
written from its documented names and signatures (tests only)."""

from abc import ABC, abstractmethod
from enum import Enum


class FlowPluginType(Enum):
    # Deliberately not flow-bridge's values: the adapter must go by the member names.
    UserTask = 1
    ServiceTask = 2


class FlowTask:
    def __init__(self, project_id, flow_id, job, element_id, element_job, config: bytes):
        self.projectId = project_id
        self.flowId = flow_id
        self.job = job
        self.elementId = element_id
        self.elementJob = element_job
        self.config = config


class FlowResult:
    def __init__(self, message: str, details: str, data):
        self.message = message
        self.details = details
        self.data = data


class DebugTask:
    def __init__(self, project_id, flow_id, element_id, config: bytes):
        self.projectId = project_id
        self.flowId = flow_id
        self.elementId = element_id
        self.config = config


class DebugLog:
    def __init__(self, level: str, time: str, message: str):
        self.level = level
        self.time = time
        self.msg = message


class DebugResult:
    def __init__(self, success: bool, reason: str, detail: str, value, logs):
        self.success = success
        self.reason = reason
        self.detail = detail
        self.value = value
        self.logs = logs


class FlowPlugin(ABC):
    @abstractmethod
    def get_name(self) -> str: ...

    @abstractmethod
    def get_type(self) -> FlowPluginType: ...

    @abstractmethod
    def on_connection_state_changed(self, state: bool): ...

    @abstractmethod
    def start(self): ...

    @abstractmethod
    def stop(self): ...

    @abstractmethod
    async def execute(self, request: FlowTask) -> FlowResult: ...

    @abstractmethod
    async def debug(self, task: DebugTask) -> DebugResult: ...
