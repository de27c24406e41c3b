// A pCPU worker's side of XEN_DOMCTL_scheduler_op / XEN_SYSCTL_scheduler_op
// and of its cpupool changing: the control messages the main thread sends,
// applied to the worker's policy. Kept here so the worker loop only hands
// them over.

import type { MainToWorker } from '../messages.js';
import type { SchedulerPolicy, SchedUnit } from './scheduler.js';
import { createScheduler } from './schedulers.js';
import { Arinc653 } from './arinc653.js';
import { Credit2 } from './credit2.js';
import { Credit } from './credit.js';
import type { TraceSink } from './trace.js';

export type SchedMessage = Extract<MainToWorker, { type: 'sched-adjust' | 'sched-arinc653' | 'sched-set' | 'sched-pool' }>;

/** A pool's ratelimit / timeslice, for the policies that have them. */
function configurePool<U extends SchedUnit>(s: SchedulerPolicy<U>, p: { ratelimitUs?: number; tsliceMs?: number }): void {
  if (s instanceof Credit2 && p.ratelimitUs !== undefined) s.setRatelimit(p.ratelimitUs);
  else if (s instanceof Credit) s.setPoolParams({ ratelimitUs: p.ratelimitUs, tsliceMs: p.tsliceMs });
}

/**
 * Applies `m` to the worker's policy and returns the policy to use from now
 * on (a new one when the pCPU joined a pool). Throws, changing nothing, for
 * what cannot be applied; `domains` is how many domains the worker holds (a
 * pCPU changes scheduler only when empty, so no runqueue is dropped).
 */
export function applySchedMessage<U extends SchedUnit>(cur: SchedulerPolicy<U>, m: SchedMessage, w: { domains: number; sliceNs: bigint; trace: TraceSink | null }): SchedulerPolicy<U> {
  switch (m.type) {
    case 'sched-adjust':
      cur.adjust(m.domid, m.params, m.vcpu);
      return cur;
    case 'sched-arinc653':
      if (!(cur instanceof Arinc653)) throw new Error(`an ARINC 653 schedule for a ${cur.name} pCPU`);
      cur.setSchedule(m.schedule, m.epoch);
      return cur;
    case 'sched-pool':
      configurePool(cur, m);
      return cur;
    case 'sched-set': {
      if (w.domains) throw new Error(`cannot change scheduler with ${w.domains} domain(s) here`);
      const s = createScheduler<U>(m.sched, { sliceNs: w.sliceNs });
      configurePool(s, m.pool);
      for (const p of m.params) s.adjust(p.domid, p.params, p.vcpu);
      if (m.arinc653 && s instanceof Arinc653) s.setSchedule(m.arinc653.schedule, m.arinc653.epoch);
      s.trace = w.trace;
      return s;
    }
  }
}
