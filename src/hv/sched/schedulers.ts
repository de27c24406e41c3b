// The schedulers a pool can run (Xen's schedulers[] in common/sched/core.c,
// chosen by opt_name with sched= at boot or per cpupool). credit2 is the
// default, as in Xen since 4.12.

import type { VCpu } from '../domain.js';
import type { SchedulerPolicy, SchedUnit } from './scheduler.js';
import { Credit2 } from './credit2.js';
import { Credit } from './credit.js';
import { Rtds } from './rt.js';
import { Arinc653 } from './arinc653.js';
import { NullSched } from './null.js';
import { RoundRobin } from './rr.js';
import { MS } from './scheduler.js';

export const SCHEDULERS = ['credit2', 'credit', 'rtds', 'arinc653', 'null', 'rr'] as const;
export type SchedulerName = (typeof SCHEDULERS)[number];
export const DEFAULT_SCHEDULER: SchedulerName = 'credit2';

/** Xen's sched_id values (XEN_SCHEDULER_* in public/domctl.h), for xl info and the sysctl; rr is ours. */
export const SCHED_ID: Record<SchedulerName, number> = { credit: 5, credit2: 6, arinc653: 7, rtds: 8, null: 9, rr: 0x100 };

export function isSchedulerName(s: string): s is SchedulerName {
  return (SCHEDULERS as readonly string[]).includes(s);
}

export interface SchedulerOptions {
  /** sched_ratelimit_us (credit, credit2, rr). */
  ratelimitUs?: number;
  /** sched_credit_tslice_ms (credit). */
  tsliceMs?: number;
  /** rr's slice (ns). */
  sliceNs?: bigint;
}

export function createScheduler<U extends SchedUnit = VCpu>(name: string, o: SchedulerOptions = {}): SchedulerPolicy<U> {
  switch (name) {
    case 'credit2': return new Credit2<U>({ ratelimitUs: o.ratelimitUs });
    case 'credit': return new Credit<U>({ tsliceMs: o.tsliceMs, ratelimitUs: o.ratelimitUs });
    case 'rtds': return new Rtds<U>();
    case 'arinc653': return new Arinc653<U>();
    case 'null': return new NullSched<U>();
    case 'rr': return new RoundRobin<U>(o.sliceNs ?? 10n * MS, o.ratelimitUs);
    default: throw new RangeError(`unknown scheduler '${name}' (known: ${SCHEDULERS.join(', ')})`);
  }
}
