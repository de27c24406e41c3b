// The hypervisor as the control domain (main thread) drives it: Xen's domctl
// and the control domain's own event channels. It owns the pCPU workers,
// creates domains (KVM VM, memory, vCPUs with Xen's CPUID) for the domain
// builder, hands each built domain to a worker, and reports domain state
// changes. The control domain is a domain without vCPUs: its event channels
// live in a shared_info-shaped SharedArrayBuffer and its "upcall" wakes the
// main thread's event loop, where port handlers run as callbacks.

import { Worker } from 'node:worker_threads';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import { Kvm, Vm, Vcpu } from '../kvm/kvm.js';
import { SharedMemory } from '../kvm/memory.js';
import { VmPool, type VmRecipe } from '../kvm/vm_pool.js';
import { KVM_XEN_HVM_CONFIG, KVM_GET_REGS, KVM_GET_SREGS, KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN, KVM_MSR_FILTER_READ, KVM_MSR_FILTER_WRITE, KVM_REGS_SIZE, KVM_SREGS_SIZE, RUN, SYNC } from '../kvm/abi.js';
import * as libc from '../kvm/libc.js';
import { kick } from '../kvm/kick.js';
import { Physmap, layoutBases, mirrorLookup, type PhysmapLayout, type Segment } from './physmap.js';
import { GrantTable, Gntdev, attachByFd } from './grant_table.js';
import { HostShared, DomainShared, DOMSTATE, RUNSTATE, DOM0_DOORBELL, VCPU_FLAG_INITIALISED } from './shared.js';
import { xenCpuid, commonCpuid, XEN_HYPERCALL_MSR } from './x86/cpuid.js';
import { chooseAccel, domainCpu, type AccelChoice, type AccelMode } from './accel.js';
import { tcgSupportedCpuid } from '../tcg/cpuid.js';
import type { CpuidEntry, InitialState } from '../accel/vcpu.js';
import { localTimeBase, systemTimeNs } from './time.js';
import { EVTCHN_FIFO_NR_CHANNELS } from './abi/event_channel.js';
import * as core from './evtchn_core.js';
import { PrivcmdServer, type PrivcmdDomain, type PrivcmdHost } from './privcmd.js';
import { XenError, EINVAL } from './errno.js';
import type { Duplex } from 'node:stream';
import { ProcessDomain, dispatch2l, type PortHandler, type ProcessDomainInfo } from './process_domain.js';
import type { DomainSpec } from './domain.js';
import type { MainToWorker, WorkerToMain, Relay, PcpuHostSched } from './messages.js';
import { getAffinity, fifoPriorityMax } from '../kvm/host_sched.js';
import { PAGE_SIZE } from './abi/xen.js';
import type { PvhEntryState } from './x86/pvh.js';
import { isSchedulerName, DEFAULT_SCHEDULER, SCHEDULERS, type SchedulerName } from './sched/schedulers.js';
import type { SchedParams } from './sched/scheduler.js';
import { checkSchedule, type Arinc653Schedule } from './sched/arinc653.js';
import { Credit2 } from './sched/credit2.js';
import { Credit } from './sched/credit.js';
import { TraceRing, type TraceRecord } from './sched/trace.js';
import { Cpupools, CpupoolError, type Cpupool, type CpupoolInfo } from './cpupool.js';
import { exclusiveState, exclusiveTriggered, releaseExclusive, EXCLUSIVE_END, EXCLUSIVE_END_NAMES } from './sched/exclusive.js';
import { EXCLUSIVE_MAX_MS } from './abi/xenode_sched.js';
import { setIrq, MSR_IA32_APICBASE, MSR_IA32_TSC_DEADLINE, MSR_X2APIC_FIRST } from './x86/vlapic.js';

export interface DomainCreateOptions {
  name: string;
  memoryMiB: number;
  maxMemMiB?: number;
  vcpus: number;
  maxGrantFrames?: number;
  /** max_maptrack_frames: grant mappings the domain may hold (Xen's default 1024 frames of 256) */
  maxMaptrackFrames?: number;
  maxEvtchnPort?: number;
  privileged?: boolean;
  /** console_io allowed (Xen: dom0less domains and debug builds) */
  isConsole?: boolean;
  uuid?: Uint8Array;
  /** the cpupool (id) its vCPUs run in; default Pool-0 */
  pool?: number;
  /** per-vCPU hard and soft affinity (pCPU numbers; null or absent = any), as cpus=/cpus_soft= give it */
  hard?: (number[] | null)[];
  soft?: (number[] | null)[];
  /** pages the builder fills with ACPI tables, at GFN 0xFC000 (populated for it as libxl populates them; 0: none) */
  acpiPages?: number;
  /**
   * The right to have the machine to itself, for at most this many ms at a
   * time (xl.cfg exclusive_ms, a xenode extension; sched/exclusive.ts).
   * Absent or 0: not granted.
   */
  exclusiveMs?: number;
}

/** Who has the machine to itself (sched/exclusive.ts), as the toolstack reports it. */
export interface ExclusiveInfo {
  /** the holder, null when none */
  domid: number | null;
  name: string | null;
  /** system time (ns) it was asked for and is taken back */
  since: bigint;
  expires: bigint;
  /** pCPUs that have stopped every other domain's vCPU for it */
  stopped: number;
  /** the last period's holder and how it ended (released, expired, gone) */
  last: { domid: number; how: string } | null;
}

/** A domain being built: the builder's access to its memory before it runs. */
export interface DomainBuild {
  domid: number;
  name: string;
  physmap: Physmap;
  /** the domain's memory as mapped in the control domain */
  mem: SharedMemory;
  shared: DomainShared;
  params: Record<number, bigint>;
  /** the reservation limit (maxmem); the populate pool leaves slack above it */
  maxPages: number;
  options: DomainCreateOptions;
}

/** Every domain's VM: MSR accesses KVM cannot serve exit to us, and a filter denies (traps to us) the hypercall MSR and the local APIC's MSRs (the model in vlapic.ts serves them: there is no in-kernel APIC). */
const denyMsrs = (base: number, nmsrs: number) => ({ flags: KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE, base, nmsrs, bitmap: new Uint8Array(Math.ceil(nmsrs / 8)) });
/** ... and, where KVM offers it, its VMCALL/VMMCALL exit to us (KVM_EXIT_XEN) rather than being KVM's own hypercalls. */
const xenVmRecipe = (xenHypercalls: boolean): VmRecipe => ({
  caps: [{ cap: 'X86_USER_SPACE_MSR', args: [KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER] }],
  msrFilter: [denyMsrs(XEN_HYPERCALL_MSR, 1), denyMsrs(MSR_IA32_APICBASE, 1), denyMsrs(MSR_IA32_TSC_DEADLINE, 1), denyMsrs(MSR_X2APIC_FIRST, 256)],
  xenHvmFlags: xenHypercalls ? KVM_XEN_HVM_CONFIG.INTERCEPT_HCALL : 0,
});

export interface DomainInfo {
  domid: number;
  name: string;
  state: number;
  paused: boolean;
  shutdownReason: number;
  vcpus: number;
  onlineVcpus: number;
  cpuTimeUs: number;
  /** tot_pages and max_pages, in KiB (xl list's Mem, xentop's MAXMEM) */
  memoryKiB: number;
  maxMemKiB: number;
}

export interface VcpuInfoSummary {
  vcpu: number;
  /** RUNSTATE_* (offline = 3) */
  state: number;
  /** the pCPU worker it is placed on, -1 when none */
  pcpu: number;
  cpuTimeUs: number;
  /** up (Xen's !VPF_down): a stopped vCPU of a shut-down domain is up, one never brought up or taken down is not */
  up: boolean;
}

interface DomainRecord {
  domid: number;
  name: string;
  shared: DomainShared;
  mem: SharedMemory;
  /** the domain as an event-channel endpoint from this thread (made once: every control-domain send looks it up) */
  evtchn: core.EvtchnDomain;
  /** the home worker (vCPU 0's), -1 before start */
  pcpu: number;
  /** the worker of each vCPU, and the distinct workers holding the domain */
  placement: number[];
  hosts: number[];
  /** workers that have not yet released the domain after a destroy */
  releasing: number;
  /** its cpupool, and the per-vCPU affinity placement honours */
  pool: number;
  hard: (number[] | null)[];
  soft: (number[] | null)[];
  memoryMap: Uint8Array;
  memoryKiB: number;
  /** settles once its home worker holds it (its physmap published, its grant table reachable from any thread) */
  homeReady?: Promise<void>;
  setUp?: (error?: string) => void;
  /** the max_pages the domain was built with: its memory has room for no more */
  maxPages: number;
  spec?: DomainSpec;
  /** where its memfd's parts are (physmap.ts), and its grant table as this thread reaches it (made on first use) */
  layout: PhysmapLayout;
  grant?: GrantTable;
  vm?: Vm;
  vcpuFds: number[];
  destroyed?: () => void;
}

export type HypervisorEvents = {
  /** A line (eol) or a partial line flushed when the domain died. */
  console: [domid: number, source: 'console_io' | 'debugport', text: string, eol: boolean];
  shutdown: [domid: number, reason: number, detail: string];
  destroyed: [domid: number];
  log: [level: string, text: string];
};

const DOM0_PORTS = 4095;
/** Pool pages beyond maxmem, so a guest can repopulate frames it gave back while shared_info or grant frames sit over RAM. */
const POOL_SLACK_PAGES = 64;

/** The TSC rate software-CPU guests see when no KVM reports the host's (a round 2 GHz). */
const TCG_TSC_KHZ = 2_000_000;

