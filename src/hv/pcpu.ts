// A physical CPU of the hypervisor: a worker thread running Xen's scheduler
// loop for the vCPUs placed on it. Pick a vCPU, inject a pending upcall,
// KVM_RUN, handle the exit inline (hypercalls, port I/O, MSRs, HLT, faults),
// repeat. A vCPU that blocks gives the pCPU to the next; an idle pCPU sleeps
// on its doorbell until a wakeup or its next timer. The loop is synchronous:
// control messages are read with receiveMessageOnPort, never via the event
// loop, so nothing on the hot path waits for another thread.

import { parentPort, receiveMessageOnPort, workerData, MessagePort } from 'node:worker_threads';
import { Kvm, Vcpu as KvmVcpu } from '../kvm/kvm.js';
import { TcgKicker } from '../tcg/kicker.js';
import { HybridVcpu } from '../accel/hybrid.js';
import type { VcpuExit } from '../accel/vcpu.js';
import { SharedMemory } from '../kvm/memory.js';
import { kick } from '../kvm/kick.js';
import { REG } from '../accel/vcpu.js';
import { kvmLayoutRegisters } from './x86/vcpu_state.js';
import { prepareVcpuThread, consumeKick, KickTimer } from '../kvm/kick.js';
import { Domain, DomainSpec, VCpu, type TcgHost, type VcpuHandoff } from './domain.js';
import { domainCpu } from './accel.js';
import { HostShared, DomainShared, DOMSTATE, RUNSTATE } from './shared.js';
import { beginHypercall, runHypercall, endHypercall, Hcall } from './hypercall.js';
import { EPERM, ETIME } from './errno.js';
import { HYPERCALL } from './abi/xen.js';
import { HYPERCALL_PORT, fillHypercallPage } from './x86/hypercall_page.js';
import { XEN_HYPERCALL_MSR } from './x86/cpuid.js';
import { guestMsr } from './x86/msr.js';
import * as core from './evtchn_core.js';
import { setEvtchnHost, evtchnHost } from './event_channel.js';
import { setSchedHooks, SHUTDOWN, blockVcpu } from './sched_op.js';
import { updateRunstateArea } from './vcpu_op.js';
import { VCPU_FLAG_WAKE } from './shared.js';
import { setConsoleSink, emitConsoleBytes, flushConsole } from './console.js';
import { GrantTable, setGrantHost, attachByFd } from './grant_table.js';
import { layoutBases, mirrorLookup, mirrorSegments, type PhysmapLayout } from './physmap.js';
import type { TimeBase } from './time.js';
import type { SchedulerPolicy } from './sched/scheduler.js';
import { createScheduler, DEFAULT_SCHEDULER } from './sched/schedulers.js';
import { TraceRing } from './sched/trace.js';
import { applySchedMessage } from './sched/control.js';
import { allPcpusStopped, exclusiveAllows, exclusiveState, exclusiveTriggered, releaseExclusive, EXCLUSIVE_END } from './sched/exclusive.js';
import { PAGE_SIZE } from './abi/xen.js';
import { Vlapic, ipiTargets, acceptInterrupt, setIrq, type Ipi } from './x86/vlapic.js';
import { sipiState } from './x86/hvm_vcpu.js';
import { MSR_MTRR_DEF_TYPE, MTRR_DEF_TYPE_WB } from './x86/pvh.js';
import type { WorkerToMain, MainToWorker, ForwardedCall, ForwardedResult, Relay, PcpuHostSched } from './messages.js';
import { fifoPriorityMax, getAffinity, getPolicy, setAffinity, setRealtime } from '../kvm/host_sched.js';

import { DOM0_DOORBELL } from './shared.js';
// Hypercall families register themselves on import.
import './version.js';
import './console.js';
import './hvm.js';
import './memory.js';
import './grant_table.js';
import './event_channel.js';
import './sched_op.js';
import './vcpu_op.js';
import './misc_ops.js';

/** The host CPUs the process may use, as it started (what "anywhere" means when a pCPU is unpinned). */
const processCpus = getAffinity(0);

export interface PcpuInit {
  pcpu: number;
  hostSab: SharedArrayBuffer;
  dom0Sab: SharedArrayBuffer;
  dom0Mem: SharedArrayBuffer;
  timeBase: TimeBase;
  /** Scheduler time slice (ns), for the rr policy. */
  sliceNs: number;
  /** The domains run on KVM (else on the software CPU only, and /dev/kvm may be absent). */
  kvm: boolean;
  /** With `kvm`: the software CPU runs beside it, for what KVM cannot run (hybrid.ts). */
  software?: boolean;
  /** The pool's scheduler (Xen's opt_name; default credit2). */
  sched?: string;
  /** This pCPU's scheduling trace ring (see sched/trace.ts). */
  traceSab?: SharedArrayBuffer;
}

const IA32_TSC = 0x10;
/** The debug console port (Xen's HVM debug port, as QEMU's debugcon). */
const DEBUG_PORT = 0xe9;
/** Families that change domain-wide state the home worker owns: a vCPU elsewhere has them done there. */
const HOME_FAMILIES = new Set<number>([HYPERCALL.memory_op, HYPERCALL.grant_table_op, HYPERCALL.vm_assist, HYPERCALL.hvm_op]);
const SCHEDOP_WATCHDOG = 6;
/**
 * How soon to look again when an upcall waits for the guest to open
 * interrupts: this host's KVM (PVM) never reports KVM_EXIT_IRQ_WINDOW_OPEN, so
 * the pCPU timer stands in for it.
 */
const WINDOW_POLL_NS = 50_000n;

class Pcpu {
  readonly kvm: Kvm | null;
  /** Stops a software-CPU vCPU from other threads; made with the first such domain. */
  private kicker: TcgKicker | null = null;
  readonly host: HostShared;
  readonly domains = new Map<number, Domain>();
  readonly dom0: core.EvtchnDomain;
  /** The scheduling policy that owns this pCPU's runqueue (its cpupool's scheduler). */
  sched: SchedulerPolicy;
  readonly trace: TraceRing | null;
  /** The vCPU last switched to, for the trace (null: idle). */
  private traced: VCpu | null = null;
  current: VCpu | null = null;
  readonly runMask: Uint8Array;
  readonly tid: number;
  readonly timer: KickTimer;
  readonly sliceNs: bigint;
  private stopped = false;
  private timersDirty = false;
  /** Domains that run elsewhere, as far as delivering events to them goes (memory mapped on first use). */
  private readonly remote = new Map<number, { sharedSab: SharedArrayBuffer; memFd: number; bytes: number; layout: PhysmapLayout; ev?: core.EvtchnDomain; mem?: SharedMemory; grant?: GrantTable }>();
  /** Process domains (process_domain.ts): their ports are raised from here, their upcall is the main thread's. */
  private readonly processes = new Map<number, core.EvtchnDomain>();
  private readonly processEvs = new Set<core.EvtchnDomain>();
  /** Control messages read early (while looking for a 'known'), handled at the next drain. */
  private readonly deferred: MainToWorker[] = [];
  private readonly doorbell: number;
  readonly dom0Doorbell: Int32Array;

  constructor(readonly init: PcpuInit, readonly port: MessagePort) {
    this.kvm = init.kvm ? Kvm.open() : null;
    const { runMask, target } = prepareVcpuThread();
    this.runMask = runMask;
    // A software-CPU pCPU is kicked through its helper thread (kicker.ts): kicks and its timer go there
    // (and on to this thread, for KVM_RUN, when the software CPU runs beside KVM).
    if (!init.kvm) this.kicker = new TcgKicker();
    else if (init.software) this.kicker = new TcgKicker(target.tid);
    this.tid = this.kicker?.tid ?? target.tid;
    this.host = new HostShared(init.hostSab);
    this.host.setTid(init.pcpu, this.tid);
    this.doorbell = this.host.doorbellIndex(init.pcpu);
    this.dom0 = { shared: new DomainShared(init.dom0Sab), mem: new Uint8Array(init.dom0Mem) };
    this.dom0Doorbell = new Int32Array(init.dom0Mem, DOM0_DOORBELL, 1);
    this.timer = new KickTimer(this.tid);
    this.sliceNs = BigInt(init.sliceNs);
    this.sched = createScheduler(init.sched ?? DEFAULT_SCHEDULER, { sliceNs: this.sliceNs });
    this.trace = init.traceSab ? new TraceRing(init.traceSab) : null;
    this.sched.trace = this.trace;
    this.installHooks();
  }

