// The host daemon's local API (version 1): newline-delimited JSON over a Unix
// socket. Every request carries the protocol version and an id; the daemon
// answers each request exactly once with the same id, and may then send
// stream events for requests that open a stream (console.attach, events).
// Documented for users in docs/api.md; this file is the contract.

import type { DomainConfig } from '../xl/config.js';

export const API_VERSION = 1;

export interface Request<Op extends keyof Ops = keyof Ops> {
  v: typeof API_VERSION;
  id: number;
  op: Op;
  args: Ops[Op]['args'];
}

export type Response =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: ApiError };

/** An event of a stream opened by request `id`; `end` closes the stream. */
export type StreamEvent =
  | { id: number; event: 'console'; data: string /* base64 */ }
  | { id: number; event: 'domain'; change: DomainChange }
  | { id: number; event: 'end'; reason: string };

export interface ApiError {
  /** errno-style: ENOENT (no such domain), EEXIST (name taken), EINVAL (bad arguments), EBUSY, ETIMEDOUT, EIO, EPROTO (bad request, version mismatch) */
  code: string;
  message: string;
}

/** A domain as `xl list` and the API show it. */
export interface DomainSummary {
  domid: number;
  name: string;
  uuid: string;
  /** KiB */
  memory: number;
  maxmem: number;
  vcpus: number;
  onlineVcpus: number;
  /** xl's state flags */
  running: boolean;
  blocked: boolean;
  paused: boolean;
  shutdown: boolean;
  crashed: boolean; // shut down with SHUTDOWN_crash
  dying: boolean;
  /** SHUTDOWN_* code when shut down, else -1 */
  shutdownReason: number;
  cpuTime: number; // seconds
  /** ns since the daemon's boot (for uptime) */
  startTime: number;
  seclabel: string;
  /** the cpupool it runs in (xl list -c) */
  cpupool: string;
  /** which CPU runs its vCPUs, in words (kvm, tcg, kvm+tcg...: xl list -l) */
  accel: string;
}

export interface VcpuSummary {
  domid: number;
  name: string;
  vcpu: number;
  pcpu: number; // -1 when not running anywhere
  state: 'running' | 'runnable' | 'blocked' | 'offline';
  cpuTime: number; // seconds
  hard: number[] | null; // null = all
  soft: number[] | null;
}

export interface DomainChange {
  domid: number;
  name: string;
  what: 'created' | 'shutdown' | 'destroyed' | 'restarted' | 'renamed' | 'paused' | 'unpaused';
  reason?: number;
  /** for 'restarted': the new domain id */
  newDomid?: number;
}

/** Milliseconds spent in each step of a domain.create, measured inside the daemon. */
export interface CreateTimings {
  /** checking the config and reading the kernel/ramdisk */
  parse: number;
  /** domain, memory, vCPUs, kernel load, rings */
  build: number;
  /** console backend, xenstore skeleton, INTRODUCE */
  xenstore: number;
  /** handing it to a pCPU */
  unpause: number;
}

export interface CreateRecord extends CreateTimings {
  domid: number;
  name: string;
  /** request received to create answered */
  total: number;
  /** request received to the domain's first console byte; null if none yet */
  firstByte: number | null;
}

export type { CpupoolSummary, Arinc653Wire } from './sched.js';
import type { CpupoolSummary, Arinc653Wire } from './sched.js';
/** cpupool.cpu-add/remove: each cpu on its own (libxl's *_cpumap), the ones that failed with why. */
export interface CpuChange { done: number[]; failed: { cpu: number; message: string }[] }

/** `dom` is a domain id or a name, as xl accepts either. */
type Dom = { dom: string | number };

