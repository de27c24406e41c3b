// Credit (Xen's common/sched/credit.c, "credit1"): every accounting period
// (one timeslice, 30 ms by default) the pCPU's credits, 10 per ms
// (CSCHED_CREDITS_PER_MSEC), are shared among active domains in proportion to
// their weights (csched_acct), and a running vCPU burns 10 credits per ms. A
// vCPU with credit left is UNDER, one without is OVER; UNDER runs before OVER,
// first in first out within a priority, each for a timeslice. A vCPU that
// wakes while UNDER is BOOSTed above both and preempts the runner (after the
// ratelimit), until it is ticked while running. A capped domain earns at most
// cap% of the credits and is parked, not run, once it is cap's worth in debt,
// until its credit is positive again.

import type { VCpu } from '../domain.js';
import { checkInt, checkKeys, RATELIMIT_DEFAULT_US, RATELIMIT_MAX_US, RATELIMIT_MIN_US, type SchedParams, type SchedulerPolicy, type SchedUnit } from './scheduler.js';
import type { TraceSink } from './trace.js';

export const CSCHED_DEFAULT_WEIGHT = 256;
const CREDITS_PER_MSEC = 10;
const TICKS_PER_TSLICE = 3;
/** sched_credit_tslice_ms: default 30, bounds XEN_SYSCTL_CSCHED_TSLICE_{MIN,MAX} (public/sysctl.h). */
export const TSLICE_DEFAULT_MS = 30;
const TSLICE_MIN_MS = 1;
const TSLICE_MAX_MS = 1000;
const WEIGHT_MAX = 65535;
const CAP_MAX = 100 * 128;

const PRI = { boost: 0, under: -1, over: -2 } as const;
type Pri = (typeof PRI)[keyof typeof PRI];

interface Unit<U> {
  readonly v: U;
  credit: number;
  pri: Pri;
  queued: boolean;
  parked: boolean;
  /** Earns credits at accounting: it ran or wanted to since it last stopped earning. */
  active: boolean;
  /** Left the pCPU still runnable: its next insert is a re-queue, not a wake-up. */
  requeue: boolean;
  seq: number;
}

interface Dom {
  weight: number;
  cap: number;
}

export class Credit<U extends SchedUnit = VCpu> implements SchedulerPolicy<U> {
  readonly name = 'credit';
  trace: TraceSink | null = null;
  private readonly units = new Map<U, Unit<U>>();
  private readonly doms = new Map<number, Dom>();
  private running: Unit<U> | null = null;
  private runStart = 0;
  private seq = 0;
  private queuedCount = 0;
  private tsliceMs: number;
  private ratelimit: number;
  /** The accounting period last done (index of tslice-long periods since time 0). */
  private acctDone = -1;

  constructor(opts: { tsliceMs?: number; ratelimitUs?: number } = {}) {
    this.tsliceMs = checkInt('tslice_ms', opts.tsliceMs, TSLICE_MIN_MS, TSLICE_MAX_MS) ?? TSLICE_DEFAULT_MS;
    this.ratelimit = (checkInt('ratelimit_us', opts.ratelimitUs, 0, RATELIMIT_MAX_US) ?? RATELIMIT_DEFAULT_US) * 1000;
  }

  /** XEN_SYSCTL_SCHEDOP_putinfo for credit: timeslice and ratelimit (which may not exceed the timeslice). */
  setPoolParams(p: { tsliceMs?: number; ratelimitUs?: number }): void {
    const t = checkInt('tslice_ms', p.tsliceMs, TSLICE_MIN_MS, TSLICE_MAX_MS) ?? this.tsliceMs;
    const r = p.ratelimitUs === 0 ? 0 : (checkInt('ratelimit_us', p.ratelimitUs, RATELIMIT_MIN_US, RATELIMIT_MAX_US) ?? this.ratelimit / 1000);
    if (r > t * 1000) throw new RangeError(`ratelimit_us (${r}) must not exceed tslice_ms (${t}) in microseconds`);
    this.tsliceMs = t;
    this.ratelimit = r * 1000;
  }

  get poolParams(): { tsliceMs: number; ratelimitUs: number } {
    return { tsliceMs: this.tsliceMs, ratelimitUs: this.ratelimit / 1000 };
  }

  private get tslice(): number {
    return this.tsliceMs * 1e6;
  }

  private get creditsPerTslice(): number {
    return CREDITS_PER_MSEC * this.tsliceMs;
  }

  private dom(domid: number): Dom {
    let d = this.doms.get(domid);
    if (!d) {
      d = { weight: CSCHED_DEFAULT_WEIGHT, cap: 0 };
      this.doms.set(domid, d);
    }
    return d;
  }

  private unit(v: U): Unit<U> {
    let u = this.units.get(v);
    if (!u) {
      u = { v, credit: 0, pri: PRI.under, queued: false, parked: false, active: true, requeue: false, seq: 0 };
      this.units.set(v, u);
    }
    return u;
  }

  /** csched_acct for every period boundary passed by `now` (idle periods change nothing after the first two). */
  private account(now: number): void {
    const period = Math.floor(now / this.tslice);
    if (period <= this.acctDone) return;
    const n = Math.min(period - this.acctDone, 3);
    this.acctDone = period;
    for (let i = 0; i < n; i++) this.acct(now);
  }