  post(m: WorkerToMain): void {
    this.port.postMessage(m);
  }

  private installHooks(): void {
    setEvtchnHost({
      lookup: (domid) => this.lookupEvtchn(domid),
      upcall: (d, vcpu) => {
        if (d === this.dom0 || this.processEvs.has(d)) {
          // The control domain's and process domains' "upcall": wake the main thread's event loop.
          Atomics.add(this.dom0Doorbell, 0, 1);
          Atomics.notify(this.dom0Doorbell, 0);
          return;
        }
        // HVMOP_set_evtchn_upcall_vector: an edge interrupt in the vCPU's local APIC (the guest EOIs).
        const vec = d.shared.vcpu(vcpu, 'upcallVector');
        if (vec) setIrq(d.shared.lapicView(vcpu), vec);
        this.notifyVcpu(d.shared, vcpu);
      },
      exclusiveTrigger: (d) => exclusiveTriggered(this.host, d.shared, this.nowSys()),
      wakePollers: (d, port) => {
        // A vCPU run here: wake it if it polls this port. One run elsewhere (even of a domain this worker
        // also holds, whose copy here knows nothing of its poll): its worker re-checks it.
        const dom = this.domains.get(d.shared.domid);
        for (let v = 0; v < d.shared.nrVcpus; v++) {
          const local = dom?.vcpus[v];
          if (local?.local) {
            if (local.pollPorts?.includes(port)) this.wakeVcpu(local.dom.domid, v);
          } else if (d.shared.vcpu(v, 'pollMask')) this.notifyVcpu(d.shared, v);
        }
      },
    });
    setSchedHooks({
      shutdown: (d, reason) => this.shutdown(d, reason),
      // A guest timer set during a hypercall may fall before the armed preemption: re-arm after the exit.
      timerChanged: () => { this.timersDirty = true; },
      // A vCPU placed on another worker: mark the shared state now (is_up answers at once), let its worker act.
      vcpuUp: (v) => {
        if (v.local) return this.vcpuUpLocal(v);
        v.dom.shared.setVcpu(v.id, 'state', RUNSTATE.runnable);
        this.post({ type: 'vcpu-up', domid: v.dom.domid, vcpu: v.id });
      },
      vcpuDown: (v) => {
        if (v.local) return this.vcpuDown(v);
        v.dom.shared.setVcpu(v.id, 'state', RUNSTATE.offline);
        this.post({ type: 'vcpu-down', domid: v.dom.domid, vcpu: v.id });
      },
    });
    setGrantHost({ lookup: (domid) => this.lookupGrant(domid) });
    setConsoleSink({
      line: (dom, source, text, eol) => this.post({ type: 'console', domid: dom.domid, source, text, eol }),
    });
  }

  /** Moves a local vCPU's runstate and refreshes its registered runstate area, as Xen does at every switch. */
  private runstate(v: VCpu, state: number, now: bigint): void {
    v.setRunstate(state, now);
    updateRunstateArea(v);
  }

  /** A domain's event-channel endpoint from this thread: its own, or a domain another worker runs. */
  private lookupEvtchn(domid: number): core.EvtchnDomain | null {
    if (domid === 0) return this.dom0;
    const local = this.domains.get(domid);
    if (local) return local.evtchn;
    const pd = this.processes.get(domid);
    if (pd) return pd;
    const r = this.remoteDomain(domid);
    // remoteDomain read the mailbox ahead: a process domain's 'known-process' may have come with it
    return r ? r.ev ?? null : this.processes.get(domid) ?? null;
  }

  /**
   * A domain's grant table from this thread: a domain held here has its
   * own; one another worker runs is reached through its memfd (mapped here
   * on first use) and its published physmap.
   */
  private lookupGrant(domid: number): GrantTable | null {
    const local = this.domains.get(domid);
    if (local) return local.grant;
    const r = this.remoteDomain(domid);
    if (!r?.mem) return null;
    if (!r.grant) {
      const bytes = r.mem.bytes;
      const mirrorBase = layoutBases(r.layout).mirrorBase;
      r.grant = new GrantTable({ domid, bytes, layout: r.layout, translate: (gfn) => mirrorLookup(bytes, mirrorBase, gfn), attach: attachByFd(r.memFd, r.layout) });
    }
    return r.grant;
  }

  /** A domain another worker runs, with its memory mapped here (null if it is gone). */
  private remoteDomain(domid: number): { ev?: core.EvtchnDomain; mem?: SharedMemory; grant?: GrantTable; layout: PhysmapLayout; memFd: number } | null {
    let r = this.remote.get(domid);
    if (!r && this.host.domainExists(domid)) {
      // Its 'known' message may still be in the mailbox: read ahead for it (nothing else is acted on here).
      this.readMail();
      r = this.remote.get(domid);
    }
    if (!r) return null;
    if (!r.ev) {
      try {
        r.mem = SharedMemory.attach(r.memFd, r.bytes);
      } catch {
        return null; // destroyed meanwhile: its memfd is gone
      }
      r.ev = { shared: new DomainShared(r.sharedSab), mem: r.mem.bytes };
    }
    return r;
  }

  /**
   * Gets vCPU `vcpu` of a domain to look at its pending events: here, wake it
   * if blocked; on another worker, ring that worker's doorbell (its loop
   * re-checks blocked vCPUs) and kick it out of KVM_RUN if it is in there.
   * Nothing waits for the other thread.
   */
  private notifyVcpu(s: DomainShared, vcpu: number): void {
    const pc = s.vcpu(vcpu, 'pcpu');
    if (pc === this.init.pcpu || pc < 0) {
      this.wakeVcpu(s.domid, vcpu, true);
      return;
    }
    s.setVcpuFlag(vcpu, VCPU_FLAG_WAKE);
    this.host.ring(pc);
    if (this.host.isRunning(pc)) kick({ pid: process.pid, tid: this.host.tid(pc) });
  }

  private vcpuUpLocal(v: VCpu): void {
    if (v.online) return;
    const now = v.dom.now();
    v.online = true;
    v.blocked = false;
    v.runstateState = RUNSTATE.offline;
    v.runstateEntry = now;
    this.runstate(v, RUNSTATE.runnable, now);
    if (v.dom.isRunnable()) this.sched.insert(v, now);
  }

  /** Takes a vCPU offline (VCPUOP_down, HLT with interrupts off); the runqueue drops it at the next pick. */
  vcpuDown(v: VCpu): void {
    if (!v.online) {
      v.dom.shared.setVcpu(v.id, 'state', RUNSTATE.offline);
      return;
    }
    v.online = false;
    v.blocked = false;
    v.pollPorts = null;
    this.runstate(v, RUNSTATE.offline, v.dom.now());
  }

  /** A vCPU of a domain on this pCPU should re-check whether it can run. */
  wakeVcpu(domid: number, vcpu: number, kicked = false): void {
    const d = this.domains.get(domid);
    const v = d?.vcpus[vcpu];
    if (!v || !v.blocked) return;
    // An event that newly raised the upcall kicks the vCPU out of a block even when it cannot be delivered (Xen's vcpu_kick).
    if (kicked || this.canUnblock(v)) this.unblock(v);
  }

  private canUnblock(v: VCpu): boolean {
    const d = v.dom;
    if (v.pollPorts) {
      if (v.pollPorts.some((p) => core.isPending(d.evtchn, p))) return true;
      if (v.pollTimeout !== 0n && v.pollTimeout <= d.now()) return true;
    }
    return d.upcallDeliverable(v) || v.lapicPending || v.nmiPending;
  }

  /** A blocked vCPU another thread asked to look (VCPU_FLAG_WAKE), or with an event it can take, wakes. */
  private wakeIfDue(v: VCpu): void {
    if (v.dom.shared.clearVcpuFlag(v.id, VCPU_FLAG_WAKE) || this.canUnblock(v)) this.unblock(v);
  }

