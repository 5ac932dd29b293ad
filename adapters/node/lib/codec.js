'use strict';
// The stdio protocol's wire format (SPEC.md sections 1, 3 and 4), without any I/O.
//
// A frame is a u32 big-endian length and a msgpack body holding one map. This file has
// a strict msgpack decoder (invalid UTF-8 in a str, bytes after the value, lengths that
// run past the end are all `bad_msgpack`), a checker for the ten message types, an
// encoder that writes the canonical form (SPEC.md "Encoding"), and `FrameDecoder`, a
// push parser that cuts frames out of a byte stream in whatever pieces they arrive.

const { isUtf8 } = require('node:buffer');
const schema = require('./schema');

const PROTOCOL_VERSIONS = Object.freeze([1]);
const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
const MIN_MAX_FRAME = 1024;
const MAX_MAX_FRAME = 1024 * 1024 * 1024;
const MAX_ID = Number.MAX_SAFE_INTEGER; // 2**53 - 1
const { ErrorKind, LOG_LEVELS, PLUGIN_TYPES } = schema;
/** The plugin types of hello.plugin_type and ready.plugin_type (SPEC.md section 3). */
const PluginType = Object.freeze(Object.fromEntries(PLUGIN_TYPES.map((t) => [t.toUpperCase(), t])));
// Deeper nesting than this is refused by the decoder (the stack is finite) and by the
// encoder (a cycle would never end). The bridge's own JSON rule stops at 100 already.
const MAX_DEPTH = 512;
const EMPTY_MAP = Object.freeze({});

/** A protocol violation; `kind` is one of the ErrorKind values (SPEC.md section 4). */
class ProtocolError extends Error {
  constructor(kind, message, snippet) {
    super(message);
    this.name = 'ProtocolError';
    this.kind = kind;
    /** The first bytes of the offending input, for diagnostics (a Buffer, maybe empty). */
    this.snippet = snippet || Buffer.alloc(0);
  }
}

/** A msgpack ext value: an application type code and its bytes. */
class Ext {
  constructor(type, data) {
    if (!Number.isInteger(type) || type < -128 || type > 127) {
      throw new RangeError(`ext type must be an integer in -128..127, got ${type}`);
    }
    this.type = type;
    this.data = data;
  }
}

// ---------------------------------------------------------------------------------------
// Decoding. The state lives in module variables: decoding is synchronous and never
// re-entered, and this keeps the hot path free of property lookups.

let B = null; // the Buffer being decoded
let P = 0; // read position
let END = 0; // end of the current body
let FLOATS = 0; // how many floats were read so far
let TOP_FLOATS = null; // keys of the top-level map whose value held a float, or null

function bad(message) {
  return new ProtocolError(ErrorKind.BAD_MSGPACK, message);
}

function need(n) {
  if (END - P < n) throw bad(`msgpack value runs past the end of the frame (needs ${n} more bytes)`);
}

/**
 * Decode one msgpack value filling `buf[start:end]` exactly.
 * Maps become plain objects (or a Map when a key is not a string), bin becomes a Buffer
 * (a copy), ext an `Ext`, integers numbers (BigInt outside the safe range).
 */
function decodeValue(buf, start = 0, end = buf.length) {
  if (start >= end) throw bad('empty frame: a frame must hold one msgpack map');
  B = buf;
  P = start;
  END = end;
  FLOATS = 0;
  TOP_FLOATS = null;
  try {
    const value = read(0);
    if (P !== end) throw bad(`frame holds ${end - P} byte(s) after its msgpack value`);
    return value;
  } finally {
    B = null;
  }
}

