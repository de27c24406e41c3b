// xenstored benchmark: ops/s and latency over the Unix socket.
//
//   node dist/bench/xenstore.js [--seconds S] [--db none|PATH] [--no-fsync] [--iterations N] [--json FILE]
//
// Runs `xenode xenstored` as a child process and drives it from this process:
//   * sync: each client keeps one request in flight (like libxenstore);
//     latency per operation (median, p99) and aggregate ops/s, 1 and 16 clients;
//   * pipelined: one client keeps 64 requests in flight (req_id pipelining) -
//     the daemon's throughput limit for small reads;
//   * read latency while another client storms with writes;
//   * test-xenstore -i N (Xen's own C client) if it has been extracted.
// Only operations that completed within the S seconds are counted (the ones
// still in flight at the deadline are awaited, not counted). A warm-up pass
// precedes each case; an error in it or in a timed pass stops the bench.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { SocketClient } from '../src/tools/xenstored/client.js';
import { REPO_ROOT, spawnDaemon, tmpDir } from '../src/tools/xenstored/helpers.js';
import { benchArgs, machine, numArg, printMachine, writeJson } from './common.js';

const USAGE = `
usage: node dist/bench/xenstore.js [--seconds S] [--db none|PATH] [--no-fsync] [--iterations N] [--json FILE]

xenstored over its Unix socket (a \`xenode xenstored\` child): read, write,
directory and transaction ops/s and latency with 1 and 16 synchronous clients,
then 64 requests in flight on one client, then Xen's test-xenstore -i N.

  --seconds S     length of each timed case (default 2)
  --db none|PATH  the daemon's journal (default: a temporary file)
  --no-fsync      journal without fdatasync
  --iterations N  test-xenstore -i N (default 1000)
  --json FILE     also write the figures as JSON
`;
const { values } = benchArgs(USAGE, (args) => parseArgs({
  args,
  options: {
    seconds: { type: 'string', default: '2' },
    db: { type: 'string' },
    'no-fsync': { type: 'boolean' },
    iterations: { type: 'string', default: '1000' },
    json: { type: 'string' },
  },
}));
const seconds = numArg(values.seconds, '--seconds', USAGE, 0.1);
const iterations = numArg(values.iterations, '--iterations', USAGE);
const WARMUP_S = 0.3;
const dir = tmpDir('xs-bench-');
const sock = path.join(dir, 'socket');
const db = values.db ?? path.join(dir, 'db');

type Op = (c: SocketClient, id: number) => Promise<unknown>;
const OPS: Record<string, Op> = {
  read: (c) => c.readBuffer('/bench/small'),
  write: (c, id) => c.write(`/bench/w/${id}`, 'value'),
  directory: (c) => c.directory('/bench/dir'),
  transaction: async (c, id) => {
    const tx = await c.transactionStart();
    await c.readBuffer(`/bench/t/${id}`, tx);
    await c.write(`/bench/t/${id}`, 'x', tx);
    await c.transactionEnd(tx, true);
  },
};

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** Each client repeats `op` for `secs`; only the operations that complete by the deadline count. */
async function runSync(op: Op, clients: SocketClient[], secs = seconds): Promise<{ ops: number; median: number; p99: number }> {
  const lat: number[] = [];
  const end = performance.now() + secs * 1000;
  await Promise.all(clients.map(async (c, id) => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await op(c, id);
      const t1 = performance.now();
      if (t1 <= end) lat.push(t1 - t0);
    }
  }));
  lat.sort((a, b) => a - b);
  return { ops: lat.length / secs, median: pct(lat, 0.5) * 1000, p99: pct(lat, 0.99) * 1000 };
}

/** `window` requests in flight on one client for `secs`; only those answered by the deadline count. */
async function runPipelined(op: Op, c: SocketClient, window: number, secs = seconds): Promise<number> {
  let n = 0;
  const end = performance.now() + secs * 1000;
  await Promise.all(Array.from({ length: window }, async (_, k) => {
    while (performance.now() < end) {
      await op(c, k);
      if (performance.now() <= end) n++;
    }
  }));
  return n / secs;
}

