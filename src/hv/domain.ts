// A domain as the hypervisor sees it on the pCPU worker that runs it: its KVM
// VM, guest memory, physmap, vCPUs, HVM params, event-channel and grant-table
// state. Cross-thread state (run state, port table, vcpu_info locations) is
// in its DomainShared; the rest is owned by this thread.

import { Kvm, Vm, Vcpu as KvmVcpu } from '../kvm/kvm.js';
import { TcgVm } from '../tcg/vm.js';
import { TcgVcpu, type TcgVcpuOptions } from '../tcg/vcpu.js';
import type { AccelVcpu, CpuidEntry, GuestMemorySlots, InitialState, VcpuExit } from '../accel/vcpu.js';
import { HybridVcpu } from '../accel/hybrid.js';
import type { VcpuState } from '../accel/state.js';
import { SharedMemory } from '../kvm/memory.js';
import { Physmap, PhysmapLayout, mirrorLookup } from './physmap.js';
import { GuestAccess, GuestFault } from './guest_access.js';
import { DomainShared, HostShared, DOMSTATE, RUNSTATE, VCPU_FLAG_INITIALISED } from './shared.js';
import { vcpuInfoOffset, type EvtchnDomain, type VirqBindings } from './evtchn_core.js';
import { PAGE_SIZE, SharedInfo, VcpuTimeInfo, XEN_PVCLOCK_TSC_STABLE_BIT, VcpuInfo } from './abi/xen.js';
import { scaleDelta, systemTimeNs, TimeBase, TscScale, tscScale } from './time.js';
import { GrantTable, attachByFd } from './grant_table.js';
import { Vlapic, type VlapicState } from './x86/vlapic.js';
import type { Hcall } from './hypercall.js';
import { exclusiveAllows } from './sched/exclusive.js';

const IA32_TSC = 0x10;
/** How far pvclock may run ahead of the host's clock before it is re-anchored (see updatePvclock). */
const PVCLOCK_MAX_LEAD_NS = 1_000_000_000n;
/** The widest clock-read bracket around a TSC read that pvclock is anchored on or judged by. */
const PVCLOCK_READ_WINDOW_NS = 100_000n;

/** Everything the builder hands to the worker that will run the domain. */
export interface DomainSpec {
  domid: number;
  name: string;
  vmFd: number;
  memFd: number;
  layout: PhysmapLayout;
  vcpuFds: number[];
  sharedSab: SharedArrayBuffer;
  /** HVM params set by the builder (BigInt survives postMessage's structured clone). */
  params: Record<number, bigint>;
  timeBase: TimeBase;
  tscKhz: number;
  /** xen_domain_handle_t (the domain's UUID bytes). */
  handle: Uint8Array;
  /** The e820 the builder gave the domain, as XENMEM_memory_map's 20-byte entries. */
  memoryMap: Uint8Array;
  /** The pCPU worker each vCPU runs on; vCPU 0's is the domain's home. */
  placement: number[];
  /** max_maptrack_frames: the grant mappings it may hold (default Xen's 1024 frames). */
  maxMaptrackFrames?: number;
  /** Which CPU runs the domain's vCPUs. */
  accel: 'kvm' | 'tcg';
  /**
   * The software CPU's vCPUs are made by the worker that runs them: vCPU 0's
   * entry state, every vCPU's CPUID table (KVM's are set in the vCPU fds).
   */
  tcg?: { entry: InitialState & { msrs: { index: number; value: bigint }[] }; cpuid: CpuidEntry[][] };
  /**
   * A KVM domain with the software CPU beside it (hybrid.ts): each vCPU's
   * CPUID for the software CPU's side (the KVM vCPU's own), and whether guest
   * CPL 0 code runs there.
   */
  software?: { cpuid: CpuidEntry[][]; kernelInSoftware: boolean };
}

/** What a worker lends a domain's software-CPU vCPUs: its kicker, and where their MMIO accesses go. */
export interface TcgHost {
  kicker: TcgVcpuOptions['kicker'];
  mmio(v: VCpu, m: VcpuExit['mmio']): void;
  /** Port I/O during the access: true when it must become an exit instead. */
  io(v: VCpu, io: VcpuExit['io']): boolean;
  /** The ports for which io() may answer true. */
  exitPorts: readonly number[];
  msrExits(index: number): boolean;
}

