// Round robin: a FIFO of runnable vCPUs, each running for a fixed slice when
// others wait and for as long as it likes when alone; a vCPU woken meanwhile
// gets the pCPU once the runner has had the ratelimit. Fair by turns, not by
// weight: kept as the simplest reference policy (sched=rr).

import type { VCpu } from '../domain.js';
import { checkKeys, MS, RATELIMIT_DEFAULT_US, US, type SchedParams, type SchedulerPolicy, type SchedUnit } from './scheduler.js';

export class RoundRobin<U extends SchedUnit = VCpu> implements SchedulerPolicy<U> {
  readonly name = 'rr';
  private q: U[] = [];
  private readonly queued = new Set<U>();
  /** When the last vCPU was queued: one queued after the runner started is a wake-up waiting for it. */
  private lastInsert = -1n;
  private readonly ratelimitNs: bigint;

  constructor(readonly sliceNs: bigint = 10n * MS, ratelimitUs = RATELIMIT_DEFAULT_US) {
    this.ratelimitNs = BigInt(ratelimitUs) * US;
  }

  insert(v: U, now: bigint): void {
    if (this.queued.has(v)) return;
    this.queued.add(v);
    this.q.push(v);
    this.lastInsert = now;
  }

  remove(v: U): void {
    if (!this.queued.delete(v)) return;
    this.q = this.q.filter((x) => x !== v);
  }

  removeDomain(domid: number): void {
    this.q = this.q.filter((v) => {
      if (v.dom.domid !== domid) return true;
      this.queued.delete(v);
      return false;
    });
  }

  pick(_now: bigint): U | null {
    const v = this.q.shift();
    if (!v) return null;
    this.queued.delete(v);
    return v;
  }

  slice(_v: U, start: bigint): bigint {
    if (!this.q.length) return 0n;
    return this.lastInsert > start && this.ratelimitNs < this.sliceNs ? this.ratelimitNs : this.sliceNs;
  }

  descheduled(_v: U, _now: bigint, _runnable: boolean): void {}

  nextDecision(_now: bigint): bigint {
    return 0n;
  }

  hasWaiting(): boolean {
    return this.q.length > 0;
  }

  has(v: U): boolean {
    return this.queued.has(v);
  }

  adjust(_domid: number, params: SchedParams): void {
    checkKeys(this.name, params, []);
  }

  params(_domid: number): SchedParams {
    return {};
  }
}
