// Types of flow-bridge-adapter. Hand-written; the package is plain JavaScript.

import * as protocol from './protocol';

/** A log level of the protocol. */
export type LogLevel = 'debug' | 'info' | 'warning' | 'error';

/** Writes `log` frames. Arguments are formatted like console.log (util.format). */
export interface Logger {
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warning(...args: unknown[]): void;
  /** Same as warning(). */
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

/** How the engine treats the plugin (ready.plugin_type). */
export type PluginTypeName = 'service' | 'user';

/** The plugin types, as constants: `PluginType.USER` is `'user'`. */
export const PluginType: { readonly SERVICE: 'service'; readonly USER: 'user' };

/** A value the config may parse to. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** One request: a `task` (an engine FlowRequest) or a `debug` request (DebugRequest). */
export interface Request {
  /** Which request this is: `execute` gets tasks, `debug` gets debug requests. */
  readonly kind: 'task' | 'debug';
  /** The bridge's id of the request (unique among the requests in flight). */
  readonly id: number;
  /**
   * The config parsed as JSON, or null when its bytes are not JSON (then see rawConfig
   * and configText). Parsed on first access. Integers beyond 2^53 lose precision, as in
   * any JSON.parse: read configText yourself if you need them exact.
   */
  readonly config: JsonValue;
  /** The config's bytes, exactly as the engine sent them. */
  readonly rawConfig: Buffer;
  /** The config as text, or null when its bytes are not valid UTF-8. */
  readonly configText: string | null;
  readonly projectId: string;
  readonly flowId: string;
  /** Empty for debug requests. */
  readonly job: string;
  readonly elementId: string;
  readonly elementJob: string;
  /** The time the bridge allows for this request in ms; 0 means none. */
  readonly timeoutMs: number;
  /** Fires when the bridge cancels the request; its reason is an AbortError. */
  readonly signal: AbortSignal;
  /** True once the bridge has cancelled the request. */
  readonly cancelled: boolean;
  /** Why the bridge cancelled (`timeout` or `shutdown`), or null. */
  readonly cancelReason: string | null;
  /** Log records tied to this request (for a debug request, they go into its response). */
  readonly log: Logger;
}

/**
 * The result data: any JSON-like value. An object (or a Map) becomes a JSON object, an
 * array an array, and strings, numbers, booleans and null stay what they are. Buffers and
 * typed arrays travel as bin (base64 in JSON), a Date as its ISO string, a BigInt as an
 * integer.
 */
export type ResultData =
  | { [key: string]: unknown }
  | Map<unknown, unknown>
  | unknown[]
  | string
  | number
  | bigint
  | boolean
  | null
  | Uint8Array
  | Date;

/** Return this instead of plain data to add a message (the engine's `info`) or detail. */
export class Reply<D extends ResultData = ResultData> {
  constructor(data?: D, options?: { message?: string; detail?: string });
  data: D;
  message: string;
  detail: string;
}

/** @deprecated The former name of Request. */
export type Task = Request;
/** @deprecated The former name of Reply: use Reply. */
export const Result: typeof Reply;
/** @deprecated The former name of Reply: use Reply. */
export type Result<D extends ResultData = ResultData> = Reply<D>;

/** Options of a HandlerError. */
export interface HandlerErrorOptions {
  /** More text for people, such as a trace. */
  detail?: string;
  /** A value that goes with the failure: a debug request's response shows it as `value`. */
  data?: ResultData;
  /** The error that caused this one, as in `new Error(message, { cause })`. */
  cause?: unknown;
}

/**
 * Throw this for a business error: `message` for people, `detail` for more, `data` for a
 * value that goes with the failure.
 */
export class HandlerError extends Error {
  constructor(message: string, detail?: string, options?: Omit<HandlerErrorOptions, 'detail'>);
  constructor(message: string, options: HandlerErrorOptions);
  detail: string;
  /** undefined when the error carries no value. */
  data: ResultData | undefined;
}

/** What a handler may return (or resolve to). undefined means empty data ({}); null is null. */
export type HandlerReturn = ResultData | Reply | undefined | void;

export type Handler = (request: Request) => HandlerReturn | Promise<HandlerReturn>;

export interface ServeOptions {
  /** Handles a task. Return the result data (or a Reply); throw to answer an error. */
  execute: Handler;
  /** Handles a debug request; ready.debug is true only when this is given. */
  debug?: Handler;
  /** Runs once after hello, before ready. If it throws, the process exits with status 1. */
  start?: () => unknown | Promise<unknown>;
  /** Runs once at the end, after the last answer was written. */
  stop?: () => unknown | Promise<unknown>;
  /** Called when the bridge's link to the engine goes up (true) or down (false). */
  onConnectionStateChanged?: (connected: boolean) => unknown | Promise<unknown>;
  /** How many requests run at once, 1..65536 (ready.concurrency). Default 64. */
  concurrency?: number;
  /**
   * The handler's own plugin name (ready.name): the bridge registers under it when no
   * name is configured, and shows it in its logs.
   */
  name?: string;
  /** The plugin type the handler declares (ready.plugin_type); used when none is configured. */
  pluginType?: PluginTypeName;
  /** The handler's version, for the bridge's logs. Default: the adapter's version. */
  version?: string;
}

/**
 * Run this process as a flow-bridge child until `stop` or end of input, then exit 0.
 * Takes stdout for frames first (see protectStdio). The promise never settles.
 */
export function serve(options: ServeOptions | Handler): Promise<never>;

/** The process-wide logger, for records tied to no request. Before ready: stderr. */
export const log: Logger;

/**
 * Reserve stdout and stdin for frames: process.stdout becomes process.stderr, every
 * console method writes to stderr, process.stdin becomes an empty stream. serve() calls
 * it; call it yourself first if your module prints at load time. Does not reach code
 * that writes to fd 1 itself, nor child processes started with stdio 'inherit'.
 */
export function protectStdio(): { input: NodeJS.ReadableStream; output: NodeJS.WritableStream };

/** The wire format: also available alone as `flow-bridge-adapter/protocol`. */
export { protocol };

/** This adapter's version. */
export const version: string;
