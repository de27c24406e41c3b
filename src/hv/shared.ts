// State that more than one thread reads or writes lives in SharedArrayBuffers,
// changed with Atomics. This module owns those layouts:
//
// HostShared (one per hypervisor): one record per pCPU worker: a doorbell word
//   the worker sleeps on (Atomics.wait), its Linux thread id for kicks, and the
//   exclusivity epoch it has reached; and the machine-wide exclusivity record
//   (which domain, if any, has every pCPU to itself: sched/exclusive.ts).
//
// DomainShared (one per domain): a header (run state, shutdown reason, ABI,
//   where shared_info lives in the domain's memfd), one record per vCPU
//   (state, which pCPU it is on, where its vcpu_info lives, wake requests) and
//   the event-channel port table, so any thread can deliver an event to the
//   domain without waiting for the thread that runs it. The FIFO event-channel
//   state (evtchn_fifo.ts: where the control blocks and event array pages
//   are, queue tails and locks, per-port priority) is there too, for the
//   same reason.

import { VLAPIC_SHARED_WORDS } from './x86/vlapic.js';

export const MAX_PCPUS = 256;
/** Offset, in the control domain's shared_info-shaped SAB, of the word workers bump to wake the main thread. */
export const DOM0_DOORBELL = 3584;
const PCPU_WORDS = 4;
export const PCPU = { doorbell: 0, tid: 1, running: 2, exclusiveAck: 3 } as const;

const DOMID_BITS_WORDS = 32768 / 32;

/**
 * The exclusivity record (sched/exclusive.ts): changed only under `lock`;
 * `holder` is also read without it, by every pCPU before it runs a vCPU.
 * Times are system time in ns (lo/hi words).
 */
const EXCL = {
  lock: 0,
  holder: 1, // domid with the machine to itself, 0 = none
  epoch: 2, // bumped at every acquire and release
  requestedLo: 3, // when the current holder asked (the trigger)
  requestedHi: 4,
  expiresLo: 5, // when the hypervisor takes it back
  expiresHi: 6,
  waiter: 7, // pCPU whose vCPU waits in the acquire for every pCPU to stop, -1 = none
  previous: 8, // the holder before the last release, and why it ended (EXCLUSIVE_END)
  endReason: 9,
  nrPcpus: 10,
} as const;
const EXCL_WORDS = 16;

export class HostShared {
  readonly words: Int32Array;
  /** One bit per domid: set while the domain exists (lets any thread answer -ESRCH). */
  private readonly domids: Int32Array;

  /** The exclusivity record (EXCL). */
  private readonly excl: Int32Array;

  constructor(readonly sab: SharedArrayBuffer = new SharedArrayBuffer((MAX_PCPUS * PCPU_WORDS + DOMID_BITS_WORDS + EXCL_WORDS) * 4)) {
    this.words = new Int32Array(sab, 0, MAX_PCPUS * PCPU_WORDS);
    this.domids = new Int32Array(sab, MAX_PCPUS * PCPU_WORDS * 4, DOMID_BITS_WORDS);
    this.excl = new Int32Array(sab, (MAX_PCPUS * PCPU_WORDS + DOMID_BITS_WORDS) * 4, EXCL_WORDS);
  }

  /** How many pCPU workers there are (set once, before they start). */
  get nrPcpus(): number {
    return Atomics.load(this.excl, EXCL.nrPcpus);
  }

  set nrPcpus(n: number) {
    Atomics.store(this.excl, EXCL.nrPcpus, n);
  }

  /** The domain with the machine to itself (0 = none): read by every pCPU before it runs a vCPU. */
  exclusiveHolder(): number {
    return Atomics.load(this.excl, EXCL.holder);
  }

  exclusiveEpoch(): number {
    return Atomics.load(this.excl, EXCL.epoch);
  }

  /** Runs `fn` on the exclusivity record under its lock (a short spinlock; holders never block). */
  withExclusive<T>(fn: (r: ExclusiveRecord) => T): T {
    const x = this.excl;
    while (Atomics.compareExchange(x, EXCL.lock, 0, 1) !== 0) { /* spin: a few loads and stores */ }
    try {
      return fn({
        get: (k) => Atomics.load(x, EXCL[k]),
        set: (k, v) => Atomics.store(x, EXCL[k], v),
        getTime: (k) => loadU64(x, EXCL[`${k}Lo`]),
        setTime: (k, v) => storeU64(x, EXCL[`${k}Lo`], v),
      });
    } finally {
      Atomics.store(x, EXCL.lock, 0);
    }
  }

