/**
 * What handing a W1-sized message (2,611 octets) to a worker thread costs,
 * the way `dkim-verify`'s `workers` could: a thread that answers each
 * message with its id, fed one message at a time (as the server does) in
 * three ways: no message at all (the messages between threads alone), the
 * `Buffer` structured-cloned (it sits in Node's 8 KB allocation slab, as the
 * buffers a server reads do), and a copy in an ArrayBuffer of its own,
 * transferred. CPU of the whole process (both threads) and wall time per
 * message, in one process on an otherwise idle event loop.
 *
 *   npx tsx bench/dkim-handover.ts [--messages 50000] [--rounds 2]
 */
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

const { values } = parseArgs({
  options: { messages: { type: 'string', default: '50000' }, rounds: { type: 'string', default: '2' } },
});
const n = Math.max(1000, Number(values.messages) || 50_000);
const rounds = Math.max(1, Number(values.rounds) || 2);

const echo = `const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => parentPort.postMessage(m.id));`;
const worker = new Worker(echo, { eval: true });
// A 2,611-octet view into a larger slab, as `Buffer.allocUnsafe` and reads hand them out.
const slab = Buffer.allocUnsafe(8192);
const message = slab.subarray(100, 100 + 2611).fill(65);

type Mode = 'none' | 'clone' | 'transfer';
const send: Record<Mode, (id: number) => void> = {
  none: (id) => worker.postMessage({ id, now: 0 }),
  clone: (id) => worker.postMessage({ id, message, now: 0 }),
  transfer: (id) => {
    const copy = new Uint8Array(message);
    worker.postMessage({ id, message: copy, now: 0 }, [copy.buffer]);
  },
};

/** One at a time: the next goes when the last one's answer is back. */
function run(mode: Mode): Promise<{ cpuUs: number; wallUs: number }> {
  return new Promise((resolve) => {
    let id = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const next = () => {
      if (id === n) {
        worker.off('message', next);
        const cpu = process.cpuUsage(cpu0);
        resolve({ cpuUs: (cpu.user + cpu.system) / n, wallUs: ((performance.now() - t0) * 1000) / n });
        return;
      }
      send[mode](id++);
    };
    worker.on('message', next);
    next();
  });
}

process.stdout.write(
  '| round | hand-over | CPU us/message (both threads) | wall us/message |\n| ---: | --- | ---: | ---: |\n',
);
for (let round = 1; round <= rounds; round++) {
  for (const mode of ['none', 'clone', 'transfer'] as const) {
    const r = await run(mode);
    process.stdout.write(`| ${round} | ${mode} | ${r.cpuUs.toFixed(1)} | ${r.wallUs.toFixed(1)} |\n`);
  }
}
await worker.terminate();