export class Hypervisor extends EventEmitter<HypervisorEvents> {
  /** /dev/kvm, when the domains run on KVM. */
  readonly kvm: Kvm | null;
  private readonly vmPool: VmPool | null;
  readonly host = new HostShared();
  readonly timeBase = localTimeBase;
  readonly workers: Worker[] = [];
  readonly tids: number[] = [];
  private readonly domains = new Map<number, DomainRecord>();
  /** vCPUs of domains being built, held here until a worker adopts them. */
  private readonly pendingVcpus = new Map<number, Vcpu[]>();
  /** Software-CPU domains being built: each vCPU's CPUID and vCPU 0's entry state, made into engines by the worker. */
  /** KVM domains with the software CPU beside them: their vCPUs' CPUID, for the software CPU's side. */
  private readonly pendingSoftware = new Map<number, CpuidEntry[][]>();
  private readonly pendingTcg = new Map<number, { cpuid: CpuidEntry[][]; entry: (InitialState & { msrs: { index: number; value: bigint }[] }) | null }>();
  private nextDomid = 1;
  /** the TSC rate guests see (Xen's cpu_khz in physinfo) */
  readonly tscKhz: number;
  // the control domain (domain 0) as an event-channel endpoint
  readonly dom0Shared = DomainShared.create(0, 1, DOM0_PORTS);
  readonly dom0Mem = new SharedArrayBuffer(PAGE_SIZE);
  readonly dom0: core.EvtchnDomain = { shared: this.dom0Shared, mem: new Uint8Array(this.dom0Mem) };
  private readonly dom0Handlers = new Map<number, PortHandler>();
  /** Process domains (driver domains beside the control domain), by domid. */
  private readonly processDomains = new Map<number, ProcessDomain>();
  /** The control domain's VIRQ bindings (DOM_EXC: a domain shut down or died). */
  private readonly dom0Virqs = new Map<number, number>();
  private readonly dom0Doorbell = new Int32Array(this.dom0Mem, DOM0_DOORBELL, 1);
  private stopping = false;
  readonly evtchnHost: core.EvtchnHost;
  /** physmap-query answers awaited, by domid */
  private readonly physmapQueries = new Map<number, ((segments: Segment[]) => void)[]>();
  /** The load balancer's timer (null: off), and whether a pass is under way. */
  private balancer: NodeJS.Timeout | null = null;
  private balancing = false;
  /** vCPU moves under way, by "domid.vcpu": what the worker said, passed to moveVcpu's wait */
  private readonly moves = new Map<string, (m: Extract<WorkerToMain, { type: 'vcpu-moved' | 'vcpu-moved-in' }>) => void>();
  /** regs-query answers awaited, by domid */
  private readonly regsQueries = new Map<number, ((m: Extract<WorkerToMain, { type: 'regs-report' }>) => void)[]>();

  /** What each pCPU's host threads last got (pinning, priority, refusals); null until asked. */
  readonly pcpuHost: (PcpuHostSched | null)[] = [];
  private readonly hostSchedWaits = new Map<number, ((r: PcpuHostSched) => void)[]>();

  /** One scheduling trace ring per pCPU, shared with its worker. */
  readonly traces: TraceRing[];
  /** Pool-0 (every pCPU, the boot scheduler) and any pools made since. */
  readonly cpupools: Cpupools;

  private constructor(readonly nrPcpus: number, readonly sliceNs: number, vmPool: number, readonly accel: AccelChoice, readonly sched: SchedulerName = DEFAULT_SCHEDULER, traceRecords?: number) {
    super();
    this.traces = Array.from({ length: nrPcpus }, () => TraceRing.create(traceRecords));
    this.cpupools = new Cpupools(nrPcpus, sched);
    this.host.nrPcpus = nrPcpus;
    if (accel.accel === 'kvm') {
      this.kvm = Kvm.open();
      this.kvm.requireCapabilities();
      this.vmPool = new VmPool(this.kvm, xenVmRecipe(accel.kvmXenHypercalls), vmPool);
      // the TSC rate guests see (KVM_GET_TSC_KHZ on a throw-away vCPU)
      const vm = this.kvm.createVm();
      const v = vm.createVcpu(0);
      this.tscKhz = v.tscKhz;
      v.close();
      vm.close();
    } else {
      this.kvm = null;
      this.vmPool = null;
      this.tscKhz = TCG_TSC_KHZ;
    }
    this.dom0Shared.set('sharedInfoOffset', 0);
    this.dom0Shared.set('isPrivileged', 1);
    this.evtchnHost = {
      lookup: (domid) => (domid === 0 ? this.dom0 : this.evtchnDomain(domid)),
      upcall: (d, vcpu) => {
        if (d === this.dom0 || this.processDomains.get(d.shared.domid)?.ev === d) { queueMicrotask(() => this.dispatchDom0()); return; }
        const vec = d.shared.vcpu(vcpu, 'upcallVector');
        if (vec) setIrq(d.shared.lapicView(vcpu), vec); // through the vCPU's local APIC (edge)
        this.wake(d.shared.domid, vcpu);
      },
      exclusiveTrigger: (d) => exclusiveTriggered(this.host, d.shared, systemTimeNs(this.timeBase)),
      wakePollers: (d) => {
        if (d === this.dom0 || this.processDomains.get(d.shared.domid)?.ev === d) return;
        for (let v = 0; v < d.shared.nrVcpus; v++) if (d.shared.vcpu(v, 'pollMask')) this.wake(d.shared.domid, v);
      },
    };
  }

  /**
   * Starts the hypervisor with `pcpus` workers (default: one per host CPU).
   * `vmPool` VMs are kept made ahead by a helper thread (a host daemon
   * creating domains on demand wants 2; a one-guest run wants none).
   */
  static async start(opts: { pcpus?: number; sliceMs?: number; vmPool?: number; sched?: string; traceRecords?: number; accel?: AccelMode } = {}): Promise<Hypervisor> {
    const n = Math.max(1, Math.min(opts.pcpus ?? os.availableParallelism(), 64));
    const sched = opts.sched ?? DEFAULT_SCHEDULER;
    if (!isSchedulerName(sched)) throw new RangeError(`sched=${sched}: unknown scheduler (known: ${SCHEDULERS.join(', ')})`);
    const hv = new Hypervisor(n, (opts.sliceMs ?? 10) * 1e6, opts.vmPool ?? 0, chooseAccel(opts.accel ?? 'auto'), sched, opts.traceRecords);
    await Promise.all(Array.from({ length: n }, (_, i) => hv.spawn(i)));
    hv.watchDom0();
    return hv;
  }

  private spawn(pcpu: number): Promise<void> {
    const w = new Worker(new URL('./pcpu.js', import.meta.url), {
      workerData: {
        kind: 'pcpu',
        init: { pcpu, hostSab: this.host.sab, dom0Sab: this.dom0Shared.sab, dom0Mem: this.dom0Mem, timeBase: this.timeBase, sliceNs: this.sliceNs, sched: this.sched, traceSab: this.traces[pcpu]!.sab, kvm: this.kvm !== null, software: this.accel.fallback },
      },
    });
    this.workers[pcpu] = w;
    return new Promise((resolve, reject) => {
      w.once('error', reject);
      w.on('message', (m: WorkerToMain) => {
        if (m.type === 'ready') {
          this.tids[pcpu] = m.tid;
          w.off('error', reject);
          w.on('error', (e) => this.emit('log', 'error', `pCPU ${pcpu} worker failed: ${e.stack ?? e}`));
          resolve();
        } else this.onWorkerMessage(m);
      });

    });
  }

  private onWorkerMessage(m: WorkerToMain): void {
    switch (m.type) {
      case 'console':
        this.emit('console', m.domid, m.source, m.text, m.eol);
        return;
      case 'shutdown': {
        // vCPUs of the domain on other workers stop at their next exit: make that now.
        const r = this.domains.get(m.domid);
        if (r) this.kickDomain(r);
        this.emit('shutdown', m.domid, m.reason, m.detail);
        this.raiseDomExc();
        return;
      }
      case 'hcall':
      case 'physmap':
      case 'vcpu-up':
      case 'vcpu-down':
      case 'hcall-done':
        this.relay(m);
        return;
      case 'destroyed': {
        const r = this.domains.get(m.domid);
        if (!r || --r.releasing > 0) return; // gone already, or other workers still hold it
        // no vCPU of it runs any more: its peers' ports toward it become unbound
        const ev = this.evtchnDomain(m.domid);
        try {
          if (ev) core.closeInterdomain(this.evtchnHost, ev);
        } catch (e) {
          this.emit('log', 'error', `d${m.domid}: closing its event channels: ${e instanceof Error ? e.stack : String(e)}`);
        }
        this.domains.delete(m.domid);
        for (const p of this.cpupools.list()) this.cpupools.get(p.id).shadow.removeDomain(m.domid);
        this.host.setDomainExists(m.domid, false);
        for (let i = 0; i < this.nrPcpus; i++) if (!r.hosts.includes(i)) this.workers[i]!.postMessage({ type: 'forget', domid: m.domid } satisfies MainToWorker);
        r.grant?.markGone();
        r.mem.close();
        r.destroyed?.();
        this.emit('destroyed', m.domid);
        this.raiseDomExc();
        return;
      }
      case 'adopted': {
        if (m.error) this.emit('log', 'error', `d${m.domid}: could not start: ${m.error}`);
        const r = this.domains.get(m.domid);
        if (r && m.pcpu === r.pcpu) r.setUp?.(m.error);
        return;
      }
      case 'vcpu-moved':
      case 'vcpu-moved-in': {
        const waiter = this.moves.get(`${m.domid}.${m.vcpu}`);
        if (waiter) waiter(m);
        else if (m.type === 'vcpu-moved' && m.state) {
          // let go after its move was given up (its worker answered too late): back where it was placed
          const r = this.domains.get(m.domid);
          if (r && !r.destroyed) this.send(r.placement[m.vcpu]!, { type: 'vcpu-move-in', domid: m.domid, vcpu: m.vcpu, state: m.state });
        }
        return;
      }
      case 'host-sched-done': {
        const { type: _t, ...r } = m;
        this.pcpuHost[m.pcpu] = r;
        const w = this.hostSchedWaits.get(m.pcpu)?.shift();
        w?.(r);
        return;
      }
      case 'regs-report': {
        const waiting = this.regsQueries.get(m.domid) ?? [];
        this.regsQueries.delete(m.domid);
        for (const w of waiting) w(m);
        return;
      }
      case 'physmap-report': {
        const waiting = this.physmapQueries.get(m.domid) ?? [];
        this.physmapQueries.delete(m.domid);
        for (const w of waiting) w(m.segments);
        return;
      }
      case 'log':
        this.emit('log', m.level, m.text);
        return;
      case 'ready':
        return;
    }
  }

