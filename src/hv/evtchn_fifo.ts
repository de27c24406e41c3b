// FIFO event channels (Xen's common/event_fifo.c), the port operations a
// domain uses once EVTCHNOP_init_control switched it from the 2-level ABI.
//
// Guest memory holds the event array (one u32 event word per port: PENDING,
// MASKED, LINKED, BUSY bits and a 17-bit LINK to the next port of its queue)
// and one control block per vCPU (READY bits and a HEAD port per priority).
// The hypervisor keeps each queue's tail, its lock and each port's priority
// and last queue in the domain's SharedArrayBuffer (shared.ts), so any
// thread (a pCPU worker running one of the domain's vCPUs, one running a
// sender, the control domain's main thread) raises events the same way.
//
// The guest unlinks events from the head of a queue while the hypervisor
// links new ones at its tail, with no lock in common: the tail's word is
// changed only by compare-and-swap (Atomics on the guest memory view), and
// only while the guest has not unlinked it (LINKED still set); BUSY keeps a
// guest from unmasking the word in between, so the CAS fails a bounded
// number of times (the protocol of Xen's evtchn_fifo_set_link).

import { DomainShared, PORT, FIFO_QUEUES, FIFO_VCPU, FIFO_VCPU_WORDS, FIFO_MAX_EVENT_PAGES, FIFO_PORT, FIFO_PORT_WORDS } from './shared.js';
import type { EvtchnDomain, EvtchnHost } from './evtchn_core.js';
import {
  EVTCHN_FIFO_PENDING, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINK_MASK,
  EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MIN, EVTCHN_FIFO_MAX_QUEUES,
  EvtchnFifoControlBlock,
} from './abi/event_channel.js';
import { PAGE_SIZE } from './abi/xen.js';
import { markUpcallPending } from './vcpu_info.js';
import { EINVAL, ENOENT, ENOSPC, EOPNOTSUPP, XenError } from './errno.js';

if (FIFO_QUEUES !== EVTCHN_FIFO_MAX_QUEUES || FIFO_MAX_EVENT_PAGES * EVTCHN_FIFO_EVENT_WORDS_PER_PAGE !== 1 << 17) {
  throw new Error('shared.ts FIFO sizes disagree with public/event_channel.h');
}

const PENDING = 1 << EVTCHN_FIFO_PENDING; // negative as an int32: compared with !== 0 only
const MASKED = 1 << EVTCHN_FIFO_MASKED;
const LINKED = 1 << EVTCHN_FIFO_LINKED;
const BUSY = 1 << EVTCHN_FIFO_BUSY;
const WORDS_PER_PAGE = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
/** Control block words: READY at 0, HEAD[p] at 2 + p (public/event_channel.h). */
const CB_HEAD = EvtchnFifoControlBlock.offsetOf('head0') / 4;
const CB_SIZE = EvtchnFifoControlBlock.size;

/** 32-bit views of each domain memory mapping (event words and control blocks are u32, 4-aligned). */
const views = new WeakMap<Uint8Array, Int32Array>();
function words(d: EvtchnDomain): Int32Array {
  let v = views.get(d.mem);
  if (!v) {
    v = new Int32Array(d.mem.buffer, d.mem.byteOffset, d.mem.byteLength >>> 2);
    views.set(d.mem, v);
  }
  return v;
}

export function isFifo(s: DomainShared): boolean {
  return s.get('evtchnFifo') === 1;
}

const vcpuWord = (s: DomainShared, vcpu: number, k: number): number => s.fifoVcpuBase + vcpu * FIFO_VCPU_WORDS + k;
const portWord = (s: DomainShared, port: number, k: number): number => s.fifoPortBase + port * FIFO_PORT_WORDS + k;
const notifyVcpu = (s: DomainShared, port: number): number => Atomics.load(s.w, s.portIndex(port) + PORT.stateVcpu) >>> 8;

/** Index (in words(d)) of `port`'s event word, or -1 while no event array page covers it. */
function wordIndex(d: EvtchnDomain, port: number): number {
  const s = d.shared;
  const page = Math.floor(port / WORDS_PER_PAGE);
  // The page's offset is stored before the count is raised (expandArray), so a page counted here is there.
  if (page >= s.get('fifoEventPages')) return -1;
  return Atomics.load(s.w, s.fifoPageBase + page) - 1 + (port % WORDS_PER_PAGE);
}

/** Index (in words(d)) of vCPU `vcpu`'s control block, or -1 if it has none. */
function controlBlock(d: EvtchnDomain, vcpu: number): number {
  return Atomics.load(d.shared.w, vcpuWord(d.shared, vcpu, FIFO_VCPU.controlBlock)) - 1;
}

// --- queue locks ------------------------------------------------------------

