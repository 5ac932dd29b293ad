'use strict';
// The shared vectors of protocol/vectors.json (SPEC.md 7.7).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { FrameDecoder, encodeFrame, decodeMessage, DEFAULT_MAX_FRAME, Connection, ErrorKind } = require('../protocol');
const { Child, VECTORS } = require('./helpers');

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

test('the vectors file has all four lists', () => {
  assert.equal(vectors.default_max_frame, DEFAULT_MAX_FRAME);
  assert.ok(vectors.valid.length > 0 && vectors.invalid.length > 0 && vectors.sequences.length > 0);
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

const frameOf = (step) => Buffer.from(step.hex, 'hex');
const messageOf = (step) => decodeMessage(frameOf(step), 4);

test('replay every sequence on a bridge and a child connection', async (t) => {
  for (const seq of vectors.sequences) {
    await t.test(seq.name, () => {
      const conns = { bridge: new Connection('bridge'), child: new Connection('child') };
      for (const [i, step] of seq.steps.entries()) {
        const msg = messageOf(step);
        const sender = conns[step.from];
        const receiver = conns[step.from === 'bridge' ? 'child' : 'bridge'];
        if (step.event !== undefined) {
          assert.equal(msg.type, step.event);
          sender.send(msg);
          receiver.receive(msg);
          continue;
        }
        const before = [sender.state, [...sender.inFlight]];
        for (const [side, act] of [['sender', () => sender.send(msg)], ['receiver', () => receiver.receive(msg)]]) {
          assert.throws(act, (err) => {
            assert.equal(err.name, 'ProtocolError');
            assert.equal(err.kind, step.error, `step ${i}, the ${side}: ${err.message}`);
            return true;
          });
        }
        assert.deepEqual([sender.state, [...sender.inFlight]], before, 'a refused send changes nothing');
      }
    });
  }
});

test('ErrorKind and the vectors name the same kinds', () => {
  const used = new Set(vectors.invalid.map((v) => v.error));
  for (const seq of vectors.sequences) for (const step of seq.steps) if (step.error) used.add(step.error);
  assert.deepEqual([...used].sort(), Object.values(ErrorKind).sort());
});

// The bridge's frames of every sequence that ends in a bridge error go to a real child
// (test/fixtures/features.js, holding every request in flight): it must name the kind on
// stderr and exit non-zero. The
// frames before the child's ready go in one write, the rest in another. Left out: the
// sequences where the bad frame follows stop, since a child with nothing in flight may be
// gone before it reads more (the replay above covers them).
test('a real child rejects the bridge errors of the sequences with their kind', async (t) => {
  const fixture = path.join(__dirname, 'fixtures', 'features.js');
  for (const seq of vectors.sequences) {
    const last = seq.steps[seq.steps.length - 1];
    if (!last.error || last.from !== 'bridge' || seq.steps.some((s) => s.event === 'stop')) continue;
    await t.test(seq.name, async () => {
      const split = seq.steps.findIndex((s) => s.from === 'child');
      const before = seq.steps.slice(0, split < 0 ? undefined : split).filter((s) => s.from === 'bridge');
      const after = split < 0 ? [] : seq.steps.slice(split).filter((s) => s.from === 'bridge');
      const c = new Child(process.execPath, [fixture], { env: { FIXTURE_HOLD: '1' } });
      try {
        c.sendRaw(Buffer.concat(before.map(frameOf)));
        if (split >= 0) {
          await c.until((fs) => fs.find((f) => f.type === 'ready'), 15000, 'ready');
          c.sendRaw(Buffer.concat(after.map(frameOf)));
        }
        const { code } = await c.waitExit();
        assert.notEqual(code, 0);
        assert.match(c.stderr, new RegExp(`the bridge broke the protocol \\(${last.error}\\)`));
      } finally {
        c.kill();
      }
    });
  }
});