  private unblock(v: VCpu): void {
    v.blocked = false;
    if (this.current && this.current !== v) this.wokeDuringSlice = true;
    if (v.pollPorts) {
      v.pollPorts = null;
      v.dom.shared.setVcpu(v.id, 'pollMask', 0);
    }
    const now = v.dom.now();
    this.runstate(v, RUNSTATE.runnable, now);
    this.trace?.record('wake', now, v.dom.domid, v.id);
    if (v !== this.current) this.sched.insert(v, now);
  }

  // --- domain lifecycle ---------------------------------------------------

  adopt(spec: DomainSpec, late = false): void {
    const d = new Domain(this.kvm, spec, this.host, this.init.pcpu, spec.accel === 'tcg' || spec.software ? this.tcgHost() : undefined);
    if (late) d.physmap.load(mirrorSegments(d.mem.bytes, d.physmap.mirrorBase));
    for (const v of d.vcpus) {
      if (!v.local) continue;
      if (v.hw instanceof KvmVcpu) v.hw.setSignalMask(this.runMask);
      if (v.hw instanceof HybridVcpu) {
        (v.hw.kvm as KvmVcpu).setSignalMask(this.runMask);
        this.watchFallbacks(v, v.hw);
      }
      d.shared.setVcpu(v.id, 'pcpu', this.init.pcpu);
    }
    if (d.isHome) this.post({ type: 'log', level: 'info', text: `d${d.domid}: CPU: ${domainCpu(spec)}` });
    this.remote.delete(d.domid);
    this.domains.set(d.domid, d);
    if (d.isHome) {
      d.shared.set('homePcpu', this.init.pcpu);
      d.updateWallclock();
      d.shared.set('state', DOMSTATE.running);
    }
    for (const v of d.vcpus) {
      if (!v.online) continue;
      v.runstateEntry = d.now();
      this.runstate(v, RUNSTATE.runnable, d.now());
      this.sched.insert(v, d.now());
    }
  }

  /**
   * Hands a local vCPU that is not running to pCPU `to`: KVM's side of it
   * settled (an exit completed, registers written back: the next worker's
   * KVM_RUN starts from the same state), what this worker kept of it sent to
   * the main thread, which passes it on. Nothing of it stays here.
   */
  private moveOut(v: VCpu, to: number): void {
    const d = v.dom;
    const now = d.now();
    v.moveTo = -1;
    if (v.online && v.runstateState === RUNSTATE.running) this.runstate(v, v.blocked ? RUNSTATE.blocked : RUNSTATE.runnable, now);
    this.sched.remove(v);
    try {
      if (v.hw instanceof KvmVcpu) v.hw.handOff();
    } catch (e) {
      this.post({ type: 'vcpu-moved', domid: d.domid, vcpu: v.id, to, error: `settling KVM's state: ${e instanceof Error ? e.message : String(e)}` });
      if (v.online && !v.blocked) this.sched.insert(v, now);
      return;
    }
    const state = v.handOffLocal(now);
    this.timersDirty = true;
    this.post({ type: 'vcpu-moved', domid: d.domid, vcpu: v.id, to, state });
  }

  /** Runs a vCPU another worker handed over (moveOut's other half): from its state, on the runqueue if it can run. */
  private moveIn(v: VCpu, s: VcpuHandoff): void {
    const d = v.dom;
    const now = d.now();
    v.restoreLocal(s, now);
    if (v.hw instanceof KvmVcpu) {
      v.hw.takeOver();
      v.hw.setSignalMask(this.runMask);
    }
    d.shared.setVcpu(v.id, 'pcpu', this.init.pcpu);
    this.timersDirty = true;
    if (!v.online) return;
    // an event sent while it was between workers rang the old one: look now
    if (v.blocked) this.wakeIfDue(v);
    else if (d.isRunnable()) this.sched.insert(v, now);
  }

  /** The first instruction of a vCPU that KVM could not run (and the software CPU did) is logged; the rest are counted. */
  private watchFallbacks(v: VCpu, h: HybridVcpu): void {
    h.onFallback = (x, rip) => {
      if (h.stats.fallbacks > 1) return;
      const bytes = x.insnBytes ? ` (bytes ${Array.from(x.insnBytes, (b) => b.toString(16).padStart(2, '0')).join(' ')})` : '';
      this.post({ type: 'log', level: 'info', text: `d${v.dom.domid}v${v.id}: KVM could not emulate the instruction at rip 0x${rip.toString(16)}${bytes}; the software CPU runs it (further ones are not logged)` });
    };
  }

  /** What this worker lends software-CPU vCPUs: its kicker, the MMIO path, the MSRs the hypervisor handles. */
  private tcgHost(): TcgHost {
    if (!this.kicker) throw new Error('a software-CPU domain on a KVM pCPU');
    return {
      kicker: this.kicker,
      mmio: (v, m) => this.mmio(v, m),
      // a hypercall exits (it reads and writes registers, and may deschedule); other ports are done during the access
      io: (v, io) => {
        if (this.isHypercallPort(v.dom, io)) return true;
        this.portIo(v.dom, io);
        return false;
      },
      exitPorts: [HYPERCALL_PORT],
      // the same MSRs KVM's filter sends to user space
      msrExits: (i) => i === XEN_HYPERCALL_MSR || Vlapic.handlesMsr(i),
    };
  }

  /** Xen's domain_shutdown: latch the reason (shutdown_code wins), stop the vCPUs, tell the toolstack. */
  shutdown(d: Domain, reason: number, detail?: string): void {
    if (d.stopping) return;
    const code = d.shared.get('shutdownCode');
    const r = code >= 0 ? code : reason;
    d.stopping = true;
    flushConsole(d);
    this.sched.removeDomain(d.domid);
    // A domain that shut down cannot give the machine back: the others run again now.
    releaseExclusive(this.host, d.domid, EXCLUSIVE_END.gone);
    // Workers holding the same domain may race here: the one that moves the state reports it.
    if (d.shared.cas('state', DOMSTATE.running, r === SHUTDOWN.crash ? DOMSTATE.crashed : DOMSTATE.shutdown) !== DOMSTATE.running) return;
    d.shared.set('shutdownReason', r);
    const now = d.now();
    for (const v of d.vcpus) if (v.online) v.setRunstate(RUNSTATE.offline, now);
    this.post({ type: 'shutdown', domid: d.domid, reason: r, detail: detail ?? '' });
  }

  crash(d: Domain, why: string): void {
    this.post({ type: 'log', level: 'error', text: `d${d.domid}: crashed: ${why}` });
    this.shutdown(d, SHUTDOWN.crash, why);
  }

  /** A bug of ours while serving `d` (`what` it was doing): it ends that domain, not the pCPU. */
  private bug(d: Domain, what: string, e: unknown): void {
    this.crash(d, `hypervisor error ${what}: ${e instanceof Error ? e.stack : String(e)}`);
  }

  destroy(domid: number): void {
    const d = this.domains.get(domid);
    if (!d) return;
    if (!d.stopping) {
      d.stopping = true;
      flushConsole(d);
    }
    releaseExclusive(this.host, domid, EXCLUSIVE_END.gone);
    this.sched.removeDomain(domid);
    this.domains.delete(domid);
    if (d.isHome) d.shared.set('state', DOMSTATE.dead);
    for (const v of d.vcpus) {
      if (!(v.hw instanceof HybridVcpu)) continue;
      const st = v.hw.stats;
      this.post({ type: 'log', level: 'info', text: `d${domid}v${v.id}: moved to the software CPU ${st.toSoftware} times (${st.atEntry} at a kernel entry point KVM stopped at, ${st.fallbacks} after an instruction KVM could not emulate) and back to KVM ${st.toKvm} times` });
    }
    try {
      d.close();
    } catch (e) {
      // Whatever failed to close, the toolstack must hear that this worker let go.
      this.post({ type: 'log', level: 'error', text: `d${domid}: releasing it: ${e instanceof Error ? e.stack : String(e)}` });
    }
    this.post({ type: 'destroyed', domid, pcpu: this.init.pcpu });
  }

  // --- control messages ---------------------------------------------------

