'use strict';
// The echo handler of SPEC.md ("The echo contract"), used by the conformance suite.
// ECHO_BREAK breaks one behaviour on purpose (see SPEC.md's ECHO_BREAK table).

const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');
const { serve, HandlerError } = require(path.join(__dirname, '..', '..', '..', 'adapters', 'node'));

const BREAK = process.env.ECHO_BREAK || '';

// Unicode code points, not UTF-16 units: a surrogate pair is one code point.
function codePoints(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xdc00 && c <= 0xdfff && i > 0) {
      const h = s.charCodeAt(i - 1);
      if (h >= 0xd800 && h <= 0xdbff) n--;
    }
  }
  return n;
}

function count(payload) {
  if (typeof payload !== 'string') return 0;
  return BREAK === 'count-bytes' ? Buffer.byteLength(payload, 'utf8') : codePoints(payload);
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

async function echo(request) {
  const config = request.config;
  if (!isObject(config)) return { raw: request.rawConfig };
  if (typeof config.fail === 'string') throw new HandlerError(config.fail);
  if (typeof config.print === 'string') console.log(config.print);
  if (typeof config.log === 'string') request.log.info(config.log);
  if (typeof config.sleep_ms === 'number') {
    // With ignore-cancel the sleep does not listen to the signal, and the answer comes
    // only when it ends.
    const signal = BREAK === 'ignore-cancel' ? undefined : request.signal;
    await sleep(config.sleep_ms, undefined, { signal });
  }
  const data = { i: config.i === undefined ? null : config.i, n: count(config.payload) };
  if (Object.hasOwn(config, 'echo')) data.echo = config.echo;
  return data;
}

function debug(request) {
  const config = request.config;
  const i = isObject(config) && config.i !== undefined ? config.i : null;
  request.log.info(`debug ${typeof i === 'string' ? i : JSON.stringify(i)}`);
  return echo(request);
}

serve({
  name: 'echo',
  execute: echo,
  debug: BREAK === 'no-debug' ? undefined : debug,
  concurrency: 64,
  stop: BREAK === 'hang-on-stop'
    ? () => new Promise(() => setInterval(() => {}, 1 << 30)) // never returns, keeps the loop alive
    : undefined,
});
