// `xenode sched-trace`: runs CPU-bound sample guests (guests/build/spin.elf)
// under a chosen scheduler with the trace on, or simulates the same set-up
// under a virtual clock (--simulate), then draws the schedule as an SVG Gantt
// chart per pCPU beside a per-domain table, and prints the table.

import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createScheduler, isSchedulerName, SCHEDULERS, DEFAULT_SCHEDULER } from '../../hv/sched/schedulers.js';
import { Arinc653, type Arinc653Schedule } from '../../hv/sched/arinc653.js';
import { simulate, type SimTask } from '../../hv/sched/sim.js';
import { TraceLog, type TraceRecord } from '../../hv/sched/trace.js';
import type { SchedParams, SchedUnit } from '../../hv/sched/scheduler.js';
import { drawSvg, domainTable, exclusiveLatencies, formatTable, span } from './draw.js';
import { percentiles } from '../../hv/sched/sim.js';
import type { AccelMode } from '../../hv/accel.js';

const USAGE = `usage: xenode sched-trace [options] NAME[:key=value,...] ...
  Each NAME is a one-vCPU CPU-bound guest (spin.elf); keys are the scheduler's
  parameters (weight, cap; period, budget, extratime in us) and, with
  --simulate, job=PERIOD_US/WORK_US for a periodic task instead of a hog.
options:
  --sched NAME       ${SCHEDULERS.join(', ')} (default ${DEFAULT_SCHEDULER})
  --pcpus N          pCPUs (default 1; simulation: 1)
  --seconds S        how long to run (default 2)
  --window-ms MS     the span drawn, at the end of the run (default 100)
  --schedule SPEC    arinc653: "major=MS;NAME=MS;NAME=MS..." minor frames in order
  --simulate         a virtual clock instead of real guests (exact, no host noise)
  --exclusive H/G    add a guest 'critical' (exclusive.elf, exclusive_ms=10) that takes
                     the machine to itself for H us, then leaves it to the others for G us,
                     over and over (SCHEDOP_xenode_exclusive)
  --accel MODE       auto, kvm or tcg: the CPU that runs the guests (default auto)
  --out FILE         the SVG (default sched-trace.svg)`;

interface Spec {
  name: string;
  params: SchedParams;
  job?: { period: bigint; work: bigint };
}

function parseSpec(s: string): Spec {
  const [name, rest] = s.split(':', 2) as [string, string | undefined];
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(name)) throw new RangeError(`bad guest name '${name}'`);
  const params: SchedParams = {};
  let job: Spec['job'];
  for (const kv of (rest ?? '').split(',').filter(Boolean)) {
    const m = /^([a-z_]+)=(.+)$/.exec(kv);
    if (!m) throw new RangeError(`${name}: expected key=value, got '${kv}'`);
    if (m[1] === 'job') {
      const j = /^(\d+)\/(\d+)$/.exec(m[2]!);
      if (!j || BigInt(j[2]!) > BigInt(j[1]!) || BigInt(j[1]!) === 0n) throw new RangeError(`${name}: job=PERIOD_US/WORK_US with WORK <= PERIOD, got '${m[2]}'`);
      job = { period: BigInt(j[1]!) * 1000n, work: BigInt(j[2]!) * 1000n };
      continue;
    }
    const n = Number(m[2]);
    if (!Number.isFinite(n)) throw new RangeError(`${name}: ${m[1]} must be a number, got '${m[2]}'`);
    params[m[1]!] = n;
  }
  return { name, params, job };
}

