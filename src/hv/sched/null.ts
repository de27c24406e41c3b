// The null scheduler (Xen's common/sched/null.c): a pCPU is assigned one vCPU
// and runs it, or idles while it is blocked; it never preempts and never time
// slices, so a real-time guest sees its pCPU as its own. vCPUs arriving while
// the pCPU is taken wait in a FIFO waitqueue and get it when the assigned
// vCPU's domain goes away. Here each pCPU has its own waitqueue, as vCPUs are
// placed on pCPUs by the toolstack (Xen's waitqueue spans the pool's pCPUs).

import type { VCpu } from '../domain.js';
import { checkKeys, type SchedParams, type SchedulerPolicy, type SchedUnit } from './scheduler.js';
import type { TraceSink } from './trace.js';

export class NullSched<U extends SchedUnit = VCpu> implements SchedulerPolicy<U> {
  readonly name = 'null';
  trace: TraceSink | null = null;
  private assigned: U | null = null;
  private waitq: U[] = [];
  /** Runnable and not running: the assigned vCPU when it may be picked, and waiters that could run. */
  private readonly runnable = new Set<U>();

  insert(v: U, _now: bigint): void {
    if (!this.assigned) this.assigned = v;
    else if (v !== this.assigned && !this.waitq.includes(v)) this.waitq.push(v);
    this.runnable.add(v);
  }

  remove(v: U): void {
    this.runnable.delete(v);
  }

  removeDomain(domid: number): void {
    for (const v of this.runnable) if (v.dom.domid === domid) this.runnable.delete(v);
    this.waitq = this.waitq.filter((v) => v.dom.domid !== domid);
    // null_unit_remove: the pCPU goes to the first in the waitqueue.
    if (this.assigned?.dom.domid === domid) this.assigned = this.waitq.shift() ?? null;
  }

  pick(_now: bigint): U | null {
    const v = this.assigned;
    if (!v || !this.runnable.has(v)) return null;
    this.runnable.delete(v);
    return v;
  }

  /** Never preempted. */
  slice(_v: U, _start: bigint): bigint {
    return 0n;
  }

  descheduled(_v: U, _now: bigint, _runnable: boolean): void {}

  nextDecision(_now: bigint): bigint {
    return 0n;
  }

  /** Only the assigned vCPU can be waiting to run; the waitqueue waits for the pCPU itself. */
  hasWaiting(): boolean {
    return this.assigned !== null && this.runnable.has(this.assigned);
  }

  has(v: U): boolean {
    return this.runnable.has(v);
  }

  /** The vCPU holding the pCPU, and those waiting for it. */
  assignment(): { assigned: U | null; waiting: U[] } {
    return { assigned: this.assigned, waiting: [...this.waitq] };
  }

  adjust(_domid: number, params: SchedParams): void {
    checkKeys(this.name, params, []);
  }

  params(_domid: number): SchedParams {
    return {};
  }
}
