// The scheduler framework (Xen's common/sched/core.c role): a pCPU asks its
// policy which runnable vCPU to run next and for how long. Policies (round
// robin now; credit, credit2, RTDS, ARINC 653 and null later) implement this
// interface and never touch KVM or the exit path.

import type { VCpu } from '../domain.js';

export interface SchedulerPolicy {
  readonly name: string;
  /** A vCPU became runnable (woken, created, unpaused, or preempted). */
  insert(v: VCpu): void;
  /** A vCPU must not be picked any more (blocked elsewhere, domain stopping). */
  remove(v: VCpu): void;
  /** Removes every vCPU of a domain. */
  removeDomain(domid: number): void;
  /** The next vCPU to run, taken off the runqueue; null when idle. */
  pick(now: bigint): VCpu | null;
  /** How long `v` may run before the pCPU preempts it (0 = until it blocks), given who else waits. */
  slice(v: VCpu, now: bigint): bigint;
  /** True if some vCPU is waiting to run. */
  hasWaiting(): boolean;
  has(v: VCpu): boolean;
}
