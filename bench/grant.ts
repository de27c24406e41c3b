// Grant copy and map costs seen by a backend guest, with the granter on the
// same pCPU worker and on another one.
//
//   node dist/bench/grant.js [--n 20000] [--runs 3] [--accels kvm,tcg] [--json FILE]
//
// guests/build/grant.elf as granter and backend (src/testing/grant.ts wires them through xenstore);
// after its checks the backend times, with the TSC, N GNTTABOP_copy operations of 4 KiB from the
// grant into a page of its own (64 per hypercall) and N map_grant_ref + unmap_grant_ref pairs (one
// operation per hypercall each): ns per operation, guest-side, hypercall exits included. 1 pCPU
// puts both domains on one worker; 2 put them on different workers (checked through
// Hypervisor.vcpus(domid).pcpu), where the backend's worker reaches the granter's table and memory
// through its own mapping of the granter's memfd and the granter's published physmap.

import os from 'node:os';
import { parseArgs } from 'node:util';
import { Toolstack } from '../src/tools/toolstack.js';
import { runGrantPair } from '../src/testing/grant.js';
import { runnableAccels } from '../src/testing/accel.js';
import { benchArgs, fmt, machine, numArg, printMachine, stats, table, writeJson } from './common.js';

const USAGE = `
usage: node dist/bench/grant.js [--n N] [--runs R] [--accels kvm,tcg] [--json FILE]

Grant copy (4 KiB, 64 per hypercall) and map+unmap costs in a backend guest,
with its granter on the same pCPU worker and on another one.

  --n N          operations timed per run, 100..1000000 (default 20000)
  --runs R       runs per case (default 3)
  --accels LIST  CPUs to run the guests on: kvm, tcg (default: those that run here)
  --json FILE    also write the figures as JSON
`;
const { values } = benchArgs(USAGE, (args) => parseArgs({
  args,
  options: { n: { type: 'string', default: '20000' }, runs: { type: 'string', default: '3' }, accels: { type: 'string' }, json: { type: 'string' } },
}));
const N = numArg(values.n, '--n', USAGE, 100);
const RUNS = numArg(values.runs, '--runs', USAGE);
const ACCELS = (values.accels ?? runnableAccels().filter((a) => a !== 'auto').join(',')).split(',').filter(Boolean);
if (N > 1_000_000 || ACCELS.some((a) => a !== 'kvm' && a !== 'tcg')) {
  console.error(`bench/grant: --n must be 100..1000000 and --accels a list of kvm, tcg\n\n${USAGE.trim()}`);
  process.exit(2);
}

interface Case { accel: string; pcpus: number; placement: string[]; copy: number[]; mapUnmap: number[] }

async function measure(accel: 'kvm' | 'tcg', pcpus: number): Promise<Case> {
  const ts = await Toolstack.start({ pcpus, accel, log: () => {} });
  const c: Case = { accel, pcpus, placement: [], copy: [], mapUnmap: [] };
  try {
    for (let r = 0; r < RUNS; r++) {
      const res = await runGrantPair(ts, { bench: N, timeoutMs: 600_000 });
      if (!res.bench || res.backend.reason !== 0 || res.granter.reason !== 0) throw new Error(`the grant pair failed (${accel}, ${pcpus} pCPUs)\n${res.granter.output}\n${res.backend.output}`);
      c.copy.push(res.bench.copy4kNs);
      c.mapUnmap.push(res.bench.mapUnmapNs);
      c.placement.push(res.pcpus.granter === res.pcpus.backend ? 'same' : 'different');
    }
  } finally {
    await ts.shutdown();
  }
  return c;
}

const m = machine();
printMachine(m);
console.log(`load average before: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
console.log(`${RUNS} runs x ${N} operations per case\n`);
const cases: Case[] = [];
for (const a of ACCELS as ('kvm' | 'tcg')[]) for (const p of [1, 2]) cases.push(await measure(a, p));
const rows = cases.map((c) => {
  const cp = stats(c.copy.map((x) => x / 1000));
  const mu = stats(c.mapUnmap.map((x) => x / 1000));
  return [`${c.accel}, ${[...new Set(c.placement)].join('/')} worker`, fmt(cp.median), `${fmt(cp.min)}-${fmt(cp.max)}`, fmt(mu.median), `${fmt(mu.min)}-${fmt(mu.max)}`, String(c.copy.length)];
});
console.log('µs per operation, guest-side (TSC), hypercall exits included: median of the runs and their range');
table(['case', 'copy 4 KiB', 'range', 'map+unmap', 'range', 'runs'], rows);
console.log(`\nload average after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
writeJson(values.json, { bench: 'grant', machine: m, n: N, runs: RUNS, cases });