/** Queue (vcpu, priority) as one number: the lock order when two are taken. */
const queueId = (vcpu: number, prio: number): number => vcpu * FIFO_QUEUES + prio;

function lockQueue(s: DomainShared, q: number): void {
  const i = vcpuWord(s, Math.floor(q / FIFO_QUEUES), FIFO_VCPU.lock + (q % FIFO_QUEUES));
  while (Atomics.compareExchange(s.w, i, 0, 1) !== 0) { /* spin: holders do a few loads and CASes */ }
}

function unlockQueue(s: DomainShared, q: number): void {
  Atomics.store(s.w, vcpuWord(s, Math.floor(q / FIFO_QUEUES), FIFO_VCPU.lock + (q % FIFO_QUEUES)), 0);
}

const tailIndex = (s: DomainShared, q: number): number => vcpuWord(s, Math.floor(q / FIFO_QUEUES), FIFO_VCPU.tail + (q % FIFO_QUEUES));

/** A port's last queue: where it was linked last (priority | vCPU << 8). */
function lastQueue(s: DomainShared, port: number): number {
  const lq = Atomics.load(s.w, portWord(s, port, FIFO_PORT.lastq));
  return queueId(lq >>> 8, lq & 0xff);
}

// --- linking ----------------------------------------------------------------

/** Tail words this thread found changed under its CAS (a guest unlinking or masking at the same moment). */
let linkRaces = 0;
export function linkRaceCount(): number {
  return linkRaces;
}

/**
 * Sets the LINK field of the word at `i` to `link` if the word is still
 * LINKED. 1: linked; 0: the guest had unlinked it (the queue is empty);
 * -1: the word changed under us (the guest may set or clear MASKED, clear
 * PENDING, or clear LINKED with LINK), and `cur` holds what it is now.
 */
function trySetLink(m: Int32Array, i: number, cur: { w: number }, link: number): number {
  if ((cur.w & LINKED) === 0) return 0;
  const want = (cur.w & ~(BUSY | EVTCHN_FIFO_LINK_MASK)) | link;
  const seen = Atomics.compareExchange(m, i, cur.w, want);
  if (seen === cur.w) return 1;
  cur.w = seen;
  return -1;
}

/**
 * Links the tail word at `i` to `link` (Xen's evtchn_fifo_set_link). After
 * one failed CAS the word is marked BUSY, which a guest must not unmask
 * through; then only MASKED, PENDING and LINKED can still change, so four
 * more tries are enough for a guest that follows the ABI. Against one that
 * does not, the event is counted as linked (it may be lost to that guest,
 * never to another domain).
 */
function setLink(m: Int32Array, i: number, link: number): boolean {
  const cur = { w: Atomics.load(m, i) };
  let r = trySetLink(m, i, cur, link);
  if (r >= 0) return r === 1;
  linkRaces++;
  Atomics.or(m, i, BUSY);
  cur.w = Atomics.load(m, i);
  for (let tries = 0; tries < 4; tries++) {
    r = trySetLink(m, i, cur, link);
    if (r === 1) return true; // the CAS wrote the word without BUSY
    if (r === 0) {
      Atomics.and(m, i, ~BUSY);
      return false;
    }
  }
  Atomics.and(m, i, ~BUSY);
  return true;
}

/**
 * evtchn_fifo_set_pending: marks `port` PENDING and, if it is unmasked and
 * not already on a queue, links it at the tail of its notify vCPU's queue
 * for its priority. An event that starts a queue sets that priority's READY
 * bit and, if it was clear, the vCPU's evtchn_upcall_pending (then the host
 * delivers the upcall as for 2-level). A port without an event word yet is
 * remembered and raised when its array page arrives.
 */
