'use strict';
// The codec beyond the shared vectors: strictness, canonical form, JavaScript values,
// and a cross-check against an independent msgpack implementation (@msgpack/msgpack).

const test = require('node:test');
const assert = require('node:assert/strict');
const {
  Encoder, FrameDecoder, Ext, ProtocolError, decodeValue, decodeMessage, encodeValue, encodeFrame,
  DEFAULT_MAX_FRAME,
} = require('../protocol');

let reference = null;
try {
  reference = require('@msgpack/msgpack');
} catch {
  // devDependency missing (npm install --omit=dev): the cross-check is skipped.
}

const hex = (s) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const frame = (body) => {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(body.length);
  return Buffer.concat([h, body]);
};
const kindOf = (fn) => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ProtocolError, `expected a ProtocolError, got ${err}`);
    return err.kind;
  }
  return 'no error';
};

// -- decoding ------------------------------------------------------------------------

test('invalid UTF-8 in any str is bad_msgpack: values, keys, overlong forms, surrogates', () => {
  for (const bad of ['c0 80', 'ed a0 80', 'f8 88 80 80 80', 'e4 b8', 'ff']) {
    const s = hex(bad);
    const str = Buffer.concat([Buffer.from([0xa0 | s.length]), s]);
    assert.equal(kindOf(() => decodeValue(str)), 'bad_msgpack', bad);
    const asKey = Buffer.concat([Buffer.from([0x81]), str, Buffer.from([0x01])]);
    assert.equal(kindOf(() => decodeValue(asKey)), 'bad_msgpack', `${bad} as a key`);
    const long = Buffer.concat([Buffer.from([0xd9, 40 + s.length]), Buffer.from('x'.repeat(40)), s]);
    assert.equal(kindOf(() => decodeValue(long)), 'bad_msgpack', `${bad} in a long str`);
  }
  // ...while a bin may hold anything.
  assert.deepEqual(decodeValue(hex('c4 02 ff fe')), Buffer.from([0xff, 0xfe]));
});

test('lengths that run past the end are refused before anything is allocated', () => {
  for (const body of ['dd ffffffff 01', 'df ffffffff', 'c6 ffffffff 00', 'db 7fffffff 61', 'dc 0002 01', 'cd 01', 'c1']) {
    assert.equal(kindOf(() => decodeValue(hex(body))), 'bad_msgpack', body);
  }
});

test('nesting deeper than the limit is bad_msgpack, not a stack overflow', () => {
  const deep = Buffer.concat([Buffer.alloc(100000, 0x91), Buffer.from([0xc0])]);
  assert.equal(kindOf(() => decodeValue(deep)), 'bad_msgpack');
});

test('integers: every width, the id range, BigInt beyond 2^53', () => {
  const cases = [
    ['00', 0], ['7f', 127], ['cc 80', 128], ['cd 0100', 256], ['ce 00010000', 65536],
    ['cf 001fffffffffffff', 2 ** 53 - 1], ['cf ffffffffffffffff', 18446744073709551615n],
    ['ff', -1], ['e0', -32], ['d0 80', -128], ['d1 8000', -32768], ['d2 80000000', -(2 ** 31)],
    ['d3 8000000000000000', -9223372036854775808n], ['d3 ffffffffffffffff', -1],
  ];
  for (const [body, want] of cases) assert.equal(decodeValue(hex(body)), want, body);
  const task = (idHex) => hex(`83 a4 74797065 a4 7461736b a2 6964 ${idHex} a6 636f6e666967 c4 00`);
  assert.equal(decodeMessage(task('cf 001fffffffffffff')).id, 2 ** 53 - 1);
  assert.equal(kindOf(() => decodeMessage(task('cf 0020000000000000'))), 'bad_field', '2^53');
  assert.equal(kindOf(() => decodeMessage(task('cf ffffffffffffffff'))), 'bad_field', '2^64-1');
  // A float is not an int, even a whole one.
  assert.equal(kindOf(() => decodeMessage(task('cb 3ff0000000000000'))), 'bad_field', '1.0');
  assert.equal(kindOf(() => decodeMessage(task('ca 3f800000'))), 'bad_field', 'float32 1.0');
});

