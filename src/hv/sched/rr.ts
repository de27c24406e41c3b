// Round robin: a FIFO of runnable vCPUs, each running for a fixed slice when
// others wait and for as long as it likes when alone. Fair by turns, not by
// weight; the starting policy until Xen's credit2 lands.

import type { VCpu } from '../domain.js';
import type { SchedulerPolicy } from './scheduler.js';

export class RoundRobin implements SchedulerPolicy {
  readonly name = 'rr';
  private q: VCpu[] = [];
  private readonly queued = new Set<VCpu>();

  constructor(readonly sliceNs: bigint) {}

  insert(v: VCpu): void {
    if (this.queued.has(v)) return;
    this.queued.add(v);
    this.q.push(v);
  }

  remove(v: VCpu): void {
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

  pick(_now?: bigint): VCpu | null {
    const v = this.q.shift();
    if (!v) return null;
    this.queued.delete(v);
    return v;
  }

  slice(_v?: VCpu, _now?: bigint): bigint {
    return this.q.length ? this.sliceNs : 0n;
  }

  hasWaiting(): boolean {
    return this.q.length > 0;
  }

  has(v: VCpu): boolean {
    return this.queued.has(v);
  }
}