export function setPending(host: EvtchnHost, d: EvtchnDomain, port: number): void {
  const s = d.shared;
  const m = words(d);
  const word = wordIndex(d, port);
  if (word < 0) {
    Atomics.store(s.w, portWord(s, port, FIFO_PORT.savedPending), 1);
    return;
  }
  const vcpu = notifyVcpu(s, port);
  // Take the port's queue and its last queue (where it may still be the tail), in queue order. The
  // priority or last queue may change meanwhile: look again under the locks, three times at most (Xen).
  let q = -1;
  let oldQ = -1;
  let locked = false;
  for (let tries = 0; tries < 3 && !locked; tries++) {
    q = queueId(vcpu, Atomics.load(s.w, portWord(s, port, FIFO_PORT.priority)));
    oldQ = lastQueue(s, port);
    lockQueue(s, Math.min(q, oldQ));
    if (oldQ !== q) lockQueue(s, Math.max(q, oldQ));
    locked = q === queueId(vcpu, Atomics.load(s.w, portWord(s, port, FIFO_PORT.priority))) && oldQ === lastQueue(s, port);
    if (!locked) {
      if (oldQ !== q) unlockQueue(s, oldQ);
      unlockQueue(s, q);
    }
  }
  const wasPending = (Atomics.or(m, word, PENDING) & PENDING) !== 0;
  let linked = true; // "no new head": nothing to make READY
  const cb = controlBlock(d, vcpu);
  try {
    // No lock (a priority changing all the time): the event stays PENDING, unlinked (Xen drops it too).
    // No control block: the guest must not have unmasked anything on this vCPU yet; the event stays PENDING.
    if (locked && cb >= 0 && (Atomics.load(m, word) & MASKED) === 0 && (Atomics.or(m, word, LINKED) & LINKED) === 0) {
      // It may be the tail of the queue it was on last, which is empty now: forget that tail, or a
      // later event there would link behind a port that belongs to another queue.
      const oldTail = tailIndex(s, oldQ);
      if (Atomics.load(s.w, oldTail) === port) Atomics.store(s.w, oldTail, 0);
      if (oldQ !== q) {
        Atomics.store(s.w, portWord(s, port, FIFO_PORT.lastq), (q % FIFO_QUEUES) | (vcpu << 8));
        unlockQueue(s, oldQ);
        oldQ = q;
      }
      const tail = Atomics.load(s.w, tailIndex(s, q));
      const tailWord = tail === 0 ? -1 : wordIndex(d, tail);
      linked = tailWord >= 0 && setLink(m, tailWord, port);
      if (!linked) Atomics.store(m, cb + CB_HEAD + (q % FIFO_QUEUES), port);
      Atomics.store(s.w, tailIndex(s, q), port);
    }
  } finally {
    // Never left held, whatever happened: every thread raising events on this domain would spin on it.
    if (locked) {
      if (oldQ !== q) unlockQueue(s, oldQ);
      unlockQueue(s, q);
    }
  }
  if (!linked) {
    const bit = 1 << (q % FIFO_QUEUES);
    if ((Atomics.or(m, cb, bit) & bit) === 0 && markUpcallPending(s, d.mem, vcpu)) host.upcall(d, vcpu);
  }
  if (!wasPending) host.wakePollers(d, port);
}

/** evtchn_fifo_clear_pending: only PENDING (the guest unlinks, and skips events not pending). */
export function clearPending(d: EvtchnDomain, port: number): void {
  const word = wordIndex(d, port);
  if (word >= 0) Atomics.and(words(d), word, ~PENDING);
  else Atomics.store(d.shared.w, portWord(d.shared, port, FIFO_PORT.savedPending), 0);
}

/** evtchn_fifo_unmask: clears MASKED and links the event if it is pending. */
export function unmask(host: EvtchnHost, d: EvtchnDomain, port: number): void {
  const word = wordIndex(d, port);
  if (word < 0) return;
  const m = words(d);
  Atomics.and(m, word, ~MASKED);
  if ((Atomics.load(m, word) & PENDING) !== 0) setPending(host, d, port);
}

export function isPending(d: EvtchnDomain, port: number): boolean {
  const word = wordIndex(d, port);
  return word >= 0 && (Atomics.load(words(d), word) & PENDING) !== 0;
}

/** A port without an event word counts as masked (nothing can be delivered through it). */
export function isMasked(d: EvtchnDomain, port: number): boolean {
  const word = wordIndex(d, port);
  return word < 0 || (Atomics.load(words(d), word) & MASKED) !== 0;
}

/** Still on a queue: a closed port is not reused until the guest has unlinked it (evtchn_fifo_is_busy). */
export function isBusy(d: EvtchnDomain, port: number): boolean {
  const word = wordIndex(d, port);
  return word >= 0 && (Atomics.load(words(d), word) & LINKED) !== 0;
}

/** A port being bound (evtchn_fifo_init): the default priority, nothing remembered from an earlier use. */
export function portInit(s: DomainShared, port: number): void {
  Atomics.store(s.w, portWord(s, port, FIFO_PORT.priority), EVTCHN_FIFO_PRIORITY_DEFAULT);
  Atomics.store(s.w, portWord(s, port, FIFO_PORT.savedPending), 0);
}

/**
 * EVTCHNOP_set_priority on a port in range: only later events go to the new
 * queue (one already linked stays where it is, as in Xen).
 */
export function setPriority(d: EvtchnDomain, port: number, priority: number): void {
  if (!Number.isInteger(priority) || priority < 0 || priority > EVTCHN_FIFO_PRIORITY_MIN) throw new XenError(EINVAL, `bad priority ${priority}`);
  Atomics.store(d.shared.w, portWord(d.shared, port, FIFO_PORT.priority), priority);
}

/** The priority a port's next event is queued at. */
export function priorityOf(s: DomainShared, port: number): number {
  return Atomics.load(s.w, portWord(s, port, FIFO_PORT.priority));
}