export interface VcpuTimer {
  /** absolute system time (ns) of the single-shot timer, 0 = none */
  singleshot: bigint;
  /** periodic timer period (ns), 0 = none, and its next deadline */
  period: bigint;
  periodicNext: bigint;
}

/** A vCPU's worker-local state, as one worker hands it to another (structured-clone data). */
export interface VcpuHandoff {
  online: boolean;
  blocked: boolean;
  nmiPending: boolean;
  timer: VcpuTimer;
  pollPorts: number[] | null;
  pollTimeout: bigint;
  runstateTime: bigint[];
  runstateEntry: bigint;
  runstateState: number;
  lapic: VlapicState | null;
}

export class VCpu {
  /** Blocked waiting for an event (HLT / SCHEDOP_block / SCHEDOP_poll). */
  blocked = false;
  /** An NMI from the toolstack (XEN_DOMCTL_sendtrigger), handed to the CPU at its next run (Xen's nmi_pending). */
  nmiPending = false;
  /** Waiting for the domain's home worker to perform a hypercall for it (the call is in `hcall`). */
  awaitingHome = false;
  /** Its hypercalls on the worker that runs it: one at a time, so one record reused. */
  hcall: Hcall | null = null;
  /** The exclusivity epoch this vCPU's acquire waits for every pCPU to reach (0 = none; sched/exclusive.ts). */
  exclusiveWait = 0;
  /** Taken off the runqueue for the rest of this slice (yield). */
  yielded = false;
  /** Up and scheduled on this worker (only meaningful where the vCPU is local; see Domain.vcpuUp for any). */
  online: boolean;
  timer: VcpuTimer = { singleshot: 0n, period: 0n, periodicNext: 0n };
  /** SCHEDOP_poll: ports being polled and absolute timeout (0 = none). */
  pollPorts: number[] | null = null;
  pollTimeout = 0n;
  /** Runstate accounting (ns) by RUNSTATE_* and the time the current state was entered. */
  runstateTime: bigint[] = [0n, 0n, 0n, 0n];
  runstateEntry = 0n;
  runstateState: number;
  /** The vCPU's local APIC, on the worker that runs it (elsewhere its page is reached through the shared view). */
  lapic: Vlapic | null;
  /** The pCPU it is to move to once it is off this one (-1: staying; see Pcpu.moveOut). */
  moveTo = -1;

  /**
   * `local`: this worker runs the vCPU. A domain's vCPUs may be spread over
   * workers; each worker holds the whole domain but runs only its local ones,
   * and a vCPU moved between workers stops being local on one and becomes so
   * on the other (moveOut / moveIn).
   */
  constructor(readonly dom: Domain, readonly id: number, readonly hw: AccelVcpu, public local = true) {
    this.online = id === 0 && local;
    this.runstateState = this.online ? RUNSTATE.runnable : RUNSTATE.offline;
    this.lapic = local ? this.makeLapic() : null;
  }

  /** Its local APIC for the worker that runs it, over the APIC page every worker shares (`existing`: as another worker left it). */
  makeLapic(existing = false): Vlapic | null {
    const dom = this.dom, id = this.id, hw = this.hw;
    return dom.shared ? new Vlapic({
      vcpuId: id, x2apic: true, tscDeadline: true, shared: dom.shared.lapicView(id), existing,
      clock: { now: () => dom.now(), guestTsc: () => hw.getMsr(IA32_TSC), tscKhz: dom.tscKhz },
      upcallOnEnable: () => {
        const vec = dom.shared.vcpu(id, 'upcallVector');
        return vec && dom.isUpcallPending(this) ? vec : 0;
      },
    }) : null;
  }