  private drainMailbox(): void {
    this.doorbellSeen = Atomics.load(this.host.words, this.doorbell);
    this.readMail();
    while (this.deferred.length) this.handle(this.deferred.shift()!);
    this.exclusiveUpdate();
  }

  /**
   * Where this pCPU's host threads run and at which priority: this worker
   * thread and, on the software CPU, its kick helper (a kick must reach it as
   * soon as the worker). `cpus` null: anywhere the process may; priority 0:
   * SCHED_OTHER. Each refusal is reported, the rest still applied.
   */
  private hostSched(cpus: number[] | null, rtPriority: number): PcpuHostSched {
    const errors: string[] = [];
    // The kick helper one priority above the worker: at the same SCHED_FIFO priority on the same CPU it
    // would never run while the worker runs a guest, and neither kicks nor the pCPU's timer would stop it.
    const threads = [{ tid: 0, prio: rtPriority }, ...(this.kicker ? [{ tid: this.kicker.tid, prio: rtPriority ? Math.min(fifoPriorityMax(), rtPriority + 1) : 0 }] : [])];
    const all = cpus ?? processCpus;
    for (const t of threads) {
      try { setAffinity(t.tid, all); } catch (e) { errors.push(e instanceof Error ? e.message : String(e)); }
      try { setRealtime(t.tid, t.prio); } catch (e) { errors.push(e instanceof Error ? e.message : String(e)); }
    }
    const p = getPolicy(0);
    return { pcpu: this.init.pcpu, affinity: getAffinity(0), policy: p.policy, priority: p.priority, errors: [...new Set(errors)] };
  }

  // --- exclusivity (sched/exclusive.ts) ---------------------------------------

  /** The exclusivity epoch this pCPU last acted on, and that period's holder (0 = none) and expiry. */
  private exclEpoch = 0;
  private exclHolder = 0;
  private exclExpires = 0n;
  /** vCPUs whose acquire waits for every pCPU to stop the others. */
  private readonly exclWaiters: VCpu[] = [];

  /**
   * At every decision: take the machine back if the holder's time is up;
   * on a new epoch, trace it, put back on the runqueue what may run again,
   * acknowledge it (no other domain's vCPU runs here from now on) and, as
   * the last pCPU to do so, get the waiting acquirer going; resume waiters
   * whose wait is over.
   */
  private exclusiveUpdate(): void {
    const host = this.host;
    if (this.exclHolder !== 0 && this.exclExpires <= this.nowSys()) releaseExclusive(host, this.exclHolder, EXCLUSIVE_END.expired, this.exclEpoch);
    if (host.exclusiveEpoch() !== this.exclEpoch) {
      const s = exclusiveState(host);
      const now = this.nowSys();
      // A release and the next acquire both came since this pCPU last looked: the trace still shows the release.
      if (s.holder && this.exclHolder && s.previous === this.exclHolder) this.trace?.record('release', now, s.previous, -1, BigInt(s.endReason));
      this.exclEpoch = s.epoch;
      this.exclHolder = s.holder;
      this.exclExpires = s.holder ? s.expires : 0n;
      this.exclRequested = s.requested;
      this.exclWaiter = s.waiter;
      if (!s.holder) this.trace?.record('release', now, s.previous, -1, BigInt(s.endReason));
      this.requeueAll(now);
      this.exclAckDue = true;
      if (this.current) this.wokeDuringSlice = true;
    }
    // A vCPU of another domain in its run here leaves first (its slice ends, its runstate says so): then this pCPU acknowledges.
    if (this.exclAckDue && (!this.current || exclusiveAllows(host, this.current.dom.domid))) this.exclusiveAck();
    for (let i = this.exclWaiters.length - 1; i >= 0; i--) {
      const v = this.exclWaiters[i]!;
      if (!v.dom.stopping && v.exclusiveWait === this.exclEpoch && !allPcpusStopped(host, v.exclusiveWait)) continue;
      this.exclWaiters.splice(i, 1);
      // The period ended (expired, the holder went) before every pCPU had stopped: the acquire says so.
      if (v.exclusiveWait !== this.exclEpoch) v.hw.setReg(REG.rax, BigInt.asUintN(v.hcall?.abi === 'x32' ? 32 : 64, -BigInt(ETIME)));
      v.exclusiveWait = 0;
      if (v.dom.isRunnable() && v.online && !v.blocked && !v.awaitingHome) this.sched.insert(v, v.dom.now());
    }
  }

  /** The epoch this pCPU has not acknowledged yet, with its request time and waiter. */
  private exclAckDue = false;
  private exclRequested = 0n;
  private exclWaiter = -1;

  /**
   * No vCPU but the holder's runs here from now on (or the period is over):
   * say so, in the trace and to the acquirer; the last pCPU to say so gets
   * the acquirer's vCPU going.
   */
  private exclusiveAck(): void {
    const host = this.host;
    this.exclAckDue = false;
    if (this.exclHolder) this.trace?.record('exclusive', this.nowSys(), this.exclHolder, -1, this.exclRequested);
    host.setExclusiveAck(this.init.pcpu, this.exclEpoch);
    const w = this.exclWaiter;
    if (this.exclHolder && w >= 0 && w !== this.init.pcpu && allPcpusStopped(host, this.exclEpoch)) {
      host.ring(w);
      if (host.isRunning(w)) kick({ pid: process.pid, tid: host.tid(w) });
    }
  }

  /** After an exclusivity change: every local vCPU that may run now and is not queued goes back on the runqueue. */
  private requeueAll(now: bigint): void {
    for (const d of this.domains.values()) {
      if (!d.isRunnable()) continue;
      for (const v of d.vcpus) {
        if (v.local && v.online && !v.blocked && !v.awaitingHome && !v.exclusiveWait && v !== this.current && !this.sched.has(v)) this.sched.insert(v, now);
      }
    }
  }

  /** The earlier of `t` and the end of the exclusive period (0 = neither). */
  private withExclusiveExpiry(t: bigint): bigint {
    const x = this.exclHolder ? this.exclExpires : 0n;
    return x !== 0n && (t === 0n || x < t) ? x : t;
  }

  /** The doorbell count when the mailbox was last drained: a newer count means mail (or a wake-up) came since. */
  private doorbellSeen = 0;

  /** Moves the mailbox into `deferred`, acting at once only on 'known' (safe at any point). */
  private readMail(): void {
    for (;;) {
      const m = receiveMessageOnPort(this.port);
      if (!m) return;
      const msg = m.message as MainToWorker;
      if (msg.type === 'known') this.remote.set(msg.domid, { sharedSab: msg.sharedSab, memFd: msg.memFd, bytes: msg.bytes, layout: msg.layout });
      else if (msg.type === 'known-process') {
        const ev = { shared: new DomainShared(msg.sharedSab), mem: new Uint8Array(msg.memSab) };
        this.processes.set(msg.domid, ev);
        this.processEvs.add(ev);
      } else if (msg.type === 'forget' && this.processes.has(msg.domid)) {
        // in order with 'known-process': a process domain started again with its domid comes right after
        // its forget, and must not be forgotten by it (nothing of it is mapped here, so this is safe at once)
        this.processEvs.delete(this.processes.get(msg.domid)!);
        this.processes.delete(msg.domid);
        this.deferred.push(msg);
      } else this.deferred.push(msg);
    }
  }