test('maps: non-str keys give a Map, __proto__ is a plain key', () => {
  const m = decodeValue(hex('82 01 a1 61 a1 62 02'));
  assert.ok(m instanceof Map);
  assert.deepEqual([...m], [[1, 'a'], ['b', 2]]);
  const o = decodeValue(hex('81 a9 5f5f70726f746f5f5f 81 a1 78 01'));
  assert.equal(Object.getPrototypeOf(o), Object.prototype);
  assert.deepEqual(Object.keys(o), ['__proto__']);
  assert.equal(({}).x, undefined, 'no prototype pollution');
});

test('messages: field types are checked, unknown keys are kept and ignored', () => {
  const ok = encodeFrame({ type: 'task', id: 1, config: Buffer.from('{}') });
  const msg = new FrameDecoder().push(ok)[0];
  assert.equal(msg.type, 'task');
  const bad = (map) => kindOf(() => decodeMessage(encodeValue(map)));
  assert.equal(bad({ type: 'hello', protocols: [], plugin: 'p' }), 'bad_field');
  assert.equal(bad({ type: 'hello', protocols: [1], plugin: 'p', max_frame: 10 }), 'bad_field');
  assert.equal(bad({ type: 'hello', protocols: [1], plugin: 'p', plugin_type: 'x' }), 'bad_field');
  assert.equal(bad({ type: 'task', id: 1, config: 'text' }), 'bad_field');
  assert.equal(bad({ type: 'task', id: 1, config: Buffer.alloc(0), timeout_ms: -1 }), 'bad_field');
  assert.equal(bad({ type: 'cancel' }), 'bad_field');
  assert.equal(bad({ type: 'state', connected: 1 }), 'bad_field');
  assert.equal(bad({ type: 'ready', protocol: 1, concurrency: 65537 }), 'bad_field');
  assert.equal(bad({ type: 'toString' }), 'unknown_type');
  assert.equal(bad({ type: 'constructor' }), 'unknown_type');
  assert.equal(kindOf(() => decodeMessage(encodeValue(new Map([[1, 2]])))), 'missing_type');
  assert.equal(kindOf(() => decodeMessage(encodeValue('stop'))), 'not_a_map');
  assert.equal(kindOf(() => decodeMessage(Buffer.alloc(0))), 'bad_msgpack');
});

test('FrameDecoder: frames split anywhere, many per chunk, limit checked on the header alone', () => {
  const frames = [];
  for (let i = 0; i < 50; i++) frames.push(encodeFrame({ type: 'task', id: i, config: Buffer.alloc(i * 97, i) }));
  const all = Buffer.concat(frames);
  for (const piece of [1, 7, 4096, all.length]) {
    const d = new FrameDecoder();
    const got = [];
    for (let i = 0; i < all.length; i += piece) got.push(...d.push(all.subarray(i, i + piece)));
    d.end();
    assert.deepEqual(got.map((m) => [m.id, m.config.length]), frames.map((_, i) => [i, i * 97]));
  }
  const d = new FrameDecoder(2048);
  assert.equal(kindOf(() => d.push(hex('00000801'))), 'frame_too_large');
  assert.equal(kindOf(() => d.push(hex('00'))), 'frame_too_large', 'stays broken');
  const e = new FrameDecoder();
  e.push(all.subarray(0, 10));
  assert.equal(kindOf(() => e.end()), 'truncated');
});

// -- encoding ------------------------------------------------------------------------

test('canonical form: shortest headers at every boundary', () => {
  const b = (v) => encodeValue(v).toString('hex');
  assert.equal(b(127), '7f');
  assert.equal(b(128), 'cc80');
  assert.equal(b(255), 'ccff');
  assert.equal(b(256), 'cd0100');
  assert.equal(b(65536), 'ce00010000');
  assert.equal(b(2 ** 32), 'cf0000000100000000');
  assert.equal(b(2 ** 53 - 1), 'cf001fffffffffffff');
  assert.equal(b(-32), 'e0');
  assert.equal(b(-33), 'd0df');
  assert.equal(b(-129), 'd1ff7f');
  assert.equal(b(-32769), 'd2ffff7fff');
  assert.equal(b(-(2 ** 31) - 1), 'd3ffffffff7fffffff');
  assert.equal(b(-0), '00');
  assert.equal(b(1.5), 'cb3ff8000000000000');
  assert.equal(b(2 ** 64), 'cb43f0000000000000', 'beyond the safe range a number is a float');
  for (const [len, head] of [[31, 'bf'], [32, 'd920'], [255, 'd9ff'], [256, 'da0100'], [65536, 'db00010000']]) {
    assert.ok(b('a'.repeat(len)).startsWith(head), `ascii ${len}`);
  }
  // Non-ASCII: the header follows the UTF-8 length, not the number of characters.
  assert.ok(b('中'.repeat(10)).startsWith('be'), '30 bytes');
  assert.ok(b('中'.repeat(11)).startsWith('d921'), '33 bytes');
  assert.ok(b('中'.repeat(85)).startsWith('d9ff'), '255 bytes');
  assert.ok(b('中'.repeat(86)).startsWith('da0102'), '258 bytes');
  assert.ok(b('中'.repeat(30000)).startsWith('db' + (90000).toString(16).padStart(8, '0')));
  assert.ok(b(Buffer.alloc(256)).startsWith('c50100'));
  assert.ok(b(new Array(16).fill(0)).startsWith('dc0010'));
  assert.ok(b(Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, i]))).startsWith('de0010'));
});