function read(depth) {
  if (P >= END) throw bad('msgpack value runs past the end of the frame');
  const t = B[P++];
  if (t < 0x80) return t;
  if (t >= 0xe0) return t - 0x100;
  if (t < 0x90) return readMap(t & 0x0f, depth);
  if (t < 0xa0) return readArray(t & 0x0f, depth);
  if (t < 0xc0) return readStr(t & 0x1f);
  let n;
  switch (t) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: need(1); n = B[P]; P += 1; return readBin(n);
    case 0xc5: need(2); n = B.readUInt16BE(P); P += 2; return readBin(n);
    case 0xc6: need(4); n = B.readUInt32BE(P); P += 4; return readBin(n);
    case 0xc7: need(1); n = B[P]; P += 1; return readExt(n);
    case 0xc8: need(2); n = B.readUInt16BE(P); P += 2; return readExt(n);
    case 0xc9: need(4); n = B.readUInt32BE(P); P += 4; return readExt(n);
    case 0xca: need(4); FLOATS++; n = B.readFloatBE(P); P += 4; return n;
    case 0xcb: need(8); FLOATS++; n = B.readDoubleBE(P); P += 8; return n;
    case 0xcc: need(1); return B[P++];
    case 0xcd: need(2); n = B.readUInt16BE(P); P += 2; return n;
    case 0xce: need(4); n = B.readUInt32BE(P); P += 4; return n;
    case 0xcf: {
      need(8);
      const hi = B.readUInt32BE(P);
      const lo = B.readUInt32BE(P + 4);
      P += 8;
      if (hi < 0x200000) return hi * 0x100000000 + lo;
      return (BigInt(hi) << 32n) | BigInt(lo);
    }
    case 0xd0: need(1); n = B.readInt8(P); P += 1; return n;
    case 0xd1: need(2); n = B.readInt16BE(P); P += 2; return n;
    case 0xd2: need(4); n = B.readInt32BE(P); P += 4; return n;
    case 0xd3: {
      need(8);
      const v = B.readBigInt64BE(P);
      P += 8;
      return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
    }
    case 0xd4: return readExt(1);
    case 0xd5: return readExt(2);
    case 0xd6: return readExt(4);
    case 0xd7: return readExt(8);
    case 0xd8: return readExt(16);
    case 0xd9: need(1); n = B[P]; P += 1; return readStr(n);
    case 0xda: need(2); n = B.readUInt16BE(P); P += 2; return readStr(n);
    case 0xdb: need(4); n = B.readUInt32BE(P); P += 4; return readStr(n);
    case 0xdc: need(2); n = B.readUInt16BE(P); P += 2; return readArray(n, depth);
    case 0xdd: need(4); n = B.readUInt32BE(P); P += 4; return readArray(n, depth);
    case 0xde: need(2); n = B.readUInt16BE(P); P += 2; return readMap(n, depth);
    case 0xdf: need(4); n = B.readUInt32BE(P); P += 4; return readMap(n, depth);
    default: throw bad(`0x${t.toString(16)} is not a msgpack type byte`);
  }
}

function readStr(len) {
  need(len);
  const s = P;
  const e = P + len;
  P = e;
  if (len < 24) {
    // Short strings (keys, most field values) are usually ASCII: build them directly.
    let out = '';
    let i = s;
    for (; i < e; i++) {
      const c = B[i];
      if (c >= 0x80) break;
      out += String.fromCharCode(c);
    }
    if (i === e) return out;
  }
  if (!isUtf8(B.subarray(s, e))) throw bad('a msgpack str holds invalid UTF-8');
  return B.toString('utf8', s, e);
}

function readBin(len) {
  need(len);
  const out = Buffer.allocUnsafe(len);
  B.copy(out, 0, P, P + len);
  P += len;
  return out;
}

function readExt(len) {
  need(1 + len);
  const type = B.readInt8(P);
  P += 1;
  return new Ext(type, readBin(len));
}

function readArray(n, depth) {
  if (depth >= MAX_DEPTH) throw bad(`msgpack nesting deeper than ${MAX_DEPTH}`);
  need(n); // every element takes at least one byte: refuse lying lengths before allocating
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = read(depth + 1);
  return out;
}

// Map keys repeat from frame to frame ("type", "id", "config", ...): short ASCII keys
// come from a cache, so they are the same (internalized) strings every time, which makes
// the property stores that follow fast.
const KEYS = new Map(); // hash -> key
const KEYS_MAX = 1024;

