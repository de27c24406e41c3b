// Messages between the control domain (main thread) and the pCPU workers.
// They carry control operations only; nothing on a guest's hot path waits
// for one.

import type { DomainSpec, VcpuHandoff } from './domain.js';
import type { CallerContext } from './hypercall.js';
import type { PhysmapLayout, Segment } from './physmap.js';
import type { Arinc653Schedule } from './sched/arinc653.js';

/** What a pCPU's host threads got (host_sched.ts): where they may run, their class, and what the host refused. */
export interface PcpuHostSched {
  pcpu: number;
  /** the host CPUs its threads may run on now */
  affinity: number[];
  policy: string;
  priority: number;
  /** the host's refusals, each saying what it needs; empty when all was applied */
  errors: string[];
}

/**
 * A hypercall a vCPU made on a worker other than its domain's home, performed
 * by the home worker (which owns the domain-wide state: physmap and KVM
 * slots, grant table, reservation), as Xen's continue_hypercall_on_cpu.
 */
export interface ForwardedCall { domid: number; vcpu: number; nr: number; abi: 'x64' | 'x32'; args: bigint[]; context: CallerContext; from: number }
export interface ForwardedResult { domid: number; vcpu: number; result: bigint; continuation: [number, bigint][] | null; to: number }

/** Messages the main thread relays between workers holding the same domain. */
export type Relay =
  | ({ type: 'hcall' } & ForwardedCall)
  | ({ type: 'hcall-done' } & ForwardedResult)
  | { type: 'physmap'; domid: number; segments: Segment[] }
  | { type: 'vcpu-up' | 'vcpu-down'; domid: number; vcpu: number };

export type MainToWorker =
  /** `late`: the domain runs already (a vCPU moves here): its map is read from the home's published copy */
  | { type: 'adopt'; spec: DomainSpec; late?: boolean }
  /** Move a vCPU run here to another pCPU: it leaves at the end of its slice and is handed back (vcpu-moved) */
  | { type: 'vcpu-move'; domid: number; vcpu: number; to: number }
  /** A vCPU handed over from another worker: this one runs it from now on */
  | { type: 'vcpu-move-in'; domid: number; vcpu: number; state: VcpuHandoff }
  | { type: 'pause'; domid: number }
  | { type: 'unpause'; domid: number }
  | { type: 'destroy'; domid: number }
  /** SCHEDOP_remote_shutdown from the control domain */
  | { type: 'shutdown'; domid: number; reason: number; detail: string }
  | { type: 'wake'; domid: number; vcpu: number }
  /** XEN_DOMCTL_sendtrigger NMI, to the worker that runs the vCPU */
  | { type: 'nmi'; domid: number; vcpu: number }
  /** A domain exists (on whichever worker): enough to deliver events to it from this one. */
  | { type: 'known'; domid: number; sharedSab: SharedArrayBuffer; memFd: number; bytes: number; layout: PhysmapLayout }
  /** A process domain exists (process_domain.ts): its port table and shared_info-shaped page. */
  | { type: 'known-process'; domid: number; sharedSab: SharedArrayBuffer; memSab: SharedArrayBuffer }
  | { type: 'forget'; domid: number }
  /** XEN_DOMCTL_SCHEDOP_putinfo, checked by the main thread already. */
  | { type: 'sched-adjust'; domid: number; params: Record<string, number>; vcpu?: number }
  /** The ARINC 653 schedule, with the system time its first major frame starts (the same for every pCPU). */
  | { type: 'sched-arinc653'; schedule: Arinc653Schedule; epoch: bigint }
  /** The home worker answers with its physmap (physmap-report): the toolstack's view of a paused domain's memory (dump-core). */
  | { type: 'physmap-query'; domid: number }
  /** The home worker answers with each vCPU's registers in KVM's layout (regs-report): software-CPU vCPUs live there. */
  | { type: 'regs-query'; domid: number }
  /** The pCPU joined a cpupool: its scheduler, the pool's parameters and its domains' (it holds no vCPU yet). */
  | { type: 'sched-set'; sched: string; pool: { ratelimitUs?: number; tsliceMs?: number }; params: { domid: number; vcpu?: number; params: Record<string, number> }[]; arinc653: { schedule: Arinc653Schedule; epoch: bigint } | null }
  /** XEN_SYSCTL_SCHEDOP_putinfo: the pool's ratelimit / timeslice. */
  | { type: 'sched-pool'; ratelimitUs?: number; tsliceMs?: number }
  /** The pCPU's host threads (its worker, its software-CPU kick helper): host CPUs (null = any) and SCHED_FIFO priority (0 = none). */
  | { type: 'host-sched'; cpus: number[] | null; rtPriority: number }
  | Relay
  | { type: 'stop' };

export type WorkerToMain =
  | { type: 'ready'; pcpu: number; tid: number }
  | { type: 'adopted'; domid: number; pcpu: number; error?: string }
  /** A vCPU left this worker (its state for the next one), or could not (`busy`: try again; `error`: no) */
  | { type: 'vcpu-moved'; domid: number; vcpu: number; to: number; state?: VcpuHandoff; busy?: boolean; error?: string }
  | { type: 'vcpu-moved-in'; domid: number; vcpu: number; error?: string }
  | { type: 'console'; domid: number; source: 'console_io' | 'debugport'; text: string; eol: boolean }
  | { type: 'shutdown'; domid: number; reason: number; detail: string }
  | { type: 'destroyed'; domid: number; pcpu: number }
  | { type: 'physmap-report'; domid: number; segments: Segment[] }
  | { type: 'regs-report'; domid: number; vcpus: { regs: Uint8Array; sregs: Uint8Array }[]; error?: string }
  | ({ type: 'host-sched-done' } & PcpuHostSched)
  | Relay
  | { type: 'log'; level: 'info' | 'warn' | 'error'; text: string };