  /** pCPU `pcpu` has stopped every vCPU but the holder's for exclusivity epoch `epoch` (or seen its end). */
  setExclusiveAck(pcpu: number, epoch: number): void {
    Atomics.store(this.words, pcpu * PCPU_WORDS + PCPU.exclusiveAck, epoch);
  }

  exclusiveAck(pcpu: number): number {
    return Atomics.load(this.words, pcpu * PCPU_WORDS + PCPU.exclusiveAck);
  }

  setDomainExists(domid: number, exists: boolean): void {
    if (exists) Atomics.or(this.domids, domid >>> 5, 1 << (domid & 31));
    else Atomics.and(this.domids, domid >>> 5, ~(1 << (domid & 31)));
  }

  domainExists(domid: number): boolean {
    if (domid === 0) return true;
    if (domid < 0 || domid >= 32768) return false;
    return (Atomics.load(this.domids, domid >>> 5) & (1 << (domid & 31))) !== 0;
  }

  /** Rings a worker's doorbell: wakes it if it sleeps in Atomics.wait. */
  ring(pcpu: number): void {
    const i = pcpu * PCPU_WORDS + PCPU.doorbell;
    Atomics.add(this.words, i, 1);
    Atomics.notify(this.words, i);
  }

  doorbellIndex(pcpu: number): number {
    return pcpu * PCPU_WORDS + PCPU.doorbell;
  }

  tid(pcpu: number): number {
    return Atomics.load(this.words, pcpu * PCPU_WORDS + PCPU.tid);
  }

  setTid(pcpu: number, tid: number): void {
    Atomics.store(this.words, pcpu * PCPU_WORDS + PCPU.tid, tid);
  }

  /** 1 while the worker is inside KVM_RUN (a kick is needed to reach it). */
  setRunning(pcpu: number, v: boolean): void {
    Atomics.store(this.words, pcpu * PCPU_WORDS + PCPU.running, v ? 1 : 0);
  }

  isRunning(pcpu: number): boolean {
    return Atomics.load(this.words, pcpu * PCPU_WORDS + PCPU.running) === 1;
  }
}

type ExclWord = Exclude<keyof typeof EXCL, 'lock' | 'requestedLo' | 'requestedHi' | 'expiresLo' | 'expiresHi'>;

/** The exclusivity record's fields, as `withExclusive` lends them. */
export interface ExclusiveRecord {
  get(k: ExclWord): number;
  set(k: ExclWord, v: number): void;
  getTime(k: 'requested' | 'expires'): bigint;
  setTime(k: 'requested' | 'expires', v: bigint): void;
}

/** Domain run states (as xl shows them) and flags. */
export const DOMSTATE = { building: 0, running: 1, shutdown: 2, crashed: 3, dying: 4, dead: 5 } as const;

/** vCPU run states: Xen's RUNSTATE_* values (public/vcpu.h) plus offline. */
export const RUNSTATE = { running: 0, runnable: 1, blocked: 2, offline: 3 } as const;

