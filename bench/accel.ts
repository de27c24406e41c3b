// The two CPUs side by side: KVM, the software CPU (tcg) and auto (KVM with
// the software CPU beside it), in one run.
//
//   node dist/bench/accel.js [--runs 3] [--iters 30000000] [--kvm-iters 100000] [--json FILE]
//
// 1. CPL0 instruction rate: guests/build/rate.elf times one loop at CPL0 with
//    RDTSC (`add; dec; jnz`, and `paddd; dec; jnz` for SSE) under each CPU; the
//    guest's instructions / the guest's TSC seconds. KVM gets fewer iterations
//    (on an emulating host it runs CPL0 at ~1 us an instruction); where it cannot
//    run the loop at all (SSE on PVM) the row says so, from the crash reason.
// 2. CPL3 compute: guests/build/spin.elf (an LCG loop at CPL3), TSC ticks per
//    round under auto and kvm, the guest's own figure.
// 3. Null hypercall round trip: guests/build/nullcall.elf's own figure (us/op)
//    under tcg and kvm.
// 4. Domain start: `xenode run hello.elf` spawn -> the first byte on its
//    stdout (the whole process: Node start, hypervisor start, domain build,
//    the guest's first console line), under tcg and kvm.
// 5. The CPL0-heavy guest (guests/build/cpl0.elf: SSE, x87, INT3, #PF at CPL0,
//    200 system calls from CPL3): spawn -> exit, under tcg, auto and kvm.

import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { GUESTS, REPO_ROOT, XENODE_JS, benchArgs, fmt, machine, numArg, printMachine, stats, table, writeJson } from './common.js';

const USAGE = `
usage: node dist/bench/accel.js [--runs R] [--iters N] [--kvm-iters N] [--json FILE]

KVM, the software CPU (tcg) and auto in one run: CPL0 instruction rate
(integer and SSE loops), CPL3 compute (spin), null hypercall round trip,
spawn -> first console byte, and the CPL0-heavy guest's whole run.

  --runs R       runs of each measurement (default 3)
  --iters N      CPL0 loop iterations under tcg and auto (default 30000000)
  --kvm-iters N  CPL0 loop iterations under kvm (default 100000)
  --json FILE    also write the figures as JSON
`;
const { values } = benchArgs(USAGE, (args) => parseArgs({
  args,
  options: {
    runs: { type: 'string', default: '3' },
    iters: { type: 'string', default: '30000000' },
    'kvm-iters': { type: 'string', default: '100000' },
    json: { type: 'string' },
  },
}));
const RUNS = numArg(values.runs, '--runs', USAGE);
const ITERS = numArg(values.iters, '--iters', USAGE);
const KVM_ITERS = numArg(values['kvm-iters'], '--kvm-iters', USAGE);

type Accel = 'kvm' | 'tcg' | 'auto';

function xenode(elf: string, accel: Accel, cmdline?: string): { code: number | null; out: string; err: string; ms: number } {
  const t0 = performance.now();
  const args = [XENODE_JS, 'run', path.join(GUESTS, elf), '--accel', accel, ...(cmdline ? ['--cmdline', cmdline] : [])];
  const r = spawnSync(process.execPath, args, { cwd: REPO_ROOT, encoding: 'utf8', timeout: 600_000, killSignal: 'SIGKILL' });
  return { code: r.status, out: r.stdout, err: r.stderr, ms: performance.now() - t0 };
}

/** Why the host could not run it, from the crash line, or null. */
function hostFailure(r: { code: number | null; err: string }): string | null {
  const m = /crashed: (.*limitation of this host's KVM.*)/.exec(r.err);
  return r.code !== 0 && m ? m[1]!.replace(/ on vCPU.*/, '') : null;
}

const median = (xs: number[]) => stats(xs).median;
const results: Record<string, unknown> = { machine: machine() };

// --- 1. CPL0 instruction rate ---------------------------------------------------
const rateRows: (string | number)[][] = [];
const rates: Record<string, Record<string, number | string>> = {};
for (const loop of ['int', 'sse'] as const) {
  rates[loop] = {};
  for (const accel of ['kvm', 'tcg', 'auto'] as Accel[]) {
    const iters = accel === 'kvm' ? KVM_ITERS : ITERS;
    const mips: number[] = [];
    let failed: string | null = null;
    for (let i = 0; i < RUNS && !failed; i++) {
      const r = xenode('rate.elf', accel, `loop=${loop} iters=${iters}`);
      failed = hostFailure(r);
      if (failed) break;
      const m = /rate: loop=\w+ iters=\d+ insns=(\d+) ticks=(\d+) tsc_khz=(\d+)/.exec(r.out);
      if (r.code !== 0 || !m) throw new Error(`rate.elf under ${accel}: status ${r.code}\n${r.out}${r.err}`);
      mips.push(Number(m[1]) / (Number(m[2]) / (Number(m[3]) * 1000)) / 1e6);
    }
    rates[loop]![accel] = failed ?? median(mips);
    rateRows.push([`${loop} loop at CPL0, --accel ${accel}`, failed ? `host cannot: ${failed}` : fmt(median(mips), 2), failed ? '' : String(mips.length)]);
  }
  const k = rates[loop]!['kvm'];
  for (const a of ['tcg', 'auto']) {
    const v = rates[loop]![a];
    if (typeof k === 'number' && typeof v === 'number') rateRows.push([`  ${loop}: ${a} / kvm`, `${fmt(v / k, 1)}x`, '']);
  }
}
results.cpl0Mips = rates;

// --- 2. CPL3 compute --------------------------------------------------------------
const spin: Record<string, number> = {};
for (const accel of ['kvm', 'auto'] as Accel[]) {
  const ticks: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const r = xenode('spin.elf', accel, 'rounds=3 round_bits=26');
    if (r.code !== 0) throw new Error(`spin.elf under ${accel}: status ${r.code}\n${r.err}`);
    for (const m of r.out.matchAll(/spin: round \d+ \((\d+) tsc ticks\)/g)) ticks.push(Number(m[1]));
  }
  spin[accel] = median(ticks);
}
results.cpl3TicksPerRound = spin;

