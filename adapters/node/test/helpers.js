'use strict';
// A tiny bridge for tests: spawns a child, writes frames to its stdin, reads its frames.

const { spawn } = require('node:child_process');
const path = require('node:path');
const { FrameDecoder, encodeFrame, decodeMessage } = require('../protocol');

const REPO = path.resolve(__dirname, '..', '..', '..');
const ECHO_RUN = path.join(REPO, 'examples', 'echo', 'node', 'run');
const VECTORS = path.join(REPO, 'protocol', 'vectors.json');

const HELLO = { type: 'hello', protocols: [1], plugin: 'test', plugin_type: 'service', max_frame: 16777216, bridge: 'test' };

/** Messages the child sent, but decoded as a bridge would (no check of direction). */
class Child {
  constructor(command, args = [], { env = {}, cwd } = {}) {
    this.proc = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
      cwd,
    });
    this.frames = [];
    this.answerCount = 0;
    this.waiters = [];
    this.stderr = '';
    this.rawStdout = [];
    this.decoder = new FrameDecoder(1024 * 1024 * 1024);
    this.protocolError = null;
    this.proc.stdout.on('data', (chunk) => {
      this.rawStdout.push(chunk);
      if (this.protocolError) return;
      try {
        for (const m of this.decoder.push(chunk)) {
          this.frames.push(m);
          if (m.type === 'result' || m.type === 'error') this.answerCount++;
        }
      } catch (err) {
        this.protocolError = err;
      }
      this.wake();
    });
    this.proc.stderr.on('data', (chunk) => {
      this.stderr += chunk.toString();
    });
    this.proc.stdin.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        resolve({ code, signal });
        this.wake();
      });
    });
  }

  send(...msgs) {
    this.proc.stdin.write(Buffer.concat(msgs.map((m) => encodeFrame(m))));
  }

  sendRaw(bytes) {
    this.proc.stdin.write(bytes);
  }

  close() {
    this.proc.stdin.end();
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Wait until `pred(frames)` holds (returns the value it returns), or fail after `ms`. */
  async until(pred, ms = 10000, what = 'condition') {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.protocolError) throw new Error(`child broke the protocol: ${this.protocolError.message}\nstderr:\n${this.stderr}`);
      const got = pred(this.frames);
      if (got) return got;
      if (this.exitCode !== undefined) {
        throw new Error(`child exited (${this.exitCode}/${this.exitSignal}) before ${what}\nstderr:\n${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; frames: ${JSON.stringify(this.frames.map((f) => f.type))}\nstderr:\n${this.stderr}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  answer(id, ms) {
    return this.until((fs) => fs.find((f) => (f.type === 'result' || f.type === 'error') && f.id === id), ms, `the answer to ${id}`);
  }

  answers() {
    return this.frames.filter((f) => f.type === 'result' || f.type === 'error');
  }

  async handshake(hello = HELLO) {
    this.send(hello);
    return this.until((fs) => fs.find((f) => f.type === 'ready'), 15000, 'ready');
  }

  async waitExit(ms = 10000) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`child did not exit within ${ms} ms\nstderr:\n${this.stderr}`)), ms);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill() {
    if (this.exitCode === undefined) this.proc.kill('SIGKILL');
  }
}

const task = (id, config, extra = {}) => ({
  type: 'task',
  id,
  config: Buffer.isBuffer(config) ? config : Buffer.from(typeof config === 'string' ? config : JSON.stringify(config)),
  ...extra,
});

module.exports = { Child, HELLO, ECHO_RUN, VECTORS, REPO, task, decodeMessage };
