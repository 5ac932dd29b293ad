"""Scales a node's readings: config {"readings": [numbers], "factor": number}."""

import json
import logging
from datetime import datetime, timezone

from airiot_python_sdk.flow_plugin import (
    DebugLog,
    DebugResult,
    DebugTask,
    FlowPlugin,
    FlowPluginType,
    FlowResult,
    FlowTask,
)

logger = logging.getLogger("scale-plugin")


def now() -> str:
    # timezone.utc, not datetime.UTC: vendor SDK projects also run on Pythons before 3.11.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: UP017


def scale(config_bytes: bytes) -> list:
    config = json.loads(config_bytes.decode("utf-8"))
    factor = config.get("factor", 1)
    return [reading * factor for reading in config["readings"]]


class ScalePlugin(FlowPlugin):
    def get_name(self) -> str:
        return "scaleReadings"

    def get_type(self) -> FlowPluginType:
        return FlowPluginType.ServiceTask

    def on_connection_state_changed(self, state: bool):
        logger.info("engine %s", "connected" if state else "disconnected")

    def start(self):
        logger.info("scale plugin starting")

    def stop(self):
        logger.info("scale plugin stopped")

    async def execute(self, request: FlowTask) -> FlowResult:
        scaled = scale(request.config)  # a KeyError or ValueError fails the task with its text
        logger.info("scaled %d readings for %s", len(scaled), request.elementJob)
        return FlowResult(message="OK", details="", data=scaled)  # a list: any JSON value works

    async def debug(self, task: DebugTask) -> DebugResult:
        logs = [DebugLog("info", now(), "parsing the config")]
        try:
            scaled = scale(task.config)
        except (KeyError, ValueError) as exc:
            logs.append(DebugLog("error", now(), f"cannot scale: {exc!r}"))
            return DebugResult(False, "the config has no readings", repr(exc), None, logs)
        logs.append(DebugLog("info", now(), f"scaled {len(scaled)} readings"))
        return DebugResult(True, "", "", scaled, logs)