  private handle(m: MainToWorker): void {
    switch (m.type) {
      case 'adopt':
        try {
          this.adopt(m.spec, m.late);
          this.post({ type: 'adopted', domid: m.spec.domid, pcpu: this.init.pcpu });
        } catch (e) {
          this.post({ type: 'adopted', domid: m.spec.domid, pcpu: this.init.pcpu, error: e instanceof Error ? e.stack ?? e.message : String(e) });
        }
        return;
      case 'unpause':
      case 'pause': {
        // pauseCount lives in the shared header; the message just makes us look again.
        const d = this.domains.get(m.domid);
        if (d && m.type === 'unpause' && d.isRunnable()) {
          for (const v of d.vcpus) if (v.online && !v.blocked) this.sched.insert(v, d.now());
        }
        return;
      }
      case 'destroy':
        this.destroy(m.domid);
        return;
      case 'vcpu-move': {
        const v = this.domains.get(m.domid)?.vcpus[m.vcpu];
        if (!v?.local) this.post({ type: 'vcpu-moved', domid: m.domid, vcpu: m.vcpu, to: m.to, error: `vCPU ${m.vcpu} of d${m.domid} is not on pCPU ${this.init.pcpu}` });
        // a call the home worker performs for it, or a wait for the machine, finishes here first
        else if (v.awaitingHome || v.exclusiveWait) this.post({ type: 'vcpu-moved', domid: m.domid, vcpu: m.vcpu, to: m.to, busy: true });
        else if (v === this.current) v.moveTo = m.to; // leaves at the end of this slice (endSlice)
        else this.moveOut(v, m.to);
        return;
      }
      case 'vcpu-move-in': {
        const d = this.domains.get(m.domid);
        const v = d?.vcpus[m.vcpu];
        if (!d || !v || v.local) {
          this.post({ type: 'vcpu-moved-in', domid: m.domid, vcpu: m.vcpu, error: `pCPU ${this.init.pcpu} cannot take vCPU ${m.vcpu} of d${m.domid}` });
          return;
        }
        try {
          this.moveIn(v, m.state);
          this.post({ type: 'vcpu-moved-in', domid: m.domid, vcpu: m.vcpu });
        } catch (e) {
          this.bug(d, `taking vCPU ${m.vcpu} over`, e);
          this.post({ type: 'vcpu-moved-in', domid: m.domid, vcpu: m.vcpu, error: e instanceof Error ? e.message : String(e) });
        }
        return;
      }
      case 'nmi': {
        // Xen's sendtrigger NMI: nmi_pending set and the vCPU kicked; a halted vCPU wakes for it
        const v = this.domains.get(m.domid)?.vcpus[m.vcpu];
        if (!v?.local) return;
        v.nmiPending = true;
        if (v.blocked) this.unblock(v);
        return;
      }
      case 'shutdown': {
        const d = this.domains.get(m.domid);
        if (d) this.shutdown(d, m.reason, m.detail);
        return;
      }
      case 'stop':
        for (const id of [...this.domains.keys()]) this.destroy(id);
        this.stopped = true;
        return;
      case 'known':
      case 'known-process':
        return; // taken in readMail
      case 'wake':
      case 'hcall':
      case 'hcall-done':
      case 'physmap':
      case 'vcpu-up':
      case 'vcpu-down': {
        const d = this.domains.get(m.domid);
        if (!d) return;
        try {
          this.relayed(d, m);
        } catch (e) {
          this.bug(d, `handling '${m.type}'`, e);
        }
        return;
      }
      case 'regs-query': {
        const d = this.domains.get(m.domid);
        if (!d?.isHome) return;
        try {
          this.post({ type: 'regs-report', domid: d.domid, vcpus: d.vcpus.map((v) => kvmLayoutRegisters(v.hw)) });
        } catch (e) {
          this.post({ type: 'regs-report', domid: d.domid, vcpus: [], error: e instanceof Error ? e.message : String(e) });
        }
        return;
      }
      case 'physmap-query': {
        const d = this.domains.get(m.domid);
        // the domain's own memory only: a grant mapping's page is another domain's
        if (d?.isHome) this.post({ type: 'physmap-report', domid: d.domid, segments: d.physmap.segments().filter((x) => !x.foreign).map((x) => ({ ...x, slot: -1 })) });
        return;
      }
      case 'forget': {
        const r = this.remote.get(m.domid);
        r?.grant?.markGone();
        r?.mem?.close();
        this.remote.delete(m.domid);
        this.sched.removeDomain(m.domid); // parameters it was given without hosting it
        return;
      }
      case 'host-sched':
        this.post({ type: 'host-sched-done', ...this.hostSched(m.cpus, m.rtPriority) });
        return;
      case 'sched-adjust':
      case 'sched-arinc653':
      case 'sched-set':
      case 'sched-pool':
        try {
          this.sched = applySchedMessage(this.sched, m, { domains: this.domains.size, sliceNs: this.sliceNs, trace: this.trace });
        } catch (e) {
          this.post({ type: 'log', level: 'error', text: `pCPU ${this.init.pcpu}: ${m.type}: ${e instanceof Error ? e.message : String(e)}` });
        }
        return;
    }
  }

  /** A message about `d`: from the main thread (wake) or another worker holding `d`, through it. */
  private relayed(d: Domain, m: Relay | Extract<MainToWorker, { type: 'wake' }>): void {
    switch (m.type) {
      case 'wake':
        this.wakeVcpu(d.domid, m.vcpu, true);
        return;
      case 'hcall':
        this.performForHome(d, m);
        return;
      case 'hcall-done':
        this.forwardedDone(d, m);
        return;
      case 'physmap':
        if (!d.isHome) d.physmap.load(m.segments);
        return;
      case 'vcpu-up':
      case 'vcpu-down': {
        const v = d.vcpus[m.vcpu];
        if (!v?.local) return;
        if (m.type === 'vcpu-up') this.vcpuUpLocal(v);
        else this.vcpuDown(v);
        return;
      }
    }
  }

  // --- timers ---------------------------------------------------------------

  /** Fires due guest timers and watchdogs; returns the earliest future deadline (system time, 0 = none). */
  private runTimers(): bigint {
    let next = 0n;
    const earliest = (t: bigint) => { if (t !== 0n && (next === 0n || t < next)) next = t; };
    for (const d of this.domains.values()) {
      if (d.stopping || d.state !== DOMSTATE.running) continue;
      try {
        this.runDomainTimers(d, earliest);
      } catch (e) {
        this.bug(d, 'in timer handling', e);
      }
    }
    return next;
  }

  private runDomainTimers(d: Domain, earliest: (t: bigint) => void): void {
    const now = d.now();
    for (const [id, t] of d.watchdogs) {
      if (t <= now) {
        d.watchdogs.delete(id);
        this.post({ type: 'log', level: 'warn', text: `d${d.domid}: watchdog ${id} expired` });
        this.shutdown(d, SHUTDOWN.watchdog);
        return;
      }
      earliest(t);
    }
    for (const v of d.vcpus) {
      if (!v.online) continue;
      const t = v.timer;
      if (t.singleshot !== 0n) {
        if (t.singleshot <= now) {
          t.singleshot = 0n;
          core.raiseVirq(evtchnHost(), d.evtchn, core.VIRQ.TIMER, v.id, d.virqs);
        } else earliest(t.singleshot);
      }
      if (t.period !== 0n) {
        if (t.periodicNext <= now) {
          t.periodicNext = now + t.period;
          core.raiseVirq(evtchnHost(), d.evtchn, core.VIRQ.TIMER, v.id, d.virqs);
        }
        earliest(t.periodicNext);
      }
      if (v.lapic) {
        v.lapic.tick(now);
        earliest(v.lapic.nextDeadline());
      }
      if (v.blocked && v.pollPorts && v.pollTimeout !== 0n) {
        if (v.pollTimeout <= now) this.unblock(v);
        else earliest(v.pollTimeout);
      }
      if (v.blocked) this.wakeIfDue(v);
    }
  }

  // --- the scheduler loop ---------------------------------------------------

  loop(): void {
    const words = this.host.words;
    while (!this.stopped) {
      const seen = Atomics.load(words, this.doorbell);
      this.drainMailbox();
      if (this.stopped) break;
      const nextTimer = this.runTimers();
      const v = this.pick();
      if (!v) {
        if (this.traced) this.trace?.record('switch', this.nowSys(), 0x7fff, -1);
        this.traced = null;
        this.armed = 0n;
        this.timer.arm(0n);
        // The policy may want to look again before any guest timer (a window boundary, a replenishment).
        const decide = this.withExclusiveExpiry(this.sched.nextDecision(this.nowSys()));
        const next = decide !== 0n && (nextTimer === 0n || decide < nextTimer) ? decide : nextTimer;
        const wait = next === 0n ? Infinity : Math.max(0, Number(next - this.nowSys()) / 1e6);
        if (wait > 0) Atomics.wait(words, this.doorbell, seen, wait);
        continue;
      }
      this.runSlice(v, nextTimer);
    }
    this.timer.close();
    this.kicker?.close();
  }