  /**
   * What a worker hands another with the vCPU: everything about it that is not in shared memory or KVM.
   * Nothing of it stays here: no longer local, no timers, no poll, no APIC, no call in hand.
   */
  handOffLocal(now: bigint): VcpuHandoff {
    const s: VcpuHandoff = {
      online: this.online, blocked: this.blocked, nmiPending: this.nmiPending,
      timer: { ...this.timer }, pollPorts: this.pollPorts ? [...this.pollPorts] : null, pollTimeout: this.pollTimeout,
      runstateTime: [...this.runstateTime], runstateEntry: this.runstateEntry, runstateState: this.runstateState,
      lapic: this.lapic?.save(now) ?? null,
    };
    this.local = false;
    this.lapic = null;
    this.online = false;
    this.blocked = false;
    this.nmiPending = false;
    this.pollPorts = null;
    this.timer = { singleshot: 0n, period: 0n, periodicNext: 0n };
    this.hcall = null;
    return s;
  }

  /** Takes a handed-off vCPU as this worker's own (handOffLocal's other half). */
  restoreLocal(s: VcpuHandoff, now: bigint): void {
    this.local = true;
    this.online = s.online;
    this.blocked = s.blocked;
    this.nmiPending = s.nmiPending;
    this.timer = { ...s.timer };
    this.pollPorts = s.pollPorts;
    this.pollTimeout = s.pollTimeout;
    this.runstateTime = [...s.runstateTime];
    this.runstateEntry = s.runstateEntry;
    this.runstateState = s.runstateState;
    this.yielded = false;
    this.lapic = this.makeLapic(true);
    if (s.lapic) this.lapic?.takeOver(s.lapic, now);
  }

  /** An interrupt waits in the local APIC (HLT and SCHEDOP_block return for it). */
  get lapicPending(): boolean {
    return this.lapic !== null && this.lapic.pendingVector() >= 0;
  }

  /** Has an initial register state (vCPU 0 from the builder, others from VCPUOP_initialise); shared by all workers. */
  get initialised(): boolean {
    return this.id === 0 || (this.dom.shared.vcpu(this.id, 'flags') & VCPU_FLAG_INITIALISED) !== 0;
  }

  set initialised(v: boolean) {
    const f = this.dom.shared.vcpu(this.id, 'flags');
    this.dom.shared.setVcpu(this.id, 'flags', v ? f | VCPU_FLAG_INITIALISED : f & ~VCPU_FLAG_INITIALISED);
  }

  /** VCPUOP_register_vcpu_info was done (by any worker: the location is in the shared record). */
  get vcpuInfoRegistered(): boolean {
    return this.dom.shared.vcpu(this.id, 'vcpuInfoOffset') >= 0;
  }

  /** register_runstate_memory_area guest virtual address (0 = none), in the shared record: the vCPU that registers it may run on another worker. */
  get runstateArea(): bigint {
    return this.dom.shared.runstateArea(this.id);
  }

  set runstateArea(va: bigint) {
    this.dom.shared.setRunstateArea(this.id, va);
  }

  get key(): string {
    return `${this.dom.domid}.${this.id}`;
  }

  /** Moves the runstate machine (accounting time in the old state). */
  setRunstate(state: number, now: bigint): void {
    if (state === this.runstateState) return;
    this.runstateTime[this.runstateState]! += now - this.runstateEntry;
    if (this.runstateState === RUNSTATE.running) this.dom.shared.addCpuTimeUs(Number((now - this.runstateEntry) / 1000n), this.id);
    this.runstateState = state;
    this.runstateEntry = now;
    this.dom.shared.enterRunstate(this.id, state, Number(now / 1000n));
  }
}