export interface Ops {
  hello: { args: Record<string, never>; result: { version: number; daemonPid: number; xenVersion: string; socket: string; stateDir: string } };
  'domain.create': { args: { config: DomainConfig; paused?: boolean }; result: { domid: number; name: string; timings?: CreateTimings } };
  'domain.list': { args: Record<string, never>; result: DomainSummary[] };
  /** `xl list -l`: the stored config with the live summary */
  'domain.config': { args: Dom; result: { summary: DomainSummary; config: DomainConfig } };
  'domain.resolve': { args: Dom; result: { domid: number; name: string } };
  'domain.destroy': { args: Dom; result: null };
  /** via control/shutdown; after `timeoutMs` without the guest acting, `force` destroys it */
  'domain.shutdown': { args: Dom & { reboot?: boolean; wait?: boolean; force?: boolean; timeoutMs?: number }; result: { reason: number | null } };
  'domain.pause': { args: Dom; result: null };
  'domain.unpause': { args: Dom; result: null };
  'domain.rename': { args: Dom & { name: string }; result: null };
  /** xl mem-set: memory/target for the guest's balloon driver, with the reservation limit following it (libxl_set_memory_target, enforce) */
  'domain.memset': { args: Dom & { targetKiB: number }; result: null };
  /** xl dump-core: the domain's memory and vCPU state to `path` (absolute, written by the daemon) in xc_core's ELF layout */
  'domain.dumpCore': { args: Dom & { path: string }; result: { pages: number } };
  /** xl config-update: the configuration the domain is restarted with next (its name and uuid stay) */
  'domain.configUpdate': { args: Dom & { config: DomainConfig }; result: null };
  /** xl mem-max: the hypervisor's reservation limit (libxl_domain_setmaxmem) */
  'domain.memmax': { args: Dom & { maxKiB: number }; result: null };
  /** xl vcpu-set: cpu/N/availability for the guest's vCPU hotplug (libxl_set_vcpuonline) */
  'domain.vcpuSet': { args: Dom & { online: number }; result: null };
  /** xl block-attach: a disk (an xl-disk-configuration string) added to the running domain and its configuration */
  'domain.blockAttach': { args: Dom & { disk: string }; result: null };
  /** xl block-detach: the disk with that vdev or device number closed and removed (ENOENT: no such disk) */
  'domain.blockDetach': { args: Dom & { dev: string }; result: null };
  /** xl network-attach: a vif (an xl-network-configuration string) added to the running domain and its configuration */
  'domain.networkAttach': { args: Dom & { vif: string }; result: { devid: number; mac: string } };
  /** xl network-detach: the vif with that devid or MAC closed and removed (ENOENT: no such vif) */
  'domain.networkDetach': { args: Dom & { dev: string }; result: null };
  /** xl sysrq: control/sysrq (libxl_send_sysrq) */
  'domain.sysrq': { args: Dom & { key: string }; result: null };
  /** xl trigger nmi: an NMI into one vCPU (libxl_send_trigger, XEN_DOMCTL_sendtrigger) */
  'domain.nmi': { args: Dom & { vcpu: number }; result: null };
  /** attach: replays the kept log tail if `replay`, then streams console events until detach or the domain dies */
  'console.attach': { args: Dom & { replay?: boolean }; result: { domid: number } };
  'console.write': { args: Dom & { data: string /* base64 */ }; result: { written: number } };
  'console.detach': { args: { stream: number }; result: null };
  'host.info': { args: Record<string, never>; result: Record<string, string | number> };
  /** xl debug-keys: Xen's keyhandlers that mean something here report to the hypervisor log */
  'host.debugKeys': { args: { keys: string }; result: null };
  /** the hypervisor log (`xl dmesg`); clear empties it after reading */
  'host.dmesg': { args: { clear?: boolean }; result: { text: string } };
  'vcpu.list': { args: Partial<Dom>; result: VcpuSummary[] };
  'vcpu.pin': { args: Dom & { vcpu: number | 'all'; hard: number[] | null; soft?: number[] | null }; result: null };

  'cpupool.list': { args: Record<string, never>; result: CpupoolSummary[] };
  'cpupool.create': { args: { name: string; sched?: string; cpus?: number[] }; result: { poolid: number } };
  'cpupool.destroy': { args: { pool: string | number }; result: null };
  'cpupool.rename': { args: { pool: string | number; name: string }; result: null };
  'cpupool.cpu-add': { args: { pool: string | number; cpus: number[] }; result: CpuChange };
  'cpupool.cpu-remove': { args: { pool: string | number; cpus: number[] }; result: CpuChange };
  'cpupool.migrate': { args: Dom & { pool: string | number }; result: null };
  'sched.get': { args: Dom & { vcpus?: number[] | 'all' }; result: { sched: string; poolid: number; params: Record<string, number>; vcpus?: (Record<string, number> & { vcpuid: number })[] } };
  'sched.set': { args: Dom & { sched: string; params?: Record<string, number>; vcpus?: { vcpuid: number; params: Record<string, number> }[] }; result: null };
  'sched.arinc653': { args: { pool?: string | number; set?: { majorFrameUs: number; entries: { dom: string | number; vcpu: number; runtimeUs: number }[] } }; result: Arinc653Wire };
  'sched.pool': { args: { pool: string | number; set?: { ratelimitUs?: number; tsliceMs?: number } }; result: { poolid: number; sched: string; ratelimitUs?: number; tsliceMs?: number } };
  /** a stream of DomainChange events */
  'events.subscribe': { args: Record<string, never>; result: null };
  /** ends any stream this connection opened (console or events); `stream` is the opening request's id */
  'stream.close': { args: { stream: number }; result: null };
  /** the path of xenstored's socket, for xenstore-* passthroughs */
  'xenstore.socket': { args: Record<string, never>; result: { path: string } };
  /** diagnostics: where the time of recent creates went (the daemon keeps the last 1024) */
  'host.timings': { args: Record<string, never>; result: { creates: CreateRecord[] } };
}

/**
 * The framing both ends read: text in, complete non-blank lines out. A line
 * longer than `maxLine` is dropped whole, `onOverlong` called once for it.
 */
export class LineReader {
  private buf = '';
  private skipping = false;

  constructor(private readonly maxLine = Infinity, private readonly onOverlong: () => void = () => {}) {}

  push(chunk: string): void {
    this.buf += chunk;
  }

  /** The next complete line, or null until more text arrives. */
  shift(): string | null {
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl < 0) {
        if (this.buf.length > this.maxLine) {
          this.buf = '';
          if (!this.skipping) this.onOverlong();
          this.skipping = true;
        }
        return null;
      }
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (this.skipping) this.skipping = false;
      else if (line.trim() !== '') return line;
    }
  }
}