  private nowSys(): bigint {
    return process.hrtime.bigint() - this.init.timeBase.bootNs;
  }

  private pick(): VCpu | null {
    // A vCPU of a paused domain is dropped here; the unpause message re-queues it.
    for (let v = this.sched.pick(this.nowSys()); v; v = this.sched.pick(this.nowSys())) {
      if (v.local && v.dom.isRunnable() && v.online && !v.blocked && !v.awaitingHome) return v;
    }
    return null;
  }

  private runSlice(v: VCpu, nextTimer: bigint): void {
    const d = v.dom;
    const hw = v.hw;
    const start = d.now();
    this.current = v;
    this.wokeDuringSlice = false;
    if (this.traced !== v) this.trace?.record('switch', start, d.domid, v.id);
    this.traced = v;
    v.yielded = false;
    const h = (v.hcall ??= new Hcall(d, v));
    // Everything that touches the guest's state is in here: a bug of ours ends the domain, not the pCPU.
    try {
      this.runstate(v, RUNSTATE.running, start);
      d.updatePvclock(v, () => hw.getMsr(IA32_TSC));
      // Preempt at the end of the slice if others wait, and at the next guest timer.
      this.armPreemption(v, start, nextTimer);
      this.host.setRunning(this.init.pcpu, true);
      for (;;) {
        if (!d.isRunnable() || v.blocked || !v.online || v.awaitingHome || v.moveTo >= 0) break;
        // Mail that came after the last drain but before we were marked running
        // got no kick: look now, or KVM_RUN could sit on it for a whole slice
        // (or forever, for a guest spinning at CPL3 with no timer).
        if (Atomics.load(this.host.words, this.doorbell) !== this.doorbellSeen) {
          if (this.serviceInterrupt(v, start)) break;
          continue;
        }
        if (v.nmiPending) {
          v.nmiPending = false;
          hw.nmi();
        }
        if (this.injectInterrupt(v)) this.armWindowPoll(d.now());
        const x = hw.run();
        if (x.kind === 'interrupted') {
          consumeKick();
          if (this.serviceInterrupt(v, start)) break;
          continue;
        }
        if (this.handleExit(v, h, x)) break;
        if (this.wokeDuringSlice && this.preemptForWoken(v, start, d.now())) break;
        if (this.timersDirty) {
          this.timersDirty = false;
          this.armPreemption(v, start, this.runTimers());
        }
      }
    } catch (e) {
      this.bug(d, `handling an exit of vCPU ${v.id}`, e);
    }
    this.host.setRunning(this.init.pcpu, false);
    this.current = null;
    try {
      this.endSlice(v);
    } catch (e) {
      this.bug(d, `ending the slice of vCPU ${v.id}`, e);
    }
    if (this.exclAckDue) this.exclusiveAck();
  }

  /** After a slice: the vCPU's runstate, and back on the runqueue if it can run (or off to another pCPU). */
  private endSlice(v: VCpu): void {
    const d = v.dom;
    const now = d.now();
    if (v.moveTo >= 0) {
      this.sched.descheduled(v, now, false);
      this.moveOut(v, v.moveTo);
      return;
    }
    const runnable = !d.stopping && v.online && d.state === DOMSTATE.running && !v.awaitingHome && !v.blocked && !v.exclusiveWait;
    this.sched.descheduled(v, now, runnable && d.isRunnable());
    if (v.blocked) this.trace?.record('block', now, d.domid, v.id);
    if (d.stopping || !v.online || d.state !== DOMSTATE.running) return;
    if (v.awaitingHome) {
      this.runstate(v, RUNSTATE.runnable, now);
      return; // back on the runqueue when the home worker answers
    }
    if (v.exclusiveWait) {
      this.runstate(v, RUNSTATE.runnable, now);
      this.exclWaiters.push(v); // back on the runqueue when every pCPU has stopped the others
      return;
    }
    if (v.blocked) this.runstate(v, RUNSTATE.blocked, now);
    else {
      this.runstate(v, RUNSTATE.runnable, now);
      if (d.isRunnable()) this.sched.insert(v, now);
    }
  }

  /**
   * Arms the pCPU timer for whichever comes first: the end of the vCPU's
   * slice (when others wait) or the next guest timer.
   */
  private armPreemption(v: VCpu, start: bigint, nextTimer: bigint): void {
    const slice = this.sched.slice(v, start);
    let deadline = slice ? start + slice : 0n;
    nextTimer = this.withExclusiveExpiry(nextTimer);
    if (nextTimer !== 0n && (deadline === 0n || nextTimer < deadline)) deadline = nextTimer;
    this.armed = deadline;
    this.timer.arm(deadline === 0n ? 0n : deadline + this.init.timeBase.bootNs);
  }

  /** System time the pCPU timer is armed for (0 = not armed). */
  private armed = 0n;
  /** A vCPU became runnable while the current one runs. */
  private wokeDuringSlice = false;

  /** A vCPU woke meanwhile: asks the policy again; true when the current vCPU should make way now, else arms the timer for when. */
  private preemptForWoken(v: VCpu, start: bigint, now: bigint): boolean {
    if (!this.wokeDuringSlice) return false;
    this.wokeDuringSlice = false;
    const slice = this.sched.slice(v, start);
    if (slice === 0n) return false;
    const t = start + slice;
    if (now >= t) return true;
    if (this.armed === 0n || this.armed > t) {
      this.armed = t;
      this.timer.arm(t + this.init.timeBase.bootNs);
    }
    return false;
  }

  /** Makes sure the guest is interrupted soon to re-check a pending upcall (see WINDOW_POLL_NS). */
  private armWindowPoll(now: bigint): void {
    const t = now + WINDOW_POLL_NS;
    if (this.armed !== 0n && this.armed <= t) return;
    this.armed = t;
    this.timer.arm(t + this.init.timeBase.bootNs);
  }

  /** After a kick: look at mail, timers, wakes. True if the vCPU should give up the pCPU. */
  private serviceInterrupt(v: VCpu, start: bigint): boolean {
    this.drainMailbox();
    const nextTimer = this.runTimers();
    if (this.stopped || !v.dom.isRunnable() || !v.online) return true;
    const slice = this.sched.slice(v, start);
    if (slice !== 0n && v.dom.now() - start >= slice) return true;
    // Someone may have become runnable meanwhile: make sure the slice will end.
    this.armPreemption(v, start, nextTimer);
    return this.preemptForWoken(v, start, v.dom.now());
  }

  /**
   * Xen's HVM upcall delivery for CALLBACK_IRQ type vector: level-triggered on
   * evtchn_upcall_pending, injected when interrupts are open; otherwise ask
   * KVM to exit as soon as the guest opens an interrupt window. True when the
   * upcall has to wait for that window.
   */
  private injectInterrupt(v: VCpu): boolean {
    const d = v.dom;
    const hw = v.hw;
    // CALLBACK_IRQ's vector first, as Xen checks it first; a per-vCPU upcall vector goes through the LAPIC.
    const callback = d.shared.vcpu(v.id, 'upcallVector') ? 0 : d.shared.get('callbackVector');
    let vector = callback && d.isUpcallPending(v) ? callback : -1;
    let fromLapic = false;
    if (vector < 0 && v.lapic) {
      vector = v.lapic.pendingVector();
      fromLapic = vector >= 0;
    }
    if (vector < 0) {
      hw.requestInterruptWindow = false;
      return false;
    }
    if (hw.readyForInterruptInjection && hw.ifFlag) {
      hw.interrupt(vector);
      if (fromLapic) v.lapic!.ackInterrupt(vector);
      hw.requestInterruptWindow = false;
      return false;
    }
    hw.requestInterruptWindow = true;
    return true;
  }