test('JavaScript values: Date, BigInt, Map, typed arrays, undefined, lone surrogates', () => {
  const d = (v) => decodeValue(encodeValue(v));
  assert.equal(d(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678))), '2026-01-02T03:04:05.678Z');
  assert.equal(d(12345678901234567890n), 12345678901234567890n);
  assert.equal(d(-(2n ** 63n)), -(2n ** 63n));
  assert.throws(() => encodeValue(2n ** 64n), RangeError);
  assert.deepEqual([...d(new Map([[1, 'a'], ['b', 2]]))], [[1, 'a'], ['b', 2]]);
  assert.deepEqual(d(new Uint16Array([1, 2])), Buffer.from(new Uint16Array([1, 2]).buffer));
  assert.deepEqual(d(new Uint8Array([1, 2]).buffer), Buffer.from([1, 2]));
  assert.deepEqual(d({ a: undefined, b: 1, c: [undefined] }), { b: 1, c: [null] });
  assert.deepEqual(d({ toJSON: () => ({ x: 1 }) }), { x: 1 });
  assert.equal(encodeValue('a\ud800b').toString('hex'), 'a561efbfbd62', 'lone surrogate -> U+FFFD');
  assert.equal(d('x'.repeat(40) + '\udc00'), 'x'.repeat(40) + '\ufffd');
  assert.equal(d('🙂 温度'), '🙂 温度');
  const ext = d(new Ext(5, Buffer.from([1, 2, 3])));
  assert.ok(ext instanceof Ext);
  assert.equal(ext.type, 5);
  assert.throws(() => encodeValue(new Set([1])), TypeError);
  assert.throws(() => encodeValue(() => 1), TypeError);
  assert.throws(() => encodeValue(Symbol('x')), TypeError);
  const loop = {};
  loop.self = loop;
  assert.throws(() => encodeValue(loop), TypeError);
});

test('Encoder.frame: too large or failing frames are taken back whole', () => {
  const e = new Encoder(16);
  e.frame((enc) => enc.message({ type: 'stop' }));
  const before = e.length;
  assert.equal(kindOf(() => e.frame((enc) => enc.message({ type: 'result', id: 1, data: { s: 'x'.repeat(2000) } }), 1024)), 'frame_too_large');
  assert.throws(() => e.frame((enc) => enc.message({ type: 'result', id: 1, data: { f: () => 1, s: Symbol('s') } })), TypeError);
  assert.throws(() => e.frame((enc) => enc.message({ type: 'result', id: 1, data: { bad: 1n << 70n } })), RangeError);
  assert.equal(kindOf(() => e.frame((enc) => enc.message({ type: 'result', id: -1 }))), 'bad_field');
  assert.equal(e.length, before);
  e.frame((enc) => enc.message({ type: 'log', level: 'info', msg: 'm' }));
  const msgs = new FrameDecoder().push(e.take());
  assert.deepEqual(msgs.map((m) => m.type), ['stop', 'log']);
  assert.equal('id' in msgs[1], false, 'an absent log.id is left out');
});

