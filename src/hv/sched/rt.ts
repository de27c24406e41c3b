// RTDS (Xen's common/sched/rt.c): preemptive earliest deadline first over
// deferrable servers. Each vCPU has a period and a budget (µs at the
// interface, 10000/4000 by default); its deadline is the end of its current
// period, when its budget is replenished and what is left of the old one is
// dropped. The runnable vCPU with budget and the earliest deadline runs and
// burns its budget; one out of budget waits for its next period unless it has
// extratime (on by default), in which case it keeps running in time nobody
// reserved, one priority level lower per budget used (priority_level).
// Periods are aligned to multiples of the period from time 0, as Xen's
// rt_update_deadline makes them. A deadline passed while the vCPU was
// runnable with reserved budget left is counted as a miss (Xen counts none;
// a schedulability check needs it).

import type { VCpu } from '../domain.js';
import { checkInt, checkKeys, US, type SchedParams, type SchedulerPolicy, type SchedUnit } from './scheduler.js';
import type { TraceSink } from './trace.js';

/** RTDS_DEFAULT_PERIOD / RTDS_DEFAULT_BUDGET (µs). */
export const RTDS_DEFAULT_PERIOD_US = 10000;
export const RTDS_DEFAULT_BUDGET_US = 4000;
/** RTDS_MIN_PERIOD, RTDS_MIN_BUDGET: 10 µs; the period's upper bound is ours (Xen's is STIME_DELTA_MAX): 10 s. */
const MIN_US = 10;
const MAX_PERIOD_US = 10_000_000;

interface Unit<U> {
  readonly v: U;
  period: number;
  budget: number;
  extratime: boolean;
  curBudget: number;
  curDeadline: number;
  priorityLevel: number;
  /** Runnable (queued or running) as far as the policy knows. */
  runnable: boolean;
  queued: boolean;
  misses: number;
  /** Periods replenished while runnable, of which `misses` were missed. */
  periods: number;
}

interface VcpuParams {
  period: number;
  budget: number;
  extratime: boolean;
}

export class Rtds<U extends SchedUnit = VCpu> implements SchedulerPolicy<U> {
  readonly name = 'rtds';
  trace: TraceSink | null = null;
  private readonly units = new Map<U, Unit<U>>();
  /** Parameters by domain: the domain's, and per-vCPU overrides (XEN_DOMCTL_SCHEDOP_putvcpuinfo). */
  private readonly doms = new Map<number, { all: VcpuParams; vcpus: Map<number, VcpuParams> }>();
  private running: Unit<U> | null = null;
  private runStart = 0;
  private queuedCount = 0;

  private paramsFor(domid: number, vcpu: number): VcpuParams {
    const d = this.doms.get(domid);
    return d?.vcpus.get(vcpu) ?? d?.all ?? { period: RTDS_DEFAULT_PERIOD_US * 1000, budget: RTDS_DEFAULT_BUDGET_US * 1000, extratime: true };
  }

  private unit(v: U, now: number): Unit<U> {
    let u = this.units.get(v);
    if (!u) {
      const p = this.paramsFor(v.dom.domid, v.id);
      u = { v, ...p, curBudget: 0, curDeadline: 0, priorityLevel: 0, runnable: false, queued: false, misses: 0, periods: 0 };
      this.units.set(v, u);
      this.updateDeadline(u, now);
    }
    return u;
  }

  /** rt_update_deadline: the first period boundary after `now`, a fresh budget, top priority level. */
  private updateDeadline(u: Unit<U>, now: number): number {
    const skipped = Math.floor((now - u.curDeadline) / u.period) + 1;
    u.curDeadline += skipped * u.period;
    u.curBudget = u.budget;
    u.priorityLevel = 0;
    return skipped;
  }

  /** The replenishments due by `now`: a runnable vCPU that had reserved budget left at a deadline missed it. */
  private replenish(now: number): void {
    for (const u of this.units.values()) {
      if (u.curDeadline > now) continue;
      const oldDeadline = u.curDeadline;
      const left = u.priorityLevel === 0 ? u.curBudget : 0;
      const skipped = this.updateDeadline(u, now);
      if (!u.runnable) continue;
      // Whole periods skipped while runnable delivered nothing: each is a miss too.
      const missed = (left > 0 ? 1 : 0) + (skipped - 1);
      u.periods += skipped;
      if (missed > 0) {
        u.misses += missed;
        this.trace?.record('miss', BigInt(oldDeadline), u.v.dom.domid, u.v.id, BigInt(Math.round(left)));
      }
      this.trace?.record('replenish', BigInt(oldDeadline), u.v.dom.domid, u.v.id, BigInt(u.curDeadline));
    }
  }

  insert(v: U, nowNs: bigint): void {
    const now = Number(nowNs);
    const u = this.unit(v, now);
    if (u.queued || u === this.running) return;
    // rt_unit_wake: a vCPU that slept past its deadline starts a new period (no miss: it did not want to run).
    if (!u.runnable && now >= u.curDeadline) this.updateDeadline(u, now);
    u.runnable = true;
    u.queued = true;
    this.queuedCount++;
  }

  remove(v: U): void {
    const u = this.units.get(v);
    if (!u) return;
    u.runnable = false;
    if (u.queued) this.queuedCount--;
    u.queued = false;
  }

  removeDomain(domid: number): void {
    for (const [v, u] of this.units) {
      if (v.dom.domid !== domid) continue;
      if (u.queued) this.queuedCount--;
      if (this.running === u) this.running = null;
      this.units.delete(v);
    }
    this.doms.delete(domid);
  }