function readKey(depth) {
  const t = B[P];
  if (t >= 0xa1 && t <= 0xb0) {
    const len = t & 0x1f;
    const s = P + 1;
    const e = s + len;
    if (e <= END) {
      let h = len;
      let i = s;
      for (; i < e; i++) {
        const c = B[i];
        if (c >= 0x80) break;
        h = (Math.imul(h, 31) + c) | 0;
      }
      if (i === e) {
        let key = KEYS.get(h);
        if (key !== undefined && key.length === len) {
          let j = 0;
          while (j < len && key.charCodeAt(j) === B[s + j]) j++;
          if (j === len) {
            P = e;
            return key;
          }
        }
        key = B.toString('latin1', s, e);
        if (KEYS.size >= KEYS_MAX) KEYS.clear();
        KEYS.set(h, key);
        P = e;
        return key;
      }
    }
  }
  return read(depth);
}

function readMap(n, depth) {
  if (depth >= MAX_DEPTH) throw bad(`msgpack nesting deeper than ${MAX_DEPTH}`);
  need(2 * n);
  let obj = {};
  let map = null; // used instead of obj once a key is not a string
  for (let i = 0; i < n; i++) {
    const key = readKey(depth + 1);
    const before = FLOATS;
    const value = read(depth + 1);
    if (depth === 0 && FLOATS !== before) (TOP_FLOATS ??= new Set()).add(key);
    if (map === null && typeof key !== 'string') {
      map = new Map(Object.entries(obj));
      obj = null;
    }
    if (map !== null) map.set(key, value);
    else if (key === '__proto__') {
      Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
    } else obj[key] = value;
  }
  return map !== null ? map : obj;
}

// ---------------------------------------------------------------------------------------
// Messages: required and optional fields, their checks, and canonical order.

const isInt = (v) => typeof v === 'number' && Number.isInteger(v);
const isStr = (v) => typeof v === 'string';
const isBin = (v) => v instanceof Uint8Array;
const isBool = (v) => typeof v === 'boolean';

// [name, check, description, default]; `undefined` as default marks a required field,
// ABSENT an optional one that is left out of the frame when absent (SPEC.md "Encoding").
// Built from the generated schema.js: which fields, in which order, required or with
// which default, and their bounds, are protocol/schema.json's to say.
const ABSENT = Symbol('absent');
const ID = [(v) => isInt(v) && v >= 0 && v <= MAX_ID, 'an integer in 0..2^53-1'];
const ANY = [() => true, 'any msgpack value'];
const STR = [isStr, 'a str'];
const inBounds = (min, max) => (v) => isInt(v) && v >= min && (max === undefined || v <= max);
const bounds = (min, max) => (max === undefined ? `an integer >= ${min}` : `an integer in ${min}..${max}`);

function fieldCheck(f) {
  switch (f.type) {
    case 'id': return ID;
    case 'bin': return [isBin, 'a bin'];
    case 'bool': return [isBool, 'a bool'];
    case 'any': return ANY;
    case 'int': return [inBounds(f.min ?? 0, f.max), bounds(f.min ?? 0, f.max)];
    case 'array of int': {
      const item = inBounds(f.min ?? 0, f.max);
      return [(v) => Array.isArray(v) && v.length > 0 && v.every(item), `a non-empty array of ${bounds(f.min ?? 0, f.max)}s`];
    }
    case 'str': {
      if (f.values === undefined) return STR;
      const values = schema[f.values.toUpperCase()];
      return [(v) => values.includes(v), `one of ${values.map((x) => JSON.stringify(x)).join(', ')}`];
    }
    default: throw new Error(`schema.js: no check for field type ${f.type}`);
  }
}

