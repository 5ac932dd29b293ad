'use strict';
// {{name}}: the plugin's handler, written with flow-bridge's Node.js adapter.
//
// flow-bridge starts this program once and sends it every task; `execute` answers each.
// Return an object (the task's result data) or throw a HandlerError (a failed task whose
// message the flow shows). console.log is safe: the adapter sends it to the bridge's log.
// The adapter is a copy in ./adapter (see README.md).

const { serve, HandlerError } = require('./adapter');

function execute(request) {
  const config = request.config; // the flow node's configuration, parsed as JSON
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new HandlerError("the node's config must be a JSON object");
  }
  const name = config.name ?? 'world';
  request.log.info(`greeting ${name}`); // a log line tied to this task
  return { greeting: `hello, ${name}` };
}

// The same function answers the flow editor's debug runs.
serve({ name: '{{name}}', execute, debug: execute });
