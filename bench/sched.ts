// The schedulers, measured.
//
//   node dist/bench/sched.js [--seconds 3] [--n 1000] [--only share,jitter,wake,cost] [--json FILE]
//
// share   CPU share error of spin guests (CPU-bound) with weights 256:512 and
//         256:512:1024 on ONE pCPU, credit2 and credit, live (after 0.5 s of
//         warm-up); and the same in the simulated pCPU (src/hv/sched/sim.ts),
//         which shows the policy's own error apart from host noise.
// jitter  window-start jitter, idle host and with the host's CPUs all busy
//         (one busy-looping process per host CPU): ARINC 653 (major frame
//         20 ms: three spin guests 5 ms each, 5 ms idle) measured from the
//         trace's switch times against epoch + frame + offset; RTDS (a 5 ms /
//         1 ms vCPU beside two spin guests with 100 ms / 40 ms reservations
//         and extratime) measured from its switch-in to its release (a
//         multiple of 5 ms).
// wake    wake-up latency of a blocked vCPU beside a spin guest on one pCPU,
//         per scheduler: the timer guest's one-shot deadlines (as bench/timer.ts),
//         the lateness it sees, and the trace's wake -> running time.
// cost    one scheduling decision (pick + slice + descheduled + insert) in
//         the simulated pCPU as the runqueue grows from 10 to 1000 domains.
// exclusive  trigger -> exclusive machine (SCHEDOP_xenode_exclusive) on two
//         pCPUs, on the software CPU: a critical guest (exclusive.elf, bench
//         mode) on pCPU 0 takes the machine --triggers times (holds it 200 us,
//         then computes 1 ms with the machine shared) while a spin guest runs
//         on each pCPU, pCPU 0 beside it included; idle host and with the
//         host's CPUs all busy. Start: the time the acquire handler stamps in
//         the exclusivity record (the guest's hypercall has exited and been
//         decoded on pCPU 0's worker). End: the last pCPU's `exclusive` trace
//         record, written once that pCPU's worker has ended the other
//         domain's run (its vCPU out of the software CPU, its runstate
//         runnable) and will run none but the holder's. Also per pCPU (the
//         caller's own, the other), and the guest's own view: pvclock before
//         the hypercall to its return (the exit, the wait for every pCPU, the
//         re-entry).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Toolstack } from '../src/tools/toolstack.js';
import { createScheduler, type SchedulerName } from '../src/hv/sched/schedulers.js';
import { Arinc653 } from '../src/hv/sched/arinc653.js';
import { simulate, unit } from '../src/hv/sched/sim.js';
import type { SchedUnit } from '../src/hv/sched/scheduler.js';
import type { TraceRecord } from '../src/hv/sched/trace.js';
import { GUESTS, benchArgs, fmt, machine, percentile, printMachine, table, writeJson } from './common.js';

