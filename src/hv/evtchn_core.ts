// The event-channel machinery (Xen's common/event_channel.c and
// event_2l.c): the port state machine in a DomainShared port table, the port
// operations (set_pending, clear_pending, unmask, is_pending, is_masked)
// chosen per domain as Xen's evtchn_port_ops are, and the 2-level ones: the
// pending/mask/selector/upcall updates in the domain's shared_info and
// vcpu_info, done with atomic byte operations on guest memory so a guest
// clearing bits on another CPU never loses an event. The FIFO ones are in
// evtchn_fifo.ts. Any thread can call these; delivery that needs the vCPU's
// own thread goes through EvtchnHost.

import { DomainShared, PORT } from './shared.js';
import { EINVAL, ENOSPC, EEXIST, ENOENT, ENOSYS, ESRCH, XenError } from './errno.js';
import { SharedInfo, VcpuInfo, DOMID_SELF } from './abi/xen.js';
import { EVTCHN_2L_NR_CHANNELS, EVTCHN_FIFO_NR_CHANNELS } from './abi/event_channel.js';
import * as fifo from './evtchn_fifo.js';
import { vcpuInfoOffset } from './vcpu_info.js';

export { vcpuInfoOffset } from './vcpu_info.js';

/** EVTCHNSTAT_* (public/event_channel.h). */
export const ECS = { closed: 0, unbound: 1, interdomain: 2, pirq: 3, virq: 4, ipi: 5 } as const;

/** VIRQs (public/xen.h); per-vCPU ones may be bound once per vCPU. */
export const VIRQ = { TIMER: 0, DEBUG: 1, CONSOLE: 2, DOM_EXC: 3, TBUF: 4, DEBUGGER: 6, XENOPROF: 7, CON_RING: 8, PCPU_STATE: 9, MEM_EVENT: 10, ARGO: 11, ENOMEM: 12, XENPMU: 13 } as const;
export const NR_VIRQS = 24;
export const PER_VCPU_VIRQS = new Set<number>([VIRQ.TIMER, VIRQ.DEBUG, VIRQ.XENOPROF, VIRQ.XENPMU]);

/** (virq * 65536 + vcpu) -> port: a Map in tests, the domain's shared VirqTable in the hypervisor. */
export interface VirqBindings {
  get(key: number): number | undefined;
  has(key: number): boolean;
  set(key: number, port: number): void;
  delete(key: number): void;
}

/** A domain as the event-channel core sees it from the current thread. */
export interface EvtchnDomain {
  shared: DomainShared;
  /** The domain's memory as mapped in this thread (shared_info and vcpu_info live there). */
  mem: Uint8Array;
}

/** What the core needs from the hypervisor around it. */
export interface EvtchnHost {
  lookup(domid: number): EvtchnDomain | null;
  /** evtchn_upcall_pending of `vcpu` went 0 -> 1: get the vCPU to notice (wake, kick or callback). */
  upcall(d: EvtchnDomain, vcpu: number): void;
  /** `port` became pending: wake vCPUs of `d` polling it (SCHEDOP_poll). */
  wakePollers(d: EvtchnDomain, port: number): void;
  /** An event reached the port `d` named as its exclusivity trigger (sched/exclusive.ts). */
  exclusiveTrigger?(d: EvtchnDomain): void;
}

// --- port records -------------------------------------------------------

export interface PortInfo {
  state: number;
  vcpu: number;
  remoteDom: number; // unbound: allowed remote; interdomain: peer; virq: virq number
  remotePort: number;
}

export function portInfo(s: DomainShared, port: number): PortInfo {
  const i = s.portIndex(port);
  const sv = Atomics.load(s.w, i + PORT.stateVcpu);
  return { state: sv & 0xff, vcpu: sv >>> 8, remoteDom: Atomics.load(s.w, i + PORT.remoteDom), remotePort: Atomics.load(s.w, i + PORT.remotePort) };
}

/** The vCPU a port notifies (portInfo's vcpu, without building the record: it is read per event). */
function portVcpu(s: DomainShared, port: number): number {
  return Atomics.load(s.w, s.portIndex(port) + PORT.stateVcpu) >>> 8;
}

function setPort(s: DomainShared, port: number, p: PortInfo): void {
  const i = s.portIndex(port);
  Atomics.store(s.w, i + PORT.remoteDom, p.remoteDom);
  Atomics.store(s.w, i + PORT.remotePort, p.remotePort);
  Atomics.store(s.w, i + PORT.stateVcpu, (p.state & 0xff) | (p.vcpu << 8));
}

