// A pCPU under a virtual clock: drives a scheduling policy exactly as
// pcpu.ts does (pick, slice re-asked on every wake-up, descheduled, insert
// again if still runnable, idle until the next wake-up or the policy's next
// decision), with guests modelled as CPU hogs or periodic tasks. Tests prove a
// policy's guarantees with it and benchmarks measure decision cost; being
// exact, it shows what the policy decides apart from host noise.

import type { SchedulerPolicy, SchedUnit } from './scheduler.js';
import type { TraceSink } from './trace.js';

export interface SimTask<U extends SchedUnit = SchedUnit> {
  unit: U;
  /** Released every `period` ns from `offset` needing `work` ns of CPU, blocked when done; without a period, always runnable. */
  period?: bigint;
  work?: bigint;
  offset?: bigint;
  /** CPU-bound from `offset` (default 0). */
}

export interface SimStats {
  /** CPU time received (ns). */
  runtime: bigint;
  /** Release to first run, for each release that found the task blocked (ns). */
  wakeLatency: bigint[];
  /** Runs that ended while the task still wanted the CPU. */
  preempted: number;
  runs: number;
  /** Releases at which the work of the previous one was not yet done. */
  overruns: number;
}

export interface SimResult<U extends SchedUnit = SchedUnit> {
  stats: Map<U, SimStats>;
  /** Calls to pick, and the ns they took in total (wall clock: decision cost). */
  picks: number;
  pickNs: bigint;
  idleNs: bigint;
}

const INF = 1n << 62n;

export function simulate<U extends SchedUnit>(policy: SchedulerPolicy<U>, tasks: SimTask<U>[], duration: bigint, trace?: TraceSink): SimResult<U> {
  const stats = new Map<U, SimStats>();
  const st = tasks.map((t) => {
    const s: SimStats = { runtime: 0n, wakeLatency: [], preempted: 0, runs: 0, overruns: 0 };
    stats.set(t.unit, s);
    const periodic = t.period !== undefined;
    return { t, s, periodic, demand: 0n, nextRelease: t.offset ?? 0n, blocked: true, releasedAt: -1n };
  });
  type St = (typeof st)[number];
  let now = 0n;
  let picks = 0;
  let pickNs = 0n;
  let idleNs = 0n;

  /** Releases due at `now`: periodic tasks get more work; blocked ones wake. */
  const release = (running: St | null): void => {
    for (const x of st) {
      if (x.nextRelease > now) continue;
      if (x.periodic) {
        if (x.demand > 0n) x.s.overruns++;
        x.demand += x.t.work ?? 0n;
        x.nextRelease += x.t.period!;
      } else {
        x.demand = INF;
        x.nextRelease = INF;
      }
      if (x.blocked && x.demand > 0n) {
        x.blocked = false;
        x.releasedAt = now;
        trace?.record('wake', now, x.t.unit.dom.domid, x.t.unit.id);
        if (x !== running) policy.insert(x.t.unit, now);
      }
    }
  };
  const nextRelease = (): bigint => st.reduce((m, x) => (x.nextRelease < m ? x.nextRelease : m), INF);
  const byUnit = new Map<U, St>(st.map((x) => [x.t.unit, x]));

  let last: U | null = null;
  release(null);
  while (now < duration) {
    const t0 = process.hrtime.bigint();
    const v = policy.pick(now);
    pickNs += process.hrtime.bigint() - t0;
    picks++;
    if (!v) {
      const nd = policy.nextDecision(now);
      let t = nextRelease();
      if (nd > now && nd < t) t = nd;
      if (last !== null) trace?.record('switch', now, 0x7fff, -1);
      last = null;
      if (t >= duration) {
        idleNs += duration - now;
        break;
      }
      idleNs += t - now;
      now = t;
      release(null);
      continue;
    }
    const x = byUnit.get(v);
    if (!x) throw new Error(`policy picked a vCPU it was never given: d${v.dom.domid}v${v.id}`);
    if (x.blocked) throw new Error(`policy picked blocked d${v.dom.domid}v${v.id}`);
    const start = now;
    if (last !== v) trace?.record('switch', now, v.dom.domid, v.id);
    last = v;
    x.s.runs++;
    if (x.releasedAt >= 0n) {
      x.s.wakeLatency.push(now - x.releasedAt);
      x.releasedAt = -1n;
    }
    for (;;) {
      const slice = policy.slice(v, start);
      const sliceEnd = slice === 0n ? INF : start + slice;
      const done = x.demand >= INF ? INF : now + x.demand;
      const wake = nextRelease();
      let t = sliceEnd < done ? sliceEnd : done;
      if (wake < t) t = wake;
      if (duration < t) t = duration;
      if (t < now) t = now;
      const ran = t - now;
      x.s.runtime += ran;
      if (x.demand < INF) x.demand -= ran;
      now = t;
      if (t === wake && t < sliceEnd && x.demand > 0n && t < duration) {
        release(x);
        continue; // someone woke: the policy may want the pCPU back (asked again above)
      }
      break;
    }
    const stillRunnable = x.demand > 0n;
    if (stillRunnable && now < duration) x.s.preempted++;
    if (!stillRunnable) {
      x.blocked = true;
      trace?.record('block', now, v.dom.domid, v.id);
    }
    policy.descheduled(v, now, stillRunnable);
    if (stillRunnable) policy.insert(v, now);
    release(null);
  }
  return { stats, picks, pickNs, idleNs };
}

/** A fake vCPU for simulations: what a policy looks at. */
export function unit(domid: number, id = 0): SchedUnit {
  return { id, dom: { domid } };
}

/** Median, 99th percentile and maximum of samples (ns). */
export function percentiles(xs: bigint[]): { median: bigint; p99: bigint; max: bigint } {
  if (!xs.length) return { median: 0n, p99: 0n, max: 0n };
  const s = [...xs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { median: at(0.5), p99: at(0.99), max: s[s.length - 1]! };
}