const USAGE = `
usage: node dist/bench/sched.js [--seconds S] [--n N] [--only share,jitter,wake,cost] [--json FILE]

The schedulers measured: CPU share error of spin guests (credit2, credit; live
and simulated), ARINC 653 and RTDS window-start jitter (with and without extra
host load), wake-up latency of a blocked vCPU per scheduler, and the cost of
one scheduling decision with 10..1000 domains on a runqueue.

  --seconds S  live measuring time per run (default 3, at most 120)
  --n N        timer deadlines for the wake-up part, and the largest runqueue
               for the cost part (default 1000, at least 10)
  --triggers N exclusivity triggers per host-load setting (default 300)
  --exclusive-accel kvm|tcg  the CPU for the exclusivity part (default tcg: this
               host's KVM runs the critical guest's CPL0 code slowly)
  --exclusive-host none|pin|rt  the pCPU workers as the host runs them: as
               they come (default), pinned one per host CPU, or pinned at
               SCHED_FIFO 10 (Hypervisor.cpupoolHostSched; a CPU-bound guest on
               a SCHED_FIFO worker takes that host CPU from everything else)
  --only LIST  the parts to run (default all)
  --json FILE  also write the figures as JSON
`;
const PARTS = ['share', 'jitter', 'wake', 'cost', 'exclusive'];
const { values } = benchArgs(USAGE, (args) => parseArgs({
  args,
  options: {
    seconds: { type: 'string', default: '3' },
    n: { type: 'string', default: '1000' },
    only: { type: 'string', default: PARTS.join(',') },
    json: { type: 'string' },
    triggers: { type: 'string', default: '300' },
    'exclusive-accel': { type: 'string', default: 'tcg' },
    'exclusive-host': { type: 'string', default: 'none' },
  },
}));
const SECONDS = Number(values.seconds);
const N = Number(values.n);
const ONLY = new Set(values.only!.split(','));
const unknown = [...ONLY].filter((p) => !PARTS.includes(p));
if (!(SECONDS > 0 && SECONDS <= 120) || !Number.isInteger(N) || N < 10 || unknown.length) {
  console.error(`sched bench: --seconds in (0, 120], --n an integer >= 10, --only of ${PARTS.join(',')}${unknown.length ? ` (not ${unknown.join(',')})` : ''}\n${USAGE}`);
  process.exit(2);
}
const SPIN = fs.readFileSync(path.join(GUESTS, 'spin.elf'));
const TIMER = fs.readFileSync(path.join(GUESTS, 'timer.elf'));
const EXCLUSIVE = fs.readFileSync(path.join(GUESTS, 'exclusive.elf'));
const TRIGGERS = Number(values.triggers);
const EXCL_ACCEL = values['exclusive-accel'] as 'kvm' | 'tcg';
const EXCL_HOST = values['exclusive-host']!;
if (!['none', 'pin', 'rt'].includes(EXCL_HOST)) {
  console.error(`sched bench: --exclusive-host must be none, pin or rt\n${USAGE}`);
  process.exit(2);
}
if (EXCL_ACCEL !== 'kvm' && EXCL_ACCEL !== 'tcg') {
  console.error(`sched bench: --exclusive-accel must be kvm or tcg\n${USAGE}`);
  process.exit(2);
}
if (!Number.isInteger(TRIGGERS) || TRIGGERS < 10 || TRIGGERS > 100_000) {
  console.error(`sched bench: --triggers must be an integer in 10..100000\n${USAGE}`);
  process.exit(2);
}
const results: Record<string, unknown> = { machine: machine(), seconds: SECONDS };

/** One busy-looping process per host CPU, for "under host load"; stopped by pid. */
function hostLoad(): () => void {
  const kids: ChildProcess[] = [];
  for (let i = 0; i < machine().nproc; i++) kids.push(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
  return () => { for (const k of kids) k.kill('SIGKILL'); };
}

const stat = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, median: s.length ? percentile(s, 0.5) : NaN, p99: s.length ? percentile(s, 0.99) : NaN, max: s.length ? s[s.length - 1]! : NaN };
};

// --- share -----------------------------------------------------------------

async function liveShares(sched: string, weights: number[]): Promise<number[]> {
  const ts = await Toolstack.start({ pcpus: 1, sched, log: () => {} });
  try {
    const doms = [];
    for (let i = 0; i < weights.length; i++) {
      const d = await ts.create({ name: `w${i}`, kernel: SPIN, memoryMiB: 8, vcpus: 1 }, () => {}, { paused: true });
      ts.hv.schedAdjust(d.domid, { weight: weights[i]! });
      doms.push(d.domid);
    }
    for (const d of doms) ts.hv.unpause(d);
    await sleep(500);
    const before = doms.map((d) => ts.hv.vcpus(d)[0]!.cpuTimeUs);
    await sleep(SECONDS * 1000);
    const cpu = doms.map((d, i) => ts.hv.vcpus(d)[0]!.cpuTimeUs - before[i]!);
    const total = cpu.reduce((a, b) => a + b, 0);
    return cpu.map((c) => c / total);
  } finally {
    await ts.shutdown();
  }
}