  /** Passes a message between the workers holding one domain. */
  private relay(m: Relay): void {
    const r = this.domains.get(m.domid);
    if (!r || r.pcpu < 0) return;
    switch (m.type) {
      case 'hcall': this.send(r.pcpu, m); return;
      case 'hcall-done': this.send(m.to, m); return;
      case 'physmap': for (const p of r.hosts) if (p !== r.pcpu) this.send(p, m); return;
      case 'vcpu-up':
      case 'vcpu-down': this.send(r.placement[m.vcpu]!, m); return;
    }
  }

  /** Posts a control message and makes sure the worker sees it soon: rings its doorbell, kicks it out of KVM_RUN. */
  private send(pcpu: number, m: MainToWorker): void {
    this.workers[pcpu]!.postMessage(m);
    this.host.ring(pcpu);
    if (this.host.isRunning(pcpu)) kick({ pid: process.pid, tid: this.tids[pcpu]! });
  }

  // --- domctl ----------------------------------------------------------------

  /** XEN_DOMCTL_createdomain + max_vcpus + memory: a paused domain ready for the builder. */
  createDomain(o: DomainCreateOptions): DomainBuild {
    if (!Number.isInteger(o.vcpus) || o.vcpus < 1 || o.vcpus > 128) throw new RangeError(`vcpus must be 1..128, got ${o.vcpus}`);
    const pool = o.pool ?? 0;
    const cp = this.cpupools.find(pool);
    if (!cp || typeof pool !== 'number') throw new RangeError(`no cpupool ${pool}`);
    for (let v = 0; v < o.vcpus; v++) this.candidates(cp, o.hard?.[v] ?? null, v); // throws if vCPU v could run nowhere
    if (!(o.memoryMiB >= 1) || o.memoryMiB > 1 << 20) throw new RangeError(`memory must be at least 1 MiB, got ${o.memoryMiB}`);
    const exclusiveMs = o.exclusiveMs ?? 0;
    if (!Number.isInteger(exclusiveMs) || exclusiveMs < 0 || exclusiveMs > EXCLUSIVE_MAX_MS) throw new RangeError(`exclusive_ms must be an integer in 0..${EXCLUSIVE_MAX_MS}, got ${o.exclusiveMs}`);
    const ramPages = Math.floor(o.memoryMiB * 256);
    const maxPages = Math.max(ramPages, Math.floor((o.maxMemMiB ?? o.memoryMiB) * 256));
    const domid = this.allocDomid();
    const maxPort = o.maxEvtchnPort ?? 1023;
    // Ports above 4095 are usable only once the guest switches to FIFO; none exist beyond its 17-bit LINK field.
    if (!Number.isInteger(maxPort) || maxPort < 1 || maxPort >= EVTCHN_FIFO_NR_CHANNELS) throw new RangeError(`max event-channel port must be 1..${EVTCHN_FIFO_NR_CHANNELS - 1}, got ${maxPort}`);
    const shared = DomainShared.create(domid, o.vcpus, maxPort);
    const physmap = new Physmap({ ramPages, maxGrantFrames: o.maxGrantFrames ?? 32, poolPages: maxPages - ramPages + POOL_SLACK_PAGES, acpiPages: o.acpiPages ?? 0 });
    const mem = SharedMemory.create(`xenode-d${domid}`, physmap.bytes);
    GrantTable.initialise(mem.bytes, physmap.layout);
    let vm: Vm | null = null;
    const vcpus: Vcpu[] = [];
    if (!this.kvm || !this.vmPool) {
      const host = tcgSupportedCpuid();
      this.pendingTcg.set(domid, { cpuid: Array.from({ length: o.vcpus }, (_, i) => xenCpuid(host, { domid, vcpuId: i, tscKhz: this.tscKhz })), entry: null });
    } else try {
      vm = this.vmPool.take();
      const host = this.supportedCpuid();
      const tables: CpuidEntry[][] = [];
      for (let i = 0; i < o.vcpus; i++) {
        const v = vm.createVcpu(i);
        tables.push(xenCpuid(host, { domid, vcpuId: i, tscKhz: this.tscKhz }));
        v.setCpuid(tables[i]!);
        vcpus.push(v);
      }
      if (this.accel.fallback) this.pendingSoftware.set(domid, tables);
    } catch (e) {
      for (const v of vcpus) v.close();
      vm?.close();
      mem.close();
      throw e;
    }
    shared.set('state', DOMSTATE.building);
    shared.set('pauseCount', 1);
    shared.set('isPrivileged', o.privileged ? 1 : 0);
    shared.set('isConsole', o.isConsole ? 1 : 0);
    shared.set('exclusiveMaxUs', exclusiveMs * 1000);
    shared.set('sharedInfoOffset', physmap.sharedInfoPage * PAGE_SIZE);
    shared.setVcpu(0, 'state', RUNSTATE.runnable);
    const rec: DomainRecord = { domid, name: o.name, shared, mem, evtchn: { shared, mem: mem.bytes }, pcpu: -1, placement: [], hosts: [], releasing: 0, memoryMap: new Uint8Array(0), memoryKiB: ramPages * 4, maxPages, layout: physmap.layout, vm: vm ?? undefined, vcpuFds: vcpus.map((v) => v.fd), pool, hard: o.hard ?? [], soft: o.soft ?? [] };
    this.domains.set(domid, rec);
    this.host.setDomainExists(domid, true);
    if (vm) this.pendingVcpus.set(domid, vcpus);
    return { domid, name: o.name, physmap, mem, shared, params: {}, maxPages, options: o };
  }

  /** The CPUID leaves the CPU that runs guests implements (before Xen's are added). */
  supportedCpuid(): CpuidEntry[] {
    // A vCPU that may move to the software CPU is offered only what both CPUs can run.
    if (this.kvm && this.accel.fallback) return commonCpuid(this.kvm.supportedCpuid(), tcgSupportedCpuid());
    return this.kvm ? this.kvm.supportedCpuid() : tcgSupportedCpuid();
  }

  /** Sets vCPU `id`'s initial register state (the builder's job before unpause). */
  setVcpuContext(domid: number, id: number, st: PvhEntryState): void {
    const t = this.pendingTcg.get(domid);
    if (t) {
      // The software CPU's vCPUs start with vCPU 0's entry; the others are brought up by VCPUOP_initialise.
      if (id !== 0) throw new Error(`d${domid}: only vCPU 0 has an entry state before start`);
      t.entry = { regs: st.regs, segs: st.segs, gdt: st.gdt, idt: st.idt, cr0: st.cr0, cr3: st.cr3, cr4: st.cr4, efer: st.efer, msrs: st.msrs };
      return;
    }
    const v = this.pendingVcpus.get(domid)?.[id];
    if (!v) throw new Error(`d${domid}: no vCPU ${id} being built`);
    v.setInitialState({ regs: st.regs, segs: st.segs, gdt: st.gdt, idt: st.idt, cr0: st.cr0, cr3: st.cr3, cr4: st.cr4, efer: st.efer });
    if (st.msrs.length) v.setMsrs(st.msrs);
  }