const FIELDS = {};
for (const [type, spec] of Object.entries(schema.MESSAGES)) {
  FIELDS[type] = spec.fields.map((f) => {
    let [check, what] = fieldCheck(f);
    if (f.nil === 'absent') {
      // nil, like absent, means none (error.data, log.id).
      const inner = check;
      check = (v) => v === null || inner(v);
    }
    let dflt;
    if (f.absent) dflt = ABSENT;
    else if (!f.required) dflt = typeof f.default === 'object' && f.default !== null ? EMPTY_MAP : f.default;
    return Object.freeze([f.name, check, what, dflt]);
  });
  Object.freeze(FIELDS[type]);
}
Object.freeze(FIELDS);
// Fields whose value is an integer: a float there is the wrong type even when whole.
const INT_FIELDS = new Set(Object.values(schema.MESSAGES).flatMap(
  (spec) => spec.fields.filter((f) => ['int', 'id', 'array of int'].includes(f.type)).map((f) => f.name)));

const MESSAGE_TYPES = Object.freeze(Object.keys(FIELDS));

/**
 * Check that a decoded value is a valid message (SPEC.md section 3) and return it,
 * unchanged: absent optional fields stay absent, unknown keys stay in place.
 * Throws a ProtocolError of kind not_a_map, missing_type, unknown_type or bad_field.
 */
function checkMessage(value, floatKeys = null) {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Map ||
      value instanceof Uint8Array || value instanceof Ext) {
    // A Map here means a map with non-string keys, which cannot hold a str `type`...
    if (value instanceof Map) {
      const type = value.get('type');
      if (typeof type !== 'string') throw new ProtocolError(ErrorKind.MISSING_TYPE, "the frame's map has no str 'type' field");
      throw new ProtocolError(ErrorKind.BAD_FIELD, `${type} message has keys that are not strings`);
    }
    throw new ProtocolError(ErrorKind.NOT_A_MAP, `a frame must hold a msgpack map, got ${describe(value)}`);
  }
  const type = value.type;
  if (typeof type !== 'string') throw new ProtocolError(ErrorKind.MISSING_TYPE, "the frame's map has no str 'type' field");
  const fields = Object.hasOwn(FIELDS, type) ? FIELDS[type] : undefined;
  if (fields === undefined) throw new ProtocolError(ErrorKind.UNKNOWN_TYPE, `unknown message type ${JSON.stringify(type)}`);
  for (let i = 0; i < fields.length; i++) {
    const [name, check, what, dflt] = fields[i];
    const v = value[name];
    if (v === undefined) {
      if (dflt === undefined) throw new ProtocolError(ErrorKind.BAD_FIELD, `${type} message lacks its required field ${name}`);
      continue;
    }
    if (!check(v) || (floatKeys !== null && INT_FIELDS.has(name) && floatKeys.has(name))) {
      throw new ProtocolError(ErrorKind.BAD_FIELD, `${type}.${name} must be ${what}, got ${describe(v)}`);
    }
  }
  return value;
}

function describe(v) {
  if (v === null) return 'nil';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return 'a bin';
  if (v instanceof Ext) return 'an ext';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'string') return `the str ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v)}`;
  return `${typeof v} ${String(v)}`;
}

/** Decode and check one frame body (the bytes after the length). */
function decodeMessage(buf, start = 0, end = buf.length) {
  const value = decodeValue(buf, start, end);
  return checkMessage(value, TOP_FLOATS);
}

// ---------------------------------------------------------------------------------------
// Encoding.

const textCache = new Map(); // str -> its msgpack encoding, for the protocol's own names

/**
 * Writes msgpack values and frames into a growing buffer. `take()` hands out what was
 * written so far, so that many frames go out in one write.
 */
class Encoder {
  constructor(initialSize = 64 * 1024) {
    this.initialSize = initialSize;
    this.buf = Buffer.allocUnsafe(initialSize);
    this.pos = 0;
  }

  get length() {
    return this.pos;
  }