const HDR = {
  state: 0, // DOMSTATE
  pauseCount: 1, // >0: paused by the toolstack
  shutdownReason: 2, // SHUTDOWN_* or -1
  abi: 3, // 0 = 64-bit, 1 = 32-bit shared-info layout
  sharedInfoOffset: 4, // byte offset of shared_info in the memfd
  nrVcpus: 5,
  maxPort: 6, // highest usable event-channel port
  portLock: 7, // spinlock for port allocation and state changes
  homePcpu: 8,
  domid: 9,
  cpuTimeLo: 10, // accumulated vCPU time in microseconds (lo/hi)
  cpuTimeHi: 11,
  shutdownCode: 12, // SCHEDOP_shutdown_code latch, -1 = none
  isPrivileged: 13,
  isConsole: 14, // console_io allowed
  callbackVector: 15, // HVM_PARAM_CALLBACK_IRQ vector (type 2), 0 = none
  hypercallPage: 16, // GFN + 1 of the hypercall page, 0 = none written yet
  evtchnFifo: 17, // 1 once EVTCHNOP_init_control switched the domain to the FIFO ABI
  fifoEventPages: 18, // event array pages added by EVTCHNOP_expand_array
  maxPages: 19, // Xen's max_pages: the reservation limit (XEN_DOMCTL_max_mem sets it)
  totPages: 20, // Xen's tot_pages: frames the domain holds now
  pvclockSeq: 21, // sequence count of the pvclock anchor below: 0 = none yet, odd while written
  tsc0Lo: 22, // the guest TSC and system time (ns) of the domain's first pvclock record
  tsc0Hi: 23,
  sys0Lo: 24,
  sys0Hi: 25,
  exclusiveMaxUs: 26, // the longest the domain may hold the machine to itself (µs), 0 = not granted (sched/exclusive.ts)
  exclusiveTrigger: 27, // the port whose events make it exclusive, 0 = none
} as const;
const HDR_WORDS = 32;

const VCPU = {
  state: 0, // RUNSTATE
  pcpu: 1,
  vcpuInfoOffset: 2, // byte offset of this vCPU's vcpu_info in the memfd, -1 = none
  flags: 3, // VCPU_FLAG_*
  upcallVector: 4, // per-vCPU vector from HVMOP_set_evtchn_upcall_vector, 0 = none
  pollMask: 5, // non-zero while blocked in SCHEDOP_poll
  cpuTimeLo: 6, // time spent running, microseconds (lo/hi), periods that ended
  cpuTimeHi: 7,
  entryLo: 8, // system time (us) the current runstate began (lo/hi): a running period in progress counts too
  entryHi: 9,
  runstateAreaLo: 10, // VCPUOP_register_runstate_memory_area guest virtual address (lo/hi), 0 = none
  runstateAreaHi: 11,
  timeAreaLo: 12, // VCPUOP_register_vcpu_time_memory_area guest virtual address (lo/hi), 0 = none
  timeAreaHi: 13,
} as const;
const VCPU_WORDS = 14;

/** The vCPU has an initial register state (vCPU 0 from the builder, others from VCPUOP_initialise). */
export const VCPU_FLAG_INITIALISED = 1;
/** An event kicked the vCPU (Xen's vcpu_kick): a blocked vCPU wakes even if nothing is deliverable. */
export const VCPU_FLAG_WAKE = 2;

/** Port record: [state | notifyVcpu << 8, remoteDom or virq, remotePort, flags]. */
export const PORT_WORDS = 4;
export const PORT = { stateVcpu: 0, remoteDom: 1, remotePort: 2, flags: 3 } as const;

/**
 * FIFO event-channel words (public/event_channel.h sizes): per vCPU where
 * its control block is (memfd offset / 4 + 1: 32-bit words reach 8 GiB;
 * 0 = none), then per priority queue its tail port and its spinlock; per
 * domain where each event array page is (the same way); per port its priority, its last queue (priority | vCPU << 8)
 * and whether it was raised while it had no event word.
 */
export const FIFO_QUEUES = 16;
export const FIFO_VCPU_WORDS = 1 + 2 * FIFO_QUEUES;
export const FIFO_VCPU = { controlBlock: 0, tail: 1, lock: 1 + FIFO_QUEUES } as const;
export const FIFO_MAX_EVENT_PAGES = 128;
export const FIFO_PORT_WORDS = 3;
export const FIFO_PORT = { priority: 0, lastq: 1, savedPending: 2 } as const;

export class DomainShared {
  readonly w: Int32Array;
  readonly vcpuBase: number;
  readonly portBase: number;
  /** (virq, vcpu) -> bound port, 0 = none: NR_VIRQS words per vCPU. */
  readonly virqBase: number;
  /** The domain's VIRQ bindings, as the event-channel core uses them, visible to every worker. */
  readonly virqs: VirqTable;
  /** Each vCPU's local APIC registers (vlapic.ts), so any thread can raise an interrupt in it. */
  readonly lapicBase: number;
  /** FIFO_VCPU_WORDS per vCPU, then FIFO_MAX_EVENT_PAGES page words, then FIFO_PORT_WORDS per port. */
  readonly fifoVcpuBase: number;
  readonly fifoPageBase: number;
  readonly fifoPortBase: number;

