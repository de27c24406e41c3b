// Credit2 (Xen's common/sched/credit2.c), the default: every vCPU starts with
// CSCHED2_CREDIT_INIT of credit and burns it while it runs, at a rate scaled by
// max_weight / weight, so a vCPU of twice the weight runs twice as long for the
// same credit. The runnable vCPU with the most credit runs; when the best has
// none left every vCPU of the runqueue is reset (reset_credit). A cap limits a
// domain to cap% of a pCPU with a budget refilled every 10 ms
// (CSCHED2_BDGT_REPL_PERIOD); a vCPU of a domain out of budget is parked until
// the refill. The ratelimit keeps a vCPU running at least that long before a
// wake-up preempts it. Here a runqueue is one pCPU's (Xen groups pCPUs per
// core or socket; vCPUs are placed on pCPUs by the toolstack, so there is no
// load balancing between runqueues).

import type { VCpu } from '../domain.js';
import { checkInt, checkKeys, MS, RATELIMIT_DEFAULT_US, RATELIMIT_MAX_US, RATELIMIT_MIN_US, US, type SchedParams, type SchedulerPolicy, type SchedUnit } from './scheduler.js';
import type { TraceSink } from './trace.js';

export const CSCHED2_DEFAULT_WEIGHT = 256;
const CREDIT_INIT = Number(10n * MS);
/** The least a timer is set for (CSCHED2_MIN_TIMER), and the credit carried over a reset (CSCHED2_CARRYOVER_MAX). */
const MIN_TIMER = Number(500n * US);
const CARRYOVER_MAX = MIN_TIMER;
const MAX_TIMER = CREDIT_INIT;
const BDGT_REPL_PERIOD = Number(10n * MS);
/** Xen's domctl bounds: weight 1..65535; cap in percent of one pCPU, at most 100 per vCPU. */
const WEIGHT_MAX = 65535;
const CAP_MAX = 100 * 128;

interface Unit<U> {
  readonly v: U;
  /** Its domain's parameters (the same object while the domain exists). */
  readonly d: Dom;
  credit: number;
  queued: boolean;
  /** Queue order among equal credits: the earlier queued goes first. */
  seq: number;
}

interface Dom {
  weight: number;
  cap: number;
  /** Budget left in the current replenishment period (ns), when capped. */
  budget: number;
  period: number;
}

export class Credit2<U extends SchedUnit = VCpu> implements SchedulerPolicy<U> {
  readonly name = 'credit2';
  trace: TraceSink | null = null;
  private readonly units = new Map<U, Unit<U>>();
  private readonly doms = new Map<number, Dom>();
  private running: Unit<U> | null = null;
  /** Since when the runner's credit is not yet burned (its pick, or the wake-up that ended its running alone). */
  private runStart = 0;
  /** Someone was queued since the runner was picked: until then it ran alone. */
  private othersDuring = false;
  private seq = 0;
  private queuedCount = 0;
  private maxWeight = CSCHED2_DEFAULT_WEIGHT;
  private ratelimit: number;

  constructor(opts: { ratelimitUs?: number } = {}) {
    this.ratelimit = Number(BigInt(checkInt('ratelimit_us', opts.ratelimitUs, 0, RATELIMIT_MAX_US) ?? RATELIMIT_DEFAULT_US) * US);
  }

  /** XEN_SYSCTL_SCHEDOP_putinfo: the pool's ratelimit (0 turns it off). */
  setRatelimit(us: number): void {
    if (us !== 0) checkInt('ratelimit_us', us, RATELIMIT_MIN_US, RATELIMIT_MAX_US);
    this.ratelimit = us * 1000;
  }

  get ratelimitUs(): number {
    return this.ratelimit / 1000;
  }

  private dom(domid: number): Dom {
    let d = this.doms.get(domid);
    if (!d) {
      d = { weight: CSCHED2_DEFAULT_WEIGHT, cap: 0, budget: 0, period: -1 };
      this.doms.set(domid, d);
    }
    return d;
  }