/**
 * Highest usable port: maxPort, capped by the domain's ABI (Xen's
 * max_evtchns): what the 2-level bitmaps of its shared_info hold (32*32
 * ports with the 32-bit layout, 64*64 with the 64-bit one), or 2^17 with
 * FIFO (the LINK field's width).
 */
export function lastPort(s: DomainShared): number {
  if (fifo.isFifo(s)) return Math.min(s.maxPort, EVTCHN_FIFO_NR_CHANNELS - 1);
  return lastPort2l(s);
}

function lastPort2l(s: DomainShared): number {
  return Math.min(s.maxPort, (s.get('abi') === 1 ? EVTCHN_2L_NR_CHANNELS.x32 : EVTCHN_2L_NR_CHANNELS.x64) - 1);
}

/** A port that can carry events (port 0 is reserved). */
export function portValid(s: DomainShared, port: number): boolean {
  return Number.isInteger(port) && port > 0 && port <= lastPort(s);
}

/** Xen's port_is_valid: within the table, port 0 included. */
export function portInRange(s: DomainShared, port: number): boolean {
  return Number.isInteger(port) && port >= 0 && port <= lastPort(s);
}

/**
 * Lowest free port from 1 (call with the port lock held), made ready for
 * binding. A closed FIFO port still on a queue is not free until the guest
 * has unlinked it (Xen's get_free_port and evtchn_is_busy).
 */
function allocPort(d: EvtchnDomain): number {
  const s = d.shared;
  const isFifo = fifo.isFifo(s);
  for (let p = 1, last = lastPort(s); p <= last; p++) {
    if ((Atomics.load(s.w, s.portIndex(p) + PORT.stateVcpu) & 0xff) !== ECS.closed) continue;
    if (isFifo && fifo.isBusy(d, p)) continue;
    fifo.portInit(s, p);
    return p;
  }
  throw new XenError(ENOSPC, 'no free event-channel port');
}

// --- bit operations in shared_info / vcpu_info ---------------------------

/** Offsets of the 2-level bitmaps and the selector, per shared-info ABI (fixed: computed once). */
const LAYOUTS = [false, true].map((x32) => {
  const si = x32 ? SharedInfo.x32 : SharedInfo.x64;
  const vi = x32 ? VcpuInfo.x32 : VcpuInfo.x64;
  return { pending: si.offsetOf('evtchn_pending'), mask: si.offsetOf('evtchn_mask'), sel: vi.offsetOf('evtchn_pending_sel'), wordShift: x32 ? 5 : 6 };
});

function layout(s: DomainShared) {
  const l = LAYOUTS[s.get('abi') === 1 ? 1 : 0]!;
  const base = s.get('sharedInfoOffset');
  return { pending: base + l.pending, mask: base + l.mask, sel: l.sel, wordShift: l.wordShift };
}

const testAndSet = (m: Uint8Array, byte: number, bit: number): boolean => (Atomics.or(m, byte, 1 << bit) & (1 << bit)) !== 0;
const testAndClear = (m: Uint8Array, byte: number, bit: number): boolean => (Atomics.and(m, byte, ~(1 << bit) & 0xff) & (1 << bit)) !== 0;
const testBit = (m: Uint8Array, byte: number, bit: number): boolean => (Atomics.load(m, byte) & (1 << bit)) !== 0;

function selectAndNotify(host: EvtchnHost, d: EvtchnDomain, l: ReturnType<typeof layout>, port: number): void {
  const vcpu = portVcpu(d.shared, port);
  const vi = vcpuInfoOffset(d.shared, vcpu);
  if (vi < 0) return;
  const word = port >> l.wordShift;
  if (!testAndSet(d.mem, vi + l.sel + (word >> 3), word & 7) && !testAndSet(d.mem, vi, 0)) host.upcall(d, vcpu);
}

/** evtchn_2l_set_pending: the order matters (pending, then mask check, selector, upcall, pollers). */
function setPending2l(host: EvtchnHost, d: EvtchnDomain, port: number): void {
  const l = layout(d.shared);
  if (testAndSet(d.mem, l.pending + (port >> 3), port & 7)) return;
  if (!testBit(d.mem, l.mask + (port >> 3), port & 7)) selectAndNotify(host, d, l, port);
  host.wakePollers(d, port);
}

