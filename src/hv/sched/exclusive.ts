// Mixed criticality: a domain granted the right can take the whole machine
// for a bounded time. Xen has no such operation; this is a xenode extension
// (SCHEDOP_xenode_exclusive, guests/lib/xenode_sched.h), in the spirit of the
// "critical section" modes of mixed-criticality hypervisors.
//
// The right is policy: a domain's exclusiveMaxUs (xl.cfg `exclusive_ms`, 0 by
// default; an XSM hook later), the longest it may hold the machine. The
// trigger is the domain's choice: the hypercall, or an event on a port it
// names (so an interrupt from a driver domain or its own timer starts it).
//
// One record in HostShared says which domain holds the machine and until when.
// Taking it bumps an epoch and kicks every pCPU; each pCPU worker, at its next
// decision, stops running other domains' vCPUs (Domain.isRunnable reads the
// holder) and acknowledges the epoch. The hypervisor takes the machine back
// when the holder releases it, when its time is up (every worker arms its
// timer for the expiry) or when the holder shuts down or is destroyed.
// Nothing waits for another thread: the caller of acquire is kept off its
// pCPU until every pCPU has acknowledged, as a vCPU waiting for its home
// worker is.

import { kick } from '../../kvm/kick.js';
import { SchedXenodeExclusive, XENODE_EXCLUSIVE, EXCLUSIVE_END } from '../abi/xenode_sched.js';

export { EXCLUSIVE_END, EXCLUSIVE_END_NAMES } from '../abi/xenode_sched.js';
import { EBUSY, EINVAL, ENOENT, EPERM, XenError } from '../errno.js';
import type { DomainShared, HostShared } from '../shared.js';
import type { Hcall } from '../hypercall.js';
import * as core from '../evtchn_core.js';

/** DOMID_INVALID (public/xen.h): query's holder when nobody holds the machine. */
const DOMID_INVALID = 0x7ff4;

export interface ExclusiveState {
  /** the domain holding the machine, 0 = none */
  holder: number;
  epoch: number;
  /** when the holder asked (system time ns) */
  requested: bigint;
  /** when the hypervisor takes it back */
  expires: bigint;
  /** the pCPU whose vCPU waits in the acquire, -1 = none */
  waiter: number;
  /** the last holder and why it ended (EXCLUSIVE_END) */
  previous: number;
  endReason: number;
}

export function exclusiveState(host: HostShared): ExclusiveState {
  return host.withExclusive((r) => ({
    holder: r.get('holder'), epoch: r.get('epoch'), requested: r.getTime('requested'), expires: r.getTime('expires'),
    waiter: r.get('waiter'), previous: r.get('previous'), endReason: r.get('endReason'),
  }));
}

/** May a vCPU of `domid` run now? (Every pCPU asks before it runs one.) */
export function exclusiveAllows(host: HostShared, domid: number): boolean {
  const h = host.exclusiveHolder();
  return h === 0 || h === domid;
}

const nextEpoch = (e: number): number => (e >= 0x7fffffff ? 1 : e + 1);

/** Rings every pCPU's doorbell and kicks those inside a run, so each looks at the record now. */
export function kickAllPcpus(host: HostShared): void {
  for (let pc = 0, n = host.nrPcpus; pc < n; pc++) {
    host.ring(pc);
    if (host.isRunning(pc)) kick({ pid: process.pid, tid: host.tid(pc) });
  }
}

/**
 * Gives `domid` the machine from `now` for `holdNs`: -EBUSY while anyone
 * (itself included) holds it. `waiter` is the pCPU of a vCPU to resume once
 * every pCPU has stopped the others (-1: none). Returns the new epoch.
 */
export function acquireExclusive(host: HostShared, domid: number, now: bigint, holdNs: bigint, waiter: number): { epoch: number; expires: bigint } {
  const r = host.withExclusive((x) => {
    if (x.get('holder') !== 0) return null;
    const epoch = nextEpoch(x.get('epoch'));
    x.setTime('requested', now);
    x.setTime('expires', now + holdNs);
    x.set('waiter', waiter);
    x.set('holder', domid);
    x.set('epoch', epoch);
    return { epoch, expires: now + holdNs };
  });
  if (!r) throw new XenError(EBUSY, 'another exclusive period is in progress');
  kickAllPcpus(host);
  return r;
}