  /**
   * Hands the built domain to its pCPUs and lets it run, or leaves it paused
   * (pause count 1) when `paused`: the count is set before any worker hears of
   * the domain, so not one guest instruction runs before the caller unpauses.
   */
  startDomain(b: DomainBuild, memoryMap: Uint8Array, start: { paused?: boolean } = {}): void {
    const rec = this.domains.get(b.domid);
    const vcpus = this.pendingVcpus.get(b.domid);
    const tcg = this.pendingTcg.get(b.domid);
    const software = this.pendingSoftware.get(b.domid);
    if (!rec || (!vcpus && !tcg)) throw new Error(`d${b.domid} is not being built`);
    if (tcg && !tcg.entry) throw new Error(`d${b.domid}: vCPU 0 has no entry state`);
    this.pendingVcpus.delete(b.domid);
    this.pendingTcg.delete(b.domid);
    this.pendingSoftware.delete(b.domid);
    for (const v of vcpus ?? []) v.release();
    rec.vm?.release();
    rec.memoryMap = memoryMap;
    const placement = this.place(rec);
    // A software-CPU domain's vCPUs share one worker, beside their TcgVm (see Domain).
    if (tcg || software) placement.fill(placement[0]!);
    const pcpu = placement[0]!;
    rec.pcpu = pcpu;
    rec.placement = placement;
    rec.hosts = [...new Set(placement)];
    rec.releasing = rec.hosts.length;
    const o = b.options;
    const spec: DomainSpec = {
      domid: b.domid, name: b.name, vmFd: rec.vm?.fd ?? -1, memFd: b.mem.fd, layout: b.physmap.layout, vcpuFds: rec.vcpuFds,
      accel: tcg ? 'tcg' : 'kvm', tcg: tcg ? { entry: tcg.entry!, cpuid: tcg.cpuid } : undefined,
      software: software ? { cpuid: software, kernelInSoftware: this.accel.kernelInSoftware } : undefined,
      sharedSab: b.shared.sab, params: b.params,
      timeBase: this.timeBase, tscKhz: this.tscKhz, handle: o.uuid ?? new Uint8Array(16), memoryMap, placement,
      maxMaptrackFrames: o.maxMaptrackFrames,
    };
    rec.spec = spec;
    rec.homeReady = new Promise<void>((resolve, reject) => {
      rec.setUp = (error) => {
        rec.setUp = undefined;
        if (error) reject(new Error(`d${b.domid} could not be set up on pCPU ${pcpu}: ${error.split('\n')[0]}`));
        else resolve();
      };
    });
    rec.homeReady.catch(() => {});
    b.shared.set('maxPages', b.maxPages);
    b.shared.set('totPages', b.physmap.layout.ramPages);
    b.shared.set('pauseCount', start.paused ? 1 : 0);
    // Every other worker learns of it first, so its vCPUs can send events to this domain.
    for (let i = 0; i < this.nrPcpus; i++) {
      if (!rec.hosts.includes(i)) this.workers[i]!.postMessage({ type: 'known', domid: b.domid, sharedSab: b.shared.sab, memFd: b.mem.fd, bytes: b.physmap.bytes, layout: b.physmap.layout } satisfies MainToWorker);
    }
    // The other holders first: whatever the home worker relays to them later finds the domain there.
    for (const p of rec.hosts) if (p !== pcpu) this.send(p, { type: 'adopt', spec });
    this.send(pcpu, { type: 'adopt', spec });
  }

  /** The pCPUs vCPU `v` may run on: its pool's, within its hard affinity; an error if none. */
  private candidates(pool: Cpupool, hard: number[] | null, v: number): number[] {
    const cpus = [...pool.cpus].sort((a, b) => a - b).filter((c) => !hard || hard.includes(c));
    if (!cpus.length) {
      throw new RangeError(pool.cpus.size ? `vCPU ${v}: no pCPU of cpupool '${pool.name}' (${[...pool.cpus].join(',')}) is in its hard affinity (${hard!.join(',')})` : `cpupool '${pool.name}' has no cpus`);
    }
    return cpus;
  }

  /**
   * Places each vCPU of a new domain on the least-loaded pCPU of its cpupool
   * within its hard affinity, preferring its soft affinity (counting vCPUs
   * already placed, this domain's included), so a domain's vCPUs run in
   * parallel when there are pCPUs for them.
   */
  private place(rec: DomainRecord): number[] {
    const load = this.placedLoad();
    const pool = this.cpupools.get(rec.pool);
    const out: number[] = [];
    for (let v = 0; v < rec.shared.nrVcpus; v++) {
      const hard = this.candidates(pool, rec.hard[v] ?? null, v);
      const soft = rec.soft[v];
      const preferred = soft ? hard.filter((c) => soft.includes(c)) : [];
      const from = preferred.length ? preferred : hard;
      let best = from[0]!;
      for (const c of from) if (load[c]! < load[best]!) best = c;
      out.push(best);
      load[best]!++;
    }
    return out;
  }

  private allocDomid(): number {
    for (let tries = 0; tries < 0x7fef; tries++) {
      const id = this.nextDomid;
      this.nextDomid = this.nextDomid >= 0x7fef ? 1 : this.nextDomid + 1;
      if (!this.domains.has(id) && !this.processDomains.has(id)) return id;
    }
    throw new Error('no free domain id');
  }

  /**
   * Moves vCPU `v` of a running KVM domain to pCPU `to` (vcpu-pin to a pCPU
   * it is not on, as Xen migrates a vCPU whose hard affinity no longer has its
   * pCPU): its worker lets it go at the end of its slice, hands over what it
   * kept of it, and `to` runs it from then on, holding the domain from then on
   * if it did not. A software-CPU domain's vCPUs all run beside its one
   * memory map on one worker, so they are not moved.
   */
  async moveVcpu(domid: number, v: number, to: number, poolId?: number): Promise<void> {
    const r = this.record(domid);
    const pool = this.cpupools.get(poolId ?? r.pool);
    if (!Number.isInteger(v) || v < 0 || v >= r.shared.nrVcpus) throw new RangeError(`domain ${domid} has no vCPU ${v}`);
    if (!Number.isInteger(to) || to < 0 || to >= this.nrPcpus) throw new RangeError(`no pCPU ${to}`);
    if (r.pcpu < 0 || !r.spec) throw new Error(`domain ${domid} is not running on any pCPU yet`);
    if (!this.movable(r)) throw new Error(`domain ${domid} runs on the software CPU, whose vCPUs share one worker: they are not moved`);
    if (!pool.cpus.has(to)) throw new RangeError(`pCPU ${to} is not in cpupool '${pool.name}'`);
    const key = `${domid}.${v}`;
    if (this.moves.has(key)) throw new Error(`vCPU ${v} of domain ${domid} is being moved already`);
    const from = r.placement[v]!;
    if (from === to) return;
    const ask = <T extends 'vcpu-moved' | 'vcpu-moved-in'>(pcpu: number, m: MainToWorker, type: T) =>
      new Promise<Extract<WorkerToMain, { type: T }>>((resolve, reject) => {
        const t = setTimeout(() => { this.moves.delete(key); reject(new Error(`pCPU ${pcpu} did not answer the move of vCPU ${v} of d${domid} within 5 s`)); }, 5000);
        this.moves.set(key, (a) => {
          if (a.type !== type) return;
          clearTimeout(t);
          this.moves.delete(key);
          resolve(a as Extract<WorkerToMain, { type: T }>);
        });
        this.send(pcpu, m);
      });
    // Out of its worker: a vCPU waiting for a call the home performs, or for the machine, is asked again shortly.
    let out: Extract<WorkerToMain, { type: 'vcpu-moved' }>;
    for (let tries = 0; ; tries++) {
      out = await ask(from, { type: 'vcpu-move', domid, vcpu: v, to }, 'vcpu-moved');
      if (!out.busy) break;
      if (tries >= 100) throw new Error(`vCPU ${v} of domain ${domid} stayed busy on pCPU ${from}`);
      await new Promise((res) => setTimeout(res, 10));
    }
    if (out.error || !out.state) throw new Error(out.error ?? 'no state handed over');
    // destroyed, or being destroyed, meanwhile: no new worker is to hold it (its destroy went to the others)
    if (!this.domains.has(domid) || r.destroyed) return;
    // The new worker holds the domain before it hears of the vCPU (an adopt after the others' relays start
    // reaching it, so it reads the published map no older than they are).
    if (!r.hosts.includes(to)) {
      r.hosts.push(to);
      r.releasing++;
      this.send(to, { type: 'adopt', spec: { ...r.spec, placement: [...r.placement] }, late: true });
    }
    r.placement[v] = to;
    const done = await ask(to, { type: 'vcpu-move-in', domid, vcpu: v, state: out.state }, 'vcpu-moved-in');
    if (done.error) throw new Error(done.error);
    r.spec.placement = [...r.placement];
  }

  pause(domid: number): void {
    const r = this.record(domid);
    r.shared.add('pauseCount', 1);
    for (const p of r.hosts) this.send(p, { type: 'pause', domid });
    this.kickDomain(r);
  }

  unpause(domid: number): void {
    const r = this.record(domid);
    if (r.shared.get('pauseCount') > 0) r.shared.add('pauseCount', -1);
    for (const p of r.hosts) this.send(p, { type: 'unpause', domid });
  }

  /**
   * SCHEDOP_remote_shutdown as the control domain issues it (xc_domain_shutdown):
   * shuts the domain down with `reason` as if it had called SCHEDOP_shutdown
   * itself (a code latched with SHUTDOWN_code still wins), paused or not. The
   * 'shutdown' event follows from its home worker; false when the domain is
   * not running (already shut down, dying, or never started). A domain just
   * started may still be 'building' until its worker adopts it: the request
   * follows the adoption on the same worker's queue.
   */
  remoteShutdown(domid: number, reason: number, detail = 'shut down by the control domain'): boolean {
    if (!Number.isInteger(reason) || reason < 0 || reason > 0xff) throw new RangeError(`shutdown reason must be 0..255, got ${reason}`);
    const r = this.record(domid);
    const state = r.shared.get('state');
    if (r.pcpu < 0 || (state !== DOMSTATE.running && state !== DOMSTATE.building)) return false;
    this.send(r.pcpu, { type: 'shutdown', domid, reason, detail });
    return true;
  }

  /** tot_pages: the builder's RAM until the domain starts, then what the hypervisor accounts. */
  private totPagesOf(r: DomainRecord): number {
    return r.pcpu < 0 ? r.memoryKiB / 4 : r.shared.get('totPages');
  }

  private maxPagesOf(r: DomainRecord): number {
    return r.pcpu < 0 ? r.maxPages : r.shared.get('maxPages');
  }

  /** The most max_pages may be: the frames the domain's memory was made with room for. */
  maxMemLimitKiB(domid: number): number {
    return this.record(domid).maxPages * 4;
  }

