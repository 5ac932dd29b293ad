'use strict';
// serve() in a real child process (test/fixtures/features.js): the handler API, hooks,
// limits, and what the child does when the bridge breaks the protocol.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Child, HELLO, task } = require('./helpers');
const { encodeFrame, tooLargeMessage } = require('../protocol');

const FIXTURE = path.join(__dirname, 'fixtures', 'features.js');
const children = [];
function start(env = {}) {
  const c = new Child(process.execPath, [FIXTURE], { env });
  children.push(c);
  return c;
}
test.after(() => {
  for (const c of children) c.kill();
});

async function run(configs, { env, hello } = {}) {
  const c = start(env);
  await c.handshake(hello);
  c.send(...configs.map((cfg, i) => task(i + 1, cfg)));
  const out = [];
  for (let i = 0; i < configs.length; i++) out.push(await c.answer(i + 1));
  return { c, out };
}

test('ready carries name, version, concurrency and debug; the start hook runs first', async () => {
  const c = start({ FIXTURE_START_MS: '200' });
  const ready = await c.handshake();
  // No plugin_type unless the handler declares one.
  assert.deepEqual(ready, { type: 'ready', protocol: 1, concurrency: 64, debug: true, name: 'features', version: '9.9.9' });
  // A log made in the start hook, before ready, goes to stderr.
  assert.match(c.stderr, /info: start hook ran/);
  c.send(task(1, { mode: 'sync' }));
  assert.deepEqual((await c.answer(1)).data, { sync: true, started: true });
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('ready.plugin_type is what the handler declares', async () => {
  const c = start({ FIXTURE_PLUGIN_TYPE: 'user' });
  const ready = await c.handshake();
  assert.equal(ready.plugin_type, 'user');
  assert.equal(ready.name, 'features');
  c.close();
  await c.waitExit();
});

test('serve() refuses a plugin type outside the closed set', async () => {
  const c = start({ FIXTURE_PLUGIN_TYPE: 'daemon' });
  const { code } = await c.waitExit();
  assert.notEqual(code, 0);
  assert.match(c.stderr, /pluginType must be 'service' or 'user', got daemon/);
});

test('ready.debug is false without a debug handler', async () => {
  const c = start({ FIXTURE_NO_DEBUG: '1' });
  assert.equal((await c.handshake()).debug, false);
  c.close();
  await c.waitExit();
});

test('what handlers return and throw becomes result or error', async () => {
  const { c, out } = await run([
    { mode: 'result' }, { mode: 'sync' }, { mode: 'undefined' }, { mode: 'array' }, { mode: 'number' },
    { mode: 'throw' }, { mode: 'throw-string' }, { mode: 'handler-error' }, { mode: 'reject' },
    { mode: 'date' }, { mode: 'unencodable' },
  ]);
  const [result, sync, undef, array, number, thrown, str, herr, reject, date, unenc] = out;
  assert.deepEqual(result, { type: 'result', id: 1, data: { a: 1 }, message: 'ok', detail: 'more' });
  assert.deepEqual(sync.data, { sync: true, started: true });
  assert.deepEqual(undef.data, {});
  // Any JSON-like value is result data (SPEC.md section 3).
  assert.deepEqual([array.type, array.data], ['result', [1, 2]]);
  assert.deepEqual([number.type, number.data], ['result', 42]);
  assert.equal(thrown.type, 'error');
  assert.equal(thrown.message, 'boom');
  assert.match(thrown.detail, /^Error: boom\n\s+at execute/);
  assert.deepEqual([str.type, str.message, str.detail], ['error', 'just a string', '']);
  assert.deepEqual(herr, { type: 'error', id: 8, message: 'bad input', detail: 'line 3' });
  assert.equal(reject.message, 'async boom');
  assert.match(reject.detail, /^TypeError: async boom/);
  assert.deepEqual([...Object.entries(date.data)].map(([k]) => k), ['when', 'big', 'map']);
  assert.equal(date.data.when, '1970-01-01T00:00:00.000Z');
  assert.equal(date.data.big, 2n ** 60n);
  assert.deepEqual([...date.data.map], [[1, 'one']]);
  assert.equal(unenc.type, 'error');
  assert.match(unenc.message, /cannot be sent: a symbol has no msgpack form/);
  c.send(task(20, { mode: 'throw-weird' }), task(21, { mode: 'tojson-throws' }), task(22, { mode: 'null-proto' }));
  const weird = await c.answer(20);
  assert.deepEqual([weird.type, weird.message], ['error', '[object Object]']);
  const tojson = await c.answer(21);
  assert.deepEqual([tojson.type, tojson.message], ['error', 'the result data cannot be sent: nope']);
  assert.deepEqual((await c.answer(22)).data, { a: 1 });
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('result data of every kind: string, bool, null (nil, not {}), and a Reply holding null', async () => {
  const { c, out } = await run([{ mode: 'string' }, { mode: 'bool' }, { mode: 'null' }, { mode: 'result-null' }]);
  assert.deepEqual(out[0], { type: 'result', id: 1, data: 'plain text', message: '', detail: '' });
  assert.deepEqual(out[1].data, false);
  assert.ok('data' in out[2]);
  assert.equal(out[2].data, null);
  assert.deepEqual([out[3].data, out[3].message], [null, 'nothing']);
  c.close();
  await c.waitExit();
});

test('a HandlerError with data: error.data, left out when there is none', async () => {
  const { c, out } = await run([
    { mode: 'fail-with-data' }, { mode: 'fail-with-null' }, { mode: 'handler-error' }, { mode: 'fail-with-bad-data' },
  ]);
  assert.deepEqual(out[0], { type: 'error', id: 1, message: 'out of range', detail: 'sensor 3', data: { reading: 120 } });
  assert.deepEqual(out[1], { type: 'error', id: 2, message: 'no value', detail: '', data: null });
  assert.equal('data' in out[2], false);
  // Data that cannot be sent: the error still goes out, without it, and says why.
  assert.equal(out[3].message, 'odd');
  assert.equal('data' in out[3], false);
  assert.match(out[3].detail, /^d\n\[flow-bridge-adapter: the error's data was left out: cannot be sent: a symbol/);
  c.send({ type: 'debug', id: 9, config: Buffer.from('{"mode":"x"}') });
  await c.answer(9);
  c.close();
  await c.waitExit();
});

test('the task object: config parsed, text, raw bytes, request fields', async () => {
  const c = start();
  await c.handshake();
  const config = Buffer.from('{"mode":"config","温度":[1,2]}');
  c.send({
    type: 'task', id: 7, config, project_id: 'p', flow_id: 'f', job: 'j', element_id: 'e',
    element_job: 'ej', timeout_ms: 1500, future_field: 'ignored',
  });
  const a = await c.answer(7);
  assert.deepEqual(a.data, {
    config: { mode: 'config', 温度: [1, 2] },
    text: config.toString(),
    raw: config,
    kind: 'task',
    id: 7,
    meta: ['p', 'f', 'j', 'e', 'ej', 1500],
  });
  c.send({ type: 'debug', id: 8, config: Buffer.from('{}') });
  assert.deepEqual((await c.answer(8)).data, { debugged: 'debug', job: '' });
  c.close();
  await c.waitExit();
});

test('a config that is not JSON: config null, text when it is UTF-8, raw always', async () => {
  const c = start();
  await c.handshake();
  // The default branch echoes task.config, which is null for these.
  c.send(task(1, 'not json {'), task(2, Buffer.from([0xff, 0x00])));
  assert.deepEqual((await c.answer(1)).data, { echo: {} });
  assert.deepEqual((await c.answer(2)).data, { echo: {} });
  c.close();
  await c.waitExit();
});

test('log frames: levels, formatting, request id, global records, records after the answer', async () => {
  const { c } = await run([{ mode: 'logs' }, { mode: 'log-after' }]);
  await c.until((fs) => fs.some((f) => f.type === 'log' && f.msg.includes('late record')), 5000, 'the late record');
  const logs = c.frames.filter((f) => f.type === 'log');
  const byMsg = Object.fromEntries(logs.map((f) => [f.msg, f]));
  assert.deepEqual(['d 1', 'i { x: 1 }', 'w', 'w2', 'e'].map((m) => [byMsg[m].level, byMsg[m].id]),
    [['debug', 1], ['info', 1], ['warning', 1], ['warning', 1], ['error', 1]]);
  assert.equal('id' in byMsg['global record'], false);
  const late = logs.find((f) => f.msg.includes('late record'));
  assert.equal('id' in late, false, 'no id once the request is answered');
  assert.equal(late.msg, '[request 2, after its answer] late record');
  for (const f of logs) assert.match(f.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  c.close();
  await c.waitExit();
});

test('stdout protection: process.stdout, every console method, and stdin reads', async () => {
  const { c, out } = await run([{ mode: 'stdout' }, { mode: 'stdin' }]);
  assert.equal(out[0].type, 'result');
  assert.deepEqual(out[1].data, { stdinBytes: 0 });
  c.send(task(3, { mode: 'sync' }));
  assert.equal((await c.answer(3)).type, 'result', 'frames still flow');
  c.close();
  await c.waitExit();
  for (const text of ['written to process.stdout', 'console.log line', 'console.info line', 'console.debug line', 'dir: 1', '│', 'counter: 1']) {
    assert.ok(c.stderr.includes(text), `${text} on stderr`);
  }
});

test('cancel: the signal fires with an AbortError; late readers see it too; results after cancel stand', async () => {
  const c = start();
  await c.handshake();
  c.send(task(1, { mode: 'signal' }), task(2, { mode: 'poll' }));
  await new Promise((r) => setTimeout(r, 100));
  c.send({ type: 'cancel', id: 1, reason: 'shutdown' }, { type: 'cancel', id: 2 });
  const a = await c.answer(1);
  assert.equal(a.message, 'cancelled');
  assert.match(a.detail, /cancelled the request \(shutdown\)/);
  assert.match(a.detail, /AbortError/);
  const b = await c.answer(2);
  assert.deepEqual(b.data, { cancelled: true, aborted: true, reason: 'timeout' });
  c.close();
  await c.waitExit();
});

test('concurrency: the adapter never runs more than it declared', async () => {
  const c = start({ FIXTURE_CONCURRENCY: '2' });
  assert.equal((await c.handshake()).concurrency, 2);
  // A bridge that sends too many: the extra requests wait for a free slot.
  c.send(...Array.from({ length: 6 }, (_, i) => task(i + 1, { mode: 'slow', ms: 50 })));
  // A queued request that is cancelled before it starts is answered at once.
  c.send(task(7, { mode: 'slow', ms: 50 }), { type: 'cancel', id: 7 });
  for (let i = 1; i <= 6; i++) assert.deepEqual((await c.answer(i)).data, { maxRunning: 2 });
  assert.equal((await c.answer(7)).message, 'cancelled');
  c.close();
  await c.waitExit();
});

// The body size of the result frame the fixture's 'big' mode makes for a string of n bytes.
function bigBody(id, n) {
  return encodeFrame({ type: 'result', id, data: { s: 'x'.repeat(n) }, message: '', detail: '' }).length - 4;
}

test('max_frame from hello: a result at the limit goes out, one byte over is answered with an error at once', async () => {
  const limit = 2048;
  const exact = limit - (bigBody(1, 1000) - 1000); // str 16 header throughout this range
  assert.equal(bigBody(1, exact), limit);
  const { c, out } = await run(
    [{ mode: 'big', size: exact }, { mode: 'big', size: exact + 1 }, { mode: 'big', size: 5000 }, { mode: 'big', size: 100 }],
    { hello: { ...HELLO, max_frame: limit } },
  );
  assert.equal(out[0].type, 'result');
  assert.equal(out[0].data.s.length, exact);
  assert.deepEqual(out[1], { type: 'error', id: 2, message: tooLargeMessage(limit + 1, limit), detail: '' });
  assert.equal(out[1].message, 'result too large: 2049 bytes, the limit is 2048 (hello.max_frame); return less data');
  assert.equal(out[2].type, 'error');
  assert.match(out[2].message, /^result too large: \d+ bytes, the limit is 2048 \(hello.max_frame\)/);
  assert.equal(out[3].type, 'result');
  // ...and the limit holds for what the bridge sends.
  c.sendRaw(encodeFrame(task(5, { pad: 'y'.repeat(3000) })));
  assert.notEqual((await c.waitExit()).code, 0);
  assert.match(c.stderr, /frame_too_large/);
});

test('max_frame: the check is on the msgpack frame, not on the JSON the bridge makes of it', async () => {
  // 1900 bytes are 2536 characters of base64, and 1900 U+0001 are 11400 characters of
  // JSON; both frames fit 2048 bytes, so both are results (the JSON is the bridge's job).
  const { c, out } = await run([{ mode: 'bin', size: 1900 }, { mode: 'control', size: 1900 }], { hello: { ...HELLO, max_frame: 2048 } });
  assert.equal(out[0].type, 'result');
  assert.equal(out[0].data.length, 1900);
  assert.equal(out[1].type, 'result');
  assert.equal(out[1].data.s.length, 1900);
  c.close();
  await c.waitExit();
});

test('max_frame: an error whose data is too large goes out without its data; a large log is cut', async () => {
  const { c, out } = await run([{ mode: 'fail-with-big-data', size: 5000 }, { mode: 'big-log', size: 5000 }], { hello: { ...HELLO, max_frame: 2048 } });
  assert.deepEqual([out[0].type, out[0].message, 'data' in out[0]], ['error', 'big', false]);
  assert.match(out[0].detail, /error data too large: \d+ bytes, the limit is 2048/);
  const cut = c.frames.find((f) => f.type === 'log' && f.id === 2);
  assert.ok(cut.msg.length < 2048 && cut.msg.endsWith('[truncated by flow-bridge-adapter: the frame limit was reached]'));
  c.close();
  await c.waitExit();
});

test('max_frame from hello is used when it is larger than the default, both ways', async () => {
  const limit = 20 * 1024 * 1024;
  const c = start();
  await c.handshake({ ...HELLO, max_frame: limit });
  // A task frame over the 16 MiB default, and a result frame over it too.
  c.sendRaw(encodeFrame(task(1, { mode: 'big', size: 17 * 1024 * 1024, pad: 'p'.repeat(17 * 1024 * 1024) }), limit));
  const a = await c.answer(1, 30000);
  assert.equal(a.type, 'result');
  assert.equal(a.data.s.length, 17 * 1024 * 1024);
  c.close();
  await c.waitExit();
});

test('state: the hook is called, its errors are logged', async () => {
  const c = start();
  await c.handshake();
  c.send({ type: 'state', connected: false }, { type: 'state', connected: true });
  await c.until((fs) => fs.some((f) => f.type === 'log' && f.msg === 'state true'), 5000, 'state true');
  const msgs = c.frames.filter((f) => f.type === 'log').map((f) => f.msg);
  assert.equal(msgs[0], 'state false');
  assert.match(msgs[1], /onConnectionStateChanged hook failed: Error: hook trouble/);
  c.close();
  await c.waitExit();
});

test('stop: answers first, then the stop hook (its log still goes out), then exit 0', async () => {
  const c = start();
  await c.handshake();
  c.send(task(1, { mode: 'slow', ms: 200 }), { type: 'stop' });
  assert.deepEqual(await c.waitExit(), { code: 0, signal: null });
  const kinds = c.frames.map((f) => (f.type === 'log' ? f.msg : `${f.type} ${f.id ?? ''}`.trim()));
  assert.deepEqual(kinds, ['ready', 'result 1', 'stop hook ran']);
});

test('end of input while the start hook runs: ready, then the orderly end', async () => {
  const c = start({ FIXTURE_START_MS: '300' });
  c.send(HELLO);
  c.close();
  assert.deepEqual(await c.waitExit(), { code: 0, signal: null });
  assert.deepEqual(c.frames.map((f) => f.msg ?? f.type), ['ready', 'stop hook ran']);
});

test('the bridge is gone (stdout closed, then stdin): the child still exits 0', async () => {
  const c = start();
  await c.handshake();
  c.proc.stdout.destroy();
  c.send(task(1, { mode: 'slow', ms: 50 }), task(2, { mode: 'logs' }));
  await new Promise((r) => setTimeout(r, 200));
  c.close();
  assert.deepEqual(await c.waitExit(), { code: 0, signal: null });
});

test('a start hook that fails: exit non-zero with the reason on stderr, no ready', async () => {
  const c = start({ FIXTURE_START: 'fail' });
  c.send(HELLO);
  const { code } = await c.waitExit();
  assert.equal(code, 1);
  assert.match(c.stderr, /start hook failed: Error: cannot reach the device/);
  assert.equal(c.frames.length, 0);
});

for (const [name, bytes, pattern] of [
  ['text instead of frames', Buffer.from('hello world\n'), /frame_too_large/],
  ['a task before hello', encodeFrame(task(1, {})), /\(unexpected\): the bridge sent a task message before hello/],
  ['a state while the start hook runs', Buffer.concat([encodeFrame(HELLO), encodeFrame({ type: 'state', connected: true })]),
    /\(unexpected\): the bridge sent a state message before ready/],
  ['a frame cut short by end of input', encodeFrame(HELLO).subarray(0, 10), /truncated/],
  ['invalid msgpack', Buffer.from('00000001c1', 'hex'), /bad_msgpack/],
]) {
  test(`the bridge breaks the protocol (${name}): reason on stderr, exit non-zero`, async () => {
    const c = start();
    c.sendRaw(bytes);
    c.close();
    const { code } = await c.waitExit();
    assert.equal(code, 2);
    assert.match(c.stderr, /the bridge broke the protocol/);
    assert.match(c.stderr, pattern);
    assert.equal(Buffer.concat(c.rawStdout).length, 0);
  });
}

test('the bridge breaks the protocol after ready (duplicate id, child-only message, after stop)', async () => {
  for (const [bad, pattern] of [
    [[task(1, { mode: 'slow', ms: 1000 }), task(1, {})], /\(duplicate_id\): the bridge sent task 1 while/],
    [[{ type: 'result', id: 1 }], /\(unexpected\): the bridge sent a result message, which only the child sends/],
    [[{ type: 'stop' }, task(2, {})], /\(unexpected\): the bridge sent a task message after stop/],
  ]) {
    const c = start();
    await c.handshake();
    c.send(...bad);
    assert.equal((await c.waitExit()).code, 2);
    assert.match(c.stderr, pattern);
  }
});

test('the old names Task and Result are the deprecated aliases of Request and Reply', () => {
  const adapter = require('..');
  assert.equal(adapter.Task, adapter.Request);
  assert.equal(adapter.Result, adapter.Reply);
});