export class Domain {
  readonly domid: number;
  readonly name: string;
  readonly shared: DomainShared;
  /** Where guest memory is mapped for the CPU: the KVM VM, or the software CPU's address space. */
  readonly vm: GuestMemorySlots & { close(): void };
  /** The software CPU's address space beside KVM's (a domain with `software`). */
  readonly softwareVm: TcgVm | null = null;
  readonly mem: SharedMemory;
  readonly physmap: Physmap;
  readonly access: GuestAccess;
  readonly vcpus: VCpu[];
  readonly params = new Map<number, bigint>();
  /** (virq * 65536 + vcpu) -> port, shared by the workers holding the domain */
  readonly virqs: VirqBindings;
  readonly grant: GrantTable;
  readonly evtchn: EvtchnDomain;
  readonly timeBase: TimeBase;
  readonly tscKhz: number;
  readonly scale: TscScale;
  /** The guest's TSC is a function of the host clock (the software CPU's): see updatePvclock. */
  readonly tscExact: boolean;
  /** Line buffers for the debug port and console_io output. */
  consoleLine = '';
  debugLine = '';
  /** This worker runs vCPU 0 and owns the domain-wide state (physmap and KVM slots, grant table, memory). */
  readonly isHome: boolean;
  /** Other workers that hold this domain for its vCPUs there. */
  readonly replicas: number[];
  /** On the home worker: the physmap version the replicas were last sent (-1: none yet). */
  physmapPublished = -1;
  /** Set when the domain must stop running (shutdown, crash, destroy). */
  stopping = false;
  /** The e820 the guest set with XENMEM_set_memory_map, or null for the builder's. */
  memoryMap: Uint8Array | null = null;
  /** SCHEDOP_watchdog timers: id -> absolute expiry (ns). */
  readonly watchdogs = new Map<number, bigint>();
  /** VMASST_* bits enabled by vm_assist. */
  vmAssist = 0;
  readonly handle: Uint8Array;
  readonly builderMemoryMap: Uint8Array;

  /** MSRs refused with #GP that were logged (so each is logged once). */
  readonly msrsRefused = new Set<string>();