  /**
   * Delivers an IPI a vCPU wrote into its ICR: fixed and lowest-priority
   * interrupts go into the targets' IRRs (from this thread, whatever worker
   * runs them) and wake or kick them; INIT and STARTUP reset and start
   * vCPUs (initSipi); NMI, SMI and remote read are dropped with a log line;
   * ExtINT crashes the domain, as Xen does.
   */
  private deliverIpi(v: VCpu, ipi: Ipi): void {
    const d = v.dom;
    if (ipi.mode === 'fixed' || ipi.mode === 'lowest') {
      const views = d.shared.lapicViews();
      for (const id of ipiTargets(ipi, views)) if (acceptInterrupt(views[id]!, ipi.vector)) this.notifyVcpu(d.shared, id);
      return;
    }
    if (ipi.mode === 'init' || ipi.mode === 'startup') {
      for (const id of ipiTargets(ipi, d.shared.lapicViews())) this.initSipi(v, d.vcpus[id]!, ipi);
      return;
    }
    if (ipi.mode === 'extint') {
      this.crash(d, `vCPU ${v.id}: IPI with unsupported delivery mode ExtINT (ICR 0x${ipi.icrHigh.toString(16)}:${ipi.icrLow.toString(16)})`);
      return;
    }
    this.post({ type: 'log', level: 'warn', text: `d${d.domid}v${v.id}: ${ipi.mode} IPI not offered (ICR 0x${ipi.icrHigh.toString(16)}:${ipi.icrLow.toString(16)}), dropped` });
  }

  /**
   * INIT and STARTUP to one vCPU, as Xen's vlapic_init_sipi_one does: INIT
   * of a vCPU that is not initialised does nothing (it waits for a STARTUP);
   * INIT of one that has run takes it down and resets it (hvm_vcpu_down,
   * vcpu_reset, vlapic_do_init), whatever it was doing: that is how Linux
   * brings back a CPU it offlined, halted in its play_dead loop. STARTUP of
   * a vCPU that is not initialised starts it in real mode at vector << 12
   * (hvm_vcpu_reset_state), which is how Linux brings up its secondary CPUs
   * on PVH (native_cpu_up through the real-mode trampoline); a second
   * STARTUP finds it started. A vCPU another worker runs, or the sender
   * itself, is refused.
   */
  private initSipi(from: VCpu, t: VCpu, ipi: Ipi): void {
    const d = t.dom;
    const refuse = (why: string) => this.post({ type: 'log', level: 'warn', text: `d${d.domid}v${from.id}: ${ipi.mode} IPI to vCPU ${t.id}: ${why}, dropped` });
    if (ipi.mode === 'init') {
      if (!t.initialised) return;
      if (!t.local) return refuse('the vCPU runs on another pCPU worker');
      // The sender is in the middle of this exit: its state cannot be taken from under it.
      if (t === from) return refuse('INIT of the sending vCPU is not offered');
      this.resetVcpu(t);
      return;
    }
    if (t.initialised) return; // a second STARTUP, as Linux sends, finds it running
    if (!t.local) return refuse('the vCPU runs on another pCPU worker');
    t.hw.setInitialState(sipiState(ipi.vector));
    t.hw.setMsrs([{ index: MSR_MTRR_DEF_TYPE, value: BigInt(MTRR_DEF_TYPE_WB) }]);
    t.initialised = true;
    this.vcpuUpLocal(t);
  }

  /**
   * Xen's INIT of a local vCPU that is not the current one: down and off
   * the runqueue, no poll or block left, its APIC in the INIT state, not
   * initialised (the next STARTUP or VCPUOP_initialise sets its registers).
   * Its vcpu_info and runstate area stay registered, as vcpu_reset keeps them.
   */
  private resetVcpu(t: VCpu): void {
    this.vcpuDown(t);
    this.sched.remove(t);
    t.yielded = false;
    t.dom.shared.setVcpu(t.id, 'pollMask', 0);
    t.lapic?.init();
    t.hw.requestInterruptWindow = false;
    t.initialised = false;
    this.timersDirty = true;
  }

  /** Handles one exit; true when the vCPU leaves the pCPU. */
  private handleExit(v: VCpu, h: Hcall, x: VcpuExit): boolean {
    const d = v.dom;
    const hw = v.hw;
    switch (x.kind) {
      case 'io': {
        const io = x.io;
        if (this.isHypercallPort(d, io)) {
          const nr = new DataView(io.data.buffer, io.data.byteOffset + io.offset, 4).getUint32(0, true);
          h.viaInsn = false;
          return this.hypercall(v, h, nr);
        }
        this.portIo(d, io);
        return false;
      }
      case 'hypercall':
        // VMCALL/VMMCALL: the hypercall number is in RAX, as Xen's HVM hypercall path takes it.
        h.viaInsn = true;
        return this.hypercall(v, h, Number(hw.reg(REG.rax) & 0xffffffffn));
      case 'hlt': {
        // HLT with interrupts disabled takes the vCPU down (Xen's hvm_hlt);
        // with every vCPU down the domain powers off.
        if (!(hw.reg(REG.rflags) & 0x200n)) {
          this.vcpuDown(v);
          if (d.vcpus.every((y) => !d.vcpuUp(y.id))) {
            this.post({ type: 'log', level: 'info', text: `d${d.domid}: all vCPUs offline -- powering off` });
            this.shutdown(d, SHUTDOWN.poweroff);
          }
          return true;
        }
        blockVcpu(h);
        return true;
      }
      case 'irq-window':
      case 'interrupted':
      case 'debug':
        return false;
      case 'mmio':
        this.mmio(v, x.mmio);
        return false;
      case 'wrmsr':
      case 'rdmsr':
        this.msr(v, x);
        return false;
      case 'shutdown':
        if (hw.accel === 'kvm' && this.kvm?.emulatesCpl0 && this.enablesPaging32(v)) {
          this.crash(d, `this host's KVM (PVM) cannot run 32-bit paging: vCPU ${v.id} triple-faulted at rip 0x${hw.rip.toString(16)} turning on CR0.PG outside long mode (a limitation of this host's KVM; --accel tcg or auto runs it)`);
          return true;
        }
        this.crash(d, `triple fault on vCPU ${v.id} at rip 0x${hw.rip.toString(16)}${x.detail ? ` (${x.detail})` : ''}`);
        return true;
      case 'failure':
        this.crash(d, this.describeFailure(v, x));
        return true;
    }
  }

  /** The hypercall page's OUT (without a hypercall page the port is just an empty I/O port). */
  isHypercallPort(d: Domain, io: VcpuExit['io']): boolean {
    return io.port === HYPERCALL_PORT && io.out && io.size === 4 && d.hypercallPageGfn >= 0;
  }

  /**
   * Port I/O other than a hypercall: the debug console port, and nothing else
   * (reads float high, writes vanish). Called from the exit (KVM) or during
   * the access itself (the software CPU), with the same data either way.
   */
  portIo(d: Domain, io: VcpuExit['io']): void {
    const n = io.size * io.count;
    if (io.port === DEBUG_PORT && io.out) emitConsoleBytes(d, 'debugport', io.data.subarray(io.offset, io.offset + n));
    else if (!io.out) io.data.fill(io.port === DEBUG_PORT ? 0xe9 : 0xff, io.offset, io.offset + n);
  }

  /** A trapped hypercall (page stub or VMCALL): true when the vCPU leaves the pCPU. */
  private hypercall(v: VCpu, h: Hcall, nr: number): boolean {
    const d = v.dom;
    if (!beginHypercall(h, nr)) return endHypercall(h, -BigInt(EPERM));
    if (!d.isHome && this.forHome(h)) return true;
    const desched = endHypercall(h, runHypercall(h));
    this.publishPhysmap(d);
    return desched || d.stopping || v.blocked || !v.online;
  }

  /**
   * An access to guest-physical memory that is not RAM: the local APIC's page,
   * else nothing (reads float high). Called from the exit (KVM) or during the
   * access itself (the software CPU), with the same data buffer either way.
   */
  mmio(v: VCpu, m: VcpuExit['mmio']): void {
    const off = v.lapic ? v.lapic.mmioOffset(m.gpa) : -1;
    const data = m.data;
    if (off >= 0 && m.len <= 4) {
      if (m.write) {
        let val = 0;
        for (let i = m.len - 1; i >= 0; i--) val = val * 256 + data[i]!;
        const ipi = v.lapic!.mmioWrite(off, m.len, val);
        if (ipi) this.deliverIpi(v, ipi);
        this.timersDirty = true;
      } else {
        const val = v.lapic!.mmioRead(off, m.len);
        for (let i = 0; i < 8; i++) data[i] = i < m.len ? (val >>> (8 * i)) & 0xff : 0;
      }
      return;
    }
    if (!m.write) data.fill(0xff); // no device there: reads float high
  }