/**
 * Ends `domid`'s exclusive period (for `reason`); with `epoch`, only that
 * period (an expiry seen late must not end the next one). False when `domid`
 * does not hold the machine (or holds a later period).
 */
export function releaseExclusive(host: HostShared, domid: number, reason: number, epoch?: number): boolean {
  const done = host.withExclusive((x) => {
    if (domid === 0 || x.get('holder') !== domid || (epoch !== undefined && x.get('epoch') !== epoch)) return false;
    x.set('holder', 0);
    x.set('previous', domid);
    x.set('endReason', reason);
    x.set('waiter', -1);
    x.set('epoch', nextEpoch(x.get('epoch')));
    return true;
  });
  if (done) kickAllPcpus(host);
  return done;
}

/** Has every pCPU stopped the others' vCPUs for `epoch`? */
export function allPcpusStopped(host: HostShared, epoch: number): boolean {
  for (let pc = 0, n = host.nrPcpus; pc < n; pc++) if (host.exclusiveAck(pc) !== epoch) return false;
  return true;
}

/** An event reached `d`'s trigger port: it takes the machine for its whole limit, unless someone holds it (the event is still delivered). */
export function exclusiveTriggered(host: HostShared, d: DomainShared, now: bigint): void {
  const maxUs = d.get('exclusiveMaxUs');
  if (maxUs <= 0) return;
  try {
    acquireExclusive(host, d.domid, now, BigInt(maxUs) * 1000n, -1);
  } catch (e) {
    if (!(e instanceof XenError && e.errno === EBUSY)) throw e;
  }
}

/**
 * SCHEDOP_xenode_exclusive(struct sched_xenode_exclusive *arg). Not granted:
 * -EPERM for every command; a bad command or field: -EINVAL.
 *  - acquire: the machine for `timeout` ns (0 = the limit; above it -EINVAL),
 *    -EBUSY while anyone holds it; returns once every pCPU runs only the
 *    caller's vCPUs, with `expires` and `limit` filled in, or -ETIME if the
 *    period ran out before they all had (the pCPU worker writes that).
 *  - release: 0, or -ENOENT when the caller does not hold it (already expired).
 *  - bind: `port` (one of the caller's ports in use; 0 = none) becomes the trigger.
 *  - query: `holder`, `expires`, `limit`.
 */
export function exclusiveOp(h: Hcall, arg: bigint): number {
  const d = h.dom;
  const maxUs = d.shared.get('exclusiveMaxUs');
  if (maxUs <= 0) throw new XenError(EPERM, 'exclusivity not granted to this domain');
  const op = h.g.readStruct(SchedXenodeExclusive, arg);
  const limit = BigInt(maxUs) * 1000n;
  switch (op.cmd) {
    case XENODE_EXCLUSIVE.acquire: {
      if (op.port !== 0 || op.timeout > limit) throw new XenError(EINVAL);
      const hold = op.timeout === 0n ? limit : op.timeout;
      const { epoch, expires } = acquireExclusive(d.host, d.domid, d.now(), hold, d.shared.vcpu(h.vcpu.id, 'pcpu'));
      h.g.writeFields(SchedXenodeExclusive, arg, { expires, limit, holder: d.domid });
      // Back in the guest only when the machine is its own.
      h.vcpu.exclusiveWait = epoch;
      h.deschedule = true;
      return 0;
    }
    case XENODE_EXCLUSIVE.release:
      if (op.port !== 0 || op.timeout !== 0n) throw new XenError(EINVAL);
      if (!releaseExclusive(d.host, d.domid, EXCLUSIVE_END.released)) throw new XenError(ENOENT);
      return 0;
    case XENODE_EXCLUSIVE.bind:
      if (op.timeout !== 0n) throw new XenError(EINVAL);
      if (op.port !== 0 && (!core.portValid(d.shared, op.port) || core.portInfo(d.shared, op.port).state === core.ECS.closed)) throw new XenError(EINVAL);
      d.shared.set('exclusiveTrigger', op.port);
      return 0;
    case XENODE_EXCLUSIVE.query: {
      if (op.port !== 0 || op.timeout !== 0n) throw new XenError(EINVAL);
      const s = exclusiveState(d.host);
      h.g.writeFields(SchedXenodeExclusive, arg, { expires: s.holder ? s.expires : 0n, limit, holder: s.holder || DOMID_INVALID });
      return 0;
    }
    default:
      throw new XenError(EINVAL);
  }
}
