// Types of flow-bridge-adapter/protocol: frames, messages, msgpack and the connection's
// rules (SPEC.md 1 to 4).

/// <reference types="node" />

export const PROTOCOL_VERSIONS: readonly number[];
/** 16 MiB. */
export const DEFAULT_MAX_FRAME: number;
export const MIN_MAX_FRAME: number;
export const MAX_MAX_FRAME: number;
/** 2^53 - 1. */
export const MAX_ID: number;
export const LOG_LEVELS: readonly ['debug', 'info', 'warning', 'error'];
export const MESSAGE_TYPES: readonly string[];
export const PluginType: { readonly SERVICE: 'service'; readonly USER: 'user' };

export type ProtocolErrorKind =
  | 'frame_too_large'
  | 'truncated'
  | 'bad_msgpack'
  | 'not_a_map'
  | 'missing_type'
  | 'unknown_type'
  | 'bad_field'
  | 'unexpected'
  | 'unknown_id'
  | 'duplicate_id';

/** The protocol error kinds, a closed set (generated from protocol/schema.json). */
export const ErrorKind: {
  readonly FRAME_TOO_LARGE: 'frame_too_large';
  readonly TRUNCATED: 'truncated';
  readonly BAD_MSGPACK: 'bad_msgpack';
  readonly NOT_A_MAP: 'not_a_map';
  readonly MISSING_TYPE: 'missing_type';
  readonly UNKNOWN_TYPE: 'unknown_type';
  readonly BAD_FIELD: 'bad_field';
  readonly UNEXPECTED: 'unexpected';
  readonly UNKNOWN_ID: 'unknown_id';
  readonly DUPLICATE_ID: 'duplicate_id';
};

/** A protocol violation, with its kind from SPEC.md section 4. */
export class ProtocolError extends Error {
  constructor(kind: ProtocolErrorKind, message: string, snippet?: Buffer);
  kind: ProtocolErrorKind;
  /** The first bytes of the offending input. */
  snippet: Buffer;
  /** For frame_too_large from an Encoder: the body size and the limit it exceeded. */
  size?: number;
  limit?: number;
}

/** A msgpack ext value. */
export class Ext {
  constructor(type: number, data: Uint8Array);
  type: number;
  data: Uint8Array;
}

export interface Hello {
  type: 'hello';
  protocols: number[];
  plugin: string;
  plugin_type?: 'service' | 'user';
  max_frame?: number;
  bridge?: string;
}
export interface Ready {
  type: 'ready';
  protocol: number;
  concurrency?: number;
  debug?: boolean;
  name?: string;
  version?: string;
  /** Absent: not declared. */
  plugin_type?: 'service' | 'user';
}
export interface TaskMessage {
  type: 'task';
  id: number;
  config: Buffer;
  project_id?: string;
  flow_id?: string;
  job?: string;
  element_id?: string;
  element_job?: string;
  timeout_ms?: number;
}
export interface DebugMessage {
  type: 'debug';
  id: number;
  config: Buffer;
  project_id?: string;
  flow_id?: string;
  element_id?: string;
  element_job?: string;
  timeout_ms?: number;
}
export interface ResultMessage {
  type: 'result';
  id: number;
  /** Any value; absent means an empty map, null is JSON null. */
  data?: unknown;
  message?: string;
  detail?: string;
}
export interface ErrorMessage {
  type: 'error';
  id: number;
  message: string;
  detail?: string;
  /** A value that goes with the failure; absent (or null): none. */
  data?: unknown;
}
export interface LogMessage {
  type: 'log';
  level: 'debug' | 'info' | 'warning' | 'error';
  msg: string;
  id?: number | null;
  time?: string;
}
export interface Cancel {
  type: 'cancel';
  id: number;
  reason?: string;
}
export interface State {
  type: 'state';
  connected: boolean;
}
export interface Stop {
  type: 'stop';
}
export type Message =
  | Hello | Ready | TaskMessage | DebugMessage | ResultMessage | ErrorMessage | LogMessage | Cancel | State | Stop;

/**
 * Cuts frames out of a byte stream and checks them. Throws ProtocolError; once broken,
 * stays broken.
 */
export class FrameDecoder {
  constructor(maxFrame?: number);
  maxFrame: number;
  /** Bytes of an incomplete frame held. */
  readonly pendingBytes: number;
  /** Feed bytes; returns the messages they complete. */
  push(chunk: Buffer): Message[];
  /** Declare end of input: an error if it leaves half a frame. */
  end(): void;
}

/** Writes msgpack values and whole frames into a growing buffer. */
export class Encoder {
  constructor(initialSize?: number);
  /** Bytes written since the last take(). */
  readonly length: number;
  /** Hand out what was written; the encoder starts over. */
  take(): Buffer;
  /** Write one frame whose body `body` writes; rolled back whole on any error. */
  frame(body: (enc: Encoder) => void, maxFrame?: number): number;
  /** Write a message map in canonical order, filling defaults. */
  message(msg: Message): void;
  resultMessage(id: number, data: unknown, message: string, detail: string): void;
  /** `data` undefined leaves the field out. */
  errorMessage(id: number, message: string, detail: string, data?: unknown): void;
  logMessage(level: string, msg: string, id: number | null, time: string): void;
  /** Write any JavaScript value (see README, "Result data"). */
  value(v: unknown): void;
}

/** Decode exactly one msgpack value from buf[start:end]. */
export function decodeValue(buf: Buffer, start?: number, end?: number): unknown;
/** Decode and check one frame body. */
export function decodeMessage(buf: Buffer, start?: number, end?: number): Message;
/** Check a decoded value is a valid message and return it unchanged. */
export function checkMessage(value: unknown): Message;
export function encodeValue(value: unknown): Buffer;
/** Encode a message as a whole frame, canonical form. */
export function encodeFrame(msg: Message, maxFrame?: number): Buffer;
/** The error message for a result frame over the limit, as every adapter words it. */
export function tooLargeMessage(size: number, maxFrame: number): string;

/** Where a conversation is (SPEC.md section 2). */
export type ConnectionState = 'await_hello' | 'await_ready' | 'open' | 'stopping';

/**
 * One side's view of the conversation: the state table of SPEC.md section 2 and the ids
 * in flight. `send` and `receive` throw a ProtocolError (unexpected, unknown_id,
 * duplicate_id, or bad_field for a ready naming a version hello did not offer); a refused
 * message changes nothing.
 */
export class Connection {
  constructor(role: 'bridge' | 'child');
  readonly role: 'bridge' | 'child';
  readonly state: ConnectionState;
  readonly inFlight: ReadonlySet<number>;
  /** Whether this side may send a message of that type now (ids aside). */
  maySend(type: Message['type']): boolean;
  /** Check a message this side is about to send, and account for it. */
  send(msg: Pick<Message, 'type'> & Partial<{ id: number; protocol: number; protocols: number[] }>): void;
  /** Check a message the peer sent, and account for it. */
  receive(msg: Message): void;
}