  constructor(kvm: Kvm | null, spec: DomainSpec, readonly host: HostShared, pcpu = spec.placement[0]!, tcgHost?: TcgHost) {
    this.domid = spec.domid;
    this.name = spec.name;
    this.shared = new DomainShared(spec.sharedSab);
    this.virqs = this.shared.virqs;
    this.isHome = spec.placement[0] === pcpu;
    this.replicas = [...new Set(spec.placement)].filter((p) => p !== spec.placement[0]);
    this.physmap = new Physmap(spec.layout);
    this.mem = SharedMemory.attach(spec.memFd, this.physmap.bytes);
    this.tscExact = spec.accel === 'tcg';
    if (spec.accel === 'tcg') {
      this.vm = new TcgVm(spec.tscKhz, spec.timeBase.bootNs);
      // every vCPU runs on this worker, so none runs while the map changes: runs may be joined
      this.physmap.attach(this.vm, this.mem.address, Infinity, true);
    } else {
      if (!kvm) throw new Error('a KVM domain on a worker without /dev/kvm');
      const vm = (this.vm = new Vm(kvm, spec.vmFd));
      let slots: GuestMemorySlots = vm;
      if (spec.software) {
        // Both CPUs see the same memory, slot by slot.
        const sw = (this.softwareVm = new TcgVm(spec.tscKhz, spec.timeBase.bootNs));
        slots = {
          setUserMemoryRegion: (slot, gpa, size, host, flags) => { vm.setUserMemoryRegion(slot, gpa, size, host, flags); sw.setUserMemoryRegion(slot, gpa, size, host); },
          deleteMemoryRegion: (slot) => { vm.deleteMemoryRegion(slot); sw.deleteMemoryRegion(slot); },
        };
      }
      // KVM's memory slots are the VM's: only the home worker changes them; the others follow its map.
      // (with the software CPU beside KVM, every vCPU runs on the home worker: runs may be joined)
      if (this.isHome) this.physmap.attach(slots, this.mem.address, kvm.checkExtension('NR_MEMSLOTS') || Infinity, !!spec.software);
    }
    this.access = new GuestAccess(this.mem.bytes, this.physmap);
    this.timeBase = spec.timeBase;
    this.tscKhz = spec.tscKhz;
    this.scale = tscScale(spec.tscKhz);
    if (spec.accel === 'tcg') {
      // All of a software-CPU domain's vCPUs run on its home worker, beside the one TcgVm that
      // holds their memory map. Their locked instructions are host atomics (native/atomics.c),
      // so spreading them over workers would not break a guest's locks.
      if (!tcgHost || !spec.tcg) throw new Error('a software-CPU domain without its worker\'s kicker or entry state');
      const vm = this.vm as TcgVm;
      this.vcpus = spec.placement.map((_, i) => {
        let self: VCpu | null = null;
        const hw = new TcgVcpu(i, vm, { kicker: tcgHost.kicker, msrExits: tcgHost.msrExits, exitPorts: tcgHost.exitPorts, onMmio: (m) => tcgHost.mmio(self!, m), onIo: (io) => tcgHost.io(self!, io) });
        hw.setCpuid(spec.tcg!.cpuid[i]!);
        if (i === 0) {
          hw.setInitialState(spec.tcg!.entry);
          hw.setMsrs(spec.tcg!.entry.msrs);
        }
        self = new VCpu(this, i, hw, true);
        return self;
      });
    } else if (spec.software) {
      // Beside KVM: all vCPUs on the home worker, as for the software CPU alone.
      if (!tcgHost) throw new Error('a domain with the software CPU beside KVM on a worker without its kicker');
      const vm = this.vm as Vm;
      const sw = spec.software;
      this.vcpus = spec.vcpuFds.map((fd, i) => {
        let self: VCpu | null = null;
        const soft = new TcgVcpu(i, this.softwareVm!, { kicker: tcgHost.kicker, besideKvm: true, exitPorts: tcgHost.exitPorts, msrExits: tcgHost.msrExits, onMmio: (m) => tcgHost.mmio(self!, m), onIo: (io) => tcgHost.io(self!, io) });
        soft.setCpuid(sw.cpuid[i]!);
        self = new VCpu(this, i, new HybridVcpu(new KvmVcpu(vm, fd, i), soft, { kernelInSoftware: sw.kernelInSoftware, readKernel: (s, va, len) => this.readKernel(s, va, len) }), true);
        return self;
      });
    } else {
      const vm = this.vm as Vm;
      this.vcpus = spec.vcpuFds.map((fd, i) => new VCpu(this, i, new KvmVcpu(vm, fd, i), spec.placement[i] === pcpu));
    }
    for (const [k, v] of Object.entries(spec.params)) this.params.set(Number(k), v);
    // The home worker's physmap is the truth; elsewhere the published mirror is (see physmap.ts).
    if (this.isHome) this.physmap.publishTo(this.mem.bytes);
    const mirrorBase = this.physmap.mirrorBase;
    this.grant = new GrantTable({
      domid: spec.domid, bytes: this.mem.bytes, layout: spec.layout, attach: attachByFd(spec.memFd, spec.layout),
      translate: this.isHome ? (gfn) => this.physmap.hostPageOf(gfn) : (gfn) => mirrorLookup(this.mem.bytes, mirrorBase, gfn),
    }, spec.maxMaptrackFrames);
    this.evtchn = { shared: this.shared, mem: this.mem.bytes };
    this.handle = spec.handle;
    this.builderMemoryMap = spec.memoryMap;
  }

  /** Guest memory at a linear address under a vCPU state's paging, as its kernel sees it (null: not mapped). */
  private readKernel(s: VcpuState, va: bigint, len: number): Uint8Array | null {
    try {
      this.access.setContext({ cr0: Number(s.cr0 & 0xffffffffn), cr3: s.cr3, cr4: Number(s.cr4 & 0xffffffffn), efer: Number(s.efer & 0xffffffffn) });
      return this.access.read(va, len);
    } catch {
      return null;
    }
  }

  /**
   * Xen's max_pages and tot_pages live in the shared header (set there when
   * the domain is started): the toolstack reads the reservation and sets the
   * limit (XEN_DOMCTL_max_mem) without a message; only the home worker
   * changes tot_pages.
   */
  get maxPages(): number { return this.shared.get('maxPages'); }
  set maxPages(n: number) { this.shared.set('maxPages', n); }
  get totPages(): number { return this.shared.get('totPages'); }
  set totPages(n: number) { this.shared.set('totPages', n); }