  private unit(v: U): Unit<U> {
    let u = this.units.get(v);
    if (!u) {
      u = { v, d: this.dom(v.dom.domid), credit: CREDIT_INIT, queued: false, seq: 0 };
      this.units.set(v, u);
      this.updateMaxWeight();
    }
    return u;
  }

  private updateMaxWeight(): void {
    let m = 1;
    for (const u of this.units.values()) m = Math.max(m, u.d.weight);
    this.maxWeight = m;
  }

  /** A capped domain's budget for the period `now` falls in, refilled at each period boundary. */
  private budgetOf(d: Dom, now: number): number {
    const p = Math.floor(now / BDGT_REPL_PERIOD);
    if (p !== d.period) {
      d.period = p;
      d.budget = (d.cap * BDGT_REPL_PERIOD) / 100;
    }
    return d.budget;
  }

  private parked(u: Unit<U>, now: number): boolean {
    return u.d.cap !== 0 && this.budgetOf(u.d, now) <= 0;
  }

  insert(v: U, now: bigint): void {
    const u = this.unit(v);
    if (u.queued || u === this.running) return;
    // The runner ran alone until now: charge that part as Xen's resets every 10 ms would have.
    if (this.running && !this.othersDuring) {
      this.burn(this.running, this.runStart, Number(now), true);
      this.runStart = Number(now);
      this.othersDuring = true;
    }
    u.queued = true;
    u.seq = this.seq++;
    this.queuedCount++;
  }

  remove(v: U): void {
    const u = this.units.get(v);
    if (!u?.queued) return;
    u.queued = false;
    this.queuedCount--;
  }

  removeDomain(domid: number): void {
    for (const [v, u] of this.units) {
      if (v.dom.domid !== domid) continue;
      if (u.queued) this.queuedCount--;
      if (this.running === u) this.running = null;
      this.units.delete(v);
    }
    this.doms.delete(domid);
    this.updateMaxWeight();
  }

  /**
   * Burns `u`'s credit (t2c: time scaled by max_weight / weight) and its
   * domain's budget for a run [from, to). A vCPU running alone is not
   * preempted here (nothing to be fair to, and a lone guest runs undisturbed);
   * Xen would have stopped it each time its credit ran out and reset
   * everyone's, so `alone` does those resets now.
   */
  private burn(u: Unit<U>, from: number, to: number, alone: boolean): void {
    if (to <= from) return;
    const d = u.d;
    u.credit -= ((to - from) * this.maxWeight) / d.weight;
    if (alone && u.credit <= 0) this.resetCredit(u);
    if (d.cap === 0) return;
    // Only the part of the run inside the current period draws on its budget: the rest was an earlier period's.
    const periodStart = Math.floor(to / BDGT_REPL_PERIOD) * BDGT_REPL_PERIOD;
    const before = this.budgetOf(d, to);
    d.budget -= to - Math.max(from, periodStart);
    if (before > 0 && d.budget <= 0) this.trace?.record('budget', BigInt(Math.round(to)), u.v.dom.domid, u.v.id);
  }

  descheduled(v: U, now: bigint, _runnable: boolean): void {
    const u = this.running;
    if (!u || u.v !== v) return;
    this.burn(u, this.runStart, Number(now), !this.othersDuring);
    this.running = null;
  }

  /** reset_credit: everyone gets CREDIT_INIT more (enough times that `best` is positive), clipped to what a reset may carry over. */
  private resetCredit(best: Unit<U>): void {
    const m = best.credit < 0 ? 1 + Math.floor(-best.credit / CREDIT_INIT) : 1;
    for (const u of this.units.values()) {
      u.credit = Math.min(u.credit + m * CREDIT_INIT, CREDIT_INIT + CARRYOVER_MAX);
    }
  }