const ms = (s: string, what: string): bigint => {
  const n = Number(s);
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${what} must be a positive number of ms, got '${s}'`);
  return BigInt(Math.round(n * 1e6));
};

function parseSchedule(s: string, domids: Map<string, number>): Arinc653Schedule {
  const parts = s.split(';').filter(Boolean);
  const major = /^major=(.+)$/.exec(parts[0] ?? '');
  if (!major) throw new RangeError(`--schedule starts with major=MS, got '${parts[0] ?? ''}'`);
  const entries = parts.slice(1).map((p) => {
    const m = /^([^=]+)=(.+)$/.exec(p);
    const domid = m ? domids.get(m[1]!) : undefined;
    if (!m || domid === undefined) throw new RangeError(`--schedule: '${p}' is not NAME=MS of a guest given`);
    return { domid, vcpu: 0, runtime: ms(m[2]!, `${m[1]}'s minor frame`) };
  });
  return { majorFrame: ms(major[1]!, 'the major frame'), entries };
}

function option(argv: string[], i: number): string {
  const v = argv[i + 1];
  if (v === undefined) throw new RangeError(`${argv[i]} needs a value`);
  return v;
}

export async function main(argv: string[]): Promise<number> {
  let sched = DEFAULT_SCHEDULER as string;
  let pcpus = 1;
  let seconds = 2;
  let windowMs = 100;
  let scheduleSpec: string | undefined;
  let simulated = false;
  let out = 'sched-trace.svg';
  let exclusive: { holdUs: number; gapUs: number } | null = null;
  let accel: AccelMode = 'auto';
  const specs: Spec[] = [];
  try {
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]!;
      if (a === '-h' || a === '--help') { console.log(USAGE); return 0; }
      else if (a === '--sched') sched = option(argv, i++);
      else if (a === '--pcpus') pcpus = Number(option(argv, i++));
      else if (a === '--seconds') seconds = Number(option(argv, i++));
      else if (a === '--window-ms') windowMs = Number(option(argv, i++));
      else if (a === '--schedule') scheduleSpec = option(argv, i++);
      else if (a === '--simulate') simulated = true;
      else if (a === '--out') out = option(argv, i++);
      else if (a === '--accel') {
        const v = option(argv, i++);
        if (v !== 'auto' && v !== 'kvm' && v !== 'tcg') throw new RangeError(`--accel must be auto, kvm or tcg, got '${v}'`);
        accel = v;
      } else if (a === '--exclusive') {
        const m = /^(\d+)\/(\d+)$/.exec(option(argv, i++));
        if (!m || Number(m[1]) < 1 || Number(m[1]) > 5000 || Number(m[2]) < 1) throw new RangeError(`--exclusive HOLD_US/GAP_US, hold 1..5000, got '${argv[i]}'`);
        exclusive = { holdUs: Number(m[1]), gapUs: Number(m[2]) };
      }
      else if (a.startsWith('-')) throw new RangeError(`unknown option ${a}`);
      else specs.push(parseSpec(a));
    }
    if (!isSchedulerName(sched)) throw new RangeError(`unknown scheduler '${sched}' (known: ${SCHEDULERS.join(', ')})`);
    if (!Number.isInteger(pcpus) || pcpus < 1 || pcpus > 64) throw new RangeError(`--pcpus must be 1..64`);
    if (!(seconds > 0 && seconds <= 600)) throw new RangeError(`--seconds must be in (0, 600]`);
    if (!(windowMs > 0)) throw new RangeError(`--window-ms must be positive`);
    if (!specs.length) throw new RangeError('name at least one guest');
    if (exclusive && simulated) throw new RangeError('--exclusive needs real guests (not --simulate)');
    if (new Set(specs.map((s) => s.name)).size !== specs.length) throw new RangeError('guest names must differ');
    if ((sched === 'arinc653') !== (scheduleSpec !== undefined)) throw new RangeError('--schedule goes with --sched arinc653, and arinc653 needs one');
    if (!simulated && specs.some((s) => s.job)) throw new RangeError('job= needs --simulate (real guests are spin.elf, CPU-bound)');
  } catch (e) {
    console.error(`xenode sched-trace: ${e instanceof Error ? e.message : String(e)}\n${USAGE}`);
    return 2;
  }

  const names = new Map<number, string>();
  let perPcpu: TraceRecord[][];
  let lost = 0;
  if (simulated) {
    const policy = createScheduler<SchedUnit>(sched);
    const tasks: SimTask[] = specs.map((s, i) => {
      const domid = i + 1;
      names.set(domid, s.name);
      policy.adjust(domid, s.params);
      return { unit: { id: 0, dom: { domid } }, period: s.job?.period, work: s.job?.work };
    });
    if (policy instanceof Arinc653) policy.setSchedule(parseSchedule(scheduleSpec!, new Map(specs.map((s, i) => [s.name, i + 1]))), 0n);
    const log = new TraceLog();
    policy.trace = log;
    simulate(policy, tasks, BigInt(Math.round(seconds * 1e9)), log);
    perPcpu = [log.records];
    if (pcpus !== 1) console.error('xenode sched-trace: --simulate draws one pCPU');
  } else {
    const { Toolstack } = await import('../toolstack.js');
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
    const kernel = readFileSync(path.join(root, 'guests/build/spin.elf'));
    const ts = await Toolstack.start({ pcpus, sched, accel, log: () => {}, traceRecords: 1 << 20 });
    try {
      const domids = new Map<string, number>();
      for (const s of specs) {
        const d = await ts.create({ name: s.name, kernel, memoryMiB: 8, vcpus: 1 }, () => {}, { paused: true });
        domids.set(s.name, d.domid);
        names.set(d.domid, s.name);
        ts.hv.schedAdjust(d.domid, s.params);
      }
      if (exclusive) {
        // Its acquires ask for 5 ms at most (exclusive.c's bench mode): a 10 ms right covers them.
        const cmdline = `mode=bench n=1000000 hold_us=${exclusive.holdUs} gap_us=${exclusive.gapUs}`;
        const d = await ts.create({ name: 'critical', kernel: readFileSync(path.join(root, 'guests/build/exclusive.elf')), memoryMiB: 8, vcpus: 1, cmdline, exclusiveMs: 10 }, () => {}, { paused: true });
        domids.set('critical', d.domid);
        names.set(d.domid, 'critical');
      }
      if (scheduleSpec) ts.hv.setArinc653Schedule(parseSchedule(scheduleSpec, domids));
      ts.hv.setSchedTrace(true);
      for (const d of domids.values()) ts.hv.unpause(d);
      await sleep(seconds * 1000);
      ts.hv.setSchedTrace(false);
      perPcpu = [];
      for (let p = 0; p < pcpus; p++) {
        const r = ts.hv.readSchedTrace(p);
        perPcpu.push(r.records);
        lost += r.lost;
      }
    } finally {
      await ts.shutdown();
    }
  }
  const whole = span(perPcpu);
  const from = whole.to - BigInt(Math.round(windowMs * 1e6)) > whole.from ? whole.to - BigInt(Math.round(windowMs * 1e6)) : whole.from;
  const title = `${sched}${simulated ? ' (simulated)' : ''}: ${specs.map((s) => `${s.name}${Object.keys(s.params).length ? ` ${Object.entries(s.params).map(([k, v]) => `${k}=${v}`).join(',')}` : ''}`).join('; ')}`;
  writeFileSync(out, drawSvg(perPcpu, { title, names, from, to: whole.to, table: whole }));
  console.log(formatTable(domainTable(perPcpu, names, whole.from, whole.to)));
  const lat = exclusiveLatencies(perPcpu);
  if (lat.length) {
    const p = percentiles(lat);
    const f = (ns: bigint) => (Number(ns) / 1000).toFixed(1);
    console.log(`exclusivity: ${lat.length} periods; trigger to every pCPU stopped (us): median ${f(p.median)} p99 ${f(p.p99)} max ${f(p.max)}`);
  }
  console.log(`${lost ? `${lost} records lost; ` : ''}drawn: ${out} (the last ${windowMs} ms of ${seconds} s)`);
  return 0;
}