  constructor(readonly sab: SharedArrayBuffer) {
    this.w = new Int32Array(sab);
    const nrVcpus = this.w[HDR.nrVcpus]!;
    this.vcpuBase = HDR_WORDS;
    this.portBase = HDR_WORDS + nrVcpus * VCPU_WORDS;
    this.virqBase = this.portBase + (this.w[HDR.maxPort]! + 1) * PORT_WORDS;
    this.virqs = new VirqTable(this.w, this.virqBase, nrVcpus);
    this.lapicBase = this.virqBase + nrVcpus * NR_VIRQ_SLOTS;
    this.fifoVcpuBase = this.lapicBase + nrVcpus * VLAPIC_SHARED_WORDS;
    this.fifoPageBase = this.fifoVcpuBase + nrVcpus * FIFO_VCPU_WORDS;
    this.fifoPortBase = this.fifoPageBase + FIFO_MAX_EVENT_PAGES;
  }

  /** vCPU `v`'s local APIC page (VLAPIC_SHARED_WORDS words). */
  lapicView(v: number): Int32Array {
    return this.lapicViews()[v]!;
  }

  /** Every vCPU's local APIC page, by vCPU id (made once: IPIs and upcalls use them on hot paths). */
  lapicViews(): readonly Int32Array[] {
    this.lapics ??= Array.from({ length: this.nrVcpus }, (_, v) => new Int32Array(this.sab, (this.lapicBase + v * VLAPIC_SHARED_WORDS) * 4, VLAPIC_SHARED_WORDS));
    return this.lapics;
  }

  private lapics: Int32Array[] | null = null;

  static create(domid: number, nrVcpus: number, maxPort: number): DomainShared {
    const words = HDR_WORDS + nrVcpus * VCPU_WORDS + (maxPort + 1) * (PORT_WORDS + FIFO_PORT_WORDS) +
      nrVcpus * (NR_VIRQ_SLOTS + VLAPIC_SHARED_WORDS + FIFO_VCPU_WORDS) + FIFO_MAX_EVENT_PAGES;
    const sab = new SharedArrayBuffer(words * 4);
    const w = new Int32Array(sab);
    w[HDR.nrVcpus] = nrVcpus;
    w[HDR.maxPort] = maxPort;
    w[HDR.domid] = domid;
    w[HDR.shutdownReason] = -1;
    w[HDR.shutdownCode] = -1;
    w[HDR.homePcpu] = -1;
    const d = new DomainShared(sab);
    for (let v = 0; v < nrVcpus; v++) {
      d.setVcpu(v, 'vcpuInfoOffset', -1);
      d.setVcpu(v, 'state', RUNSTATE.offline);
      d.setVcpu(v, 'pcpu', -1);
    }
    return d;
  }

  get domid(): number { return this.w[HDR.domid]!; }
  get nrVcpus(): number { return this.w[HDR.nrVcpus]!; }
  get maxPort(): number { return this.w[HDR.maxPort]!; }

  get<K extends keyof typeof HDR>(k: K): number {
    return Atomics.load(this.w, HDR[k]);
  }

  set<K extends keyof typeof HDR>(k: K, v: number): void {
    Atomics.store(this.w, HDR[k], v);
  }

  add<K extends keyof typeof HDR>(k: K, delta: number): number {
    return Atomics.add(this.w, HDR[k], delta);
  }

  /** Atomically sets `k` to `v` only if it is `expect`; returns the old value. */
  cas<K extends keyof typeof HDR>(k: K, expect: number, v: number): number {
    return Atomics.compareExchange(this.w, HDR[k], expect, v);
  }

  /**
   * The domain's pvclock anchor, a (guest TSC, system time ns) pair every
   * vCPU's pvclock record is derived from, so guest time is one linear
   * function of the TSC, the same on all vCPUs. Under a sequence count (odd
   * while written, 0 = never set) as pvclock itself is, for readers on other
   * workers. Returns null when none is set yet.
   */
  pvclockAnchor(): { tsc0: bigint; sys0: bigint } | null {
    const w = this.w;
    for (;;) {
      const seq = Atomics.load(w, HDR.pvclockSeq);
      if (seq === 0) return null;
      if (seq & 1) continue; // a writer is storing four words
      const a = { tsc0: loadU64(w, HDR.tsc0Lo), sys0: loadU64(w, HDR.sys0Lo) };
      if (Atomics.load(w, HDR.pvclockSeq) === seq) return a;
    }
  }