  /** runq_candidate: the queued, unparked vCPU with the most credit (the earlier queued on a tie). */
  private candidate(now: number): Unit<U> | null {
    let best: Unit<U> | null = null;
    if (!this.queuedCount) return null;
    for (const u of this.units.values()) {
      if (!u.queued || this.parked(u, now)) continue;
      if (!best || u.credit > best.credit || (u.credit === best.credit && u.seq < best.seq)) best = u;
    }
    return best;
  }

  pick(nowNs: bigint): U | null {
    const now = Number(nowNs);
    if (this.running) this.descheduled(this.running.v, nowNs, false);
    const u = this.candidate(now);
    if (!u) return null;
    if (u.credit <= 0) this.resetCredit(u);
    u.queued = false;
    this.queuedCount--;
    this.running = u;
    this.runStart = now;
    this.othersDuring = this.queuedCount > 0;
    return u.v;
  }

  /**
   * csched2_runtime: until the runner's credit falls to the next waiter's,
   * within [MIN_TIMER or the ratelimit, MAX_TIMER], and within the cap's
   * budget; alone and uncapped, until someone wakes (which asks again).
   */
  slice(v: U, startNs: bigint): bigint {
    const u = this.units.get(v);
    if (!u || u !== this.running) return 0n;
    const start = Number(startNs);
    const d = u.d;
    const capped = d.cap !== 0;
    // The credit is as of runStart (the pick, or when the runner stopped being alone).
    const base = Math.max(this.runStart, start);
    const wait = this.candidate(base);
    if (!wait && !capped) {
      if (!this.queuedCount) return 0n;
      // Only parked vCPUs wait: look again at their budget's refill.
      return BigInt(Math.max(1, Math.ceil((Math.floor(base / BDGT_REPL_PERIOD) + 1) * BDGT_REPL_PERIOD - start)));
    }
    const rtCredit = wait && wait.credit > 0 ? u.credit - wait.credit : u.credit;
    const time = rtCredit <= 0 ? 0 : (rtCredit * d.weight) / this.maxWeight;
    let end = Math.min(Math.max(base + time, start + Math.max(MIN_TIMER, this.ratelimit)), base + MAX_TIMER);
    if (capped) {
      const budget = this.budgetOf(d, base);
      const periodEnd = (Math.floor(base / BDGT_REPL_PERIOD) + 1) * BDGT_REPL_PERIOD;
      // Out of budget at the period's end means parked; otherwise look again at the refill.
      end = Math.min(end, base + Math.max(budget, 1), periodEnd);
    }
    return BigInt(Math.max(1, Math.ceil(end - start)));
  }

  nextDecision(nowNs: bigint): bigint {
    const now = Number(nowNs);
    // Queued vCPUs that are all parked wait for the next budget refill.
    if (!this.queuedCount || this.candidate(now)) return 0n;
    return BigInt((Math.floor(now / BDGT_REPL_PERIOD) + 1) * BDGT_REPL_PERIOD);
  }

  hasWaiting(): boolean {
    return this.queuedCount > 0;
  }

  has(v: U): boolean {
    return this.units.get(v)?.queued ?? false;
  }

  adjust(domid: number, params: SchedParams): void {
    checkKeys(this.name, params, ['weight', 'cap']);
    const weight = checkInt('weight', params.weight, 1, WEIGHT_MAX);
    const cap = checkInt('cap', params.cap, 0, CAP_MAX);
    const d = this.dom(domid);
    if (weight !== undefined) d.weight = weight;
    if (cap !== undefined && cap !== d.cap) {
      d.cap = cap;
      d.period = -1;
    }
    this.updateMaxWeight();
  }

  params(domid: number): SchedParams {
    const d = this.doms.get(domid);
    return { weight: d?.weight ?? CSCHED2_DEFAULT_WEIGHT, cap: d?.cap ?? 0 };
  }

  /** A vCPU's credit (ns of max-weight running), for inspection. */
  credit(v: U): number | undefined {
    return this.units.get(v)?.credit;
  }
}
