#!/usr/bin/env python3
"""A plain script for exec-mode tests; config["mode"] picks what it does."""

import json
import os
import signal
import subprocess
import sys
import time

raw = sys.stdin.buffer.read()
task = json.loads(raw)
config = task["config"]
mode = config.get("mode") if isinstance(config, dict) else "stdin"

if mode == "stdin":
    env = {k: v for k, v in os.environ.items() if k.startswith("FLOW_")}
    print(json.dumps({"stdin": raw.decode("utf-8"), "env": env, "argv": sys.argv[1:]}))
elif mode == "exit3":
    print("reading config", file=sys.stderr)
    print("bad input", file=sys.stderr)
    sys.exit(3)
elif mode == "silent-exit":
    sys.exit(7)
elif mode == "grandchild":
    subprocess.Popen(["sleep", "300"])
    time.sleep(60)
elif mode == "flood":
    sys.stdout.write("x" * config["bytes"])
elif mode == "text":
    print("plain text, not JSON")
elif mode == "list":
    print(json.dumps([1, 2, 3]))
elif mode == "empty":
    pass
elif mode == "kill9":
    os.kill(os.getpid(), signal.SIGKILL)