  /** burn_budget: a vCPU out of budget drops a priority level and starts another budget if it has extratime, else waits for its period. */
  private burn(u: Unit<U>, ran: number, now: number): void {
    if (ran <= 0) return;
    u.curBudget -= ran;
    if (u.curBudget > 0) return;
    if (u.priorityLevel === 0) this.trace?.record('budget', BigInt(now), u.v.dom.domid, u.v.id);
    if (u.extratime) {
      u.priorityLevel++;
      u.curBudget = u.budget;
    } else u.curBudget = 0;
  }

  descheduled(v: U, nowNs: bigint, runnable: boolean): void {
    const u = this.running;
    if (!u || u.v !== v) return;
    const now = Number(nowNs);
    this.burn(u, now - this.runStart, now);
    u.runnable = runnable;
    this.running = null;
    this.replenish(now);
  }

  /** compare_unit_priority: lower level first, then earlier deadline. */
  private better(a: Unit<U>, b: Unit<U>): boolean {
    return a.priorityLevel !== b.priorityLevel ? a.priorityLevel < b.priorityLevel : a.curDeadline < b.curDeadline;
  }

  private candidate(): Unit<U> | null {
    let best: Unit<U> | null = null;
    if (!this.queuedCount) return null;
    for (const u of this.units.values()) {
      if (!u.queued || u.curBudget <= 0) continue;
      if (!best || this.better(u, best)) best = u;
    }
    return best;
  }

  pick(nowNs: bigint): U | null {
    const now = Number(nowNs);
    if (this.running) this.descheduled(this.running.v, nowNs, false);
    this.replenish(now);
    const u = this.candidate();
    if (!u) return null;
    u.queued = false;
    this.queuedCount--;
    this.running = u;
    this.runStart = now;
    return u.v;
  }

  /**
   * Until its budget runs out or its period ends, and no later than the next
   * replenishment of another runnable vCPU (which may then come first); at
   * once if a better vCPU is already waiting (a wake-up).
   */
  slice(v: U, startNs: bigint): bigint {
    const u = this.units.get(v);
    if (!u || u !== this.running) return 0n;
    const start = Number(startNs);
    const wait = this.candidate();
    if (wait && this.better(wait, u)) return 1n;
    let end = start + Math.min(u.curBudget, u.curDeadline - start);
    for (const w of this.units.values()) if (w !== u && w.runnable && w.curDeadline < end) end = w.curDeadline;
    return BigInt(Math.max(1, Math.ceil(end - start)));
  }

  nextDecision(_now: bigint): bigint {
    // Queued vCPUs out of budget become eligible at their next deadline.
    let next = 0;
    for (const u of this.units.values()) if (u.queued && (next === 0 || u.curDeadline < next)) next = u.curDeadline;
    return BigInt(next);
  }

  hasWaiting(): boolean {
    return this.queuedCount > 0;
  }

  has(v: U): boolean {
    return this.units.get(v)?.queued ?? false;
  }

  /** Sets period/budget (µs) and extratime (0/1) for a whole domain, or with `vcpu` for one vCPU (xl sched-rtds -v). */
  adjust(domid: number, params: SchedParams, vcpu?: number): void {
    checkKeys(this.name, params, ['period', 'budget', 'extratime']);
    const cur = this.paramsFor(domid, vcpu ?? 0);
    const periodUs = checkInt('period', params.period, MIN_US, MAX_PERIOD_US) ?? cur.period / 1000;
    const budgetUs = checkInt('budget', params.budget, MIN_US, MAX_PERIOD_US) ?? cur.budget / 1000;
    const extra = checkInt('extratime', params.extratime, 0, 1);
    if (budgetUs > periodUs) throw new RangeError(`budget (${budgetUs} us) must not exceed period (${periodUs} us)`);
    const p: VcpuParams = { period: Number(BigInt(periodUs) * US), budget: Number(BigInt(budgetUs) * US), extratime: extra === undefined ? cur.extratime : extra === 1 };
    let d = this.doms.get(domid);
    if (!d) {
      d = { all: this.paramsFor(domid, 0), vcpus: new Map() };
      this.doms.set(domid, d);
    }
    if (vcpu === undefined) {
      d.all = p;
      d.vcpus.clear();
    } else {
      if (!Number.isInteger(vcpu) || vcpu < 0) throw new RangeError(`vcpu must be a non-negative integer, got ${vcpu}`);
      d.vcpus.set(vcpu, p);
    }
    for (const u of this.units.values()) {
      if (u.v.dom.domid !== domid || (vcpu !== undefined && u.v.id !== vcpu)) continue;
      // New parameters take effect at once, as in rt_dom_cntl: the current budget is clipped to the new one.
      u.period = p.period;
      u.budget = p.budget;
      u.extratime = p.extratime;
      u.curBudget = Math.min(u.curBudget, p.budget);
    }
  }

  params(domid: number, vcpu?: number): SchedParams {
    const p = this.paramsFor(domid, vcpu ?? 0);
    return { period: p.period / 1000, budget: p.budget / 1000, extratime: p.extratime ? 1 : 0 };
  }

  /** Deadline misses and periods seen while runnable, of one vCPU. */
  stats(v: U): { misses: number; periods: number } | undefined {
    const u = this.units.get(v);
    return u && { misses: u.misses, periods: u.periods };
  }
}
