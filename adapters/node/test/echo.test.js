'use strict';
// End to end: the echo example (examples/echo/node/run) as a real child process.

const test = require('node:test');
const assert = require('node:assert/strict');
const os = require('node:os');
const { Child, ECHO_RUN, HELLO, task } = require('./helpers');

const children = [];
function echo(env = {}) {
  // Started from an unrelated directory: `run` must find its files by itself.
  const child = new Child(ECHO_RUN, [], { env: { ECHO_BREAK: '', ...env }, cwd: os.tmpdir() });
  children.push(child);
  return child;
}
test.after(() => {
  for (const c of children) c.kill();
});

test('handshake: ready names protocol 1, concurrency >= 64, debug true', async () => {
  const c = echo();
  const ready = await c.handshake();
  assert.equal(ready.protocol, 1);
  assert.ok(ready.concurrency >= 64);
  assert.equal(ready.debug, true);
  assert.equal(ready.name, 'echo');
  assert.equal(typeof ready.version, 'string');
  c.send({ type: 'stop' });
  assert.deepEqual(await c.waitExit(), { code: 0, signal: null });
  assert.equal(c.frames[0].type, 'ready', 'ready is the first frame');
});

test('nothing on stdout before hello', async () => {
  const c = echo();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(Buffer.concat(c.rawStdout).length, 0);
  await c.handshake();
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('tasks: result data, Chinese text, echo, fail, non-JSON and non-object config', async () => {
  const c = echo();
  await c.handshake();
  c.send(
    task(1, { i: 1, payload: 'ab' }),
    task(2, { i: 2, payload: '温度传感器🌡' , echo: { nested: [1, 'x', null, true, 2.5] } }),
    task(3, { i: 3, fail: 'sensor offline 断线' }),
    task(4, Buffer.from([0x00, 0xff, 0xfe, 0x0a])),
    task(5, '[1, 2]'),
    task(6, '{"i": 6}'),
    task(7, ''),
  );
  const r1 = await c.answer(1);
  assert.deepEqual(r1, { type: 'result', id: 1, data: { i: 1, n: 2 }, message: '', detail: '' });
  const r2 = await c.answer(2);
  assert.equal(r2.type, 'result');
  assert.deepEqual(r2.data, { i: 2, n: 6, echo: { nested: [1, 'x', null, true, 2.5] } });
  const r3 = await c.answer(3);
  assert.equal(r3.type, 'error');
  assert.match(r3.message, /sensor offline 断线/);
  const r4 = await c.answer(4);
  assert.deepEqual(r4.data, { raw: Buffer.from([0x00, 0xff, 0xfe, 0x0a]) });
  assert.deepEqual((await c.answer(5)).data, { raw: Buffer.from('[1, 2]') });
  assert.deepEqual((await c.answer(6)).data, { i: 6, n: 0 });
  assert.deepEqual((await c.answer(7)).data, { raw: Buffer.alloc(0) });
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('out-of-order answers with several tasks in flight', async () => {
  const c = echo();
  await c.handshake();
  c.send(
    task(10, { i: 10, sleep_ms: 600 }),
    task(11, { i: 11, sleep_ms: 300 }),
    task(12, { i: 12, sleep_ms: 0 }),
    task(13, { i: 13 }),
  );
  await c.until((fs) => fs.filter((f) => f.type === 'result').length === 4, 10000, 'four results');
  const order = c.answers().map((f) => f.id);
  assert.deepEqual(order.slice(2), [11, 10]);
  assert.deepEqual(new Set(order.slice(0, 2)), new Set([12, 13]));
  for (const f of c.answers()) assert.deepEqual(f.data, { i: f.id, n: 0 });
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('cancel of a slow task answers error "cancelled" at once; other tasks carry on', async () => {
  const c = echo();
  await c.handshake();
  c.send(task(20, { i: 20, sleep_ms: 60000 }), task(21, { i: 21, sleep_ms: 200 }));
  await new Promise((r) => setTimeout(r, 100));
  const t0 = Date.now();
  c.send({ type: 'cancel', id: 20, reason: 'timeout' });
  const a = await c.answer(20, 5000);
  assert.ok(Date.now() - t0 < 2000, 'cancel is honoured promptly');
  assert.equal(a.type, 'error');
  assert.equal(a.message, 'cancelled');
  assert.equal((await c.answer(21)).type, 'result');
  // A cancel for an answered id crossed the answer in the pipes: ignored.
  c.send({ type: 'cancel', id: 20, reason: 'timeout' }, { type: 'cancel', id: 21 }, { type: 'cancel', id: 999 });
  c.send(task(22, { i: 22 }));
  assert.equal((await c.answer(22)).type, 'result');
  assert.equal(c.answers().length, 3, 'exactly one answer per id');
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('ECHO_BREAK=ignore-cancel keeps sleeping and answers when the sleep ends', async () => {
  const c = echo({ ECHO_BREAK: 'ignore-cancel' });
  await c.handshake();
  c.send(task(1, { i: 1, sleep_ms: 800 }));
  await new Promise((r) => setTimeout(r, 100));
  const t0 = Date.now();
  c.send({ type: 'cancel', id: 1 });
  const a = await c.answer(1);
  assert.ok(Date.now() - t0 >= 500, 'answered only when the sleep ended');
  assert.equal(a.type, 'result');
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('stdout protection: a task that prints leaves the frames intact', async () => {
  const c = echo();
  await c.handshake();
  c.send(
    task(1, { i: 1, print: 'hello from console.log\n\u0000\u0001 not a frame' }),
    task(2, { i: 2, print: 'x'.repeat(100000) }),
    task(3, { i: 3 }),
  );
  for (const id of [1, 2, 3]) assert.equal((await c.answer(id)).type, 'result');
  await c.until(() => c.stderr.includes('hello from console.log'), 5000, 'the print on stderr');
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('log frames carry the request id; debug logs "debug <i>" first', async () => {
  const c = echo();
  await c.handshake();
  c.send(task(1, { i: 1, log: 'step one 第一步' }));
  await c.answer(1);
  const log = c.frames.find((f) => f.type === 'log');
  assert.equal(log.level, 'info');
  assert.equal(log.msg, 'step one 第一步');
  assert.equal(log.id, 1);
  assert.ok(c.frames.indexOf(log) < c.frames.findIndex((f) => f.id === 1 && f.type === 'result'));

  c.send({ type: 'debug', id: 2, config: Buffer.from('{"i": 7, "log": "in debug"}'), element_job: 'ej' });
  const r = await c.answer(2);
  assert.deepEqual(r.data, { i: 7, n: 0 });
  const logs = c.frames.filter((f) => f.type === 'log' && f.id === 2).map((f) => f.msg);
  assert.deepEqual(logs, ['debug 7', 'in debug']);
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('state frames are taken quietly', async () => {
  const c = echo();
  await c.handshake();
  c.send({ type: 'state', connected: false }, { type: 'state', connected: true }, task(1, { i: 1 }));
  assert.equal((await c.answer(1)).type, 'result');
  c.close();
  assert.equal((await c.waitExit()).code, 0);
});

test('stop: in-flight tasks are finished and answered, then exit 0', async () => {
  const c = echo();
  await c.handshake();
  c.send(task(1, { i: 1, sleep_ms: 400 }), task(2, { i: 2, sleep_ms: 100 }), { type: 'stop' });
  assert.deepEqual(await c.waitExit(), { code: 0, signal: null });
  assert.deepEqual(c.answers().map((f) => [f.id, f.type]), [[2, 'result'], [1, 'result']]);
  assert.equal(c.decoder.pendingBytes, 0, 'no half frame left behind');
});

test('end of stdin: in-flight tasks are finished and answered, then exit 0', async () => {
  const c = echo();
  await c.handshake();
  c.send(task(1, { i: 1, sleep_ms: 300 }));
  c.close();
  assert.deepEqual(await c.waitExit(), { code: 0, signal: null });
  assert.deepEqual(c.answers().map((f) => [f.id, f.type]), [[1, 'result']]);
});

test('end of stdin before hello: exit 0 without a frame', async () => {
  const c = echo();
  c.close();
  assert.deepEqual(await c.waitExit(), { code: 0, signal: null });
  assert.equal(Buffer.concat(c.rawStdout).length, 0);
});

test('ECHO_BREAK=hang-on-stop: stop does not end the process', async () => {
  const c = echo({ ECHO_BREAK: 'hang-on-stop' });
  await c.handshake();
  c.send({ type: 'stop' });
  await assert.rejects(c.waitExit(1500), /did not exit/);
  c.kill();
});

test('ECHO_BREAK=no-debug and count-bytes', async () => {
  const a = echo({ ECHO_BREAK: 'no-debug' });
  assert.equal((await a.handshake()).debug, false);
  a.close();
  const b = echo({ ECHO_BREAK: 'count-bytes' });
  await b.handshake();
  b.send(task(1, { payload: '温度' }));
  assert.equal((await b.answer(1)).data.n, 6);
  b.close();
  assert.equal((await a.waitExit()).code, 0);
  assert.equal((await b.waitExit()).code, 0);
});

test('many tasks at full concurrency, one answer each', async () => {
  const c = echo();
  const ready = await c.handshake();
  const total = 2000;
  let next = 0;
  while (c.answerCount < total) {
    const batch = [];
    while (next < total && next - c.answerCount < ready.concurrency) {
      batch.push(task(next, { i: next, payload: 'é'.repeat(next % 7), sleep_ms: next % 3 }));
      next++;
    }
    if (batch.length) c.send(...batch);
    const before = c.answerCount;
    await c.until(() => c.answerCount > before, 10000, 'progress');
  }
  const ids = c.answers().map((f) => f.id).sort((x, y) => x - y);
  assert.deepEqual(ids, Array.from({ length: total }, (_, i) => i));
  for (const f of c.answers()) assert.deepEqual(f.data, { i: f.id, n: f.id % 7 });
  c.send({ type: 'stop' });
  assert.equal((await c.waitExit()).code, 0);
});

test('a hello with only future versions: non-zero exit and a line on stderr', async () => {
  const c = echo();
  c.send({ ...HELLO, protocols: [2, 3] });
  const { code } = await c.waitExit();
  assert.notEqual(code, 0);
  assert.match(c.stderr, /speaks protocol \[1\], the bridge offers \[2, 3\]/);
  assert.equal(c.frames.length, 0);
});