// --- 3. null hypercall ------------------------------------------------------------
const hc: Record<string, number> = {};
for (const accel of ['kvm', 'tcg'] as Accel[]) {
  const us: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const r = xenode('nullcall.elf', accel, 'n=20000');
    const m = /hypercall xen_version\(version\):\s+\d+ ops, \d+ cycles\/op, ([\d.]+) us\/op/.exec(r.out);
    if (r.code !== 0 || !m) throw new Error(`nullcall.elf under ${accel}: status ${r.code}\n${r.out}${r.err}`);
    us.push(Number(m[1]));
  }
  hc[accel] = median(us);
}
results.hypercallUs = hc;

// --- 4. spawn -> first console byte ------------------------------------------------
async function firstByte(accel: Accel): Promise<number> {
  const t0 = performance.now();
  const p = spawn(process.execPath, [XENODE_JS, 'run', path.join(GUESTS, 'hello.elf'), '--accel', accel, '--quiet'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'ignore'] });
  const t = await new Promise<number>((resolve, reject) => {
    p.stdout.once('data', () => resolve(performance.now() - t0));
    p.once('exit', (c) => reject(new Error(`hello.elf under ${accel} exited ${c} before any output`)));
  });
  await new Promise((r) => p.once('exit', r));
  return t;
}
const first: Record<string, number> = {};
for (const accel of ['kvm', 'tcg'] as Accel[]) {
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) ms.push(await firstByte(accel));
  first[accel] = median(ms);
}
results.spawnToFirstByteMs = first;

// --- 5. the CPL0-heavy guest ----------------------------------------------------------
const heavy: Record<string, number | string> = {};
for (const accel of ['kvm', 'tcg', 'auto'] as Accel[]) {
  const ms: number[] = [];
  let failed: string | null = null;
  for (let i = 0; i < RUNS && !failed; i++) {
    const r = xenode('cpl0.elf', accel);
    failed = hostFailure(r);
    if (failed) break;
    if (r.code !== 0 || !/RESULT: \d+ passed, 0 failed/.test(r.out)) throw new Error(`cpl0.elf under ${accel}: status ${r.code}\n${r.out}${r.err}`);
    ms.push(r.ms);
  }
  heavy[accel] = failed ?? median(ms);
}
results.cpl0GuestMs = heavy;

printMachine();
console.log(`\nCPL0 instruction rate (M instructions/s of guest TSC time, median of ${RUNS}; kvm ${KVM_ITERS} iterations, tcg/auto ${ITERS}):`);
table(['', 'M instr/s', 'runs'], rateRows);
console.log('\nCPL3 compute (spin.elf, 2^26 LCG steps per round; the guest\'s TSC ticks per round, median):');
table(['', 'ticks/round'], [['--accel kvm', String(spin.kvm)], ['--accel auto', String(spin.auto)], ['auto / kvm', fmt(spin.auto! / spin.kvm!, 3)]]);
console.log('\nNull hypercall round trip (nullcall.elf n=20000, the guest\'s us/op, median):');
table(['', 'us/op'], [['--accel kvm', fmt(hc.kvm!, 2)], ['--accel tcg', fmt(hc.tcg!, 2)]]);
console.log('\n`xenode run hello.elf` spawn -> first byte on stdout (whole process), median:');
table(['', 'ms'], [['--accel kvm', fmt(first.kvm!, 1)], ['--accel tcg', fmt(first.tcg!, 1)]]);
console.log('\ncpl0.elf (SSE/x87/INT3/#PF at CPL0, 200 CPL3 system calls) spawn -> exit, median:');
table(['', 'ms'], (['kvm', 'tcg', 'auto'] as const).map((a) => [`--accel ${a}`, typeof heavy[a] === 'number' ? fmt(heavy[a] as number, 0) : `host cannot: ${heavy[a]}`]));
writeJson(values.json, results);
