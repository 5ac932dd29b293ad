'use strict';
// The child's side of the lifecycle (SPEC.md section 2): handshake, dispatch, cancel,
// state, and the orderly end on `stop` or end of input. Which message may come or go
// when, and for which id, is the Connection's to say (connection.js, the state table of
// protocol/schema.json): what passes it is acted on as it is.

const fs = require('node:fs');
const util = require('node:util');
const codec = require('./codec');
const { Connection } = require('./connection');
const { protectStdio } = require('./stdio');

const ADAPTER_VERSION = require('../package.json').version;
const ADAPTER = `flow-bridge-adapter (node) ${ADAPTER_VERSION}`;
// Text kept for an error or log that would not fit in a frame.
const TRUNCATED = '... [truncated by flow-bridge-adapter: the frame limit was reached]';
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** What a handler returns when it wants a message or detail besides the data. */
class Reply {
  constructor(data = {}, { message = '', detail = '' } = {}) {
    this.data = data;
    this.message = message;
    this.detail = detail;
  }
}

/**
 * A business error with a message for people, an optional detail, and an optional value
 * that goes with the failure (`data`: a debug request's response shows it as its value).
 * Takes `(message, detail, { data, cause })` or `(message, { detail, data, cause })`.
 */
class HandlerError extends Error {
  constructor(message, detail = '', options = undefined) {
    if (detail !== null && typeof detail === 'object') {
      options = detail;
      detail = options.detail ?? '';
    }
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'HandlerError';
    this.detail = detail;
    // Left undefined when not given: an error frame then has no data at all.
    this.data = options?.data;
  }
}

function writeStderr(text) {
  try {
    fs.writeSync(2, text.endsWith('\n') ? text : text + '\n');
  } catch {
    // stderr is gone too; nothing left to tell.
  }
}

