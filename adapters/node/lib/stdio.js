'use strict';
// Stdout protection (SPEC.md 7.1), as far as plain Node allows.
//
// SPEC asks for fd 1 and fd 0 to be duplicated and pointed at stderr and /dev/null. Node
// has no dup() without a native addon, so the frame channel stays on fd 1 and fd 0, and
// everything *in this process* that would write to stdout is pointed at stderr instead:
//
// - `process.stdout` becomes `process.stderr` (the frame writer keeps the real stream);
// - every method of the global `console` is rebound to a Console writing to stderr;
// - `process.stdin` becomes an empty stream, so user code cannot swallow frames.
//
// What cannot be caught: code that writes to fd 1 directly (fs.writeSync(1, ...), a
// logger opened on fd 1, such as pino's default destination), a reference to the real
// process.stdout taken before protectStdio() ran, and child processes started with
// stdio 'inherit' (they inherit fd 0 and 1 themselves). Start sub-processes with
// stdio ['ignore', 'pipe' or 2, 2] instead.
//
// The same holds on Windows, where the empty stdin is read from NUL (os.devNull) rather
// than /dev/null; SetStdHandle, which would move the standard handles for sub-processes,
// is out of reach without a native addon too.

const fs = require('node:fs');
const os = require('node:os');
const { Console } = require('node:console');

let channel = null;

const CONSOLE_METHODS = [
  'log', 'info', 'debug', 'warn', 'error', 'dir', 'dirxml', 'table', 'trace', 'group',
  'groupCollapsed', 'groupEnd', 'count', 'countReset', 'time', 'timeEnd', 'timeLog',
  'assert', 'clear',
];

/**
 * Take the protocol channel for this module and send every other stdout write in the
 * process to stderr. Idempotent; returns `{ input, output }`, the real stdin and stdout.
 */
function protectStdio() {
  if (channel !== null) return channel;
  const output = process.stdout; // the real fd 1 stream, now reserved for frames
  const input = process.stdin; // the real fd 0 stream, now reserved for frames
  const stderr = process.stderr;

  let devNull = null;
  Object.defineProperty(process, 'stdout', {
    configurable: true,
    enumerable: true,
    get: () => stderr,
  });
  Object.defineProperty(process, 'stdin', {
    configurable: true,
    enumerable: true,
    get: () => (devNull ??= fs.createReadStream(os.devNull)),
  });

  const quiet = new Console({ stdout: stderr, stderr });
  for (const name of CONSOLE_METHODS) {
    if (typeof quiet[name] === 'function') console[name] = quiet[name];
  }

  channel = { input, output };
  return channel;
}

module.exports = { protectStdio };