  /** A hypercall page was written (the guest speaks Xen); -1 before. */
  get hypercallPageGfn(): number {
    return this.shared.get('hypercallPage') - 1;
  }

  set hypercallPageGfn(gfn: number) {
    this.shared.set('hypercallPage', gfn + 1);
  }

  /** VCPUOP_is_up for any vCPU of the domain, wherever it runs. */
  vcpuUp(id: number): boolean {
    return this.shared.vcpu(id, 'state') !== RUNSTATE.offline;
  }

  get privileged(): boolean {
    return this.shared.get('isPrivileged') === 1;
  }

  get abi32(): boolean {
    return this.shared.get('abi') === 1;
  }

  now(): bigint {
    return systemTimeNs(this.timeBase);
  }

  /** Byte offset of shared_info in the domain memory. */
  get sharedInfoOffset(): number {
    return this.physmap.sharedInfoPage * PAGE_SIZE;
  }

  /** Writes the wallclock (wc_*) into shared_info under its version counter. */
  updateWallclock(): void {
    const si = this.abi32 ? SharedInfo.x32 : SharedInfo.x64;
    const dv = this.access.dv;
    const base = this.sharedInfoOffset;
    const wall = this.timeBase.bootWallNs;
    const sec = wall / 1_000_000_000n;
    const ver = si.get(dv, base, 'wc_version') as number;
    si.set(dv, base, 'wc_version', (ver + 1) | 1);
    si.set(dv, base, 'wc_sec', Number(sec & 0xffffffffn));
    si.set(dv, base, 'wc_nsec', Number(wall % 1_000_000_000n));
    si.set(dv, base, 'wc_sec_hi', Number(sec >> 32n));
    si.set(dv, base, 'wc_version', (ver + 2) & ~1);
  }

  /**
   * Publishes pvclock for a vCPU (in its vcpu_info) at the guest's TSC now.
   * Called at start, on every reschedule and after a block. system_time is
   * derived from the domain's anchor, one (TSC, system time) pair for all its
   * vCPUs, by the published scale: a record made from a fresh host-clock read
   * would carry the varying delay between that read and the TSC's, so guest
   * time would step back from one record to the next (Linux's timekeeping
   * takes a negative step as a huge one). The anchor pairs a TSC read with
   * the clock read just after it, so guest time is never behind the
   * hypervisor's at a record: a timer the hypervisor fires at its deadline is
   * never early in the guest's eyes. When the TSC has lagged the host clock
   * since (KVM's can: measured on PVM hosts), the anchor moves forward to now,
   * a forward step only; when it is ahead by PVCLOCK_MAX_LEAD_NS, which only a
   * TSC write does, it moves to now too, as Xen re-stamps its time records.
   * The software CPU's TSC is a function of the host clock, so its line never
   * moves and one line is one clock on every vCPU: only then is
   * XEN_PVCLOCK_TSC_STABLE_BIT set (as Xen sets it only for a reliable TSC);
   * otherwise the guest keeps its reads monotonic across vCPUs itself.
   */
  updatePvclock(v: VCpu, readTsc: () => bigint): void {
    const off = this.vcpuInfoOffset(v.id);
    if (off < 0) return;
    let r = this.readTscBracketed(readTsc);
    let a = this.shared.pvclockAnchor();
    if (a) {
      const derived = a.sys0 + scaleDelta(r.tsc - a.tsc0, this.scale);
      if (derived < r.before || derived > r.after + PVCLOCK_MAX_LEAD_NS) a = null;
    }
    if (!a) {
      // a tight reading (a loaded host can stretch one), so the forward bias stays small
      for (let i = 0; i < 3 && r.after - r.before > PVCLOCK_READ_WINDOW_NS; i++) r = this.readTscBracketed(readTsc);
      this.shared.setPvclockAnchor(r.tsc, r.after);
      a = { tsc0: r.tsc, sys0: r.after };
    }
    const guestTsc = r.tsc;
    const systemTime = a.sys0 + scaleDelta(guestTsc - a.tsc0, this.scale);
    const t = off + (this.abi32 ? VcpuInfo.x32 : VcpuInfo.x64).offsetOf('time');
    const dv = this.access.dv;
    const ver = VcpuTimeInfo.get(dv, t, 'version') as number;
    VcpuTimeInfo.set(dv, t, 'version', (ver + 1) | 1);
    VcpuTimeInfo.set(dv, t, 'tsc_timestamp', guestTsc);
    VcpuTimeInfo.set(dv, t, 'system_time', systemTime);
    VcpuTimeInfo.set(dv, t, 'tsc_to_system_mul', this.scale.mul);
    VcpuTimeInfo.set(dv, t, 'tsc_shift', this.scale.shift);
    VcpuTimeInfo.set(dv, t, 'flags', this.tscExact ? XEN_PVCLOCK_TSC_STABLE_BIT : 0);
    VcpuTimeInfo.set(dv, t, 'version', (ver + 2) & ~1);
    const area = this.shared.timeArea(v.id);
    if (area !== 0n) this.writeTimeArea(v, area, this.mem.bytes.slice(t, t + VcpuTimeInfo.size));
  }

