// The scheduler framework (Xen's common/sched/core.c role): a pCPU asks its
// policy which runnable vCPU to run next and for how long. Policies (credit2,
// credit, RTDS, ARINC 653, null, and a plain round robin) implement this
// interface and never touch KVM or the exit path. Each pCPU worker holds one
// policy instance for the vCPUs placed on it; time is always passed in (system
// time, ns), so a policy runs the same under a virtual clock in tests.

import type { VCpu } from '../domain.js';
import type { TraceSink } from './trace.js';

/** What a policy needs to know of a vCPU: Xen's sched_unit, as far as identity goes. */
export interface SchedUnit {
  readonly id: number;
  readonly dom: { readonly domid: number };
}

/** Scheduling parameters, by Xen's names (weight, cap, period, budget, extratime ...). */
export type SchedParams = Record<string, number>;

export interface SchedulerPolicy<U extends SchedUnit = VCpu> {
  /** Xen's opt_name: credit2, credit, rtds, arinc653, null (and rr). */
  readonly name: string;
  /** A vCPU became runnable at `now` (woken, created, unpaused, or preempted and still runnable). */
  insert(v: U, now: bigint): void;
  /** A vCPU must not be picked any more (blocked elsewhere, domain stopping). */
  remove(v: U): void;
  /** Removes every vCPU of a domain, and what the policy kept about it. */
  removeDomain(domid: number): void;
  /** The next vCPU to run from `now`, taken off the runqueue; null when the pCPU should idle. */
  pick(now: bigint): U | null;
  /**
   * How long `v`, picked at `start`, may run (0 = until it blocks), given who
   * else waits. Asked again whenever something changes during the run (a
   * wake-up), so the answer may shrink.
   */
  slice(v: U, start: bigint): bigint;
  /**
   * `v`, the vCPU last picked, left the pCPU at `now`: charge its run.
   * `runnable`: it is about to be inserted again (preempted, yielded), as
   * opposed to blocked or stopped, whose next insert is a wake-up.
   */
  descheduled(v: U, now: bigint, runnable: boolean): void;
  /**
   * The system time at which the policy must decide again even if nothing
   * happens (an RTDS replenishment, an ARINC 653 window boundary, a credit
   * cap's refill); 0 = none. An idle pCPU arms its timer for it.
   */
  nextDecision(now: bigint): bigint;
  /** True if some vCPU is waiting to run. */
  hasWaiting(): boolean;
  has(v: U): boolean;
  /** XEN_DOMCTL_SCHEDOP_putinfo: sets a domain's (or with `vcpu`, one vCPU's) parameters; RangeError on bad values, changing nothing. */
  adjust(domid: number, params: SchedParams, vcpu?: number): void;
  /** XEN_DOMCTL_SCHEDOP_getinfo: a domain's (or one vCPU's) parameters, defaults included. */
  params(domid: number, vcpu?: number): SchedParams;
  /** Where the policy records its own events (budget exhaustion, deadline misses). */
  trace?: TraceSink | null;
}

/** Xen's sched_ratelimit_us: default 1000, bounds XEN_SYSCTL_SCHED_RATELIMIT_{MIN,MAX} (public/sysctl.h). */
export const RATELIMIT_DEFAULT_US = 1000;
export const RATELIMIT_MIN_US = 100;
export const RATELIMIT_MAX_US = 500_000;

export const US = 1000n;
export const MS = 1_000_000n;

/** An integer parameter within bounds, or a RangeError naming it (Xen answers -EINVAL). */
export function checkInt(name: string, v: number | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

/** Rejects parameter names a policy does not know, so a typo is an error rather than a no-op. */
export function checkKeys(policy: string, params: SchedParams, known: readonly string[]): void {
  for (const k of Object.keys(params)) {
    if (!known.includes(k)) throw new RangeError(`${policy}: unknown parameter '${k}' (known: ${known.join(', ')})`);
  }
}