function simShares(sched: string, weights: number[]): number[] {
  const p = createScheduler<SchedUnit>(sched);
  const us = weights.map((w, i) => { p.adjust(i + 1, { weight: w }); return unit(i + 1); });
  const r = simulate(p, us.map((u) => ({ unit: u })), 10_000_000_000n);
  const total = us.reduce((a, u) => a + Number(r.stats.get(u)!.runtime), 0);
  return us.map((u) => Number(r.stats.get(u)!.runtime) / total);
}

async function share(): Promise<void> {
  const rows: (string | number)[][] = [];
  const out: unknown[] = [];
  for (const sched of ['credit2', 'credit']) {
    for (const weights of [[256, 512], [256, 512, 1024]]) {
      const total = weights.reduce((a, b) => a + b, 0);
      for (const [how, shares] of [['live', await liveShares(sched, weights)], ['simulated', simShares(sched, weights)]] as const) {
        const err = shares.map((s, i) => Math.abs(s - weights[i]! / total) / (weights[i]! / total));
        rows.push([sched, weights.join(':'), how, shares.map((s) => fmt(s * 100, 1)).join(' / '), fmt(Math.max(...err) * 100, 2)]);
        out.push({ sched, weights, how, shares, maxRelErr: Math.max(...err) });
      }
    }
  }
  console.log(`\nCPU share of spin guests on one pCPU (${SECONDS} s live after 0.5 s warm-up; 10 s simulated)`);
  table(['sched', 'weights', 'how', 'shares %', 'max error % of share'], rows);
  results.share = out;
}

// --- jitter ----------------------------------------------------------------

async function traceRun(sched: string, setup: (ts: Toolstack, doms: number[]) => void, n: number, seconds: number): Promise<{ records: TraceRecord[]; ts: Toolstack; doms: number[]; arincEpoch?: bigint }> {
  const ts = await Toolstack.start({ pcpus: 1, sched, log: () => {}, traceRecords: 1 << 20 });
  const doms: number[] = [];
  for (let i = 0; i < n; i++) doms.push((await ts.create({ name: `g${i}`, kernel: SPIN, memoryMiB: 8, vcpus: 1 }, () => {}, { paused: true })).domid);
  setup(ts, doms);
  for (const d of doms) ts.hv.unpause(d);
  await sleep(300);
  ts.hv.setSchedTrace(true);
  await sleep(seconds * 1000);
  ts.hv.setSchedTrace(false);
  const { records } = ts.hv.readSchedTrace(0);
  return { records, ts, doms, arincEpoch: ts.hv.getArinc653Schedule()?.epoch };
}

async function arincJitter(): Promise<number[]> {
  const MS = 1_000_000n;
  const major = 20n * MS;
  const r = await traceRun('arinc653', (ts, d) => {
    ts.hv.setArinc653Schedule({ majorFrame: major, entries: d.map((domid) => ({ domid, vcpu: 0, runtime: 5n * MS })) });
  }, 3, SECONDS);
  try {
    const epoch = r.arincEpoch!;
    const offsets = new Map(r.doms.map((d, i) => [d, BigInt(i) * 5n * MS]));
    const jit: number[] = [];
    for (const x of r.records) {
      if (x.event !== 'switch' || x.vcpu < 0 || x.t < epoch) continue;
      const off = offsets.get(x.domid);
      if (off === undefined) continue;
      const frame = (x.t - epoch - off) / major;
      const want = epoch + frame * major + off;
      jit.push(Number(x.t - want) / 1000);
    }
    return jit;
  } finally {
    await r.ts.shutdown();
  }
}

async function rtdsJitter(): Promise<number[]> {
  const PERIOD = 5_000_000n;
  const r = await traceRun('rtds', (ts, d) => {
    ts.hv.schedAdjust(d[0]!, { period: 5000, budget: 1000, extratime: 0 });
    // Reservations with later deadlines (100 ms), not tiny extratime budgets: an extratime budget is also a
    // slice, and 10 us ones would have the pCPU re-deciding every 10 us.
    for (const h of d.slice(1)) ts.hv.schedAdjust(h, { period: 100000, budget: 40000, extratime: 1 });
  }, 3, SECONDS);
  try {
    const rt = r.doms[0]!;
    return r.records.filter((x) => x.event === 'switch' && x.domid === rt).map((x) => Number(x.t % PERIOD) / 1000);
  } finally {
    await r.ts.shutdown();
  }
}