  /** Sets the anchor (first record of a domain, or after its TSC jumped); concurrent setters serialise. */
  setPvclockAnchor(tsc: bigint, sys: bigint): void {
    const w = this.w;
    for (;;) {
      const seq = Atomics.load(w, HDR.pvclockSeq);
      if (!(seq & 1) && Atomics.compareExchange(w, HDR.pvclockSeq, seq, seq + 1) === seq) break;
    }
    storeU64(w, HDR.tsc0Lo, tsc);
    storeU64(w, HDR.sys0Lo, sys);
    Atomics.add(w, HDR.pvclockSeq, 1);
  }

  /** Accounts running time to the domain and to vCPU `v`. */
  addCpuTimeUs(us: number, v: number): void {
    addSplit(this.w, HDR.cpuTimeLo, us);
    addSplit(this.w, this.vcpuBase + v * VCPU_WORDS + VCPU.cpuTimeLo, us);
  }

  /**
   * vCPU `v` enters runstate `state` at `nowUs` (system time). The entry time
   * is stored first, so a reader that sees the new state sees its entry.
   */
  enterRunstate(v: number, state: number, nowUs: number): void {
    const i = this.vcpuBase + v * VCPU_WORDS;
    Atomics.store(this.w, i + VCPU.entryHi, Math.floor(nowUs / 2 ** 32));
    Atomics.store(this.w, i + VCPU.entryLo, nowUs >>> 0);
    Atomics.store(this.w, i + VCPU.state, state);
  }

  /** CPU time of vCPU `v` up to `nowUs`, counting a running period in progress (Xen's vcpu_runstate_get). */
  vcpuCpuTimeUs(v: number, nowUs: number): number {
    const i = this.vcpuBase + v * VCPU_WORDS;
    const done = readSplit(this.w, i + VCPU.cpuTimeLo);
    if (Atomics.load(this.w, i + VCPU.state) !== RUNSTATE.running) return done;
    return done + Math.max(0, nowUs - readSplit(this.w, i + VCPU.entryLo));
  }

  /** The domain's CPU time up to `nowUs`, running periods in progress included. */
  cpuTimeUs(nowUs: number): number {
    let t = readSplit(this.w, HDR.cpuTimeLo);
    for (let v = 0; v < this.nrVcpus; v++) {
      const i = this.vcpuBase + v * VCPU_WORDS;
      if (Atomics.load(this.w, i + VCPU.state) === RUNSTATE.running) t += Math.max(0, nowUs - readSplit(this.w, i + VCPU.entryLo));
    }
    return t;
  }

  /** vCPU `v`'s registered runstate area (a guest virtual address, 0 = none): any vCPU may register another's. */
  runstateArea(v: number): bigint {
    const i = this.vcpuBase + v * VCPU_WORDS;
    const lo = Atomics.load(this.w, i + VCPU.runstateAreaLo) >>> 0;
    const hi = Atomics.load(this.w, i + VCPU.runstateAreaHi) >>> 0;
    return lo === 0 && hi === 0 ? 0n : (BigInt(hi) << 32n) | BigInt(lo);
  }

  setRunstateArea(v: number, va: bigint): void {
    const i = this.vcpuBase + v * VCPU_WORDS;
    Atomics.store(this.w, i + VCPU.runstateAreaHi, Number(BigInt.asUintN(64, va) >> 32n) | 0);
    Atomics.store(this.w, i + VCPU.runstateAreaLo, Number(va & 0xffffffffn) | 0);
  }