function isPending2l(d: EvtchnDomain, port: number): boolean {
  const l = layout(d.shared);
  return testBit(d.mem, l.pending + (port >> 3), port & 7);
}

/** evtchn_2l_unmask. */
function unmask2l(host: EvtchnHost, d: EvtchnDomain, port: number): void {
  const l = layout(d.shared);
  if (testAndClear(d.mem, l.mask + (port >> 3), port & 7) && testBit(d.mem, l.pending + (port >> 3), port & 7)) {
    selectAndNotify(host, d, l, port);
  }
}

// --- port operations, per the domain's ABI (Xen's evtchn_port_ops) ---------

/** Raises `port` of `d` (evtchn_port_set_pending). */
export function setPending(host: EvtchnHost, d: EvtchnDomain, port: number): void {
  // The trigger takes the machine before the event is raised: the guest's handler, on another thread, may run
  // as soon as the pending bit is set, and must find its domain holding the machine.
  if (d.shared.get('exclusiveTrigger') === port) host.exclusiveTrigger?.(d);
  if (fifo.isFifo(d.shared)) fifo.setPending(host, d, port);
  else {
    setPending2l(host, d, port);
    // The domain may have switched to FIFO on another thread since the check: its switch reads the 2-level
    // bits only after it set the flag, so either it saw this bit or this sees the flag. Raise it there too.
    if (fifo.isFifo(d.shared)) fifo.setPending(host, d, port);
  }
}

export function isPending(d: EvtchnDomain, port: number): boolean {
  return fifo.isFifo(d.shared) ? fifo.isPending(d, port) : isPending2l(d, port);
}

export function isMasked(d: EvtchnDomain, port: number): boolean {
  if (fifo.isFifo(d.shared)) return fifo.isMasked(d, port);
  const l = layout(d.shared);
  return testBit(d.mem, l.mask + (port >> 3), port & 7);
}

function clearPending(d: EvtchnDomain, port: number): void {
  if (fifo.isFifo(d.shared)) return fifo.clearPending(d, port);
  const l = layout(d.shared);
  testAndClear(d.mem, l.pending + (port >> 3), port & 7);
}

/** EVTCHNOP_unmask: the ABI's unmask re-raises a pending event. */
export function unmask(host: EvtchnHost, d: EvtchnDomain, port: number): void {
  if (!portInRange(d.shared, port)) throw new XenError(EINVAL, `bad port ${port}`);
  if (fifo.isFifo(d.shared)) fifo.unmask(host, d, port);
  else unmask2l(host, d, port);
}

// --- FIFO set-up (EVTCHNOP_init_control, expand_array, set_priority) -------

/**
 * EVTCHNOP_init_control: vCPU `vcpu`'s control block at byte `at` + `offset`
 * of the domain memory (`at` -1: the GFN is not a writable page). The first
 * one switches the domain from 2-level to FIFO; the ports bound so far carry
 * over with their pending state (evtchn_fifo_init_control's setup_ports).
 */
export function initControl(d: EvtchnDomain, vcpu: number, offset: number, at: number): void {
  d.shared.withPortLock(() => {
    const s = d.shared;
    const prevLast = fifo.isFifo(s) ? 0 : lastPort2l(s);
    fifo.initControl(d, vcpu, offset, at, prevLast, (port) => portInfo(s, port).state !== ECS.closed && isPending2l(d, port));
  });
}

/** EVTCHNOP_expand_array: one more event array page at byte `at` (-1: not a writable page). */
export function expandArray(host: EvtchnHost, d: EvtchnDomain, at: number): void {
  d.shared.withPortLock(() => fifo.expandArray(host, d, at, lastPort(d.shared)));
}

/** EVTCHNOP_set_priority: -ENOSYS for a 2-level domain (no such port operation there). */
export function setPriority(d: EvtchnDomain, port: number, priority: number): void {
  if (!portInRange(d.shared, port)) throw new XenError(EINVAL, `bad port ${port}`);
  if (!fifo.isFifo(d.shared)) throw new XenError(ENOSYS, 'set_priority needs the FIFO ABI');
  fifo.setPriority(d, port, priority);
}

// --- the state machine ----------------------------------------------------

/** EVTCHNOP_alloc_unbound: a port in `d` that `remoteDom` may bind to. */
export function allocUnbound(d: EvtchnDomain, remoteDom: number): number {
  const s = d.shared;
  return s.withPortLock(() => {
    const p = allocPort(d);
    setPort(s, p, { state: ECS.unbound, vcpu: 0, remoteDom, remotePort: 0 });
    return p;
  });
}