test('the fast paths for result, error and log write the same bytes as message()', () => {
  const same = (fast, msg) => {
    const a = new Encoder();
    a.frame(fast);
    assert.equal(a.take().toString('hex'), encodeFrame(msg).toString('hex'));
  };
  const data = { i: 1, n: 2, s: '中文', b: Buffer.from([1]), a: [1.5, null] };
  same((e) => e.resultMessage(2 ** 53 - 1, data, 'ok', 'd'.repeat(300)), { type: 'result', id: 2 ** 53 - 1, data, message: 'ok', detail: 'd'.repeat(300) });
  same((e) => e.errorMessage(0, 'bad', ''), { type: 'error', id: 0, message: 'bad' });
  same((e) => e.errorMessage(5, 'bad', 'd', { v: [1] }), { type: 'error', id: 5, message: 'bad', detail: 'd', data: { v: [1] } });
  same((e) => e.errorMessage(5, 'bad', '', null), { type: 'error', id: 5, message: 'bad', data: null });
  for (const d of [[1, 'a'], 'text', 42, 2.5, true, null]) {
    same((e) => e.resultMessage(1, d, '', ''), { type: 'result', id: 1, data: d });
  }
  // Absent data is an empty map; null is nil (JSON null), not the same thing.
  assert.equal(encodeFrame({ type: 'result', id: 1 }).toString('hex'),
    encodeFrame({ type: 'result', id: 1, data: {}, message: '', detail: '' }).toString('hex'));
  assert.notEqual(encodeFrame({ type: 'result', id: 1 }).toString('hex'),
    encodeFrame({ type: 'result', id: 1, data: null }).toString('hex'));
  same((e) => e.logMessage('warning', '低电量', null, ''), { type: 'log', level: 'warning', msg: '低电量' });
  same((e) => e.logMessage('info', 'm', 3, 't'), { type: 'log', level: 'info', msg: 'm', id: 3, time: 't' });
});

// -- cross-check ---------------------------------------------------------------------

function* samples() {
  const ints = [0, 1, 31, 127, 128, 255, 256, 65535, 65536, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53 - 1)];
  yield* ints;
  yield* [0.5, -1.25, 1e300, Number.MIN_VALUE, 3.141592653589793];
  yield* [null, true, false, '', 'a', 'é', '温度传感器', '🙂'.repeat(20), 'x'.repeat(31), 'x'.repeat(32),
    'y'.repeat(255), 'y'.repeat(256), 'z'.repeat(65535), 'z'.repeat(65536)];
  yield* [new Uint8Array(0), new Uint8Array([0, 255]), new Uint8Array(300).fill(7), new Uint8Array(70000)];
  yield [];
  yield new Array(15).fill(1);
  yield new Array(16).fill('s');
  yield new Array(65536).fill(0);
  yield {};
  yield Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`key${i}`, ints[i % ints.length]]));
  yield { a: [1, -2, 3.5, null, true], b: { c: '中文' }, raw: new Uint8Array([0, 1]) };
  // A pseudo-random tree, the same on every run.
  let seed = 42;
  const rnd = (n) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const tree = (depth) => {
    switch (depth > 4 ? rnd(4) : rnd(7)) {
      case 0: return ints[rnd(ints.length)];
      case 1: return 'k'.repeat(rnd(40)) + '中'.repeat(rnd(3));
      case 2: return rnd(2) === 0 ? null : rnd(1000) / 7;
      case 3: return new Uint8Array(rnd(5)).fill(rnd(256));
      case 4: return Array.from({ length: rnd(20) }, () => tree(depth + 1));
      default: return Object.fromEntries(Array.from({ length: rnd(20) }, (_, i) => [`f${i}_${rnd(99)}`, tree(depth + 1)]));
    }
  };
  for (let i = 0; i < 200; i++) yield tree(0);
}

const normalize = (v) => {
  // @msgpack/msgpack decodes bin as Uint8Array; ours gives Buffer.
  if (v instanceof Uint8Array) return Buffer.from(v);
  if (Array.isArray(v)) return v.map(normalize);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]));
  return v;
};

test('cross-check with @msgpack/msgpack: same bytes, and each decodes the other', { skip: reference === null }, () => {
  let n = 0;
  for (const value of samples()) {
    const ours = encodeValue(value);
    const theirs = Buffer.from(reference.encode(value));
    assert.equal(ours.toString('hex'), theirs.toString('hex'), `bytes of sample ${n}`);
    assert.deepEqual(normalize(reference.decode(ours)), normalize(value), `they decode ours, sample ${n}`);
    assert.deepEqual(normalize(decodeValue(theirs)), normalize(value), `we decode theirs, sample ${n}`);
    n++;
  }
  assert.ok(n > 200);
});

test('DEFAULT_MAX_FRAME is 16 MiB', () => {
  assert.equal(DEFAULT_MAX_FRAME, 16 * 1024 * 1024);
  assert.equal(frame(Buffer.from([0x80])).toString('hex'), '0000000180');
});
