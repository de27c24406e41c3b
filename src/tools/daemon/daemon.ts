// The host daemon: one Toolstack (pCPU workers, xenstored, console backends),
// the domains it runs, and the API socket serving protocol.ts. xenstored
// also listens on its own socket next to the API one, so Xen's xenstore-*
// tools work with XENSTORED_PATH.

import os from 'node:os';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Toolstack } from '../toolstack.js';
import { XEN_MAJOR, XEN_MINOR } from '../../hv/abi/xen.js';
import { guestConsoleLine } from '../../hv/console.js';
import { EXTRAVERSION, CAPABILITIES, CHANGESET, COMPILE_INFO } from '../../hv/version.js';
import { API_VERSION, LineReader, type DomainSummary, type CreateRecord, type DomainChange, type VcpuSummary } from './protocol.js';
import { ApiServer, type Handlers } from './server.js';
import { DomainManager, DEFAULT_POLICY, type DomainPolicy } from './domains.js';
import { StateDir } from './state.js';
import { AccelError, type AccelMode } from '../../hv/accel.js';
import { ApiFailure, checkConfig, einval } from './validate.js';
import { debugKeys } from './debug_keys.js';
import { schedHandlers } from './sched.js';
import { systemTimeNs } from '../../hv/time.js';
import type { Hypervisor } from '../../hv/hypervisor.js';

export interface DaemonOptions {
  socketPath: string;
  stateDir: string;
  /** pCPU workers (default: one per host CPU) */
  pcpus?: number;
  /** which CPU runs guests (default auto) */
  accel?: AccelMode;
  /** Pool-0's scheduler (Xen's sched=) */
  sched?: string;
  /** Pool-0's pCPU workers pinned to host CPUs and/or at a SCHED_FIFO priority (Hypervisor.cpupoolHostSched) */
  hostSched?: { pin: boolean; rtPriority: number };
  policy?: Partial<DomainPolicy>;
  /** bytes of hypervisor log kept for host.dmesg (default 64 KiB) */
  dmesgBytes?: number;
  /** also copy the daemon log here (e.g. stderr in the foreground) */
  echo?: (line: string) => void;
}

/** The xenstored socket that goes with an API socket: xenode.sock -> xenode-xenstored.sock. */
export function xenstoredSocketFor(apiSocket: string): string {
  return apiSocket.replace(/(\.sock)?$/, '-xenstored.sock');
}

/** The privileged socket for driver domains that connect by themselves: xenode.sock -> xenode-privcmd.sock. */
export function privcmdSocketFor(apiSocket: string): string {
  return apiSocket.replace(/(\.sock)?$/, '-privcmd.sock');
}

export class DaemonStartError extends Error {}

/**
 * Is someone serving `socketPath`? A daemon that answers hello is reported
 * (pid); a socket file nobody listens on is stale and removed; anything else
 * (a non-socket file, a listener that does not speak our protocol) refuses.
 */
export async function probeSocket(socketPath: string, timeoutMs = 2000): Promise<void> {
  let st: fs.Stats;
  try { st = fs.lstatSync(socketPath); } catch { return; }
  if (!st.isSocket()) throw new DaemonStartError(`${socketPath} exists and is not a socket: refusing to replace it`);
  const answer = await new Promise<{ pid: number } | 'stale' | 'foreign'>((resolve) => {
    const s = net.createConnection(socketPath);
    const lines = new LineReader(1 << 16, () => done('foreign'));
    const done = (r: { pid: number } | 'stale' | 'foreign') => { clearTimeout(t); s.destroy(); resolve(r); };
    const t = setTimeout(() => done('foreign'), timeoutMs);
    s.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? 'stale' : 'foreign'));
    s.on('connect', () => s.write(JSON.stringify({ v: API_VERSION, id: 1, op: 'hello', args: {} }) + '\n'));
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      lines.push(d);
      const line = lines.shift();
      if (line === null) return;
      try {
        const r = JSON.parse(line) as { ok?: boolean; result?: { daemonPid?: number } };
        done(r.ok && typeof r.result?.daemonPid === 'number' ? { pid: r.result.daemonPid } : 'foreign');
      } catch { done('foreign'); }
    });
    s.on('close', () => done('stale'));
  });
  if (answer === 'stale') {
    fs.unlinkSync(socketPath);
    return;
  }
  if (answer === 'foreign') throw new DaemonStartError(`${socketPath} is in use by something that is not a xenode daemon`);
  throw new DaemonStartError(`a xenode daemon (pid ${answer.pid}) is already serving ${socketPath}`);
}