function safeString(v) {
  try {
    return String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

function format(args) {
  if (args.length === 1 && typeof args[0] === 'string') return args[0];
  return util.format(...args);
}

/** Logger bound to one request (request.log) or to none (the global `log`). */
class Logger {
  #emit;
  #id;

  constructor(emit, id) {
    this.#emit = emit;
    this.#id = id;
  }

  debug(...args) { this.#emit('debug', format(args), this.#id); }
  info(...args) { this.#emit('info', format(args), this.#id); }
  warning(...args) { this.#emit('warning', format(args), this.#id); }
  warn(...args) { this.#emit('warning', format(args), this.#id); }
  error(...args) { this.#emit('error', format(args), this.#id); }
}

let session = null; // the one Session of this process, once serve() has run

// Before serve() (or before `ready`) there is no log channel: records go to stderr,
// which the bridge forwards to its own log line by line.
function emitLog(level, msg, id) {
  if (session !== null && session.canLog) session.log(level, msg, id);
  else writeStderr(`${level}: ${msg}`);
}

/** The process-wide logger, for records that belong to no request. */
const log = new Logger(emitLog, null);

const UNPARSED = Symbol('unparsed');

/** One `task` or `debug` request, as the handler sees it: SPEC's "request". */
class Request {
  #config = UNPARSED;
  #configText = UNPARSED;
  #controller = null;
  #log = null;

  constructor(msg, kind) {
    this.kind = kind;
    this.id = msg.id;
    this.rawConfig = msg.config;
    this.projectId = msg.project_id ?? '';
    this.flowId = msg.flow_id ?? '';
    this.job = msg.job ?? '';
    this.elementId = msg.element_id ?? '';
    this.elementJob = msg.element_job ?? '';
    this.timeoutMs = msg.timeout_ms ?? 0;
    this.cancelled = false;
    this.cancelReason = null;
  }

  /** The config as text, or null when its bytes are not valid UTF-8. */
  get configText() {
    if (this.#configText === UNPARSED) {
      try {
        this.#configText = strictUtf8.decode(this.rawConfig);
      } catch {
        this.#configText = null;
      }
    }
    return this.#configText;
  }

  /** The config parsed as JSON, or null when it is not JSON (see rawConfig). */
  get config() {
    if (this.#config === UNPARSED) {
      const text = this.configText;
      let value = null;
      if (text !== null) {
        try {
          value = JSON.parse(text);
        } catch {
          value = null;
        }
      }
      this.#config = value;
    }
    return this.#config;
  }

  /** Fires when the bridge cancels this request. */
  get signal() {
    if (this.#controller === null) {
      this.#controller = new AbortController();
      if (this.cancelled) this.#controller.abort(cancelError(this.cancelReason));
    }
    return this.#controller.signal;
  }

  /** Log records tied to this request. */
  get log() {
    return (this.#log ??= new Logger(emitLog, this.id));
  }

  /** Called by the session on `cancel`. */
  _cancel(reason) {
    if (this.cancelled) return;
    this.cancelled = true;
    this.cancelReason = reason;
    if (this.#controller !== null) this.#controller.abort(cancelError(reason));
  }
}

function cancelError(reason) {
  const err = new Error(`cancelled by the bridge (${reason})`);
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  return err;
}

/** Writes frames, batching every frame made in one turn of the event loop into one write. */
class FrameWriter {
  constructor(output) {
    this.output = output;
    this.enc = new codec.Encoder();
    this.maxFrame = codec.DEFAULT_MAX_FRAME;
    this.scheduled = false;
    this.inFlight = 0;
    this.waiters = [];
    this.broken = false;
    this.flush = this.flush.bind(this);
    output.on('error', (err) => {
      // A broken pipe means the bridge is gone; its end of our stdin closes too, and the
      // shutdown that follows needs no answers delivered (SPEC.md 2.5: ignore it).
      if (!this.broken) {
        this.broken = true;
        if (err.code !== 'EPIPE') writeStderr(`${ADAPTER}: writing frames failed: ${err.message}`);
      }
      this.settle();
    });
  }

  frame(msg) {
    this.enc.frame((enc) => enc.message(msg), this.maxFrame);
    this.schedule();
  }

  result(id, data, message, detail) {
    const enc = this.enc;
    enc.frame(() => enc.resultMessage(id, data, message, detail), this.maxFrame);
    this.schedule();
  }

  error(id, message, detail, data) {
    const enc = this.enc;
    enc.frame(() => enc.errorMessage(id, message, detail, data), this.maxFrame);
    this.schedule();
  }

  log(level, msg, id, time) {
    const enc = this.enc;
    enc.frame(() => enc.logMessage(level, msg, id, time), this.maxFrame);
    this.schedule();
  }

  schedule() {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  flush() {
    this.scheduled = false;
    if (this.enc.length === 0) return;
    const chunk = this.enc.take();
    if (this.broken) return;
    this.inFlight++;
    this.output.write(chunk, () => {
      this.inFlight--;
      this.settle();
    });
  }

  settle() {
    if (this.inFlight === 0 || this.broken) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /** Write out everything queued and wait until the pipe has taken it. */
  drained() {
    this.flush();
    if (this.inFlight === 0 || this.broken) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

class Session {
  constructor(options, channel) {
    this.execute = options.execute;
    this.debugHandler = options.debug ?? null;
    this.startHook = options.start ?? null;
    this.stopHook = options.stop ?? null;
    this.stateHook = options.onConnectionStateChanged ?? null;
    this.concurrency = options.concurrency;
    this.name = options.name;
    this.version = options.version;
    this.pluginType = options.pluginType;

    this.input = channel.input;
    this.writer = new FrameWriter(channel.output);
    this.decoder = new codec.FrameDecoder();
    this.conn = new Connection('child');

    this.starting = false; // the start hook runs: ready is not out yet
    this.stopping = false;
    this.canLog = false;
    this.inputEnded = false;
    this.finishing = false;
    this.inflight = new Map(); // id -> Request, from arrival to answer
    this.running = 0;
    this.queue = []; // tasks waiting for a free slot (only if the bridge sends too many)
    this.queueHead = 0;
  }

  run() {
    this.input.on('data', (chunk) => this.onData(chunk));
    this.input.on('end', () => this.onEnd());
    this.input.on('error', (err) => {
      writeStderr(`${ADAPTER}: reading frames failed: ${err.message}`);
      this.onEnd();
    });
    return new Promise(() => {}); // the process ends in finish() or fatal()
  }

  // -- input ------------------------------------------------------------------------

  onData(chunk) {
    let messages;
    try {
      messages = this.decoder.push(chunk);
    } catch (err) {
      this.fatal(err);
      return;
    }
    for (let i = 0; i < messages.length; i++) this.onMessage(messages[i]);
  }

  onEnd() {
    if (this.inputEnded) return;
    this.inputEnded = true;
    try {
      this.decoder.end();
    } catch (err) {
      this.fatal(err);
      return;
    }
    if (this.conn.state === 'await_hello') process.exit(0); // the bridge left before saying hello
    if (this.starting) return; // handled once the start hook is done
    this.beginShutdown();
  }

  onMessage(msg) {
    try {
      this.conn.receive(msg); // in its turn, for an id that may come: else the bridge broke the rules
    } catch (err) {
      return this.fatal(err);
    }
    switch (msg.type) {
      case 'hello':
        return this.onHello(msg);
      case 'task':
        return this.onRequest(msg, 'task');
      case 'debug':
        return this.onRequest(msg, 'debug');
      case 'cancel': {
        const task = this.inflight.get(msg.id);
        // A cancel for an id already answered crossed our answer in the pipes: ignore it.
        if (task !== undefined) task._cancel(msg.reason ?? 'timeout');
        return undefined;
      }
      case 'state':
        return this.onState(msg.connected);
      case 'stop':
        return this.beginShutdown();
      default:
        return undefined; // the connection lets no other type through
    }
  }

  async onHello(hello) {
    this.starting = true;
    const offered = hello.protocols;
    const version = Math.max(...codec.PROTOCOL_VERSIONS.filter((v) => offered.includes(v)));
    if (!Number.isFinite(version)) {
      const ours = codec.PROTOCOL_VERSIONS;
      const advice = Math.max(...offered) > Math.max(...ours)
        ? 'upgrade flow-bridge-adapter' : 'upgrade flow-bridge';
      writeStderr(`${ADAPTER} speaks protocol [${ours.join(', ')}], ` +
        `the bridge offers [${offered.join(', ')}]: ${advice}`);
      process.exit(1);
    }
    const maxFrame = hello.max_frame ?? codec.DEFAULT_MAX_FRAME;
    this.decoder.maxFrame = maxFrame;
    this.writer.maxFrame = maxFrame;
    this.plugin = hello.plugin;

    if (this.startHook !== null) {
      try {
        await this.startHook();
      } catch (err) {
        writeStderr(`${ADAPTER}: the start hook failed: ${err?.stack ?? err}`);
        await this.writer.drained();
        process.exit(1);
      }
    }
    const ready = {
      type: 'ready',
      protocol: version,
      concurrency: this.concurrency,
      debug: this.debugHandler !== null,
      name: this.name,
      version: this.version,
      plugin_type: this.pluginType, // undefined: not declared, left out
    };
    this.conn.send(ready);
    this.writer.frame(ready);
    this.starting = false;
    this.canLog = this.conn.maySend('log');
    if (this.inputEnded) this.beginShutdown();
  }

  onState(connected) {
    if (this.stateHook === null) return;
    const report = (err) => log.error(`the onConnectionStateChanged hook failed: ${err?.stack ?? err}`);
    try {
      const out = this.stateHook(connected);
      if (out && typeof out.then === 'function') out.then(undefined, report);
    } catch (err) {
      report(err);
    }
  }

  // -- requests ---------------------------------------------------------------------

  onRequest(msg, kind) {
    const task = new Request(msg, kind); // the connection refused an id in flight already
    this.inflight.set(task.id, task);
    if (this.running < this.concurrency) this.start(task);
    else this.queue.push(task);
    return undefined;
  }

  start(task) {
    this.running++;
    let handler = task.kind === 'task' ? this.execute : this.debugHandler;
    if (handler === null) {
      handler = () => {
        throw new HandlerError('this handler does not take debug requests (ready.debug was false)');
      };
    }
    let out;
    try {
      out = handler(task);
    } catch (err) {
      this.fail(task, err);
      return;
    }
    if (out !== null && typeof out === 'object' && typeof out.then === 'function') {
      out.then((value) => this.succeed(task, value), (err) => this.fail(task, err));
    } else {
      this.succeed(task, out);
    }
  }

  succeed(task, value) {
    if (!this.answering(task, 'result')) return this.done(task);
    let data = value;
    let message = '';
    let detail = '';
    if (value instanceof Reply) {
      data = value.data;
      message = value.message;
      detail = value.detail;
    }
    // Any JSON-like value is data; only "nothing returned" means an empty map, while
    // null is sent as nil (JSON null).
    if (data === undefined) data = EMPTY;
    try {
      this.writer.result(task.id, data, safeString(message ?? ''), safeString(detail ?? ''));
    } catch (err) {
      if (err instanceof codec.ProtocolError && err.kind === 'frame_too_large') {
        this.answerError(task, codec.tooLargeMessage(err.size, err.limit), '');
        return;
      }
      const own = err instanceof Error && !(err instanceof codec.ProtocolError);
      const why = `the result data cannot be sent: ${err instanceof Error ? err.message : safeString(err)}`;
      this.answerError(task, why, own ? safeString(err.stack ?? '') : '');
      return;
    }
    this.done(task);
  }

  fail(task, err) {
    if (!this.answering(task, 'error')) return this.done(task);
    let message;
    let detail;
    let data;
    if (err instanceof HandlerError) {
      message = err.message;
      detail = err.detail ?? '';
      data = err.data;
    } else if (err instanceof Error) {
      message = err.message || err.name || 'error';
      detail = err.stack ?? '';
    } else {
      message = safeString(err);
      detail = '';
    }
    if (task.cancelled) {
      // The handler gave up because of the cancel (or failed meanwhile): say so.
      detail = `the bridge cancelled the request (${task.cancelReason}); the handler then failed with: ` +
        `${message}${detail ? '\n' + detail : ''}`;
      message = 'cancelled';
    }
    this.answerError(task, message, detail, data);
  }

  /**
   * Account for the one answer of `task` with the connection before its frame is made. A
   * frame that does not fit is replaced by an error for the same id: the same answer.
   */
  answering(task, type) {
    try {
      this.conn.send({ type, id: task.id });
      return true;
    } catch (err) {
      writeStderr(`${ADAPTER}: internal error, answer not sent: ${err.message}`);
      return false;
    }
  }

  answerError(task, message, detail, data = undefined) {
    message = typeof message === 'string' ? message : safeString(message);
    detail = typeof detail === 'string' ? detail : safeString(detail);
    try {
      this.writer.error(task.id, message, detail, data);
    } catch (err) {
      // Too large, or data that cannot be encoded: the answer goes without its data,
      // and with the start of both texts when they are what is too large.
      if (data !== undefined) {
        const why = err instanceof codec.ProtocolError && err.kind === 'frame_too_large'
          ? codec.tooLargeMessage(err.size, err.limit).replace(/^result/, 'error data')
          : `cannot be sent: ${err instanceof Error ? err.message : safeString(err)}`;
        detail = `${detail}${detail ? '\n' : ''}[flow-bridge-adapter: the error's data was left out: ${why}]`;
        try {
          this.writer.error(task.id, message, detail);
          this.done(task);
          return;
        } catch {
          // Still too large: cut the texts below.
        }
      }
      const room = Math.max(64, Math.floor(this.writer.maxFrame / 10));
      this.writer.error(
        task.id,
        message.length > room ? message.slice(0, room) + TRUNCATED : message,
        detail.length > room ? detail.slice(0, room) + TRUNCATED : detail,
      );
    }
    this.done(task);
  }

  done(task) {
    this.inflight.delete(task.id);
    this.running--;
    while (this.running < this.concurrency && this.queueHead < this.queue.length) {
      const next = this.queue[this.queueHead];
      this.queue[this.queueHead++] = undefined;
      if (this.queueHead === this.queue.length) {
        this.queue = [];
        this.queueHead = 0;
      }
      if (next.cancelled) {
        // Never started: answer at once.
        if (!this.answering(next, 'error')) continue;
        this.running++;
        this.answerError(next, 'cancelled', `the bridge cancelled the request (${next.cancelReason}) before it started`);
      } else {
        this.start(next);
      }
    }
    if (this.stopping && this.inflight.size === 0) this.finish();
  }

  // -- logs -------------------------------------------------------------------------

  log(level, msg, id) {
    let text = typeof msg === 'string' ? msg : safeString(msg);
    if (id !== null && !this.inflight.has(id)) {
      // The request is answered: a record tied to it would name an id that is no longer
      // in flight. Send it untied, naming the request in the text instead.
      text = `[request ${id}, after its answer] ${text}`;
      id = null;
    }
    const time = new Date().toISOString();
    try {
      this.writer.log(level, text, id, time);
    } catch {
      const room = Math.max(64, Math.floor(this.writer.maxFrame / 8));
      this.writer.log(level, text.slice(0, room) + TRUNCATED, id, time);
    }
  }

  // -- the end ----------------------------------------------------------------------

  beginShutdown() {
    if (this.stopping) return;
    this.stopping = true;
    if (this.inflight.size === 0) this.finish();
  }

  async finish() {
    if (this.finishing) return;
    this.finishing = true;
    await this.writer.drained();
    if (this.stopHook !== null) {
      try {
        await this.stopHook();
      } catch (err) {
        log.error(`the stop hook failed: ${err?.stack ?? err}`);
      }
    }
    await this.writer.drained();
    process.exit(0);
  }

  fatal(err) {
    const kind = err instanceof codec.ProtocolError ? err.kind : 'internal';
    const snippet = err.snippet?.length ? `; its first bytes: ${err.snippet.toString('hex')}` : '';
    writeStderr(`${ADAPTER}: the bridge broke the protocol (${kind}): ${err.message}${snippet}`);
    process.exit(2);
  }
}

const EMPTY = Object.freeze({});

function checkOptions(options) {
  if (typeof options === 'function') options = { execute: options };
  if (options === null || typeof options !== 'object') {
    throw new TypeError('serve() takes an options object, or the execute function itself');
  }
  const o = { ...options };
  if (typeof o.execute !== 'function') throw new TypeError('serve() needs an execute(task) function');
  for (const hook of ['debug', 'start', 'stop', 'onConnectionStateChanged']) {
    if (o[hook] !== undefined && o[hook] !== null && typeof o[hook] !== 'function') {
      throw new TypeError(`serve(): ${hook} must be a function`);
    }
  }
  o.concurrency ??= 64;
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1 || o.concurrency > 65536) {
    throw new RangeError(`serve(): concurrency must be an integer in 1..65536, got ${o.concurrency}`);
  }
  o.name = String(o.name ?? '');
  o.version = String(o.version ?? ADAPTER_VERSION);
  if (o.pluginType !== undefined && o.pluginType !== null &&
      !Object.values(codec.PluginType).includes(o.pluginType)) {
    throw new RangeError(`serve(): pluginType must be 'service' or 'user', got ${safeString(o.pluginType)}`);
  }
  o.pluginType ??= undefined;
  return o;
}

/**
 * Run this process as a flow-bridge child: read requests from stdin, answer on stdout,
 * until `stop` or end of input, then exit. Returns a promise that never settles.
 */
function serve(options) {
  if (session !== null) throw new Error('serve() was already called in this process');
  const o = checkOptions(options);
  const channel = protectStdio();
  if (channel.input.isTTY) {
    writeStderr(`${ADAPTER}: this program is a flow-bridge handler; it reads msgpack frames on ` +
      'stdin, so start it through flow-bridge (for a quick try: flow-bridge call -- <this command>)');
  }
  session = new Session(o, channel);
  return session.run();
}

module.exports = { serve, Reply, HandlerError, Request, log, ADAPTER_VERSION };