async function main(): Promise<void> {
  const args = values.db === 'none' ? ['--db', 'none'] : ['--db', db];
  if (values['no-fsync']) args.push('--no-fsync');
  const daemon = await spawnDaemon(sock, args);
  const setup = await SocketClient.connect(sock);
  await setup.write('/bench/small', 'x');
  for (let i = 0; i < 10; i++) await setup.write(`/bench/dir/entry-${i}`, '');
  for (let i = 0; i < 16; i++) await setup.write(`/bench/t/${i}`, '0');

  const out: Record<string, unknown> = { bench: 'xenstore', machine: machine(), seconds, journal: values.db === 'none' ? 'none' : values['no-fsync'] ? 'no fsync' : 'fdatasync per turn' };
  const sync: Record<string, unknown>[] = [];
  const pipelined: Record<string, number> = {};
  printMachine();
  console.log(`xenstored benchmark: node ${process.version}, ${seconds}s per case, journal ${values.db === 'none' ? 'none' : `${db}${values['no-fsync'] ? ' (no fsync)' : ' (fdatasync per turn)'}`}`);
  console.log('op           clients   ops/s      median us   p99 us');
  for (const [name, op] of Object.entries(OPS)) {
    for (const n of [1, 16]) {
      const cs = await Promise.all(Array.from({ length: n }, () => SocketClient.connect(sock)));
      await runSync(op, cs, WARMUP_S); // warm-up (JIT, daemon caches): not counted, but its errors stop the bench
      const r = await runSync(op, cs);
      sync.push({ op: name, clients: n, opsPerSecond: r.ops, medianUs: r.median, p99Us: r.p99 });
      console.log(`${name.padEnd(12)} ${String(n).padStart(7)} ${r.ops.toFixed(0).padStart(9)} ${r.median.toFixed(1).padStart(11)} ${r.p99.toFixed(1).padStart(9)}`);
      cs.forEach((c) => c.close());
    }
  }
  const one = await SocketClient.connect(sock);
  for (const name of ['read', 'write', 'directory']) {
    await runPipelined(OPS[name]!, one, 64, WARMUP_S);
    const r = await runPipelined(OPS[name]!, one, 64);
    pipelined[name] = r;
    console.log(`${`${name} pipelined`.padEnd(20)} 1 client, 64 in flight: ${r.toFixed(0)} ops/s`);
  }
  one.close();

  // What stress.test.ts proves by counting (a reader is served in turn during a
  // writer storm), here in time: read latency while another client keeps 32
  // writes in flight.
  {
    const writer = await SocketClient.connect(sock);
    const reader = await SocketClient.connect(sock);
    let stop = false;
    let written = 0;
    const storm = (async () => {
      let i = 0;
      while (!stop) await Promise.all(Array.from({ length: 32 }, () => writer.write(`/bench/storm/${i++ % 100}`, 'y').then(() => { written++; })));
    })();
    try {
      await runSync(OPS.read!, [reader], WARMUP_S);
      const w0 = written;
      const r = await runSync(OPS.read!, [reader]);
      out.readDuringStorm = { writesPerSecond: (written - w0) / seconds, readsPerSecond: r.ops, medianUs: r.median, p99Us: r.p99 };
      console.log(`read during a writer storm (32 writes in flight on another client, ${((written - w0) / seconds).toFixed(0)} writes/s): ` +
        `${r.ops.toFixed(0)} reads/s, median ${r.median.toFixed(1)} us, p99 ${r.p99.toFixed(1)} us`);
    } finally {
      stop = true;
      await storm;
      writer.close();
      reader.close();
    }
  }

  const tx = path.join(REPO_ROOT, '.cache', 'xen-utils', 'usr', 'lib', 'xen-4.17', 'bin', 'test-xenstore');
  if (fs.existsSync(tx)) {
    const r = await promisify(execFile)(tx, ['-i', String(iterations)], { env: { ...process.env, XENSTORED_PATH: sock } });
    out.testXenstore = r.stdout;
    console.log(`test-xenstore -i ${iterations}:`);
    process.stdout.write(r.stdout.replace(/^/gm, '  '));
  } else {
    console.log('!!! test-xenstore NOT RUN: not extracted (run scripts/fetch-test-xenstore.sh)');
  }
  console.log((await setup.control('memreport')).split('\n').filter((l) => /^(nodes|requests|journal|process)/.test(l)).join('\n'));
  setup.close();
  await daemon.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  writeJson(values.json, { ...out, sync, pipelined64: pipelined });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