/** The hypervisor's console ring as `xl dmesg` shows it: (XEN) lines and domains' (dN) lines, oldest dropped beyond the cap. */
class Dmesg {
  private lines: string[] = [];
  private head = 0;
  private bytes = 0;
  constructor(private readonly cap: number) {}
  add(line: string): void {
    this.lines.push(line);
    this.bytes += line.length + 1;
    while (this.bytes > this.cap && this.head < this.lines.length - 1) this.bytes -= this.lines[this.head++]!.length + 1;
    if (this.head > 1024) { this.lines = this.lines.slice(this.head); this.head = 0; }
  }
  text(): string {
    const l = this.lines.slice(this.head);
    return l.length ? l.join('\n') + '\n' : '';
  }
  clear(): void {
    this.lines = [];
    this.head = 0;
    this.bytes = 0;
  }
}

function bool(v: unknown, name: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw einval(`${name} must be true or false`);
  return v;
}

function cpus(v: unknown, name: string): number[] | null {
  if (v === null) return null;
  if (!Array.isArray(v) || !v.every((c) => Number.isInteger(c))) throw einval(`${name} must be a list of pCPU numbers or null (all)`);
  return v as number[];
}

export class Daemon {
  private readonly dmesg: Dmesg;
  private readonly creates: CreateRecord[] = [];
  private stopped: Promise<void> | null = null;

  private constructor(
    readonly opts: DaemonOptions,
    readonly state: StateDir,
    readonly ts: Toolstack,
    readonly domains: DomainManager,
    readonly server: ApiServer,
    readonly xenstoredSocket: string,
    dmesg: Dmesg,
  ) {
    this.dmesg = dmesg;
  }

  get xenVersion(): string {
    return `${XEN_MAJOR}.${XEN_MINOR}${EXTRAVERSION}`;
  }

