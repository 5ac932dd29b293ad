'use strict';
// flow-bridge-adapter: write flow-bridge handlers in JavaScript. See README.md.

const { serve, Reply, HandlerError, Request, log, ADAPTER_VERSION } = require('./lib/serve');
const { protectStdio } = require('./lib/stdio');
const protocol = require('./protocol');

const { PluginType } = protocol;

module.exports = {
  serve,
  Reply,
  HandlerError,
  Request,
  log,
  protectStdio,
  PluginType,
  protocol,
  version: ADAPTER_VERSION,
  // The names of earlier versions, deprecated: every adapter now says request and reply.
  Task: Request,
  Result: Reply,
};