  /**
   * The copy of a vCPU's time record in the area it registered (Xen's
   * update_guest_time_info after update_vcpu_system_time), through the vCPU's
   * own page tables: version made odd first, the record, then the even
   * version, so a reader on another vCPU never takes a torn copy. An area the
   * guest unmapped is skipped, as Xen does.
   */
  private writeTimeArea(v: VCpu, va: bigint, rec: Uint8Array): void {
    const hw = v.hw;
    const rv = new DataView(rec.buffer);
    const even = VcpuTimeInfo.get(rv, 0, 'version') as number;
    try {
      this.access.setContext({ cr0: hw.cr0, cr3: hw.cr3, cr4: hw.cr4, efer: hw.efer });
      this.access.flush();
      VcpuTimeInfo.set(rv, 0, 'version', (even - 1) >>> 0);
      this.access.write(va, rec.subarray(0, 4));
      this.access.write(va, rec);
      VcpuTimeInfo.set(rv, 0, 'version', even);
      this.access.write(va, rec.subarray(0, 4));
    } catch (e) {
      if (!(e instanceof GuestFault)) throw e;
    }
  }

  /** The guest's TSC with the clock read just before and just after it. */
  private readTscBracketed(readTsc: () => bigint): { tsc: bigint; before: bigint; after: bigint } {
    const before = this.now();
    const tsc = readTsc();
    return { tsc, before, after: this.now() };
  }

  vcpuInfoOffset(vcpu: number): number {
    return vcpuInfoOffset(this.shared, vcpu);
  }

  isUpcallPending(v: VCpu): boolean {
    const off = this.vcpuInfoOffset(v.id);
    return off >= 0 && this.mem.bytes[off] !== 0;
  }

  /** evtchn_upcall_pending with a way to deliver it (CALLBACK_IRQ's vector or the vCPU's upcall vector). */
  upcallDeliverable(v: VCpu): boolean {
    return this.isUpcallPending(v) && (this.shared.get('callbackVector') !== 0 || this.shared.vcpu(v.id, 'upcallVector') !== 0);
  }

  get state(): number {
    return this.shared.get('state');
  }

  get paused(): boolean {
    return this.shared.get('pauseCount') > 0;
  }

  /** Running, not paused, and no other domain has the machine to itself. */
  isRunnable(): boolean {
    const s = this.state;
    return s === DOMSTATE.running && !this.paused && !this.stopping && exclusiveAllows(this.host, this.domid);
  }

  /** Releases this worker's hold: its own vCPUs' fds; the VM fd is the home's to close. */
  close(): void {
    // Xen's gnttab_release_mappings: what this domain maps of others' grants is unpinned there
    if (this.isHome) this.grant.releaseMappings();
    for (const v of this.vcpus) {
      if (v.local) v.hw.close();
      else v.hw.release();
    }
    if (this.isHome || this.vm instanceof TcgVm) this.vm.close();
    this.grant.markGone();
    this.softwareVm?.close();
    this.mem.close();
  }
}