  /** Starts everything; refuses (DaemonStartError) if a daemon already serves the socket. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    await probeSocket(opts.socketPath);
    const state = new StateDir(opts.stateDir);
    state.init();
    const log = (m: string) => { state.log(m); opts.echo?.(m); };
    const xsSock = xenstoredSocketFor(opts.socketPath);
    const dmesg = new Dmesg(opts.dmesgBytes ?? 64 << 10);
    let ts: Toolstack;
    try {
      // a daemon creates domains on demand: keep two VMs made ahead (vm_pool.ts)
      ts = await Toolstack.start({ pcpus: opts.pcpus, sched: opts.sched, accel: opts.accel, log: (l) => log(`xenstored: ${l}`), backendLog: (l) => log(l), xenstoredSocket: xsSock, privcmdSocket: privcmdSocketFor(opts.socketPath), vmPool: 2,
        // xenstored, a process of its own that may be killed and comes back (its state beside the daemon's)
        xenstoredProcess: { dbPath: path.join(opts.stateDir, 'xenstored.journal'), domainsPath: path.join(opts.stateDir, 'xenstored.domains') } });
    } catch (e) {
      state.close();
      if (e instanceof AccelError) throw new DaemonStartError(e.message);
      throw e;
    }
    // what xen-init-dom0 writes at boot on Xen, so tools find the control domain
    await ts.client.write('/local/domain/0/name', 'Domain-0');
    await ts.client.write('/local/domain/0/domid', '0');
    ts.hv.on('log', (level, text) => dmesg.add(`(XEN) ${level === 'info' ? '' : `${level}: `}${text}`));
    ts.hv.on('console', (domid, _src, text) => dmesg.add(guestConsoleLine(domid, text)));
    dmesg.add(`(XEN) xenode hypervisor ${XEN_MAJOR}.${XEN_MINOR}${EXTRAVERSION}, ${ts.hv.nrPcpus} pCPU worker(s), CPU: ${ts.hv.accel.why}`);
    log(`CPU: ${ts.hv.accel.why}`);
    if (opts.hostSched) {
      for (const r of await ts.hv.cpupoolHostSched(0, opts.hostSched)) {
        const line = `pCPU ${r.pcpu}: host CPUs ${formatCpus(r.affinity)}, ${r.policy === 'fifo' ? `SCHED_FIFO ${r.priority}` : 'SCHED_OTHER'}${r.errors.length ? `; NOT APPLIED: ${r.errors.join('; ')}` : ''}`;
        log(line);
        dmesg.add(`(XEN) ${line}`);
      }
    }
    const domains = new DomainManager(ts, state, { ...DEFAULT_POLICY, ...opts.policy }, log);
    const holder: { d?: Daemon } = {};
    const server = new ApiServer(opts.socketPath, makeHandlers(() => holder.d!), log);
    const d = new Daemon(opts, state, ts, domains, server, xsSock, dmesg);
    holder.d = d;
    for (const r of state.staleDomains()) log(`${r.name}: domain ${r.domid} did not survive the previous daemon; dropping its record`);
    state.clearDomains();
    // before listening: once the socket answers, autostart domains are there
    await d.autostart();
    try {
      await server.listen();
    } catch (e) {
      await domains.destroyAll();
      await ts.shutdown();
      state.close();
      throw e instanceof Error && /in use/.test(e.message) ? new DaemonStartError(e.message) : e;
    }
    log(`daemon started: pid ${process.pid}, API ${opts.socketPath}, xenstored ${xsSock}, state ${opts.stateDir}, ${ts.hv.nrPcpus} pCPU(s)`);
    return d;
  }

  private async autostart(): Promise<void> {
    const log = (m: string) => { this.state.log(m); this.opts.echo?.(m); };
    for (const raw of this.state.autoConfigs((f, e) => log(`autostart: cannot read ${f}: ${e.message}`))) {
      try {
        const cfg = checkConfig(raw);
        const r = await this.domains.create(cfg);
        log(`autostart: ${cfg.name} started as domain ${r.domid}`);
      } catch (e) {
        log(`autostart: ${(raw as { name?: string }).name ?? '?'}: ${(e as Error).message}`);
      }
    }
  }

  recordCreate(r: CreateRecord): void {
    this.creates.push(r);
    if (this.creates.length > 1024) this.creates.shift();
  }

  get createRecords(): CreateRecord[] {
    return this.creates;
  }

  /** Lines from the hypervisor for `xl dmesg`, as its console ring holds them. */
  dmesgLines(lines: string[]): void {
    for (const l of lines) this.dmesg.add(`(XEN) ${l}`);
  }

  dmesgText(clear: boolean): string {
    const t = this.dmesg.text();
    if (clear) this.dmesg.clear();
    return t;
  }

  /**
   * The control domain's row in `xl list`: the daemon process, whose one
   * vCPU is its main thread (the toolstack, xenstored and the console
   * backends run there; guest vCPUs run on the pCPU workers).
   */
  dom0Summary(): DomainSummary {
    return {
      domid: 0, name: 'Domain-0', uuid: '00000000-0000-0000-0000-000000000000',
      memory: Math.round(process.memoryUsage.rss() / 1024), maxmem: Math.round(os.totalmem() / 1024),
      vcpus: 1, onlineVcpus: 1, running: true, blocked: false, paused: false, shutdown: false, crashed: false, dying: false,
      shutdownReason: -1, cpuTime: mainThreadCpuSeconds(), startTime: 0, seclabel: '', cpupool: this.ts.hv.cpupools.get(0).name,
      accel: 'none (the control domain runs no guest code)',
    };
  }