  private acct(now: number): void {
    // Active domains share the pCPU's credits by weight, each domain's share split among its active vCPUs.
    const active = new Map<number, Unit<U>[]>();
    for (const u of this.units.values()) {
      if (!u.active) continue;
      const list = active.get(u.v.dom.domid);
      if (list) list.push(u);
      else active.set(u.v.dom.domid, [u]);
    }
    let weightTotal = 0;
    for (const domid of active.keys()) weightTotal += this.dom(domid).weight;
    if (!weightTotal) return;
    const total = this.creditsPerTslice;
    for (const [domid, list] of active) {
      const d = this.dom(domid);
      let fair = (total * d.weight) / weightTotal;
      const capCredit = (d.cap * this.creditsPerTslice) / 100;
      if (d.cap && fair > capCredit) fair = capCredit;
      const each = fair / list.length;
      const capEach = capCredit / list.length;
      for (const u of list) {
        u.credit += each;
        if (u.credit < -this.creditsPerTslice) u.credit = -this.creditsPerTslice;
        if (u.credit < 0) {
          u.pri = PRI.over;
          if (d.cap && u.credit < -capEach && !u.parked) {
            u.parked = true;
            this.trace?.record('budget', BigInt(Math.round(now)), domid, u.v.id);
          }
        } else {
          u.pri = PRI.under;
          u.parked = false;
          // A vCPU that piles up credit stops earning until it runs again, keeping half (as Xen does).
          if (u.credit > this.creditsPerTslice) {
            u.active = false;
            u.credit /= 2;
          }
        }
      }
    }
  }

  insert(v: U, now: bigint): void {
    const u = this.unit(v);
    if (u.queued || u === this.running) return;
    this.account(Number(now));
    // csched_unit_wake: a vCPU woken with credit left is boosted. A preempted one is re-queued as it was.
    u.active = true;
    if (u.pri === PRI.under && !u.parked && !u.requeue) u.pri = PRI.boost;
    u.requeue = false;
    u.seq = this.seq++;
    u.queued = true;
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
  }

  descheduled(v: U, nowNs: bigint, runnable: boolean): void {
    const u = this.running;
    if (!u || u.v !== v) return;
    const now = Number(nowNs);
    u.credit -= ((now - this.runStart) * CREDITS_PER_MSEC) / 1e6;
    // Ticked while running (a 10 ms tick boundary passed): the boost is over.
    const tick = this.tslice / TICKS_PER_TSLICE;
    if (u.pri === PRI.boost && Math.floor(now / tick) > Math.floor(this.runStart / tick)) u.pri = PRI.under;
    u.requeue = runnable;
    this.running = null;
    this.account(now);
  }

  private candidate(): Unit<U> | null {
    let best: Unit<U> | null = null;
    if (!this.queuedCount) return null;
    for (const u of this.units.values()) {
      if (!u.queued || u.parked) continue;
      if (!best || u.pri > best.pri || (u.pri === best.pri && u.seq < best.seq)) best = u;
    }
    return best;
  }

  pick(nowNs: bigint): U | null {
    if (this.running) this.descheduled(this.running.v, nowNs, false);
    this.account(Number(nowNs));
    const u = this.candidate();
    if (!u) return null;
    u.queued = false;
    this.queuedCount--;
    this.running = u;
    this.runStart = Number(nowNs);
    return u.v;
  }

  /** A timeslice when others wait (the ratelimit if one of higher priority woke); bounded by the next accounting when capped or others wait, the next tick when boosted. */
  slice(v: U, startNs: bigint): bigint {
    const u = this.units.get(v);
    if (!u || u !== this.running) return 0n;
    const start = Number(startNs);
    const wait = this.candidate();
    let time = 0;
    if (wait) time = wait.pri > u.pri ? Math.max(this.ratelimit, 1) : this.tslice;
    const bound = (t: number) => { time = time ? Math.min(time, t) : t; };
    // Accounting may park this vCPU (capped) or unpark or reorder a waiter: look again then.
    if (this.dom(v.dom.domid).cap || this.queuedCount) bound((Math.floor(start / this.tslice) + 1) * this.tslice - start);
    // A boost lasts until the runner is ticked (csched_tick every tslice/3): look again then.
    const tick = this.tslice / TICKS_PER_TSLICE;
    if (u.pri === PRI.boost) bound((Math.floor(start / tick) + 1) * tick - start);
    return BigInt(Math.ceil(time));
  }

  nextDecision(nowNs: bigint): bigint {
    // Parked vCPUs wait for an accounting to unpark them.
    if (!this.queuedCount || this.candidate()) return 0n;
    return BigInt((Math.floor(Number(nowNs) / this.tslice) + 1) * this.tslice);
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
    if (cap !== undefined) d.cap = cap;
  }

  params(domid: number): SchedParams {
    const d = this.doms.get(domid);
    return { weight: d?.weight ?? CSCHED_DEFAULT_WEIGHT, cap: d?.cap ?? 0 };
  }
}
