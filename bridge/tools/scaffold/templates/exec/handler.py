"""{{name}}: the plugin's handler, a plain script for flow-bridge's exec mode.

flow-bridge starts this script once per task. The task arrives on stdin as one JSON object
({"projectId", "flowId", "job", "elementId", "elementJob", "config"}); what the script
prints on stdout is the result (a JSON object as is). Exit non-zero to fail the task: the
last line written to stderr becomes its message. Everything on stderr goes to the log.
No adapter and no flow-bridge import: any language that reads stdin would do.
"""

import json
import sys

task = json.load(sys.stdin)
config = task["config"]  # the flow node's configuration, parsed as JSON
if not isinstance(config, dict):
    print("the node's config must be a JSON object", file=sys.stderr)
    sys.exit(1)
name = config.get("name", "world")
print(f"greeting {name} for task {task['elementJob']}", file=sys.stderr)  # a log line
print(json.dumps({"greeting": f"hello, {name}"}))
