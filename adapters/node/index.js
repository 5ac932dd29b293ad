'use strict';
// flow-bridge-adapter: write flow-bridge handlers in JavaScript. See README.md.

const { serve, Result, HandlerError, Task, log, ADAPTER_VERSION } = require('./lib/serve');
const { protectStdio } = require('./lib/stdio');
const protocol = require('./lib/codec');

const { PluginType } = protocol;

module.exports = {
  serve,
  Result,
  HandlerError,
  Task,
  log,
  protectStdio,
  PluginType,
  protocol,
  version: ADAPTER_VERSION,
};
