'use strict';
// The shared vectors of protocol/vectors.json (SPEC.md 7.7).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { FrameDecoder, encodeFrame, DEFAULT_MAX_FRAME } = require('../protocol');
const { VECTORS } = require('./helpers');

const vectors = JSON.parse(fs.readFileSync(VECTORS, 'utf8'));

// {"$bin": hex} <-> Buffer
function fromJson(x) {
  if (Array.isArray(x)) return x.map(fromJson);
  if (x !== null && typeof x === 'object') {
    const keys = Object.keys(x);
    if (keys.length === 1 && keys[0] === '$bin') return Buffer.from(x.$bin, 'hex');
    return Object.fromEntries(keys.map((k) => [k, fromJson(x[k])]));
  }
  return x;
}
function toJson(x) {
  if (Buffer.isBuffer(x)) return { $bin: x.toString('hex') };
  if (Array.isArray(x)) return x.map(toJson);
  if (x !== null && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, toJson(v)]));
  return x;
}

function decodeAll(bytes, maxFrame, pieceSize) {
  const d = new FrameDecoder(maxFrame);
  const out = [];
  for (let i = 0; i < bytes.length; i += pieceSize) out.push(...d.push(bytes.subarray(i, i + pieceSize)));
  d.end();
  return out;
}

test('the vectors file has all three lists', () => {
  assert.equal(vectors.default_max_frame, DEFAULT_MAX_FRAME);
  assert.ok(vectors.valid.length > 0 && vectors.invalid.length > 0);
});

test('decode every to_child vector', async (t) => {
  const list = vectors.valid.filter((v) => v.direction === 'to_child');
  assert.ok(list.length > 0);
  for (const v of list) {
    await t.test(v.name, () => {
      const bytes = Buffer.from(v.hex, 'hex');
      for (const piece of [bytes.length, 1, 3]) {
        const msgs = decodeAll(bytes, DEFAULT_MAX_FRAME, piece);
        assert.equal(msgs.length, 1);
        assert.deepEqual(toJson(msgs[0]), v.value);
      }
    });
  }
});

test('decode every to_bridge vector too (the codec serves both directions)', async (t) => {
  for (const v of vectors.valid.filter((x) => x.direction === 'to_bridge')) {
    await t.test(v.name, () => {
      const msgs = decodeAll(Buffer.from(v.hex, 'hex'), DEFAULT_MAX_FRAME, 1 << 20);
      assert.deepEqual(toJson(msgs), [v.value]);
    });
  }
});

test('encode every canonical to_bridge vector byte for byte', async (t) => {
  const list = vectors.valid.filter((v) => v.direction === 'to_bridge' && v.canonical);
  assert.ok(list.length > 0);
  for (const v of list) {
    await t.test(v.name, () => {
      assert.equal(encodeFrame(fromJson(v.value)).toString('hex'), v.hex);
    });
  }
});

test('encode every canonical to_child vector byte for byte', async (t) => {
  for (const v of vectors.valid.filter((x) => x.direction === 'to_child' && x.canonical)) {
    await t.test(v.name, () => {
      assert.equal(encodeFrame(fromJson(v.value)).toString('hex'), v.hex);
    });
  }
});

test('non-canonical vectors: encoding fills the defaults, decoding gives the value back', async (t) => {
  for (const v of vectors.valid.filter((x) => !x.canonical)) {
    await t.test(v.name, () => {
      const frame = encodeFrame(fromJson(v.value));
      const [back] = decodeAll(frame, DEFAULT_MAX_FRAME, frame.length);
      for (const [k, val] of Object.entries(v.value)) {
        if (k === 'future') assert.equal(back[k], undefined, 'unknown keys are not written');
        else assert.deepEqual(toJson(back[k]), val);
      }
    });
  }
});

test('reject every invalid vector with its error kind', async (t) => {
  for (const v of vectors.invalid) {
    await t.test(`${v.name} -> ${v.error}`, () => {
      const bytes = Buffer.from(v.hex, 'hex');
      for (const piece of [bytes.length, 1]) {
        assert.throws(
          () => decodeAll(bytes, v.max_frame ?? vectors.default_max_frame, piece),
          (err) => {
            assert.equal(err.name, 'ProtocolError');
            assert.equal(err.kind, v.error, err.message);
            return true;
          },
        );
      }
    });
  }
});