/**
 * EVTCHNOP_bind_interdomain: connects a new port of `ld` to `remotePort` of
 * `rd`, which must be unbound and accept `ld`. The new local port is marked
 * pending (an event may have been sent before the bind).
 */
export function bindInterdomain(host: EvtchnHost, ld: EvtchnDomain, rd: EvtchnDomain, remotePort: number): number {
  if (!portValid(rd.shared, remotePort)) throw new XenError(EINVAL, `bad remote port ${remotePort}`);
  const lid = ld.shared.domid;
  const rid = rd.shared.domid;
  // Lock both tables in domid order (one lock if it is a loopback).
  const [first, second] = lid <= rid ? [ld.shared, rd.shared] : [rd.shared, ld.shared];
  const local = first.withPortLock(() => (first === second ? inner() : second.withPortLock(inner)));
  function inner(): number {
    const r = portInfo(rd.shared, remotePort);
    if (r.state !== ECS.unbound) throw new XenError(EINVAL, `remote port ${remotePort} is not unbound`);
    if (r.remoteDom !== lid && !(r.remoteDom === DOMID_SELF && lid === rid)) throw new XenError(EINVAL, `remote port ${remotePort} does not accept domain ${lid}`);
    const p = allocPort(ld);
    setPort(ld.shared, p, { state: ECS.interdomain, vcpu: 0, remoteDom: rid, remotePort });
    setPort(rd.shared, remotePort, { state: ECS.interdomain, vcpu: r.vcpu, remoteDom: lid, remotePort: p });
    return p;
  }
  setPending(host, ld, local);
  return local;
}

/** EVTCHNOP_bind_virq. `bound` maps (virq, vcpu) to a port for the domain. */
export function bindVirq(d: EvtchnDomain, virq: number, vcpu: number, bound: VirqBindings): number {
  if (!Number.isInteger(virq) || virq < 0 || virq >= NR_VIRQS) throw new XenError(EINVAL, `bad virq ${virq}`);
  if (!PER_VCPU_VIRQS.has(virq) && vcpu !== 0) throw new XenError(EINVAL, 'global VIRQs bind on vCPU 0');
  if (vcpu < 0 || vcpu >= d.shared.nrVcpus) throw new XenError(ENOENT, `no vCPU ${vcpu}`);
  const key = virq * 65536 + vcpu;
  return d.shared.withPortLock(() => {
    if (bound.has(key)) throw new XenError(EEXIST, `VIRQ ${virq} already bound on vCPU ${vcpu}`);
    const p = allocPort(d);
    setPort(d.shared, p, { state: ECS.virq, vcpu, remoteDom: virq, remotePort: 0 });
    bound.set(key, p);
    return p;
  });
}

/** EVTCHNOP_bind_ipi. */
export function bindIpi(d: EvtchnDomain, vcpu: number): number {
  if (vcpu < 0 || vcpu >= d.shared.nrVcpus) throw new XenError(ENOENT, `no vCPU ${vcpu}`);
  return d.shared.withPortLock(() => {
    const p = allocPort(d);
    setPort(d.shared, p, { state: ECS.ipi, vcpu, remoteDom: 0, remotePort: 0 });
    return p;
  });
}

/** EVTCHNOP_bind_vcpu: only unbound, interdomain and global-VIRQ ports may move. */
export function bindVcpu(d: EvtchnDomain, port: number, vcpu: number): void {
  // Xen looks the vCPU up before the port.
  if (vcpu < 0 || vcpu >= d.shared.nrVcpus) throw new XenError(ENOENT, `no vCPU ${vcpu}`);
  if (!portValid(d.shared, port)) throw new XenError(EINVAL, `bad port ${port}`);
  d.shared.withPortLock(() => {
    const p = portInfo(d.shared, port);
    const movable = p.state === ECS.unbound || p.state === ECS.interdomain || (p.state === ECS.virq && !PER_VCPU_VIRQS.has(p.remoteDom));
    if (!movable) throw new XenError(EINVAL, `port ${port} cannot be rebound`);
    setPort(d.shared, port, { ...p, vcpu });
  });
}

/**
 * EVTCHNOP_close. The peer of an interdomain port reverts to unbound (for
 * the closer); a VIRQ binding is forgotten. Pending is cleared.
 */
