#!/usr/bin/env python3
"""The echo contract (SPEC.md) as a plain Python script for exec mode: no adapter, no
flow-bridge import; the task is JSON on stdin and the result is JSON on stdout."""

import json
import sys
import time

task = json.load(sys.stdin)
config = task["config"]
if not isinstance(config, dict):
    print(json.dumps({"raw": config}))
    sys.exit(0)
if "fail" in config:
    print(config["fail"], file=sys.stderr)
    sys.exit(1)
time.sleep((config.get("sleep_ms") or 0) / 1000)
print(f"echo task {task['elementJob']}", file=sys.stderr)
print(json.dumps({"i": config.get("i"), "n": len(config.get("payload") or "")}))