async function jitter(): Promise<void> {
  const rows: (string | number)[][] = [];
  const out: unknown[] = [];
  for (const load of [false, true]) {
    const stop = load ? hostLoad() : () => {};
    try {
      for (const [name, fn] of [['arinc653 window start', arincJitter], ['rtds release -> running', rtdsJitter]] as const) {
        const s = stat(await fn());
        const la = os.loadavg()[0]!;
        rows.push([name, `${load ? `+${machine().nproc} busy processes` : 'no extra load'} (load ${fmt(la, 1)})`, s.n, fmt(s.median, 1), fmt(s.p99, 1), fmt(s.max, 1)]);
        out.push({ what: name, extraLoad: load, loadavg1: la, ...s });
      }
    } finally {
      stop();
    }
  }
  console.log(`\nwindow-start jitter (us, late of the schedule), ${SECONDS} s of trace each`);
  table(['what', 'host', 'n', 'median', 'p99', 'max'], rows);
  results.jitter = out;
}

// --- wake ------------------------------------------------------------------

async function wakeOne(sched: SchedulerName, n: number): Promise<{ late: number[]; traced: number[]; torn: number }> {
  const ts = await Toolstack.start({ pcpus: 1, sched, log: () => {}, traceRecords: 1 << 20 });
  const out = new Map<number, string>();
  ts.hv.on('console', (domid, _s, text, eol) => out.set(domid, (out.get(domid) ?? '') + text + (eol ? '\n' : '')));
  try {
    // Under null the spin guest would hold the pCPU: the timer guest alone there, as null would place it.
    if (sched !== 'null') await ts.create({ name: 'spin', kernel: SPIN, memoryMiB: 8, vcpus: 1 }, () => {});
    let timerDom = -1;
    const ended = new Promise<number>((resolve) => ts.hv.on('shutdown', (domid, reason) => { if (domid === timerDom) resolve(reason); }));
    const d = await ts.create({ name: 'timer', kernel: TIMER, memoryMiB: 16, vcpus: 1, cmdline: `bench=${n}` }, () => {}, { paused: true });
    timerDom = d.domid;
    if (sched === 'rtds') ts.hv.schedAdjust(d.domid, { period: 1000, budget: 200 });
    ts.hv.setSchedTrace(true);
    ts.hv.unpause(d.domid);
    const reason = await Promise.race([ended, sleep(120_000).then(() => -1)]);
    if (reason !== 0) throw new Error(`${sched}: timer guest did not finish in 120 s (reason ${reason}):\n${out.get(timerDom) ?? ''}`);
    const text = out.get(timerDom) ?? '';
    // The guest reads the TSC, then the time info: a reschedule in between (a new tsc_timestamp) tears the
    // sample into a huge value. Those are the guest's measurement, not a latency: counted and left out.
    const all = text.split('\n').filter((l) => l.startsWith('LATE ')).flatMap((l) => l.slice(5).trim().split(/\s+/).map((x) => Number(x) / 1000));
    const late = all.filter((x) => x < 1e6);
    const { records } = ts.hv.readSchedTrace(0);
    const lat: number[] = [];
    let wokeAt = -1n;
    for (const x of records) {
      if (x.domid !== timerDom) continue;
      if (x.event === 'wake') wokeAt = x.t;
      else if (x.event === 'switch' && wokeAt >= 0n) {
        lat.push(Number(x.t - wokeAt) / 1000);
        wokeAt = -1n;
      }
    }
    return { late, traced: lat, torn: all.length - late.length };
  } finally {
    await ts.shutdown();
  }
}