  /** vCPU `v`'s secondary vcpu_time_info (register_vcpu_time_memory_area; a guest virtual address, 0 = none). */
  timeArea(v: number): bigint {
    const i = this.vcpuBase + v * VCPU_WORDS;
    const lo = Atomics.load(this.w, i + VCPU.timeAreaLo) >>> 0;
    const hi = Atomics.load(this.w, i + VCPU.timeAreaHi) >>> 0;
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  setTimeArea(v: number, va: bigint): void {
    const i = this.vcpuBase + v * VCPU_WORDS;
    Atomics.store(this.w, i + VCPU.timeAreaHi, Number(BigInt.asUintN(64, va) >> 32n) | 0);
    Atomics.store(this.w, i + VCPU.timeAreaLo, Number(va & 0xffffffffn) | 0);
  }

  vcpu<K extends keyof typeof VCPU>(v: number, k: K): number {
    return Atomics.load(this.w, this.vcpuBase + v * VCPU_WORDS + VCPU[k]);
  }

  setVcpu<K extends keyof typeof VCPU>(v: number, k: K, val: number): void {
    Atomics.store(this.w, this.vcpuBase + v * VCPU_WORDS + VCPU[k], val);
  }

  setVcpuFlag(v: number, flag: number): void {
    Atomics.or(this.w, this.vcpuBase + v * VCPU_WORDS + VCPU.flags, flag);
  }

  /** Clears `flag`; true if it was set. */
  clearVcpuFlag(v: number, flag: number): boolean {
    return (Atomics.and(this.w, this.vcpuBase + v * VCPU_WORDS + VCPU.flags, ~flag) & flag) !== 0;
  }

  portIndex(port: number): number {
    return this.portBase + port * PORT_WORDS;
  }

  /** Runs `fn` holding the domain's port lock (a short spinlock; holders never block). */
  withPortLock<T>(fn: () => T): T {
    const i = HDR.portLock;
    while (Atomics.compareExchange(this.w, i, 0, 1) !== 0) { /* spin: critical sections are a few loads and stores */ }
    try {
      return fn();
    } finally {
      Atomics.store(this.w, i, 0);
    }
  }
}

/** Slots per vCPU in the VIRQ table (public/xen.h NR_VIRQS). */
const NR_VIRQ_SLOTS = 24;

/**
 * VIRQ bindings keyed as the event-channel core keys them (virq * 65536 +
 * vCPU), stored in the domain's SAB so a worker raising VIRQ_TIMER for its
 * vCPU sees a binding another worker's vCPU made.
 */
export class VirqTable {
  constructor(private readonly w: Int32Array, private readonly base: number, private readonly nrVcpus: number) {}

  private index(key: number): number {
    const virq = Math.floor(key / 65536);
    const vcpu = key % 65536;
    if (virq >= NR_VIRQ_SLOTS || vcpu >= this.nrVcpus) return -1;
    return this.base + vcpu * NR_VIRQ_SLOTS + virq;
  }

  get(key: number): number | undefined {
    const i = this.index(key);
    const p = i < 0 ? 0 : Atomics.load(this.w, i);
    return p === 0 ? undefined : p;
  }

  has(key: number): boolean {
    return this.get(key) !== undefined;
  }

  set(key: number, port: number): void {
    const i = this.index(key);
    if (i < 0) throw new RangeError(`VIRQ key ${key} out of range`);
    Atomics.store(this.w, i, port);
  }

  delete(key: number): void {
    const i = this.index(key);
    if (i >= 0) Atomics.store(this.w, i, 0);
  }
}

/** A 64-bit counter kept as two words (lo at i, hi at i + 1); one writer at a time per counter. */
function addSplit(w: Int32Array, i: number, n: number): void {
  const lo = Atomics.add(w, i, n) >>> 0;
  if (lo + n > 0xffffffff) Atomics.add(w, i + 1, 1);
}

function readSplit(w: Int32Array, i: number): number {
  return (Atomics.load(w, i + 1) >>> 0) * 2 ** 32 + (Atomics.load(w, i) >>> 0);
}

function storeU64(w: Int32Array, lo: number, v: bigint): void {
  Atomics.store(w, lo, Number(v & 0xffffffffn) | 0);
  Atomics.store(w, lo + 1, Number((v >> 32n) & 0xffffffffn) | 0);
}

function loadU64(w: Int32Array, lo: number): bigint {
  return (BigInt(Atomics.load(w, lo + 1) >>> 0) << 32n) | BigInt(Atomics.load(w, lo) >>> 0);
}