/**
 * The checks of evtchn_fifo_init_control that come before any state
 * changes: the vCPU exists, the control block lies in one page, 8-aligned.
 */
function checkControl(s: DomainShared, vcpu: number, offset: number): void {
  if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= s.nrVcpus) throw new XenError(ENOENT, `no vCPU ${vcpu}`);
  if (offset > PAGE_SIZE - CB_SIZE) throw new XenError(EINVAL, `control block at ${offset} crosses its page`);
  if (offset % 8 !== 0) throw new XenError(EINVAL, `control block at ${offset} is not 8-aligned`);
}

/** Where a FIFO page is kept is a 32-bit word index into the domain memory: the first 8 GiB of it. */
function checkReach(at: number): void {
  if ((at + PAGE_SIZE) / 4 > 0x7fffffff) throw new XenError(EINVAL, 'FIFO structures must lie in the first 8 GiB of guest memory here');
}

/**
 * evtchn_fifo_init_control with the control block at byte `at` of the
 * domain memory (a guest frame checked by the caller; -1 for a GFN that is
 * not a writable page: -EINVAL). The first one switches the domain to FIFO:
 * every port in use so far keeps its pending state (`wasPending`, read from
 * the 2-level bitmap) and gets the default priority. Call with the domain's
 * port lock held (Xen's event_lock).
 */
export function initControl(d: EvtchnDomain, vcpu: number, offset: number, at: number, prevLast: number, wasPending: (port: number) => boolean): void {
  const s = d.shared;
  checkControl(s, vcpu, offset);
  if (at < 0) throw new XenError(EINVAL, 'control block GFN is not a writable guest page');
  checkReach(at);
  const cbWord = vcpuWord(s, vcpu, FIFO_VCPU.controlBlock);
  if (Atomics.load(s.w, cbWord) !== 0) throw new XenError(EINVAL, `vCPU ${vcpu} has a control block already`);
  if (isFifo(s)) {
    Atomics.store(s.w, cbWord, (at + offset) / 4 + 1);
    return;
  }
  for (let v = 0; v < s.nrVcpus; v++) {
    for (let k = 0; k < FIFO_VCPU_WORDS; k++) Atomics.store(s.w, vcpuWord(s, v, k), 0);
  }
  for (let p = 0; p < FIFO_MAX_EVENT_PAGES; p++) Atomics.store(s.w, s.fifoPageBase + p, 0);
  s.set('fifoEventPages', 0);
  for (let port = 1; port <= prevLast; port++) {
    portInit(s, port);
    Atomics.store(s.w, portWord(s, port, FIFO_PORT.lastq), 0);
  }
  Atomics.store(s.w, cbWord, (at + offset) / 4 + 1);
  s.set('evtchnFifo', 1);
  // The pending bits are read after the switch: a sender on another thread that still saw 2-level either
  // set its bit before this reads it, or sees FIFO afterwards and raises the port there (evtchn_core).
  for (let port = 1; port <= prevLast; port++) {
    if (wasPending(port)) Atomics.store(s.w, portWord(s, port, FIFO_PORT.savedPending), 1);
  }
}

/**
 * evtchn_fifo_expand_array with the new page at byte `at` of the domain
 * memory (-1: not a writable guest page, -EINVAL). Ports of the new page
 * raised while they had no event word are raised now. Port lock held.
 */
export function expandArray(host: EvtchnHost, d: EvtchnDomain, at: number, lastPort: number): void {
  const s = d.shared;
  if (!isFifo(s)) throw new XenError(EOPNOTSUPP, 'the domain uses the 2-level ABI');
  const slot = s.get('fifoEventPages');
  if (slot >= FIFO_MAX_EVENT_PAGES) throw new XenError(ENOSPC, 'event array is full');
  if (at < 0) throw new XenError(EINVAL, 'event array GFN is not a writable guest page');
  checkReach(at);
  Atomics.store(s.w, s.fifoPageBase + slot, at / 4 + 1);
  s.set('fifoEventPages', slot + 1);
  for (let port = Math.max(1, slot * WORDS_PER_PAGE), end = Math.min(lastPort, (slot + 1) * WORDS_PER_PAGE - 1); port <= end; port++) {
    const saved = portWord(s, port, FIFO_PORT.savedPending);
    if (Atomics.exchange(s.w, saved, 0) !== 0) setPending(host, d, port);
  }
}

/** evtchn_fifo_destroy: back to 2-level (EVTCHNOP_reset, after every port was closed). Port lock held. */
export function destroy(s: DomainShared): void {
  s.set('evtchnFifo', 0);
  s.set('fifoEventPages', 0);
  for (let v = 0; v < s.nrVcpus; v++) Atomics.store(s.w, vcpuWord(s, v, FIFO_VCPU.controlBlock), 0);
}