async function wake(): Promise<void> {
  const rows: (string | number)[][] = [];
  const out: unknown[] = [];
  const n = Math.min(N, 2000);
  for (const sched of ['credit2', 'credit', 'rtds', 'null', 'rr'] as SchedulerName[]) {
    const r = await wakeOne(sched, n);
    const l = stat(r.late);
    const t = stat(r.traced);
    rows.push([sched, sched === 'null' ? 'alone (null: its own pCPU)' : 'beside spin', l.n, r.torn, fmt(l.median, 1), fmt(l.p99, 1), fmt(l.max, 1), t.n, fmt(t.median, 1), fmt(t.p99, 1), fmt(t.max, 1)]);
    out.push({ sched, guestLateness: l, torn: r.torn, traceWakeToRun: t, loadavg1: os.loadavg()[0] });
  }
  console.log(`\nwake-up latency of a blocked vCPU on one pCPU (us): timer guest, ${n} one-shot deadlines at 50 us..5 ms`);
  table(['sched', 'setting', 'n', 'torn', 'guest late p50', 'p99', 'max', 'n', 'wake->run p50', 'p99', 'max'], rows);
  results.wake = out;
}

// --- cost ------------------------------------------------------------------

function decisionCost(sched: SchedulerName, domains: number): number {
  const p = createScheduler<SchedUnit>(sched);
  const us = Array.from({ length: domains }, (_, i) => unit(i + 1));
  if (p instanceof Arinc653) p.setSchedule({ majorFrame: 64_000_000n, entries: us.slice(0, 64).map((u) => ({ domid: u.dom.domid, vcpu: 0, runtime: 1_000_000n })) }, 0n);
  if (sched === 'rtds') us.forEach((u) => p.adjust(u.dom.domid, { period: 10000 * domains, budget: 9000 }));
  let now = 0n;
  for (const u of us) p.insert(u, now);
  const iters = 20000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) {
    const v = p.pick(now);
    if (!v) { now += 1_000_000n; continue; }
    const s = p.slice(v, now);
    now += s === 0n ? 1_000_000n : s;
    p.descheduled(v, now, true);
    p.insert(v, now);
  }
  return Number(process.hrtime.bigint() - t0) / iters;
}

function cost(): void {
  const sizes = [10, 100, 1000].filter((n) => n <= N);
  const rows: (string | number)[][] = [];
  const out: unknown[] = [];
  for (const sched of ['credit2', 'credit', 'rtds', 'arinc653', 'null', 'rr'] as SchedulerName[]) {
    decisionCost(sched, 10); // warm-up (JIT)
    const ns = sizes.map((n) => decisionCost(sched, n));
    rows.push([sched, ...ns.map((x) => fmt(x / 1000, 2))]);
    out.push({ sched, sizes, nsPerDecision: ns });
  }
  console.log('\ncost of one scheduling decision (us: pick + slice + descheduled + insert), by domains on the runqueue');
  table(['sched', ...sizes.map((n) => `${n} doms`)], rows);
  results.cost = out;
}

// --- exclusive ---------------------------------------------------------------