  /** RDMSR/WRMSR the CPU let us see: the local APIC's, the hypercall page's, those of x86/msr.ts; the rest #GP. */
  private msr(v: VCpu, x: VcpuExit): void {
    const m = x.msr;
    const idx = m.index;
    if (v.lapic && Vlapic.handlesMsr(idx)) {
      if (x.kind === 'wrmsr') {
        const r = v.lapic.wrmsr(idx, m.value);
        m.error = r.gp;
        if (r.ipi) this.deliverIpi(v, r.ipi);
        this.timersDirty = true;
      } else {
        const r = v.lapic.rdmsr(idx);
        m.value = r.value;
        m.error = r.gp;
      }
      return;
    }
    if (idx === XEN_HYPERCALL_MSR) {
      if (x.kind === 'wrmsr') m.error = !this.writeHypercallPage(v, m.value);
      else {
        m.value = 0n;
        m.error = false;
      }
      return;
    }
    const r = guestMsr(x.kind === 'wrmsr', idx, m.value);
    if (r && !r.gp) {
      if (x.kind === 'rdmsr') m.value = r.value;
      m.error = false;
      return;
    }
    m.error = true;
    // As Xen's "RDMSR 0x... unimplemented" (gdprintk): once per MSR and direction for each domain.
    const key = `${x.kind} ${idx}`;
    if (!r && !v.dom.msrsRefused.has(key) && v.dom.msrsRefused.size < 64) {
      v.dom.msrsRefused.add(key);
      this.post({ type: 'log', level: 'warn', text: `d${v.dom.domid}v${v.id}: ${x.kind === 'wrmsr' ? `WRMSR 0x${idx.toString(16)} value 0x${m.value.toString(16)}` : `RDMSR 0x${idx.toString(16)}`} unimplemented: #GP` });
    }
  }

  // --- vCPUs of one domain on several workers ---------------------------------

  /**
   * The home worker tells the others holding the domain that its physmap
   * changed. Only the home: a copy's version moves when it loads the home's
   * map, and publishing that would echo it back (to itself too), on every
   * call, and could overwrite a newer map with an older one.
   */
  private publishPhysmap(d: Domain): void {
    if (!d.isHome) return;
    // for every thread that translates this domain's grants
    d.physmap.publish();
    if (!d.replicas.length || d.physmap.version === d.physmapPublished) return;
    d.physmapPublished = d.physmap.version;
    this.post({ type: 'physmap', domid: d.domid, segments: d.physmap.segments().map((x) => ({ ...x, slot: -1 })) });
  }

  /**
   * On a worker that is not the domain's home: a decoded call that changes
   * domain-wide state is sent to the home worker, and the vCPU waits off the
   * runqueue (other vCPUs run meanwhile; its Hcall keeps the call). False:
   * not such a call, perform it here.
   */
  private forHome(h: Hcall): boolean {
    // Of sched_op, only the watchdog is domain-wide.
    if (h.nr === HYPERCALL.sched_op ? h.int(0) !== SCHEDOP_WATCHDOG : !HOME_FAMILIES.has(h.nr)) return false;
    const v = h.vcpu;
    v.awaitingHome = true;
    this.post({ type: 'hcall', domid: h.dom.domid, vcpu: v.id, nr: h.nr, abi: h.abi, args: [...h.args], context: h.context, from: this.init.pcpu });
    return true;
  }

  /** The home worker performs a call a vCPU made elsewhere and sends the outcome back. */
  private performForHome(d: Domain, m: ForwardedCall): void {
    const v = d.vcpus[m.vcpu];
    if (!v || d.stopping) return;
    const h = new Hcall(d, v);
    h.abi = m.abi;
    h.nr = m.nr;
    m.args.forEach((a, i) => { h.args[i] = a; });
    h.context = m.context;
    const result = runHypercall(h); // a bug of ours throws: the caller crashes the domain
    this.publishPhysmap(d);
    const cont = h.continuation as Map<number, bigint> | null;
    this.post({ type: 'hcall-done', domid: m.domid, vcpu: m.vcpu, result, continuation: cont ? [...cont] : null, to: m.from });
  }

  /** The home worker's answer: finish the call on the vCPU and let it run again. */
  private forwardedDone(d: Domain, m: ForwardedResult): void {
    const v = d.vcpus[m.vcpu];
    const h = v?.hcall;
    if (!v?.awaitingHome || !h) return;
    v.awaitingHome = false;
    h.continuation = m.continuation ? new Map(m.continuation) : null;
    endHypercall(h, m.result);
    if (d.isRunnable() && v.online && !v.blocked) this.sched.insert(v, d.now());
  }

  /** WRMSR to the hypercall MSR: page GPA | index (only index 0 exists). */
  private writeHypercallPage(v: VCpu, val: bigint): boolean {
    const d = v.dom;
    if ((val & 0xfffn) !== 0n) return false;
    const gfn = Number(val >> 12n);
    const hp = d.physmap.hostPageOf(gfn);
    const kind = hp < 0 ? null : d.physmap.kindOfHostPage(hp);
    if (kind !== 'ram' && kind !== 'pool') return false;
    fillHypercallPage(d.mem.bytes.subarray(hp * PAGE_SIZE, hp * PAGE_SIZE + PAGE_SIZE));
    d.hypercallPageGfn = gfn;
    // The shared-info layout follows the mode of the guest that wrote the page.
    d.shared.set('abi', v.hw.longMode64 ? 0 : 1);
    return true;
  }

  /**
   * The vCPU stopped at a MOV to CR0 that sets PG with long mode off: 32-bit
   * paging, which PVM cannot run (its triple fault there is the host's).
   */
  private enablesPaging32(v: VCpu): boolean {
    const hw = v.hw;
    if (hw.efer & (1 << 8) || hw.cr0 & 0x80000000) return false; // EFER.LME: long mode is coming; PG already on
    let b: Uint8Array | null;
    try {
      v.dom.access.setContext({ cr0: hw.cr0, cr3: hw.cr3, cr4: hw.cr4, efer: hw.efer });
      b = v.dom.access.read(BigInt(hw.segment('cs').base) + hw.rip, 3);
    } catch {
      return false;
    }
    // 0f 22 /r with ModRM.reg = 0 (CR0) and a register operand: the source's bit 31 is PG
    if (!b || b[0] !== 0x0f || b[1] !== 0x22 || (b[2]! >> 6) !== 3 || ((b[2]! >> 3) & 7) !== 0) return false;
    const src = [REG.rax, REG.rcx, REG.rdx, REG.rbx, REG.rsp, REG.rbp, REG.rsi, REG.rdi][b[2]! & 7]!;
    return (hw.reg(src) & 0x80000000n) !== 0n;
  }

  private describeFailure(v: VCpu, x: VcpuExit): string {
    const rip = v.hw.rip;
    let bytes = x.insnBytes;
    if (!bytes) {
      try {
        const d = v.dom;
        d.access.setContext({ cr0: v.hw.cr0, cr3: v.hw.cr3, cr4: v.hw.cr4, efer: v.hw.efer });
        bytes = d.access.read(BigInt(v.hw.segment('cs').base) + rip, 15);
      } catch {
        bytes = null;
      }
    }
    const hex = bytes ? Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ') : '(unreadable)';
    return `${x.detail} on vCPU ${v.id} at rip 0x${rip.toString(16)}, CPL ${v.hw.cpl}: bytes ${hex}`;
  }
}

if (parentPort && workerData && (workerData as { kind?: string }).kind === 'pcpu') {
  const init = (workerData as { init: PcpuInit }).init;
  const port = parentPort;
  const pcpu = new Pcpu(init, port);
  port.postMessage({ type: 'ready', pcpu: init.pcpu, tid: pcpu.tid } satisfies WorkerToMain);
  pcpu.loop();
  port.close();
}