  /** Everything written since the last take(), as a Buffer the caller now owns. */
  take() {
    const n = this.pos;
    this.pos = 0;
    if (n > this.initialSize / 2) {
      const out = this.buf.subarray(0, n);
      this.buf = Buffer.allocUnsafe(this.initialSize);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.buf.copy(out, 0, 0, n);
    return out;
  }

  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /**
   * Write one frame: `body()` writes the msgpack body. On any error the frame is taken
   * back whole, so a failed encode never leaves half a frame behind.
   */
  frame(body, maxFrame = DEFAULT_MAX_FRAME) {
    const start = this.pos;
    this.ensure(4);
    this.pos += 4;
    try {
      body(this);
    } catch (err) {
      this.pos = start;
      throw err;
    }
    const len = this.pos - start - 4;
    if (len > maxFrame) {
      this.pos = start;
      const err = new ProtocolError(ErrorKind.FRAME_TOO_LARGE, `frame of ${len} bytes exceeds the limit of ${maxFrame}`);
      err.size = len;
      err.limit = maxFrame;
      throw err;
    }
    this.buf.writeUInt32BE(len, start);
    return len;
  }

  /** Write a message map in canonical order, with defaults for absent fields. */
  message(msg) {
    const type = msg.type;
    const fields = Object.hasOwn(FIELDS, type) ? FIELDS[type] : undefined;
    if (fields === undefined) throw new ProtocolError(ErrorKind.UNKNOWN_TYPE, `unknown message type ${JSON.stringify(type)}`);
    let count = 1;
    const values = new Array(fields.length);
    for (let i = 0; i < fields.length; i++) {
      const [name, check, what, dflt] = fields[i];
      let v = msg[name];
      if (v === undefined) {
        if (dflt === undefined) throw new ProtocolError(ErrorKind.BAD_FIELD, `${type} message lacks its required field ${name}`);
        v = dflt;
      }
      if (v === ABSENT || (type === 'log' && name === 'id' && v === null)) {
        values[i] = ABSENT;
        continue;
      }
      if (!check(v)) throw new ProtocolError(ErrorKind.BAD_FIELD, `${type}.${name} must be ${what}, got ${describe(v)}`);
      values[i] = v;
      count++;
    }
    this.mapHeader(count);
    this.text('type');
    this.text(type);
    for (let i = 0; i < fields.length; i++) {
      if (values[i] === ABSENT) continue;
      this.text(fields[i][0]);
      this.value(values[i], 1);
    }
  }

  // Fast paths for the frames a child writes most, same bytes as message(). The caller
  // vouches for the field types (serve.js builds these from checked values).

  resultMessage(id, data, message, detail) {
    this.ensure(1);
    this.buf[this.pos++] = 0x85;
    this.text('type');
    this.text('result');
    this.text('id');
    this.int(id);
    this.text('data');
    this.value(data, 1);
    this.text('message');
    this.str(message);
    this.text('detail');
    this.str(detail);
  }

  /** An error; `data` undefined leaves the field out. */
  errorMessage(id, message, detail, data) {
    this.ensure(1);
    this.buf[this.pos++] = data === undefined ? 0x84 : 0x85;
    this.text('type');
    this.text('error');
    this.text('id');
    this.int(id);
    this.text('message');
    this.str(message);
    this.text('detail');
    this.str(detail);
    if (data !== undefined) {
      this.text('data');
      this.value(data, 1);
    }
  }

  logMessage(level, msg, id, time) {
    this.ensure(1);
    this.buf[this.pos++] = id === null ? 0x84 : 0x85;
    this.text('type');
    this.text('log');
    this.text('level');
    this.text(level);
    this.text('msg');
    this.str(msg);
    if (id !== null) {
      this.text('id');
      this.int(id);
    }
    this.text('time');
    this.str(time);
  }

  /** A str from a small fixed set (field and type names): encoded once, then copied. */
  text(s) {
    let bytes = textCache.get(s);
    if (bytes === undefined) {
      const e = new Encoder(64);
      e.str(s);
      bytes = e.take();
      if (textCache.size < 256) textCache.set(s, bytes);
    }
    const n = bytes.length;
    this.ensure(n);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) buf[p++] = bytes[i];
    this.pos = p;
  }

  // -- values -------------------------------------------------------------------------