  /**
   * Driver domains' rows in `xl list`, as Xen lists its driver domains:
   * each a process, its memory that process's resident set, its time the
   * process's CPU time; blocked (it waits for events) while its process
   * runs, dying between a death and its restart.
   */
  driverDomainSummaries(): DomainSummary[] {
    return this.ts.driverDomains.list().map((dd) => ({
      domid: dd.domid, name: dd.name, uuid: '00000000-0000-0000-0000-000000000000',
      memory: dd.pid ? processRssKiB(dd.pid) : 0, maxmem: 0,
      vcpus: 1, onlineVcpus: 1, running: false, blocked: dd.pid !== null, paused: false, shutdown: false, crashed: false, dying: dd.pid === null,
      shutdownReason: -1, cpuTime: dd.pid ? threadCpuSeconds(dd.pid, '/proc') ?? 0 : 0, startTime: 0, seclabel: '', cpupool: this.ts.hv.cpupools.get(0).name,
      accel: 'none (a driver domain is a process; it runs no guest code)',
    }));
  }

  /** Domain-0's vCPU in `xl vcpu-list`: running (it is answering), on no pCPU worker. */
  dom0Vcpus(): VcpuSummary[] {
    return [{ domid: 0, name: 'Domain-0', vcpu: 0, pcpu: -1, state: 'running', cpuTime: mainThreadCpuSeconds(), hard: null, soft: null }];
  }