async function exclusiveOnce(accel: 'kvm' | 'tcg'): Promise<{ all: number[]; own: number[]; other: number[]; guest: number[]; periods: number; etime: number; lost: number }> {
  const ts = await Toolstack.start({ pcpus: 2, accel, log: () => {}, traceRecords: 1 << 20 });
  if (EXCL_HOST !== 'none') {
    for (const r of await ts.hv.cpupoolHostSched(0, { pin: true, rtPriority: EXCL_HOST === 'rt' ? 10 : 0 })) {
      if (r.errors.length) throw new Error(`pCPU ${r.pcpu}: ${r.errors.join('; ')}`);
    }
  }
  const out = new Map<number, string>();
  ts.hv.on('console', (domid, _s, text, eol) => out.set(domid, (out.get(domid) ?? '') + text + (eol ? '\n' : '')));
  try {
    for (const pcpu of [0, 1]) await ts.create({ name: `spin${pcpu}`, kernel: SPIN, memoryMiB: 8, vcpus: 1, cmdline: 'round_bits=24', hard: [[pcpu]] }, () => {});
    await sleep(300);
    ts.hv.setSchedTrace(true);
    const cmdline = `mode=bench n=${TRIGGERS} hold_us=200 gap_us=1000`;
    const c = await ts.create({ name: 'critical', kernel: EXCLUSIVE, memoryMiB: 8, vcpus: 1, cmdline, hard: [[0]], exclusiveMs: 10 }, () => {});
    const end = Date.now() + 600_000;
    while (!/bench done/.test(out.get(c.domid) ?? '')) {
      if (Date.now() > end) throw new Error(`the critical guest did not finish ${TRIGGERS} triggers within 600 s`);
      await sleep(100);
    }
    ts.hv.setSchedTrace(false);
    const traces = [0, 1].map((p) => ts.hv.readSchedTrace(p));
    // Per request time: each pCPU's stop latency (the pCPUs' exclusive records carry the request time).
    const per = new Map<bigint, number[]>();
    traces.forEach((t, pcpu) => {
      for (const r of t.records) {
        if (r.event !== 'exclusive' || r.domid !== c.domid) continue;
        const l = per.get(r.arg) ?? [NaN, NaN];
        l[pcpu] = Number(r.t - r.arg) / 1000;
        per.set(r.arg, l);
      }
    });
    const whole = [...per.values()].filter((l) => l.every((x) => !Number.isNaN(x)));
    const guest = [...(out.get(c.domid) ?? '').matchAll(/^ACQ (\d+)$/gm)].map((m) => Number(m[1]) / 1000);
    const etime = [...(out.get(c.domid) ?? '').matchAll(/^exclusive: acquire \d+: -62$/gm)].length;
    return { all: whole.map((l) => Math.max(...l)), own: whole.map((l) => l[0]!), other: whole.map((l) => l[1]!), guest, periods: per.size, etime, lost: traces.reduce((a, t) => a + t.lost, 0) };
  } finally {
    await ts.shutdown();
  }
}

async function exclusive(): Promise<void> {
  const rows: (string | number)[][] = [];
  const out: unknown[] = [];
  for (const load of [false, true]) {
    const stop = load ? hostLoad() : () => {};
    try {
      const la0 = os.loadavg()[0]!;
      const r = await exclusiveOnce(EXCL_ACCEL);
      const host = `${load ? `+${machine().nproc} busy processes` : 'no extra load'} (load ${fmt(la0, 1)}..${fmt(os.loadavg()[0]!, 1)})`;
      for (const [what, xs] of [['trigger -> every pCPU stopped the others', r.all], ['  the caller\'s pCPU (beside spin0)', r.own], ['  the other pCPU (spin1)', r.other], ['guest: acquire hypercall, call to return', r.guest]] as const) {
        const s = stat([...xs]);
        rows.push([what, host, s.n, fmt(s.median, 1), fmt(s.p99, 1), fmt(s.max, 1)]);
        out.push({ what, extraLoad: load, loadavg1: os.loadavg()[0], ...s });
      }
      // A period the trace lacks on a pCPU expired (5 ms) before that pCPU stopped the others: the acquire got -ETIME.
      const missed = r.periods - r.all.length;
      rows.push(['periods that expired before every pCPU stopped', host, `${missed} of ${r.periods}`, '', '', '']);
      out.push({ what: 'expired before exclusive', extraLoad: load, missed, periods: r.periods, etime: r.etime, lost: r.lost });
    } finally {
      stop();
    }
  }
  console.log(`\nexclusivity (us): ${TRIGGERS} triggers each, 2 pCPUs, ${EXCL_ACCEL === 'tcg' ? 'software CPU' : 'KVM'}, a spin guest on each pCPU; workers ${EXCL_HOST === 'none' ? 'as the host runs them' : EXCL_HOST === 'pin' ? 'pinned' : 'pinned at SCHED_FIFO 10'}`);
  results.exclusiveHost = EXCL_HOST;
  results.exclusiveAccel = EXCL_ACCEL;
  table(['what', 'host', 'n', 'median', 'p99', 'max'], rows);
  results.exclusive = out;
}

printMachine();
console.log(`host load average at start: ${os.loadavg().map((x) => fmt(x, 2)).join(' ')} (other users of this machine count)`);
if (ONLY.has('share')) await share();
if (ONLY.has('jitter')) await jitter();
if (ONLY.has('wake')) await wake();
if (ONLY.has('cost')) cost();
if (ONLY.has('exclusive')) await exclusive();
writeJson(values.json, results);
