'use strict';
// Throughput of a child through the stdio protocol alone (no bridge, no gRPC):
//   node bench/echo-throughput.js [tasks] [in-flight] [-- command args...]
// Defaults: 200000 tasks, 64 in flight, the Node echo example.
const { spawn } = require('node:child_process');
const path = require('node:path');
const { FrameDecoder, Encoder } = require('../protocol');

const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const cmd = dash >= 0 ? argv.slice(dash + 1) : [path.join(__dirname, '..', '..', '..', 'examples', 'echo', 'node', 'run')];
const [total = 200000, window = 64] = (dash >= 0 ? argv.slice(0, dash) : argv).map(Number);

const child = spawn(cmd[0], cmd.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
const dec = new FrameDecoder(1 << 30);
const enc = new Encoder();
const config = Buffer.from('{"i":1,"payload":"温度传感器 sensor 42"}');
let sent = 0;
let answered = 0;
let t0 = 0;

function pump() {
  while (sent < total && sent - answered < window) {
    enc.frame((e) => e.message({ type: 'task', id: sent, config, project_id: 'p', flow_id: 'f', job: 'j', element_id: 'e', element_job: `ej${sent}`, timeout_ms: 60000 }));
    sent++;
  }
  if (enc.length) child.stdin.write(enc.take());
}

child.stdout.on('data', (chunk) => {
  for (const m of dec.push(chunk)) {
    if (m.type === 'ready') {
      t0 = process.hrtime.bigint();
      pump();
    } else if (m.type === 'result' || m.type === 'error') {
      answered++;
    }
  }
  if (answered === total) {
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    let cpu = '';
    try {
      // utime + stime of the child, in clock ticks (100 per second on Linux). With `run`
      // the child is sh's exec'd node, the same pid.
      const f = require('node:fs').readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      const ticks = Number(f[11]) + Number(f[12]);
      cpu = `, child CPU ${(ticks / 100).toFixed(2)} s = ${((ticks * 10000) / total).toFixed(1)} us/task`;
    } catch {}
    console.log(`${total} tasks, ${window} in flight: ${s.toFixed(2)} s, ${Math.round(total / s)} tasks/s${cpu}`);
    child.stdin.end();
  } else pump();
});
enc.frame((e) => e.message({ type: 'hello', protocols: [1], plugin: 'bench' }));
child.stdin.write(enc.take());