  /**
   * XEN_DOMCTL_max_mem: the reservation limit populate_physmap and
   * increase_reservation enforce from the next call on. Frames already held
   * above it stay (Xen takes nothing back). Above the room the domain's
   * memory was made with it is a RangeError: nothing could back the frames.
   */
  setMaxMem(domid: number, kib: number): void {
    const r = this.record(domid);
    const pages = Math.ceil(kib / 4);
    if (!Number.isInteger(pages) || pages < 0 || pages > r.maxPages) {
      throw new RangeError(`max memory ${kib} KiB: d${domid}'s memory was made for at most ${r.maxPages * 4} KiB`);
    }
    r.shared.set('maxPages', pages);
  }

  /**
   * The domain's physmap as its home worker has it now (the worker that
   * changes it); for a paused domain it then stays so. Rejects if the worker
   * does not answer within `timeoutMs` (the domain went away meanwhile).
   */
  queryPhysmap(domid: number, timeoutMs = 5000): Promise<Segment[]> {
    const r = this.record(domid);
    if (r.pcpu < 0) return Promise.reject(new Error(`d${domid} has not started`));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const list = this.physmapQueries.get(domid);
        if (list) this.physmapQueries.set(domid, list.filter((w) => w !== done));
        reject(new Error(`d${domid}: its pCPU worker did not report the physmap within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (segments: Segment[]): void => { clearTimeout(t); resolve(segments); };
      const list = this.physmapQueries.get(domid) ?? [];
      list.push(done);
      this.physmapQueries.set(domid, list);
      this.send(r.pcpu, { type: 'physmap-query', domid });
    });
  }

  /**
   * Each vCPU's registers as KVM holds them (kvm_regs and kvm_sregs), for a
   * domain whose vCPUs are all out of KVM_RUN (paused, or shut down). The
   * kvm_run page is mapped here as well: after an exit its sync area has the
   * state KVM left plus what the worker wrote back (a hypercall's result),
   * which KVM_GET_REGS would not show until the next entry; a vCPU never
   * entered has its initial state in KVM only.
   */
  vcpuRegisters(domid: number): { regs: Uint8Array; sregs: Uint8Array }[] {
    const r = this.record(domid);
    if (!r.vm) throw new Error(`d${domid} has no KVM vCPUs to read`);
    for (let v = 0; v < r.shared.nrVcpus; v++) {
      if (r.shared.vcpu(v, 'state') === RUNSTATE.running) throw new Error(`d${domid} vCPU ${v} is running: pause the domain first`);
    }
    const size = r.vm.kvm.vcpuMmapSize;
    return r.vcpuFds.map((fd) => {
      // our own read-only view of the kvm_run page: nothing here can disturb the vCPU the worker runs
      const p = libc.mmap(null, size, libc.PROT_READ, libc.MAP_SHARED, fd, 0);
      if (libc.isMapFailed(p)) throw new libc.OsError('mmap(kvm_run)', libc.errno());
      try {
        const run = new Uint8Array(libc.view(p, size));
        if (new DataView(run.buffer).getUint32(RUN.exit_reason, true) !== 0) {
          const base = RUN.sync_regs;
          return { regs: run.slice(base + SYNC.regs, base + SYNC.regs + KVM_REGS_SIZE), sregs: run.slice(base + SYNC.sregs, base + SYNC.sregs + KVM_SREGS_SIZE) };
        }
        const regs = new Uint8Array(KVM_REGS_SIZE);
        const sregs = new Uint8Array(KVM_SREGS_SIZE);
        libc.check(libc.ioctlPtr(fd, KVM_GET_REGS, regs), 'KVM_GET_REGS');
        libc.check(libc.ioctlPtr(fd, KVM_GET_SREGS, sregs), 'KVM_GET_SREGS');
        return { regs, sregs };
      } finally {
        libc.munmap(p, size);
      }
    });
  }

  /**
   * Each vCPU's registers in KVM's layout, for a domain whose vCPUs are out
   * of their runs (paused, or shut down): read here from KVM, or asked of
   * the home worker, where the software CPU's vCPUs are (and those that may
   * have moved there from KVM).
   */
  queryVcpuRegisters(domid: number, timeoutMs = 5000): Promise<{ regs: Uint8Array; sregs: Uint8Array }[]> {
    const r = this.record(domid);
    if (r.vm && !r.spec?.software) return Promise.resolve(this.vcpuRegisters(domid));
    if (r.pcpu < 0) return Promise.reject(new Error(`d${domid} has not started`));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const list = this.regsQueries.get(domid);
        if (list) this.regsQueries.set(domid, list.filter((w) => w !== done));
        reject(new Error(`d${domid}: its pCPU worker did not report the vCPUs' registers within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (m: Extract<WorkerToMain, { type: 'regs-report' }>): void => {
        clearTimeout(t);
        if (m.error) reject(new Error(`d${domid}: reading its vCPUs' registers: ${m.error}`));
        else resolve(m.vcpus);
      };
      const list = this.regsQueries.get(domid) ?? [];
      list.push(done);
      this.regsQueries.set(domid, list);
      this.send(r.pcpu, { type: 'regs-query', domid });
    });
  }

  /** A copy of the domain's shared_info page (Xen-owned, wherever the guest mapped it). */
  sharedInfoCopy(domid: number): Uint8Array {
    const r = this.record(domid);
    const off = r.shared.get('sharedInfoOffset');
    return r.mem.bytes.slice(off, off + PAGE_SIZE);
  }

  /** Destroys a domain (any state); resolves when its worker has released it. */
  // --- scheduling (XEN_DOMCTL_scheduler_op, XEN_SYSCTL_scheduler_op) ---------

  /** XEN_DOMCTL_SCHEDOP_putinfo: a domain's (or one vCPU's) parameters under its pool's scheduler; RangeError for bad ones, which change nothing. */
  schedAdjust(domid: number, params: SchedParams, vcpu?: number): void {
    const r = this.domains.get(domid);
    if (!r) throw new RangeError(`no domain ${domid}`);
    if (vcpu !== undefined && (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= r.shared.nrVcpus)) throw new RangeError(`d${domid} has no vCPU ${vcpu}`);
    const pool = this.cpupools.get(r.pool);
    pool.shadow.adjust(domid, params, vcpu);
    for (const p of pool.cpus) this.send(p, { type: 'sched-adjust', domid, params: { ...params }, vcpu });
  }

  /** XEN_DOMCTL_SCHEDOP_getinfo, with the scheduler it is under. */
  schedParams(domid: number, vcpu?: number): SchedParams {
    const r = this.domains.get(domid);
    if (!r) throw new RangeError(`no domain ${domid}`);
    return this.cpupools.get(r.pool).shadow.params(domid, vcpu);
  }

  /** The cpupool a domain is in. */
  /** Which CPU runs the domain's vCPUs, in words (before it starts: what will). */
  domainCpu(domid: number): string {
    const spec = this.domains.get(domid)?.spec;
    if (spec) return domainCpu(spec);
    return domainCpu({ accel: this.accel.accel === 'kvm' ? 'kvm' : 'tcg', software: this.accel.fallback ? { cpuid: [], kernelInSoftware: this.accel.kernelInSoftware } : undefined });
  }

  domainPool(domid: number): number {
    const r = this.domains.get(domid);
    if (!r) throw new RangeError(`no domain ${domid}`);
    return r.pool;
  }

  /** XEN_SYSCTL_SCHEDOP_putinfo for credit2 (ratelimit_us) and credit (tslice_ms, ratelimit_us). */
  schedPoolSet(poolId: number, p: { ratelimitUs?: number; tsliceMs?: number }): void {
    const pool = this.cpupools.get(poolId);
    const sh = pool.shadow;
    if (sh instanceof Credit2) {
      if (p.tsliceMs !== undefined) throw new RangeError('credit2 has no tslice_ms');
      if (p.ratelimitUs !== undefined) sh.setRatelimit(p.ratelimitUs);
    } else if (sh instanceof Credit) sh.setPoolParams(p);
    else throw new RangeError(`the ${pool.sched} scheduler has no pool parameters`);
    for (const c of pool.cpus) this.send(c, { type: 'sched-pool', ...this.schedPoolGet(poolId) });
  }

  schedPoolGet(poolId: number): { ratelimitUs?: number; tsliceMs?: number } {
    const sh = this.cpupools.get(poolId).shadow;
    if (sh instanceof Credit2) return { ratelimitUs: sh.ratelimitUs };
    if (sh instanceof Credit) return sh.poolParams;
    return {};
  }

  /**
   * xc_sched_arinc653_schedule_set: every pCPU of the pool gets the schedule
   * with the same epoch (the next millisecond boundary but one from now), so
   * their frames stay in step.
   */
  setArinc653Schedule(s: Arinc653Schedule, poolId = 0): bigint {
    const pool = this.cpupools.get(poolId);
    if (pool.sched !== 'arinc653') throw new RangeError(`cpupool '${pool.name}' runs ${pool.sched}, not arinc653`);
    checkSchedule(s);
    const epoch = (systemTimeNs(this.timeBase) / 1_000_000n + 2n) * 1_000_000n;
    const schedule = { majorFrame: s.majorFrame, entries: s.entries.map((e) => ({ ...e })) };
    pool.arinc653 = { schedule, epoch };
    for (const p of pool.cpus) this.send(p, { type: 'sched-arinc653', schedule, epoch });
    return epoch;
  }

  /** xc_sched_arinc653_schedule_get. */
  getArinc653Schedule(poolId = 0): { schedule: Arinc653Schedule; epoch: bigint } | null {
    return this.cpupools.get(poolId).arinc653;
  }

  // --- cpupools (XEN_SYSCTL_cpupool_op) ---------------------------------------

  /** Pools with their domain counts. */
  cpupoolList(): (CpupoolInfo & { domains: number })[] {
    return this.cpupools.list().map((p) => ({ ...p, domains: this.poolDomains(p.id).length }));
  }

  private poolDomains(id: number): number[] {
    return [...this.domains.values()].filter((r) => r.pool === id).map((r) => r.domid);
  }

  cpupoolCreate(name: string, sched: string): number {
    return this.cpupools.create(name, sched).id;
  }

  /** libxl_cpupool_destroy: with no domains left, its pCPUs become free and the pool goes. */
  cpupoolDestroy(id: number): void {
    const pool = this.cpupools.get(id);
    const n = this.poolDomains(id).length;
    if (id !== 0 && !n) for (const c of [...pool.cpus]) this.cpupools.removeCpu(id, c, null, 0);
    this.cpupools.destroy(id, n);
  }

  cpupoolRename(id: number, name: string): void {
    this.cpupools.rename(id, name);
  }

  /** A free pCPU joins a pool: its worker switches to the pool's scheduler, with the pool's parameters. */
  cpupoolCpuAdd(id: number, cpu: number): void {
    const pool = this.cpupools.addCpu(id, cpu);
    const params: { domid: number; vcpu?: number; params: SchedParams }[] = [];
    for (const domid of this.poolDomains(id)) {
      params.push({ domid, params: pool.shadow.params(domid) });
      if (pool.sched === 'rtds') for (let v = 0; v < this.domains.get(domid)!.shared.nrVcpus; v++) params.push({ domid, vcpu: v, params: pool.shadow.params(domid, v) });
    }
    this.send(cpu, { type: 'sched-set', sched: pool.sched, pool: this.schedPoolGet(id), params, arinc653: pool.arinc653 });
    if (pool.host.pin || pool.host.rtPriority) this.hostSchedPcpu(cpu, pool.host).catch((e: Error) => this.emit('log', 'error', e.message));
  }

  /**
   * The pCPU leaves the pool, free. The vCPUs of KVM domains placed on it move first to the pool's other
   * pCPUs within their hard affinity, as Xen's cpu_disable_scheduler moves them; vCPUs that cannot move
   * (a software-CPU domain's, or with nowhere else to go) keep it in the pool, with the reason.
   */
  async cpupoolCpuRemove(id: number, cpu: number): Promise<void> {
    const pool = this.cpupools.get(id);
    if (pool.cpus.has(cpu)) {
      for (const r of [...this.domains.values()]) {
        if (!this.movable(r)) continue;
        for (let v = 0; v < r.placement.length; v++) {
          if (r.placement[v] !== cpu || r.pool !== id) continue;
          const to = this.leastLoaded([...pool.cpus].filter((c) => c !== cpu && (!r.hard[v] || r.hard[v]!.includes(c))));
          if (to === null) continue;
          try {
            await this.moveVcpu(r.domid, v, to);
          } catch (e) {
            throw new CpupoolError('EBUSY', `moving vCPU ${v} of d${r.domid} off pCPU ${cpu}: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
      }
    }
    const on = [...this.domains.values()].filter((r) => r.placement.includes(cpu)).map((r) => `d${r.domid}`);
    this.cpupools.removeCpu(id, cpu, on.length ? `vCPUs of ${on.join(', ')} (a software-CPU domain's vCPUs are not moved, nor one whose hard affinity has no other pCPU of the pool)` : null, this.poolDomains(id).length);
    // A free pCPU goes back to running anywhere at the normal priority.
    if (pool.host.pin || pool.host.rtPriority) this.hostSchedPcpu(cpu, { pin: false, rtPriority: 0 }).catch((e: Error) => this.emit('log', 'error', e.message));
  }

  /**
   * The host side of real time for a pool (a xenode extension; Xen owns its
   * CPUs): each of its pCPUs' worker threads (and, on the software CPU, its
   * kick helper) pinned to one host CPU (pCPU n to the n-th CPU this process
   * may use, wrapping), and put in SCHED_FIFO at `rtPriority` (0: SCHED_OTHER).
   * pCPUs that join the pool later get the same. Resolves with what each
   * pCPU got; a host refusal (no CAP_SYS_NICE, a CPU outside the cpuset) is
   * reported there, per pCPU, saying what the host must provide.
   */
  async cpupoolHostSched(id: number, o: { pin: boolean; rtPriority: number }): Promise<PcpuHostSched[]> {
    const pool = this.cpupools.get(id);
    const max = fifoPriorityMax();
    if (!Number.isInteger(o.rtPriority) || o.rtPriority < 0 || o.rtPriority > max) throw new RangeError(`real-time priority must be 0 (none) or 1..${max}, got ${o.rtPriority}`);
    pool.host = { pin: o.pin, rtPriority: o.rtPriority };
    return Promise.all([...pool.cpus].sort((a, b) => a - b).map((c) => this.hostSchedPcpu(c, pool.host)));
  }

  private hostSchedPcpu(pcpu: number, o: { pin: boolean; rtPriority: number }): Promise<PcpuHostSched> {
    const host = getAffinity(0);
    const cpus = o.pin ? [host[pcpu % host.length]!] : null;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`pCPU ${pcpu}: its worker did not answer the host-sched request within 5 s`)), 5000);
      const l = this.hostSchedWaits.get(pcpu) ?? [];
      l.push((r) => { clearTimeout(t); resolve(r); });
      this.hostSchedWaits.set(pcpu, l);
      this.send(pcpu, { type: 'host-sched', cpus, rtPriority: o.rtPriority });
    });
  }

  /** The vCPUs placed on each pCPU, every domain's. */
  private placedLoad(): number[] {
    const load = new Array<number>(this.nrPcpus).fill(0);
    for (const r of this.domains.values()) for (const p of r.placement) load[p]!++;
    return load;
  }

  /** Of `cpus`, the one with the fewest vCPUs placed (the lowest on a tie); null for none. */
  private leastLoaded(cpus: number[]): number | null {
    const load = this.placedLoad();
    return [...cpus].sort((a, b) => load[a]! - load[b]! || a - b)[0] ?? null;
  }

  /** A running domain's vCPUs can move between pCPUs: a KVM domain's (a software-CPU domain's share one worker). */
  private movable(r: DomainRecord): boolean {
    return r.pcpu >= 0 && !!r.spec && r.spec.accel === 'kvm' && !r.spec.software;
  }

  /**
   * xl cpupool-migrate (sched_move_domain): the domain changes pool, a running KVM domain's vCPUs moving to
   * the new pool's pCPUs (each to the least loaded in its hard affinity); the new pool's scheduler takes it
   * with its defaults. A running software-CPU domain is not moved (its vCPUs share one worker).
   */
  async cpupoolMigrate(domid: number, id: number): Promise<void> {
    const r = this.domains.get(domid);
    if (!r) throw new RangeError(`no domain ${domid}`);
    const pool = this.cpupools.get(id);
    if (r.pool === id) return;
    for (let v = 0; v < r.shared.nrVcpus; v++) this.candidates(pool, r.hard[v] ?? null, v);
    if (r.pcpu >= 0) {
      if (!this.movable(r)) {
        throw new CpupoolError('EBUSY', `d${domid} is running on pCPUs of cpupool '${this.cpupools.get(r.pool).name}' on the software CPU, whose vCPUs share one worker: they are not moved`);
      }
      for (let v = 0; v < r.shared.nrVcpus; v++) await this.moveVcpu(domid, v, this.leastLoaded(this.candidates(pool, r.hard[v] ?? null, v))!, id);
      this.cpupools.get(r.pool).shadow.removeDomain(domid);
    }
    r.pool = id;
  }

  /** Who has the machine to itself now (xl info's xenode_exclusive). */
  exclusive(): ExclusiveInfo {
    const s = exclusiveState(this.host);
    let stopped = 0;
    for (let p = 0; p < this.nrPcpus; p++) if (s.holder && this.host.exclusiveAck(p) === s.epoch) stopped++;
    const last = s.previous ? { domid: s.previous, how: EXCLUSIVE_END_NAMES[s.endReason] ?? '?' } : null;
    if (!s.holder) return { domid: null, name: null, since: 0n, expires: 0n, stopped: 0, last };
    return { domid: s.holder, name: this.domains.get(s.holder)?.name ?? null, since: s.requested, expires: s.expires, stopped, last };
  }

  /** The right a domain was given (exclusive_ms), 0 = none. */
  exclusiveGrantMs(domid: number): number {
    return this.record(domid).shared.get('exclusiveMaxUs') / 1000;
  }

  /** Turns the scheduling trace on or off on every pCPU (xentrace starting and stopping). */
  setSchedTrace(on: boolean): void {
    for (const t of this.traces) t.enabled = on;
  }

  /** The trace records of one pCPU written after `since` (see TraceRing.read). */
  readSchedTrace(pcpu: number, since = 0): { records: TraceRecord[]; next: number; lost: number } {
    const t = this.traces[pcpu];
    if (!t) throw new RangeError(`no pCPU ${pcpu}`);
    return t.read(since);
  }

  destroy(domid: number): Promise<void> {
    const r = this.domains.get(domid);
    if (!r) return Promise.resolve();
    r.shared.set('state', DOMSTATE.dying);
    // The machine is given back at once, before its workers let the domain go.
    releaseExclusive(this.host, domid, EXCLUSIVE_END.gone);
    if (r.pcpu < 0) {
      // never started: release what the builder held
      for (const v of this.pendingVcpus.get(domid) ?? []) v.close();
      this.pendingVcpus.delete(domid);
      this.pendingSoftware.delete(domid);
      this.pendingTcg.delete(domid);
      r.vm?.close();
      r.mem.close();
      this.domains.delete(domid);
      this.host.setDomainExists(domid, false);
      this.emit('destroyed', domid);
      return Promise.resolve();
    }
    if (r.destroyed) return new Promise((resolve) => { const prev = r.destroyed!; r.destroyed = () => { prev(); resolve(); }; });
    return new Promise((resolve) => {
      r.destroyed = resolve;
      for (const p of r.hosts) this.send(p, { type: 'destroy', domid });
      this.kickDomain(r);
    });
  }

  private kickDomain(r: DomainRecord): void {
    for (let v = 0; v < r.shared.nrVcpus; v++) {
      if (r.shared.vcpu(v, 'state') === RUNSTATE.running) kick({ pid: process.pid, tid: this.tids[r.placement[v]!]! });
    }
  }

  /**
   * XEN_DOMCTL_sendtrigger with XEN_DOMCTL_SENDTRIGGER_NMI: an NMI for one vCPU, taken at its next
   * run (a running vCPU is kicked, a halted one woken). A vCPU that is down keeps it until it runs.
   */
  sendNmi(domid: number, vcpu: number): void {
    const r = this.record(domid);
    if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= r.shared.nrVcpus) throw new RangeError(`domain ${domid} has no vCPU ${vcpu}`);
    const p = r.placement[vcpu];
    if (p === undefined || r.pcpu < 0) throw new Error(`domain ${domid} is not running on any pCPU`);
    this.send(p, { type: 'nmi', domid, vcpu });
  }

  /** Gets a vCPU of a domain to re-check its pending events (wake if blocked, kick if running). */
  wake(domid: number, vcpu: number): void {
    const r = this.domains.get(domid);
    if (!r || r.pcpu < 0) return;
    const p = r.placement[vcpu];
    if (p === undefined) return;
    const st = r.shared.vcpu(vcpu, 'state');
    if (st === RUNSTATE.running) kick({ pid: process.pid, tid: this.tids[p]! });
    else if (st === RUNSTATE.blocked) this.send(p, { type: 'wake', domid, vcpu });
  }

  /**
   * Settles once the domain's home worker holds it: from then on its
   * physmap is published and a grant of its can be mapped from any thread
   * (what a xenstored in another process needs before INTRODUCE).
   */
  whenSetUp(domid: number): Promise<void> {
    const r = this.record(domid);
    if (!r.homeReady) return Promise.reject(new Error(`d${domid} has not started`));
    return r.homeReady;
  }

  private record(domid: number): DomainRecord {
    const r = this.domains.get(domid);
    if (!r) throw new Error(`no domain ${domid}`);
    return r;
  }

  /** System time in microseconds, the clock the workers account CPU time on. */
  private nowUs(): number {
    return Number(systemTimeNs(this.timeBase) / 1000n);
  }

  info(domid: number): DomainInfo | null {
    const r = this.domains.get(domid);
    if (!r) return null;
    let online = 0;
    for (let v = 0; v < r.shared.nrVcpus; v++) if (this.vcpuUp(r, v)) online++;
    return {
      domid, name: r.name, state: r.shared.get('state'), paused: r.shared.get('pauseCount') > 0,
      shutdownReason: r.shared.get('shutdownReason'), vcpus: r.shared.nrVcpus, onlineVcpus: online,
      cpuTimeUs: r.shared.cpuTimeUs(this.nowUs()), memoryKiB: this.totPagesOf(r) * 4, maxMemKiB: this.maxPagesOf(r) * 4,
    };
  }

  /**
   * Is the vCPU up (Xen: no VPF_down)? A shut-down domain's vCPUs are
   * stopped, not down, so Xen still counts them online and xl list shows a
   * preserved domain's vCPUs; their run state here is offline all the same.
   */
  private vcpuUp(r: DomainRecord, v: number): boolean {
    const st = r.shared.get('state');
    if (st === DOMSTATE.shutdown || st === DOMSTATE.crashed) return v === 0 || (r.shared.vcpu(v, 'flags') & VCPU_FLAG_INITIALISED) !== 0;
    return r.shared.vcpu(v, 'state') !== RUNSTATE.offline;
  }

  /**
   * Where vCPU `v` would go within hard affinity `hard`: its pCPU when that is in it, else the pCPU of the
   * domain's cpupool in it with the fewest vCPUs placed (null: none; -1: the domain is not placed yet).
   * `movable`: whether moveVcpu can take it there (a KVM domain; not one on the software CPU).
   */
  vcpuTarget(domid: number, v: number, hard: number[]): { pcpu: number | null; movable: boolean } {
    const r = this.record(domid);
    const movable = this.movable(r);
    if (r.pcpu < 0) return { pcpu: -1, movable };
    const at = r.placement[v]!;
    if (hard.includes(at)) return { pcpu: at, movable };
    return { pcpu: this.leastLoaded([...this.cpupools.get(r.pool).cpus].filter((c) => hard.includes(c))), movable };
  }

  /** vCPU `v`'s hard and soft affinity as the toolstack set them last (xl vcpu-pin): what placement, moves and the balancer honour. */
  setVcpuAffinity(domid: number, v: number, hard: number[] | null, soft: number[] | null): void {
    const r = this.record(domid);
    if (!Number.isInteger(v) || v < 0 || v >= r.shared.nrVcpus) throw new RangeError(`domain ${domid} has no vCPU ${v}`);
    r.hard[v] = hard ? [...hard] : null;
    r.soft[v] = soft ? [...soft] : null;
  }

  /**
   * Load balancing between the pCPUs of each cpupool, as credit2 balances its
   * runqueues: every `periodMs`, where one pCPU of a pool has two or more
   * vCPUs running or waiting to run than another, one KVM vCPU there whose
   * hard affinity allows the other pCPU moves to it (one move a pass; a
   * difference of one stays, so nothing bounces). Off until started.
   */
  startLoadBalancing(periodMs = 100): void {
    if (this.balancer) return;
    this.balancer = setInterval(() => { void this.balanceOnce(); }, periodMs);
    this.balancer.unref();
  }

  stopLoadBalancing(): void {
    if (this.balancer) clearInterval(this.balancer);
    this.balancer = null;
  }

  /** One balancing pass: the move it made, or null. */
  async balanceOnce(): Promise<{ domid: number; vcpu: number; from: number; to: number } | null> {
    if (this.balancing) return null;
    this.balancing = true;
    try {
      for (const info of this.cpupools.list()) {
        const cpus = [...this.cpupools.get(info.id).cpus];
        if (cpus.length < 2) continue;
        const load = new Map(cpus.map((c) => [c, 0]));
        const candidates: { domid: number; vcpu: number; at: number; hard: number[] | null }[] = [];
        for (const r of this.domains.values()) {
          if (r.pcpu < 0 || r.pool !== info.id || r.destroyed) continue;
          const movable = this.movable(r) && r.shared.get('pauseCount') === 0;
          for (let v = 0; v < r.placement.length; v++) {
            const st = r.shared.vcpu(v, 'state');
            const at = r.placement[v]!;
            if ((st !== RUNSTATE.running && st !== RUNSTATE.runnable) || !load.has(at)) continue;
            load.set(at, load.get(at)! + 1);
            if (movable && !this.moves.has(`${r.domid}.${v}`)) candidates.push({ domid: r.domid, vcpu: v, at, hard: r.hard[v] ?? null });
          }
        }
        cpus.sort((a, b) => load.get(b)! - load.get(a)! || a - b);
        const busiest = cpus[0]!, idlest = cpus[cpus.length - 1]!;
        if (load.get(busiest)! - load.get(idlest)! < 2) continue;
        const c = candidates.find((x) => x.at === busiest && (!x.hard || x.hard.includes(idlest)));
        if (!c) continue;
        await this.moveVcpu(c.domid, c.vcpu, idlest);
        this.emit('log', 'info', `d${c.domid}v${c.vcpu}: moved from pCPU ${busiest} (${load.get(busiest)} runnable) to ${idlest} (${load.get(idlest)}) to balance cpupool '${info.name}'`);
        return { domid: c.domid, vcpu: c.vcpu, from: busiest, to: idlest };
      }
      return null;
    } catch (e) {
      this.emit('log', 'warn', `load balancing: ${e instanceof Error ? e.message : String(e)}`);
      return null;
    } finally {
      this.balancing = false;
    }
  }

  /** The pCPU whose worker holds vCPU `v` of a placed domain (-1: not placed yet). */
  vcpuPlacement(domid: number, v: number): number {
    const r = this.domains.get(domid);
    return r && r.pcpu >= 0 ? r.placement[v] ?? -1 : -1;
  }

  /** Per-vCPU state (xl vcpu-list): run state, the pCPU it is placed on, time run, whether it is up. */
  vcpus(domid: number): VcpuInfoSummary[] {
    const r = this.domains.get(domid);
    if (!r) return [];
    const out: VcpuInfoSummary[] = [];
    const now = this.nowUs();
    for (let v = 0; v < r.shared.nrVcpus; v++) {
      out.push({ vcpu: v, state: r.shared.vcpu(v, 'state'), pcpu: r.shared.vcpu(v, 'pcpu'), cpuTimeUs: r.shared.vcpuCpuTimeUs(v, now), up: this.vcpuUp(r, v) });
    }
    return out;
  }

  list(): DomainInfo[] {
    return [...this.domains.keys()].sort((a, b) => a - b).map((d) => this.info(d)!);
  }

  /** The domain's memory as the control domain maps it. */
  memory(domid: number): SharedMemory {
    return this.record(domid).mem;
  }

  /**
   * The control domain's grant device (Linux's gntdev for a dom0): map and
   * copy other domains' grants from this process, as domain 0, with Xen's
   * checks. Backends of the control domain reach guest pages this way.
   */
  readonly gntdev = new Gntdev((domid) => this.grantTable(domid), 0);

  /** A domain's grant table from the main thread: its memfd and its published physmap (null before it runs, or gone). */
  private grantTable(domid: number): GrantTable | null {
    const r = this.domains.get(domid);
    if (!r || r.pcpu < 0) return null;
    if (!r.grant) {
      const bytes = r.mem.bytes;
      const mirrorBase = layoutBases(r.layout).mirrorBase;
      r.grant = new GrantTable({ domid, bytes, layout: r.layout, translate: (gfn) => mirrorLookup(bytes, mirrorBase, gfn), attach: attachByFd(r.mem.fd, r.layout) });
    }
    return r.grant;
  }

  // --- the control domain's event channels ----------------------------------

  evtchnDomain(domid: number): core.EvtchnDomain | null {
    if (domid === 0) return this.dom0;
    return this.domains.get(domid)?.evtchn ?? this.processDomains.get(domid)?.ev ?? null;
  }

  // --- process domains --------------------------------------------------------

  /**
   * A domain for a host process (XEN_DOMCTL_createdomain for a domain the
   * toolstack runs as a process: a driver domain). `domid` asks for that id
   * (a restarted driver domain takes its old one, so the ports its guests
   * left unbound toward it can be bound again); taken ids are refused.
   */
  createProcessDomain(o: { name: string; domid?: number; privileged?: boolean }): ProcessDomainInfo {
    let domid = o.domid;
    if (domid === undefined) domid = this.allocDomid();
    else if (!Number.isInteger(domid) || domid < 1 || domid >= 0x7ff0) throw new RangeError(`domid ${domid}: not a domain id a domain may have`);
    else if (this.domains.has(domid) || this.processDomains.has(domid)) throw new Error(`domid ${domid} is in use`);
    const pd = new ProcessDomain({ domid, name: o.name, privileged: o.privileged ?? false }, this.evtchnHost, (id) => this.grantTable(id));
    this.processDomains.set(domid, pd);
    this.host.setDomainExists(domid, true);
    for (const w of this.workers) w.postMessage({ type: 'known-process', domid, sharedSab: pd.shared.sab, memSab: pd.mem } satisfies MainToWorker);
    this.emit('log', 'info', `d${domid}: process domain '${o.name}' created`);
    return pd.info;
  }

  /** The process domain `domid` (throws when there is none): its ports and grant device. */
  processDomain(domid: number): ProcessDomain {
    const pd = this.processDomains.get(domid);
    if (!pd) throw new Error(`no process domain ${domid}`);
    return pd;
  }

  /**
   * Serves process domain `domid`'s privileged interface (privcmd.ts) on
   * `stream`; `mayMap` false leaves it grant copy only; `peerPid`, the
   * process at the other end, lets it register copy buffers of its own.
   */
  servePrivcmd(domid: number, stream: Duplex, o: { mayMap: boolean; peerPid?: number } = { mayMap: true }): PrivcmdServer {
    return new PrivcmdServer(this.processDomain(domid), stream, this.privcmdHost, o);
  }

  private readonly privcmdHost: PrivcmdHost = {
    evtchnDomain: (id) => this.evtchnDomain(id),
    memoryFile: (id) => {
      const r = this.domains.get(id);
      return r ? { fd: r.mem.fd, size: r.mem.size } : null;
    },
    log: (line) => this.emit('log', 'warn', line),
  };

  /**
   * Serves a process of the control domain (its xenstored) on `stream`: its
   * ports are domain 0's, its grant mappings are domain 0's, and both are
   * closed when the stream ends, as Linux closes a dead process's evtchn
   * and gntdev files (a guest's port it had bound goes back to unbound
   * toward domain 0, for the next process to bind).
   */
  servePrivcmdDom0(stream: Duplex, o: { mayMap: boolean; peerPid?: number } = { mayMap: true }): PrivcmdServer {
    const ports = new Set<number>();
    const gntdev = new Gntdev((id) => this.grantTable(id), 0);
    const own = (port: number): void => {
      if (!ports.has(port)) throw new XenError(EINVAL, `port ${port} is not this process's`);
    };
    const dom: PrivcmdDomain = {
      domid: 0,
      gntdev,
      bindInterdomain: (rd, remotePort, handler) => {
        const port = this.bindDom0To(rd, remotePort, handler);
        ports.add(port);
        return port;
      },
      allocUnbound: (remote, handler) => {
        const port = this.allocDom0(remote, handler);
        ports.add(port);
        return port;
      },
      send: (port) => { own(port); this.notify(port); },
      close: (port) => { own(port); ports.delete(port); this.closeDom0(port); },
    };
    stream.once('close', () => {
      for (const p of ports) this.closeDom0(p);
      ports.clear();
      gntdev.close();
    });
    return new PrivcmdServer(dom, stream, this.privcmdHost, o);
  }

  /**
   * The process behind a process domain is gone (it exited or was killed):
   * its ports are closed toward their peers and its grant mappings dropped,
   * and the domid is free again. With `which`, only that life of the domid
   * (createProcessDomain's answer) is destroyed, not one made since.
   */
  destroyProcessDomain(domid: number, which?: ProcessDomainInfo): void {
    const pd = this.processDomains.get(domid);
    if (!pd || (which && pd.info !== which)) return;
    try {
      pd.destroy();
    } catch (e) {
      this.emit('log', 'error', `d${domid}: closing the process domain's ports: ${e instanceof Error ? e.stack : String(e)}`);
    }
    this.processDomains.delete(domid);
    this.host.setDomainExists(domid, false);
    for (const w of this.workers) w.postMessage({ type: 'forget', domid } satisfies MainToWorker);
    this.emit('log', 'info', `d${domid}: process domain '${pd.info.name}' destroyed`);
    this.raiseDomExc();
  }

  /** An unbound port in domain `domid` for `remote` (the builder's alloc_unbound). */
  allocUnbound(domid: number, remote: number): number {
    const d = this.evtchnDomain(domid);
    if (!d) throw new Error(`no domain ${domid}`);
    return core.allocUnbound(d, remote);
  }

  /** Binds a control-domain port to `remotePort` of `domid`; `handler` runs on each event. */
  bindDom0(domid: number, remotePort: number, handler: (port: number) => void): number {
    const rd = this.evtchnDomain(domid);
    if (!rd) throw new Error(`no domain ${domid}`);
    return this.bindDom0To(rd, remotePort, handler);
  }

  private bindDom0To(rd: core.EvtchnDomain, remotePort: number, handler: (port: number) => void): number {
    const port = core.bindInterdomain(this.evtchnHost, this.dom0, rd, remotePort);
    this.dom0Handlers.set(port, handler);
    // whatever is already pending on it is handled without waiting for the next event
    queueMicrotask(() => this.dispatchDom0());
    return port;
  }

  /** An unbound control-domain port for `remote` to bind (EVTCHNOP_alloc_unbound); `handler` runs on each event. */
  allocDom0(remote: number, handler: (port: number) => void): number {
    const port = core.allocUnbound(this.dom0, remote);
    this.dom0Handlers.set(port, handler);
    return port;
  }

  /**
   * Binds a global VIRQ of the control domain (EVTCHNOP_bind_virq on vCPU
   * 0): VIRQ_DOM_EXC fires whenever a domain shuts down or is destroyed, as
   * Xen raises it for the toolstack and xenstored (@releaseDomain).
   */
  bindDom0Virq(virq: number, handler: (port: number) => void): number {
    const port = core.bindVirq(this.dom0, virq, 0, this.dom0Virqs);
    this.dom0Handlers.set(port, handler);
    return port;
  }

  private raiseDomExc(): void {
    core.raiseVirq(this.evtchnHost, this.dom0, core.VIRQ.DOM_EXC, 0, this.dom0Virqs);
  }

  /** Sends an event from the control domain on `port`. */
  notify(port: number): void {
    core.send(this.evtchnHost, this.dom0, port);
  }

  closeDom0(port: number): void {
    this.dom0Handlers.delete(port);
    try { core.close(this.evtchnHost, this.dom0, port, this.dom0Virqs); } catch { /* already closed */ }
  }

  /** The main thread's upcall: the control domain's pending ports, then each process domain's, as a guest scans them. */
  private dispatchDom0(): void {
    dispatch2l(this.dom0.mem, this.dom0Handlers, (port, e) => this.emit('log', 'error', `dom0 port ${port} handler: ${e instanceof Error ? e.stack : e}`));
    for (const pd of this.processDomains.values()) {
      pd.dispatch((port, e) => this.emit('log', 'error', `d${pd.domid} port ${port} handler: ${e instanceof Error ? e.stack : e}`));
    }
  }

  /** Workers bump the doorbell word and notify it after marking dom0's upcall pending. */
  private watchDom0(): void {
    const loop = () => {
      if (this.stopping) return;
      const seen = Atomics.load(this.dom0Doorbell, 0);
      this.dispatchDom0();
      const r = Atomics.waitAsync(this.dom0Doorbell, 0, seen);
      if (r.async) r.value.then(loop);
      else setImmediate(loop);
    };
    loop();
  }

  /** Stops every worker (destroying their domains). */
  async shutdownAll(): Promise<void> {
    this.stopLoadBalancing();
    const ids = [...this.domains.keys()];
    await Promise.all(ids.map((d) => this.destroy(d)));
    for (const id of [...this.processDomains.keys()]) this.destroyProcessDomain(id);
    this.stopping = true;
    Atomics.add(this.dom0Doorbell, 0, 1);
    Atomics.notify(this.dom0Doorbell, 0);
    await Promise.all(this.workers.map((w, i) => new Promise<void>((resolve) => {
      w.once('exit', () => resolve());
      this.send(i, { type: 'stop' });
    })));
    this.gntdev.close();
    await this.vmPool?.close();
    this.kvm?.close();
  }
}