  /**
   * Write any JavaScript value as msgpack, the way JSON.stringify would see it where the
   * two overlap: undefined properties are left out, `toJSON()` is honoured (so a Date
   * becomes its ISO string). Bytes (Buffer, any typed array, ArrayBuffer) become bin,
   * a Map a map, a BigInt an integer, an Ext an ext. Lone surrogates in a string become
   * U+FFFD, as in every UTF-8 encoder of the platform. Functions, symbols, Sets and
   * cycles throw a TypeError.
   */
  value(v, depth = 0) {
    switch (typeof v) {
      case 'string': this.str(v); return;
      case 'number': this.number(v); return;
      case 'boolean': this.ensure(1); this.buf[this.pos++] = v ? 0xc3 : 0xc2; return;
      case 'undefined': this.ensure(1); this.buf[this.pos++] = 0xc0; return;
      case 'bigint': this.bigint(v); return;
      case 'object': break;
      default: throw new TypeError(`a ${typeof v} has no msgpack form`);
    }
    if (v === null) {
      this.ensure(1);
      this.buf[this.pos++] = 0xc0;
      return;
    }
    if (depth > MAX_DEPTH) throw new TypeError(`value nested deeper than ${MAX_DEPTH} (is it circular?)`);
    if (Array.isArray(v)) {
      const n = v.length;
      this.arrayHeader(n);
      for (let i = 0; i < n; i++) this.value(v[i], depth + 1);
      return;
    }
    if (ArrayBuffer.isView(v)) {
      this.bin(v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      return;
    }
    if (v instanceof ArrayBuffer) {
      this.bin(new Uint8Array(v));
      return;
    }
    if (v instanceof Map) {
      this.mapHeader(v.size);
      for (const [key, val] of v) {
        this.value(key, depth + 1);
        this.value(val, depth + 1);
      }
      return;
    }
    if (v instanceof Ext) {
      this.ext(v);
      return;
    }
    if (typeof v.toJSON === 'function') {
      this.value(v.toJSON(''), depth + 1);
      return;
    }
    if (v instanceof Set) throw new TypeError('a Set has no msgpack form: use an array ([...set])');
    const keys = Object.keys(v);
    let n = 0;
    for (let i = 0; i < keys.length; i++) if (v[keys[i]] !== undefined) n++;
    this.mapHeader(n);
    for (let i = 0; i < keys.length; i++) {
      const val = v[keys[i]];
      if (val === undefined) continue;
      this.str(keys[i]);
      this.value(val, depth + 1);
    }
  }

  number(v) {
    if (Number.isSafeInteger(v)) this.int(v);
    else {
      this.ensure(9);
      this.buf[this.pos] = 0xcb;
      this.buf.writeDoubleBE(v, this.pos + 1);
      this.pos += 9;
    }
  }

  int(v) {
    this.ensure(9);
    const buf = this.buf;
    let p = this.pos;
    if (v >= 0) {
      if (v < 0x80) buf[p++] = v;
      else if (v < 0x100) { buf[p++] = 0xcc; buf[p++] = v; }
      else if (v < 0x10000) { buf[p++] = 0xcd; buf.writeUInt16BE(v, p); p += 2; }
      else if (v < 0x100000000) { buf[p++] = 0xce; buf.writeUInt32BE(v, p); p += 4; }
      else {
        buf[p++] = 0xcf;
        buf.writeUInt32BE(Math.floor(v / 0x100000000), p);
        buf.writeUInt32BE(v >>> 0, p + 4);
        p += 8;
      }
    } else if (v >= -0x20) buf[p++] = v + 0x100;
    else if (v >= -0x80) { buf[p++] = 0xd0; buf.writeInt8(v, p); p += 1; }
    else if (v >= -0x8000) { buf[p++] = 0xd1; buf.writeInt16BE(v, p); p += 2; }
    else if (v >= -0x80000000) { buf[p++] = 0xd2; buf.writeInt32BE(v, p); p += 4; }
    else { buf[p++] = 0xd3; buf.writeBigInt64BE(BigInt(v), p); p += 8; }
    this.pos = p;
  }

  bigint(v) {
    if (v >= -9007199254740991n && v <= 9007199254740991n) return this.int(Number(v));
    this.ensure(9);
    if (v > 0n && v <= 0xffffffffffffffffn) {
      this.buf[this.pos] = 0xcf;
      this.buf.writeBigUInt64BE(v, this.pos + 1);
    } else if (v < 0n && v >= -0x8000000000000000n) {
      this.buf[this.pos] = 0xd3;
      this.buf.writeBigInt64BE(v, this.pos + 1);
    } else {
      throw new RangeError(`the integer ${v} does not fit in 64 bits`);
    }
    this.pos += 9;
  }

  str(s) {
    const len = s.length;
    if (len < 32) {
      // ASCII fast path; anything else falls through to the general case.
      this.ensure(1 + len);
      const buf = this.buf;
      const start = this.pos;
      let p = start + 1;
      let i = 0;
      for (; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        buf[p++] = c;
      }
      if (i === len) {
        buf[start] = 0xa0 | len;
        this.pos = p;
        return;
      }
    }
    // Reserve the header for the worst case (3 bytes per UTF-16 unit), write the text,
    // then move it if a shorter header suffices: the canonical form wants the shortest.
    const maxBytes = len <= 0x5555555 ? len * 3 : Buffer.byteLength(s);
    const hdr = headerSize(maxBytes);
    this.ensure(hdr + maxBytes);
    const n = this.buf.write(s, this.pos + hdr, 'utf8');
    const h = headerSize(n);
    if (h !== hdr) this.buf.copyWithin(this.pos + h, this.pos + hdr, this.pos + hdr + n);
    const buf = this.buf;
    const p = this.pos;
    if (h === 1) buf[p] = 0xa0 | n;
    else if (h === 2) { buf[p] = 0xd9; buf[p + 1] = n; }
    else if (h === 3) { buf[p] = 0xda; buf.writeUInt16BE(n, p + 1); }
    else { buf[p] = 0xdb; buf.writeUInt32BE(n, p + 1); }
    this.pos = p + h + n;
  }

  bin(bytes) {
    const n = bytes.length;
    this.ensure(5 + n);
    const buf = this.buf;
    let p = this.pos;
    if (n < 0x100) { buf[p++] = 0xc4; buf[p++] = n; }
    else if (n < 0x10000) { buf[p++] = 0xc5; buf.writeUInt16BE(n, p); p += 2; }
    else if (n <= 0xffffffff) { buf[p++] = 0xc6; buf.writeUInt32BE(n, p); p += 4; }
    else throw new RangeError(`bin of ${n} bytes is too long for msgpack`);
    if (n < 32) for (let i = 0; i < n; i++) buf[p++] = bytes[i];
    else { buf.set(bytes, p); p += n; }
    this.pos = p;
  }

  ext(e) {
    const data = e.data;
    const n = data.length;
    this.ensure(6 + n);
    const buf = this.buf;
    let p = this.pos;
    const fix = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[n];
    if (fix !== undefined) buf[p++] = fix;
    else if (n < 0x100) { buf[p++] = 0xc7; buf[p++] = n; }
    else if (n < 0x10000) { buf[p++] = 0xc8; buf.writeUInt16BE(n, p); p += 2; }
    else { buf[p++] = 0xc9; buf.writeUInt32BE(n, p); p += 4; }
    buf.writeInt8(e.type, p++);
    buf.set(data, p);
    this.pos = p + n;
  }

  arrayHeader(n) {
    this.ensure(5);
    const buf = this.buf;
    const p = this.pos;
    if (n < 16) { buf[p] = 0x90 | n; this.pos = p + 1; }
    else if (n < 0x10000) { buf[p] = 0xdc; buf.writeUInt16BE(n, p + 1); this.pos = p + 3; }
    else { buf[p] = 0xdd; buf.writeUInt32BE(n, p + 1); this.pos = p + 5; }
  }

  mapHeader(n) {
    this.ensure(5);
    const buf = this.buf;
    const p = this.pos;
    if (n < 16) { buf[p] = 0x80 | n; this.pos = p + 1; }
    else if (n < 0x10000) { buf[p] = 0xde; buf.writeUInt16BE(n, p + 1); this.pos = p + 3; }
    else { buf[p] = 0xdf; buf.writeUInt32BE(n, p + 1); this.pos = p + 5; }
  }
}

function headerSize(n) {
  return n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

/**
 * The error message for a result frame of `size` bytes over `maxFrame`: the same words
 * in every adapter (SPEC.md section 4).
 */
function tooLargeMessage(size, maxFrame) {
  return `result too large: ${size} bytes, the limit is ${maxFrame} (hello.max_frame); return less data`;
}

/** Encode one value as msgpack bytes. */
function encodeValue(value) {
  const e = new Encoder(256);
  e.value(value);
  return e.take();
}

/** Encode one message as a whole frame (length and body), canonical form. */
function encodeFrame(msg, maxFrame = DEFAULT_MAX_FRAME) {
  const e = new Encoder(256);
  e.frame((enc) => enc.message(msg), maxFrame);
  return e.take();
}

// ---------------------------------------------------------------------------------------
// Framing.

const SNIPPET = 64;
const NO_MESSAGES = Object.freeze([]);

/**
 * Cuts frames out of a byte stream. `push(chunk)` returns the messages completed by the
 * chunk (checked, see checkMessage); `end()` declares end of input. The declared length
 * is checked against `maxFrame` before any byte of the body is kept. After an error the
 * decoder stays broken: a stream that lost its framing cannot be trusted again.
 */
class FrameDecoder {
  constructor(maxFrame = DEFAULT_MAX_FRAME) {
    this.maxFrame = maxFrame;
    this.parts = []; // bytes of an incomplete frame
    this.partsLen = 0;
    this.needed = 0; // how many bytes `parts` must reach before parsing again
    this.broken = null;
    this.ended = false;
  }

  /** How many bytes of an incomplete frame are held. */
  get pendingBytes() {
    return this.partsLen;
  }

  push(chunk) {
    if (this.broken !== null) throw this.broken;
    if (this.ended) throw new Error('FrameDecoder.push after end()');
    if (chunk.length === 0) return NO_MESSAGES;
    let buf = chunk;
    if (this.partsLen > 0) {
      this.parts.push(chunk);
      this.partsLen += chunk.length;
      if (this.partsLen < this.needed) return NO_MESSAGES;
      buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.partsLen);
      this.parts = [];
      this.partsLen = 0;
    }
    const out = [];
    const end = buf.length;
    let off = 0;
    let needed = 4;
    while (end - off >= 4) {
      const len = buf.readUInt32BE(off);
      if (len > this.maxFrame) {
        this.fail(new ProtocolError(ErrorKind.FRAME_TOO_LARGE,
          `frame of ${len} bytes exceeds the limit of ${this.maxFrame}`), buf, off);
      }
      if (end - off - 4 < len) {
        needed = 4 + len;
        break;
      }
      try {
        out.push(decodeMessage(buf, off + 4, off + 4 + len));
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        this.fail(err, buf, off);
      }
      off += 4 + len;
    }
    if (off < end) {
      this.parts.push(off === 0 ? buf : buf.subarray(off));
      this.partsLen = end - off;
      this.needed = needed;
    }
    return out;
  }

  end() {
    if (this.broken !== null) throw this.broken;
    this.ended = true;
    if (this.partsLen > 0) {
      const buf = Buffer.concat(this.parts, this.partsLen);
      this.fail(new ProtocolError(ErrorKind.TRUNCATED,
        `input ended inside a frame (${buf.length} bytes of it were read)`), buf, 0);
    }
  }

  fail(err, buf, off) {
    err.snippet = Buffer.from(buf.subarray(off, off + SNIPPET));
    this.broken = err;
    this.parts = [];
    this.partsLen = 0;
    throw err;
  }
}

module.exports = {
  PROTOCOL_VERSIONS,
  DEFAULT_MAX_FRAME,
  MIN_MAX_FRAME,
  MAX_MAX_FRAME,
  MAX_ID,
  LOG_LEVELS,
  PluginType,
  ErrorKind,
  MESSAGE_TYPES,
  ProtocolError,
  Ext,
  Encoder,
  FrameDecoder,
  decodeValue,
  decodeMessage,
  checkMessage,
  encodeValue,
  encodeFrame,
  tooLargeMessage,
};