  /** SIGTERM/SIGINT: destroy every domain, close the socket, stop the hypervisor. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.state.log('daemon stopping');
      await this.domains.destroyAll();
      await this.server.close();
      await this.ts.shutdown();
      await this.state.flush();
      this.state.log('daemon stopped');
      this.state.close();
    })();
    return this.stopped;
  }
}

function makeHandlers(daemon: () => Daemon): Handlers {
  const D = () => daemon().domains;
  const one = (a: Record<string, unknown>) => D().resolve(a.dom);
  return {
    hello: () => {
      const d = daemon();
      return { version: API_VERSION, daemonPid: process.pid, xenVersion: d.xenVersion, socket: d.opts.socketPath, stateDir: d.opts.stateDir };
    },

    'domain.create': async (a) => {
      const t0 = performance.now();
      const config = checkConfig(a.config);
      const paused = bool(a.paused, 'paused');
      let firstByte: number | null = null;
      let rec: CreateRecord | null = null;
      const r = await D().create(config, {
        paused, t0,
        onFirstByte: (t) => { firstByte = t - t0; if (rec) rec.firstByte = firstByte; },
      });
      rec = { domid: r.domid, name: r.name, ...r.timings, total: performance.now() - t0, firstByte };
      daemon().recordCreate(rec);
      return { domid: r.domid, name: r.name, timings: r.timings };
    },

    'domain.list': () => [daemon().dom0Summary(), ...daemon().driverDomainSummaries(), ...D().all().map((d) => D().summary(d))].sort((a, b) => a.domid - b.domid),

    'domain.config': (a) => {
      const d = one(a);
      return { summary: D().summary(d), config: d.config };
    },

    'domain.resolve': (a) => {
      if (a.dom === 0 || a.dom === '0' || a.dom === 'Domain-0') return { domid: 0, name: 'Domain-0' };
      const d = one(a);
      return { domid: d.domid, name: d.name };
    },

    'domain.destroy': async (a) => {
      await D().destroy(one(a), 'destroyed on request', { forget: true });
      return null;
    },

    'domain.shutdown': async (a) => {
      const d = one(a);
      const timeoutMs = a.timeoutMs;
      // setTimeout's range: a longer delay would fire at once (TimeoutOverflowWarning)
      if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !(timeoutMs >= 0 && timeoutMs <= 0x7fffffff))) throw einval('timeoutMs must be a number of milliseconds in 0..2147483647');
      const reason = await D().shutdown(d, { reboot: bool(a.reboot, 'reboot'), wait: bool(a.wait, 'wait'), force: bool(a.force, 'force'), timeoutMs: timeoutMs as number | undefined });
      return { reason };
    },

    'domain.pause': (a) => { D().pause(one(a)); return null; },
    'domain.unpause': (a) => { D().unpause(one(a)); return null; },
    'domain.rename': async (a) => { await D().rename(one(a), a.name); return null; },
    'domain.dumpCore': async (a) => {
      if (typeof a.path !== 'string' || !path.isAbsolute(a.path)) throw einval('path must be an absolute file name');
      return { pages: await D().dumpCore(one(a), a.path) };
    },
    'domain.configUpdate': (a) => { D().updateConfig(one(a), checkConfig(a.config)); return null; },
    'domain.memset': async (a) => { await D().setMemoryTarget(one(a), a.targetKiB as number); return null; },
    'domain.memmax': async (a) => { await D().setMaxMemory(one(a), a.maxKiB as number); return null; },
    'domain.vcpuSet': async (a) => { await D().setVcpusOnline(one(a), a.online as number); return null; },
    'domain.sysrq': async (a) => { await D().sendSysrq(one(a), a.key as string); return null; },
    'domain.nmi': (a) => { D().sendNmi(one(a), a.vcpu as number); return null; },
    'domain.blockAttach': async (a) => { await D().attachDisk(one(a), a.disk); return null; },
    'domain.blockDetach': async (a) => { await D().detachDisk(one(a), a.dev); return null; },
    'domain.networkAttach': (a) => D().attachNic(one(a), a.vif),
    'domain.networkDetach': async (a) => { await D().detachNic(one(a), a.dev); return null; },

    'console.attach': (a, { conn, id }) => {
      const d = one(a);
      if (d.state === 'dying') throw new ApiFailure('ENOENT', `domain ${d.domid} is being destroyed`);
      const replay = bool(a.replay, 'replay');
      const detach = d.console.attach({
        data: (b) => conn.event({ id, event: 'console', data: b.toString('base64') }),
        end: (reason) => conn.endStream(id, reason),
      });
      conn.addStream(id, { kind: 'console', close: detach });
      if (replay) {
        const tail = d.console.tail();
        // after the response, which the server sends when this handler returns
        if (tail.length) queueMicrotask(() => conn.event({ id, event: 'console', data: tail.toString('base64') }));
      }
      return { domid: d.domid };
    },

    'console.write': (a) => {
      const d = one(a);
      if (typeof a.data !== 'string') throw einval('data must be base64 text');
      const td = daemon().ts.domain(d.domid);
      if (!td || d.state !== 'running') throw new ApiFailure('EINVAL', `domain ${d.domid} is not running`);
      return { written: td.services.console.write(Buffer.from(a.data, 'base64')) };
    },

    'console.detach': (a, { conn }) => {
      const s = typeof a.stream === 'number' ? conn.streams.get(a.stream) : undefined;
      if (!s || s.kind !== 'console') throw new ApiFailure('ENOENT', `no console stream ${JSON.stringify(a.stream)} on this connection`);
      conn.endStream(a.stream as number, 'detached');
      return null;
    },

    'stream.close': (a, { conn }) => {
      if (typeof a.stream !== 'number' || !conn.streams.has(a.stream)) throw new ApiFailure('ENOENT', `no stream ${JSON.stringify(a.stream)} on this connection`);
      conn.endStream(a.stream, 'closed');
      return null;
    },

    'events.subscribe': (_a, { conn, id }) => {
      const listener = (change: DomainChange) => conn.event({ id, event: 'domain', change });
      D().on('change', listener);
      conn.addStream(id, { kind: 'events', close: () => D().off('change', listener) });
      return null;
    },

    'host.info': () => hostInfo(daemon()),

    'host.debugKeys': (a) => {
      if (typeof a.keys !== 'string' || a.keys.length === 0 || a.keys.length > 64) throw einval('keys must be 1..64 characters');
      const d = daemon();
      const names = (id: number) => (D().has(id) ? D().resolve(id).name : '?');
      d.dmesgLines(debugKeys(d.ts.hv, a.keys, names));
      return null;
    },

    'host.dmesg': (a) => ({ text: daemon().dmesgText(bool(a.clear, 'clear') ?? false) }),

    'host.timings': () => ({ creates: daemon().createRecords }),

    'vcpu.list': (a) => {
      if (a.dom === undefined) return [...daemon().dom0Vcpus(), ...D().all().flatMap((d) => D().vcpuList(d))];
      if (a.dom === 0 || a.dom === '0' || a.dom === 'Domain-0') return daemon().dom0Vcpus();
      return D().vcpuList(one(a));
    },

    'vcpu.pin': async (a) => {
      const d = one(a);
      const vcpu = a.vcpu === 'all' ? 'all' : a.vcpu;
      if (vcpu !== 'all' && (typeof vcpu !== 'number' || !Number.isInteger(vcpu))) throw einval("vcpu must be a vCPU number or 'all'");
      await D().pin(d, vcpu as number | 'all', cpus(a.hard, 'hard'), a.soft === undefined ? undefined : cpus(a.soft, 'soft'));
      return null;
    },

    'xenstore.socket': () => ({ path: daemon().xenstoredSocket }),

    ...schedHandlers(() => daemon().ts.hv, (a) => one(a).domid, (domid) => D().all().find((x) => x.domid === domid)?.name ?? ''),
  };
}

/** The thread's CPU time from /proc (utime + stime in USER_HZ ticks, 100 on x86 Linux). */
function threadCpuSeconds(tid: number, proc = '/proc/self/task'): number | undefined {
  try {
    const stat = fs.readFileSync(`${proc}/${tid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14 and 15 of stat(5); f[0] is field 3
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return undefined;
  }
}

/** A process's resident memory in KiB (statm's second field, in pages). */
function processRssKiB(pid: number): number {
  try {
    return Number(fs.readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1]) * 4;
  } catch {
    return 0;
  }
}

function mainThreadCpuSeconds(): number {
  const cpu = process.cpuUsage();
  return threadCpuSeconds(process.pid) ?? (cpu.user + cpu.system) / 1e6;
}

/** Does KVM here use the CPU's nested paging (EPT/NPT), or shadow page tables? */
function kvmPaging(): 'hap' | 'shadow' {
  for (const f of ['/sys/module/kvm_intel/parameters/ept', '/sys/module/kvm_amd/parameters/npt']) {
    try {
      if (/^(Y|1)/.test(fs.readFileSync(f, 'latin1'))) return 'hap';
    } catch { /* module not loaded */ }
  }
  return 'shadow';
}

/**
 * physinfo's hw_cap: the first eight words of Xen's x86 featureset
 * (public/arch-x86/cpufeatureset.h: 1.edx, 1.ecx, e1.edx, e1.ecx, Da1.eax,
 * 7b0.ebx, 7c0.ecx, e7.edx), read from the CPUID the CPU that runs guests
 * offers (KVM's, or the software CPU's).
 */
function hwCaps(d: Daemon): string | undefined {
  let leaves;
  try {
    leaves = d.ts.hv.supportedCpuid();
  } catch {
    return undefined;
  }
  const leaf = (fn: number, index = 0) => leaves.find((e) => e.function === fn && e.index === index);
  const words = [
    leaf(1)?.edx, leaf(1)?.ecx, leaf(0x80000001)?.edx, leaf(0x80000001)?.ecx,
    leaf(0xd, 1)?.eax, leaf(7)?.ebx, leaf(7)?.ecx, leaf(0x80000007)?.edx,
  ];
  return words.map((w) => ((w ?? 0) >>> 0).toString(16).padStart(8, '0')).join(':');
}

/**
 * libxl_scheduler_to_string's names: Xen's schedulers are reported by their
 * name, any other policy (xenode's rr) as LIBXL_SCHEDULER_UNKNOWN.
 */
const LIBXL_SCHEDULERS = ['sedf', 'credit', 'credit2', 'arinc653', 'rtds', 'null'];
export function libxlSchedulerName(policy: string): string {
  return LIBXL_SCHEDULERS.includes(policy) ? policy : 'unknown';
}

/**
 * xl info's xenode_exclusive: `none`, with the last holder and how its period
 * ended once there was one, or the holder, how many pCPUs have stopped the
 * others for it and how long it has left.
 */
export function exclusiveLine(hv: Hypervisor): string {
  const e = hv.exclusive();
  if (e.domid === null) return e.last ? `none (last: domain ${e.last.domid}, ${e.last.how})` : 'none';
  const left = Math.max(0, Number(e.expires - systemTimeNs(hv.timeBase)) / 1e6);
  return `domain ${e.domid}${e.name ? ` (${e.name})` : ''}, ${e.stopped} of ${hv.nrPcpus} pCPUs stopped the others, ${left.toFixed(1)} ms left`;
}

/** Host CPU numbers as ranges (0-3,6). */
function formatCpus(cpus: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < cpus.length; i++) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    out.push(j > i ? `${cpus[i]}-${cpus[j]}` : String(cpus[i]));
    i = j;
  }
  return out.join(',');
}

/** `xl info`'s fields, each a true value for xenode, then xenode's own. */
function hostInfo(d: Daemon): Record<string, string | number> {
  const hv = d.ts.hv;
  const khz = hv.tscKhz;
  const hw = hwCaps(d);
  const info: Record<string, string | number> = {
    host: os.hostname(),
    release: os.release(),
    version: os.version(),
    machine: os.machine(),
    // the pCPUs are the worker threads: one socket, one node, a core each
    nr_cpus: hv.nrPcpus,
    max_cpu_id: hv.nrPcpus - 1,
    nr_nodes: 1,
    cores_per_socket: hv.nrPcpus,
    threads_per_core: 1,
    // Xen's physinfo reports its calibrated TSC rate (cpu_khz), printed "%d.%03d"
    cpu_mhz: `${Math.floor(khz / 1000)}.${String(khz % 1000).padStart(3, '0')}`,
    ...(hw !== undefined ? { hw_caps: hw } : {}),
    // PVH runs in an HVM container; grant tables are v1 only
    virt_caps: ['hvm', kvmPaging(), 'gnttab-v1'].join(' '),
    total_memory: Math.floor(os.totalmem() / 2 ** 20),
    free_memory: Math.floor(os.freemem() / 2 ** 20),
    // no page sharing and no claims exist; pCPUs in no cpupool are free
    sharing_freed_memory: 0,
    sharing_used_memory: 0,
    outstanding_claims: 0,
    free_cpus: hv.cpupools.freeCpus().length,
    xen_major: XEN_MAJOR,
    xen_minor: XEN_MINOR,
    xen_extra: EXTRAVERSION,
    xen_version: d.xenVersion,
    xen_caps: CAPABILITIES,
    xen_scheduler: libxlSchedulerName(hv.cpupools.get(0).sched),
    xen_pagesize: 4096,
    platform_params: 'virt_start=0x0',
    xen_changeset: CHANGESET,
    xen_commandline: '',
    cc_compiler: COMPILE_INFO.compiler,
    cc_compile_by: COMPILE_INFO.by,
    cc_compile_domain: COMPILE_INFO.domain,
    cc_compile_date: COMPILE_INFO.date,
    // XENVER_build_id has none to give
    build_id: '',
    xend_config_format: 4,
    xenode_scheduler: hv.cpupools.get(0).sched,
    // which CPU runs guest code (kvm, or tcg: the software CPU), and why it was chosen
    xenode_accel: hv.accel.accel,
    xenode_accel_reason: hv.accel.why,
    // per pCPU: the host CPUs its worker may run on and its scheduling class (--pin-pcpus, --rt-priority)
    xenode_pcpu_host: hv.pcpuHost.some(Boolean) ? hv.pcpuHost.map((r, i) => `${i}:${r ? `${formatCpus(r.affinity)}/${r.policy === 'fifo' ? `fifo${r.priority}` : 'other'}` : 'any/other'}`).join(' ') : 'unpinned, SCHED_OTHER',
    // which domain, if any, has the machine to itself (SCHEDOP_xenode_exclusive)
    xenode_exclusive: exclusiveLine(hv),
    daemon_pid: process.pid,
    daemon_uptime: Math.floor(d.domains.nsSinceBoot / 1e9),
    // as many as `xl list` shows: Domain-0, the driver domains and the guests
    nr_domains: d.domains.all().length + 1 + d.ts.driverDomains.list().length,
    xenstored_socket: d.xenstoredSocket,
    // the control domain's xenstored: its own process (started again when it dies), or the daemon's
    xenstored_pid: d.ts.xs.pid ?? 'down (being started again)',
    xenstored_starts: d.ts.xs.starts,
  };
  return info;
}