export function close(host: EvtchnHost, d: EvtchnDomain, port: number, virqs?: VirqBindings): void {
  if (!portValid(d.shared, port)) throw new XenError(EINVAL, `bad port ${port}`);
  const p = portInfo(d.shared, port);
  if (p.state === ECS.closed) throw new XenError(EINVAL, `port ${port} is not in use`);
  if (p.state === ECS.interdomain) {
    const rd = host.lookup(p.remoteDom);
    const lid = d.shared.domid;
    const locks = rd && rd.shared !== d.shared ? (lid <= rd.shared.domid ? [d.shared, rd.shared] : [rd.shared, d.shared]) : [d.shared];
    const body = () => {
      const cur = portInfo(d.shared, port);
      if (cur.state !== ECS.interdomain) return;
      // The peer's table is checked before it is read: a stale port may name a domid reused since.
      if (rd && portValid(rd.shared, cur.remotePort)) {
        const rp = portInfo(rd.shared, cur.remotePort);
        if (rp.state === ECS.interdomain && rp.remoteDom === lid && rp.remotePort === port) {
          setPort(rd.shared, cur.remotePort, { state: ECS.unbound, vcpu: rp.vcpu, remoteDom: lid, remotePort: 0 });
        }
      }
      setPort(d.shared, port, { state: ECS.closed, vcpu: 0, remoteDom: 0, remotePort: 0 });
    };
    if (locks.length === 2) locks[0]!.withPortLock(() => locks[1]!.withPortLock(body));
    else locks[0]!.withPortLock(body);
  } else {
    d.shared.withPortLock(() => setPort(d.shared, port, { state: ECS.closed, vcpu: 0, remoteDom: 0, remotePort: 0 }));
    if (p.state === ECS.virq && virqs) virqs.delete(p.remoteDom * 65536 + p.vcpu);
  }
  // A closed trigger triggers nothing, and neither does the port's next use.
  d.shared.cas('exclusiveTrigger', port, 0);
  clearPending(d, port);
}

/**
 * Xen's evtchn_destroy for a dying domain: every interdomain port is closed,
 * so each peer's end goes back to unbound toward it. Without this a peer
 * keeps a port naming the dead domid, and once the domid is reused its events
 * would reach the new domain.
 */
export function closeInterdomain(host: EvtchnHost, d: EvtchnDomain): void {
  for (let port = 1, last = lastPort(d.shared); port <= last; port++) {
    if (portInfo(d.shared, port).state === ECS.interdomain) close(host, d, port);
  }
}

/**
 * EVTCHNOP_send from `d` on `port`: interdomain → the peer's port; IPI → own
 * port; unbound → nothing (success); VIRQ/PIRQ/closed → -EINVAL.
 */
export function send(host: EvtchnHost, d: EvtchnDomain, port: number): void {
  if (!portValid(d.shared, port)) throw new XenError(EINVAL, `bad port ${port}`);
  const p = portInfo(d.shared, port);
  switch (p.state) {
    case ECS.interdomain: {
      const rd = host.lookup(p.remoteDom);
      if (rd && portValid(rd.shared, p.remotePort)) setPending(host, rd, p.remotePort);
      return;
    }
    case ECS.ipi:
      setPending(host, d, port);
      return;
    case ECS.unbound:
      return;
    default:
      throw new XenError(EINVAL, `cannot send on port ${port} (state ${p.state})`);
  }
}

/** Raises a VIRQ on a domain if it has bound it (Xen's send_guest_vcpu_virq / send_guest_global_virq). */
export function raiseVirq(host: EvtchnHost, d: EvtchnDomain, virq: number, vcpu: number, virqs: VirqBindings): boolean {
  const port = virqs.get(virq * 65536 + (PER_VCPU_VIRQS.has(virq) ? vcpu : 0));
  if (port === undefined) return false;
  setPending(host, d, port);
  return true;
}

/** EVTCHNOP_reset: closes every port of the domain, which goes back to the 2-level ABI (Xen's evtchn_reset). */
export function reset(host: EvtchnHost, d: EvtchnDomain, virqs?: VirqBindings): void {
  for (let p = 1, last = lastPort(d.shared); p <= last; p++) {
    if (portInfo(d.shared, p).state !== ECS.closed) close(host, d, p, virqs);
  }
  if (fifo.isFifo(d.shared)) d.shared.withPortLock(() => fifo.destroy(d.shared));
}

export function checkDomain(host: EvtchnHost, domid: number): EvtchnDomain {
  const d = host.lookup(domid);
  if (!d) throw new XenError(ESRCH, `no domain ${domid}`);
  return d;
}
