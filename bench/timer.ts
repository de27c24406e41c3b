// Timer accuracy: how late a one-shot VIRQ_TIMER reaches the guest.
//
//   node dist/bench/timer.js [--n 2000] [--runs 1] [--json FILE]
//
// The `timer` guest in bench mode (guests/build/timer.elf, cmdline bench=N)
// sets N one-shot deadlines (VCPUOP_set_singleshot_timer) at random 50 us ..
// 5 ms offsets, waits for each in SCHEDOP_poll on its VIRQ_TIMER port, reads
// the TSC as the first thing after the wake and prints the lateness:
// pvclock(TSC) - deadline, in ns. One hypervisor with ONE pCPU worker, in this
// process (the Toolstack of `xenode run`), in two settings:
//   idle   the timer guest alone on the worker;
//   spin   with a CPU-bound `spin` guest (ring 3, never blocks) on the same
//          worker, so every wake-up must preempt it.
// Reports median, p90, p99 and max lateness in us, and how many fired early
// (negative lateness: a bug if any).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Toolstack } from '../src/tools/toolstack.js';
import { GUESTS, benchArgs, fmt, machine, percentile, printMachine, table, writeJson } from './common.js';

const USAGE = `
usage: node dist/bench/timer.js [--n N] [--runs R] [--json FILE]

How late a one-shot VIRQ_TIMER reaches the guest (timer.elf bench=N: N
deadlines at random 50 us..5 ms offsets, lateness = pvclock at wake - deadline)
on one pCPU worker, alone and beside a CPU-bound spin guest.

  --n N        deadlines per run (default 2000)
  --runs R     runs per setting (default 1)
  --json FILE  also write the figures as JSON
`;
const { values } = benchArgs(USAGE, (args) => parseArgs({
  args,
  options: {
    n: { type: 'string', default: '2000' },
    runs: { type: 'string', default: '1' },
    json: { type: 'string' },
  },
}));
const N = Number(values.n);
const RUNS = Number(values.runs);
if (!Number.isInteger(N) || N < 1 || !Number.isInteger(RUNS) || RUNS < 1) {
  console.error(`timer bench: --n and --runs must be positive integers\n${USAGE}`);
  process.exit(2);
}

const TIMER = fs.readFileSync(path.join(GUESTS, 'timer.elf'));
const SPIN = fs.readFileSync(path.join(GUESTS, 'spin.elf'));

interface Lateness { us: number[]; early: number; wallMs: number }

/** Boots the timer guest in bench mode (and optionally a spin guest first) on one pCPU; returns the lateness samples. */
async function measure(withSpin: boolean): Promise<Lateness> {
  const ts = await Toolstack.start({ pcpus: 1, log: () => {} });
  const hv = ts.hv;
  const out = new Map<number, string>();
  hv.on('console', (domid, _src, text, eol) => out.set(domid, (out.get(domid) ?? '') + text + (eol ? '\n' : '')));
  try {
    let spinDom = -1;
    if (withSpin) {
      const s = await ts.create({ name: 'spin', kernel: SPIN, memoryMiB: 16, vcpus: 1, cmdline: 'rounds=0' }, () => {});
      spinDom = s.domid;
      // Let it reach ring 3 and its compute loop.
      const t0 = Date.now();
      while (!(out.get(spinDom) ?? '').includes('running at CPL3')) {
        if (Date.now() - t0 > 20_000) throw new Error(`spin guest did not start:\n${out.get(spinDom) ?? ''}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    let timerDom = -1;
    const ended = new Promise<number>((resolve) => hv.on('shutdown', (domid, reason) => { if (domid === timerDom) resolve(reason); }));
    const t0 = performance.now();
    const d = await ts.create({ name: 'timer', kernel: TIMER, memoryMiB: 16, vcpus: 1, cmdline: `bench=${N}` }, () => {});
    timerDom = d.domid;
    const reason = await ended;
    const wallMs = performance.now() - t0;
    const text = out.get(timerDom) ?? '';
    if (reason !== 0 || !text.includes('bench: done')) throw new Error(`timer guest ended with reason ${reason}:\n${text}`);
    const ns = text.split('\n').filter((l) => l.startsWith('LATE ')).flatMap((l) => l.slice(5).trim().split(/\s+/).map(Number));
    if (ns.length !== N) throw new Error(`expected ${N} samples, got ${ns.length}`);
    if (spinDom >= 0) await ts.destroy(spinDom);
    return { us: ns.map((x) => x / 1000), early: ns.filter((x) => x < 0).length, wallMs };
  } finally {
    await ts.shutdown();
  }
}

interface Row { setting: string; n: number; median: number; p90: number; p99: number; max: number; min: number; early: number; wallMs: number }

function summarise(setting: string, l: Lateness): Row {
  const s = [...l.us].sort((a, b) => a - b);
  return { setting, n: s.length, median: percentile(s, 0.5), p90: percentile(s, 0.9), p99: percentile(s, 0.99), max: s[s.length - 1]!, min: s[0]!, early: l.early, wallMs: l.wallMs };
}

printMachine();
console.log(`timer accuracy: ${N} one-shot deadlines per run at random 50 us..5 ms offsets, ${RUNS} run(s) per setting, one pCPU worker\n`);
const rows: Row[] = [];
for (let r = 0; r < RUNS; r++) {
  rows.push(summarise('idle', await measure(false)));
  rows.push(summarise('with spin guest', await measure(true)));
}
table(['lateness (us)', 'median', 'p90', 'p99', 'max', 'min', 'early', 'n', 'run (s)'],
  rows.map((r) => [r.setting, fmt(r.median, 1), fmt(r.p90, 1), fmt(r.p99, 1), fmt(r.max, 1), fmt(r.min, 1), String(r.early), String(r.n), fmt(r.wallMs / 1000, 1)]));
writeJson(values.json, { machine: machine(), n: N, runs: RUNS, rows });
