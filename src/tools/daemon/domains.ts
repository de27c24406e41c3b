// The daemon's domains (libxl + xl's domain-death handling): create from a
// DomainConfig, keep each one's config, console and state, apply the
// on_poweroff/on_reboot/on_crash/on_watchdog/on_soft_reset action when a
// domain shuts down, shut domains down through control/shutdown, and report
// every change as a DomainChange.

import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Toolstack, CreateTimings } from '../toolstack.js';
import { buildConfigFor, ImageError } from '../builder.js';
import { PvhLoadError } from '../../hv/x86/pvh.js';
import { SHUTDOWN, SHUTDOWN_NAMES } from '../../hv/sched_op.js';
import { RUNSTATE } from '../../hv/shared.js';
import { PAGE_SIZE, XEN_MAJOR, XEN_MINOR } from '../../hv/abi/xen.js';
import { CAPABILITIES, CHANGESET, COMPILE_INFO, EXTRAVERSION } from '../../hv/version.js';
import { writeCore } from '../core_dump.js';
import type { DiskSpec, DomainConfig, ShutdownAction, VifSpec } from '../xl/config.js';
import type { DomainChange, DomainSummary, VcpuSummary } from './protocol.js';
import { DomainConsole, consoleLogPath } from './consoles.js';
import type { StateDir } from './state.js';
import { ApiFailure, checkName, einval } from './validate.js';
import { createSettings } from './sched.js';
import { DiskError, vbdSpecOf, type VbdSpec } from '../disk.js';
import { NicError, nicSpecOf, type NicSpec } from '../net.js';
import { DiskSpecError, parseDiskSpec } from '../xl/disk.js';
import { parseVifSpec, VifSpecError } from '../xl/vif.js';

export interface DomainPolicy {
  /** wait between destroying a domain and re-creating it (xl sleeps 2 s) */
  restartDelayMs: number;
  /** restarts allowed within restartWindowMs before the domain is left shut down */
  restartLimit: number;
  restartWindowMs: number;
  /** the driver domain serving disks whose spec names no other backend (unset: the control domain) */
  diskBackend?: string;
  /** the same for vifs */
  vifBackend?: string;
}

/** libxl's LIBXL_MAXMEM_CONSTANT: the slack (KiB) libxl leaves between a target and Xen's limit. */
export const LIBXL_MAXMEM_CONSTANT = 1024;

export const DEFAULT_POLICY: DomainPolicy = { restartDelayMs: 2000, restartLimit: 5, restartWindowMs: 60_000 };

type State = 'running' | 'shutdown' | 'dying';

interface Domain {
  domid: number;
  /** config.name: a rename replaces the config */
  readonly name: string;
  config: DomainConfig;
  console: DomainConsole;
  /** ns since the daemon started */
  startNs: number;
  state: State;
  shutdownReason: number;
  /** restart times (ms) of this domain's line, for the restart-loop guard */
  restarts: number[];
  /** xl config-update's configuration, used when the domain is next restarted (libxl's "xl" userdata) */
  nextConfig?: DomainConfig;
  /** per-vCPU affinity set by vcpu.pin (null = from the config) */
  pins: ({ hard: number[] | null; soft: number[] | null } | null)[];
  /** resolves when the domain is gone or its shutdown action left it in place */
  settled: Promise<number | null>;
  settle: (reason: number | null) => void;
  gone: Promise<void>;
  markGone: () => void;
}

export interface CreateResult {
  domid: number;
  name: string;
  timings: CreateTimings & { parse: number };
}

type Events = { change: [DomainChange] };

/** What an action does once its core dump (if any) is written; xl's defaults where one cannot be applied as configured. */
function effectiveAction(a: ShutdownAction, log: (m: string) => void, name: string): 'destroy' | 'restart' | 'rename-restart' | 'preserve' {
  switch (a) {
    case 'coredump-destroy':
      return 'destroy';
    case 'coredump-restart':
      return 'restart';
    case 'soft-reset':
      log(`${name}: soft-reset is not supported yet (it needs the domain's memory kept): restarting the domain instead`);
      return 'restart';
    default:
      return a;
  }
}

/** libxl_domain_preserve's suffix: -YYYYMMDDTHHMMZ (UTC). */
function preserveSuffix(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `-${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}T${p(d.getUTCHours())}${p(d.getUTCMinutes())}Z`;
}

export class DomainManager extends EventEmitter<Events> {
  private readonly doms = new Map<number, Domain>();
  /** names being created or between destroy and re-create of a restart */
  private readonly reserved = new Set<string>();
  private readonly bootNs = process.hrtime.bigint();
  private stopping = false;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    readonly ts: Toolstack,
    private readonly state: StateDir,
    private readonly policy: DomainPolicy,
    private readonly log: (m: string) => void,
  ) {
    super();
    // one 'change' listener per open events stream: bounded per connection (server.ts), not a leak
    this.setMaxListeners(0);
    const hv = ts.hv;
    // A domain's console is its PV console ring (the output callback of create below); its console_io
    // and 0xE9 lines go to the hypervisor console (xl dmesg), as on Xen: the daemon puts them there.
    hv.on('shutdown', (domid, reason, detail) => this.onShutdown(domid, reason, detail));
    hv.on('destroyed', (domid) => {
      // a domain the hypervisor lost by itself (a worker could not start it)
      const d = this.doms.get(domid);
      if (d && d.state !== 'dying') void this.destroy(d, 'the hypervisor destroyed it');
    });
  }

  get nsSinceBoot(): number {
    return Number(process.hrtime.bigint() - this.bootNs);
  }

  // --- lookup ----------------------------------------------------------------

  /** A domain by id (number or digits) or name, as xl takes either. */
  resolve(dom: unknown): Domain {
    if (typeof dom === 'number' || (typeof dom === 'string' && /^\d+$/.test(dom))) {
      const id = Number(dom);
      if (!Number.isInteger(id) || id < 0) throw einval(`bad domain id ${JSON.stringify(dom)}`);
      if (id === 0) throw new ApiFailure('EINVAL', 'domain 0 is the control domain (the daemon itself)');
      const d = this.doms.get(id);
      if (!d) throw new ApiFailure('ENOENT', `no domain with id ${id}`);
      return d;
    }
    if (typeof dom !== 'string' || dom === '') throw einval('dom must be a domain id or name');
    if (dom === 'Domain-0') throw new ApiFailure('EINVAL', 'Domain-0 is the control domain (the daemon itself)');
    for (const d of this.doms.values()) if (d.name === dom) return d;
    throw new ApiFailure('ENOENT', `no domain named '${dom}'`);
  }

  has(domid: number): boolean {
    return this.doms.has(domid);
  }

  all(): Domain[] {
    return [...this.doms.values()].sort((a, b) => a.domid - b.domid);
  }

  private nameTaken(name: string): boolean {
    if (this.reserved.has(name) || name === 'Domain-0') return true;
    for (const d of this.doms.values()) if (d.name === name) return true;
    return false;
  }

  // --- create ----------------------------------------------------------------

  /**
   * Creates a domain from a checked config. `restartOf` carries a restarted
   * domain's history (its name is already reserved by the restart).
   */
  async create(config: DomainConfig, o: { paused?: boolean; restartOf?: Domain; t0?: number; onFirstByte?: (t: number) => void } = {}): Promise<CreateResult> {
    const t0 = o.t0 ?? performance.now();
    if (this.stopping) throw new ApiFailure('EBUSY', 'the daemon is stopping');
    if (!o.restartOf) {
      if (this.nameTaken(config.name)) throw new ApiFailure('EEXIST', `a domain named '${config.name}' already exists`);
      for (const d of this.doms.values()) {
        if (d.config.uuid === config.uuid) throw new ApiFailure('EEXIST', `domain '${d.name}' (${d.domid}) already has uuid ${config.uuid}`);
      }
    }
    this.reserved.add(config.name);
    try {
      let bc;
      let sched;
      try {
        // libxl__domain_config_setdefault: a pool that does not exist is refused; affinity and parameters go with the build
        const s = createSettings(this.ts.hv, config);
        sched = s.sched;
        bc = { ...buildConfigFor(config), pool: s.pool, hard: s.hard, soft: s.soft };
      } catch (e) {
        throw e instanceof ImageError ? new ApiFailure('ENOENT', e.message) : e;
      }
      const tParsed = performance.now();
      const console = new DomainConsole(consoleLogPath(this.state.dir, config.name));
      if (o.onFirstByte) console.onFirstByte(o.onFirstByte);
      const timings = {} as CreateTimings;
      let td;
      try {
        td = await this.ts.create(bc, (b) => console.write(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), { uuid: config.uuid, paused: o.paused, timings, sched, disks: config.disks.map((x) => this.diskSpec(x)), vifs: config.vifs.map((x) => this.vifSpec(x)) });
      } catch (e) {
        if (e instanceof PvhLoadError) throw einval(`${config.kernel}: ${e.message}`);
        if (e instanceof DiskError || e instanceof NicError) throw einval(e.message);
        if (e instanceof RangeError) throw einval(e.message);
        throw e;
      }
      let settle!: (r: number | null) => void;
      const settled = new Promise<number | null>((r) => { settle = r; });
      let markGone!: () => void;
      const gone = new Promise<void>((r) => { markGone = r; });
      const d: Domain = {
        domid: td.domid, get name() { return this.config.name; }, config, console, startNs: this.nsSinceBoot, state: 'running', shutdownReason: -1,
        restarts: o.restartOf?.restarts ?? [], pins: [], settled, settle, gone, markGone,
      };
      this.doms.set(d.domid, d);
      this.persist(d);
      if (config.autostart) this.state.saveAuto(config);
      this.log(`${d.name}: created domain ${d.domid} (uuid ${config.uuid}, ${config.memory} MiB, ${config.vcpus} vCPU, kernel ${config.kernel})${o.paused ? ', paused' : ''}`);
      this.emit('change', { domid: d.domid, name: d.name, what: 'created' });
      return { domid: d.domid, name: d.name, timings: { parse: tParsed - t0, ...timings } };
    } finally {
      if (!o.restartOf) this.reserved.delete(config.name);
    }
  }

  private persist(d: Domain): void {
    this.state.saveDomain({ domid: d.domid, name: d.name, uuid: d.config.uuid, created: new Date().toISOString(), config: d.config });
  }

  // --- destroy ---------------------------------------------------------------

  /**
   * Destroys a domain: hypervisor, xenstore (@releaseDomain), console readers
   * get `end`, its saved config goes. `forget` also drops the autostart entry
   * (a user's destroy); `keepVm` leaves /vm/<uuid> for a restart.
   */
  async destroy(d: Domain, why: string, o: { forget?: boolean; keepVm?: boolean } = {}): Promise<void> {
    if (d.state === 'dying') return d.gone;
    d.state = 'dying';
    try {
      await this.ts.destroy(d.domid, { keepVm: o.keepVm });
    } catch (e) {
      this.log(`${d.name}: destroying domain ${d.domid}: ${(e as Error).message}`);
    }
    this.doms.delete(d.domid);
    this.state.removeDomain(d.domid);
    if (o.forget && d.config.autostart) this.state.removeAuto(d.config.uuid);
    d.console.end('domain destroyed');
    this.log(`${d.name}: domain ${d.domid} destroyed (${why})`);
    this.emit('change', { domid: d.domid, name: d.name, what: 'destroyed' });
    d.settle(d.shutdownReason >= 0 ? d.shutdownReason : null);
    d.markGone();
  }

  /** Destroys everything (daemon stop): autostart entries stay. */
  async destroyAll(): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const all = this.all();
    await Promise.all(all.map((d) => this.destroy(d, 'daemon stopping')));
    // the console logs are written in the background: let the last bytes land
    await Promise.all(all.map((d) => d.console.flushed()));
  }

  // --- shutdown and its actions ---------------------------------------------

  private onShutdown(domid: number, reason: number, detail: string): void {
    const d = this.doms.get(domid);
    if (!d || d.state !== 'running') return;
    d.state = 'shutdown';
    d.shutdownReason = reason;
    const why = SHUTDOWN_NAMES[reason] ?? `reason ${reason}`;
    this.log(`${d.name}: domain ${domid} shut down: ${why}${detail ? ` (${detail.split('\n')[0]})` : ''}`);
    this.emit('change', { domid, name: d.name, what: 'shutdown', reason });
    if (this.stopping) return;
    void this.applyAction(d, reason).catch((e: unknown) => this.log(`${d.name}: shutdown action failed: ${e instanceof Error ? e.stack : String(e)}`));
  }

  private actionFor(c: DomainConfig, reason: number): ShutdownAction | null {
    switch (reason) {
      case SHUTDOWN.poweroff: return c.onPoweroff;
      case SHUTDOWN.reboot: return c.onReboot;
      case SHUTDOWN.crash: return c.onCrash;
      case SHUTDOWN.watchdog: return c.onWatchdog;
      case SHUTDOWN.soft_reset: return c.onSoftReset;
      case SHUTDOWN.suspend: return null; // xl: "Domain has suspended": left for save/migrate
      default: return 'destroy'; // xl: unknown reason code, destroying
    }
  }

  private async applyAction(d: Domain, reason: number): Promise<void> {
    const configured = this.actionFor(d.config, reason);
    if (configured === null) {
      this.log(`${d.name}: domain ${d.domid} has suspended; left as it is`);
      d.settle(reason);
      return;
    }
    const action = effectiveAction(configured, this.log, d.name);
    this.log(`${d.name}: action for ${SHUTDOWN_NAMES[reason] ?? reason} is ${configured}`);
    if (configured === 'coredump-destroy' || configured === 'coredump-restart') {
      // xl's handle_domain_death: XEN_DUMP_DIR/<name>, and a failed dump does not stop the action
      const file = path.join(this.state.dir, 'dump', d.name);
      this.log(`${d.name}: dumping core to ${file}`);
      try {
        fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
        await this.dumpCore(d, file);
      } catch (e) {
        this.log(`${d.name}: core dump failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (action === 'preserve') {
      d.settle(reason);
      return;
    }
    if (action === 'destroy') {
      await this.destroy(d, `on_${SHUTDOWN_NAMES[reason] ?? 'shutdown'}=destroy`);
      return;
    }
    // restart, rename-restart: guard against a domain that keeps dying
    const now = Date.now();
    d.restarts = d.restarts.filter((t) => now - t < this.policy.restartWindowMs);
    if (d.restarts.length >= this.policy.restartLimit) {
      this.log(`${d.name}: domain ${d.domid} restarted ${d.restarts.length} times within ${this.policy.restartWindowMs / 1000} s: not restarting it again, leaving it shut down (destroy it to clear)`);
      d.settle(reason);
      return;
    }
    d.restarts.push(now);
    const oldId = d.domid;
    const name = d.name;
    // the preserved copy gets a new name and uuid, the restarted one keeps these; config-update's
    // configuration replaces the rest, as xl's reload_domain_config takes the stored one
    const lineConfig = d.nextConfig ? { ...d.nextConfig, name: d.name, uuid: d.config.uuid } : d.config;
    if (d.nextConfig) this.log(`${d.name}: restarting domain ${d.domid} with the configuration config-update stored`);
    this.reserved.add(name);
    try {
      if (action === 'rename-restart') {
        await this.preserveUnderNewName(d);
        d.settle(reason);
      } else {
        await this.destroy(d, `on_${SHUTDOWN_NAMES[reason] ?? 'shutdown'}=restart`, { keepVm: true });
      }
      if (this.policy.restartDelayMs > 0) {
        await new Promise<void>((r) => {
          const t = setTimeout(() => { this.timers.delete(t); r(); }, this.policy.restartDelayMs);
          this.timers.add(t);
        });
      }
      if (this.stopping) return;
      const r = await this.create(lineConfig, { restartOf: d });
      this.log(`${name}: restarted as domain ${r.domid} (was ${oldId})`);
      this.emit('change', { domid: oldId, name, what: 'restarted', newDomid: r.domid });
    } catch (e) {
      this.log(`${name}: restart failed: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      this.reserved.delete(name);
    }
  }

  /**
   * libxl_domain_preserve: the shut-down domain stays, renamed <name>-<UTC
   * time> with a fresh uuid, so the restarted one can have the name and uuid.
   */
  private async preserveUnderNewName(d: Domain): Promise<void> {
    const base = d.name + preserveSuffix();
    let newName = base;
    for (let i = 1; this.nameTaken(newName); i++) newName = `${base}-${i}`;
    const newUuid = randomUUID();
    const oldName = d.name;
    await this.renameInStore(d, newName, newUuid);
    d.config = { ...d.config, name: newName, uuid: newUuid, autostart: false };
    d.console.rename(consoleLogPath(this.state.dir, newName));
    this.persist(d);
    this.log(`${oldName}: preserving domain ${d.domid} as '${newName}' (uuid ${newUuid})`);
    this.emit('change', { domid: d.domid, name: newName, what: 'renamed' });
  }

  private async renameInStore(d: Domain, name: string, uuid = d.config.uuid): Promise<void> {
    const c = this.ts.client;
    const dom = `/local/domain/${d.domid}`;
    await c.transaction(async (tx) => {
      if (uuid !== d.config.uuid) {
        const vm = `/vm/${uuid}`;
        await c.write(vm, '', tx);
        await c.write(`${vm}/uuid`, uuid, tx);
        await c.write(`${vm}/name`, name, tx);
        await c.write(`${dom}/vm`, vm, tx);
      } else {
        await c.write(`/vm/${uuid}/name`, name, tx);
      }
      await c.write(`${dom}/name`, name, tx);
    });
  }

  /**
   * xc_domain_shutdown (SCHEDOP_remote_shutdown), what xl shutdown -F falls
   * back to for a guest without PV control: the hypervisor shuts the domain
   * down with `reason` as if the guest had asked, and its action runs from
   * the 'shutdown' event like any other shutdown.
   */
  forceShutdown(d: Domain, reason: number): void {
    if (d.state !== 'running') return;
    if (this.ts.hv.remoteShutdown(d.domid, reason, 'forced by the toolstack')) {
      this.log(`${d.name}: forcing domain ${d.domid} to shut down (${SHUTDOWN_NAMES[reason]})`);
    }
  }

  /**
   * libxl_domain_shutdown/reboot: write control/shutdown when the guest
   * advertises control/feature-poweroff (or -reboot); otherwise only `force`
   * can shut it down (xl shutdown -F). With `wait` or `force`, waits up to
   * timeoutMs for the domain to go (or settle in its preserved state).
   */
  async shutdown(d: Domain, o: { reboot?: boolean; wait?: boolean; force?: boolean; timeoutMs?: number }): Promise<number | null> {
    if (d.state === 'dying') throw new ApiFailure('EBUSY', `domain ${d.domid} is already being destroyed`);
    const reason = o.reboot ? SHUTDOWN.reboot : SHUTDOWN.poweroff;
    if (d.state === 'running') {
      const word = o.reboot ? 'reboot' : 'poweroff';
      const c = this.ts.client;
      const dom = `/local/domain/${d.domid}`;
      const feature = await c.tryRead(`${dom}/control/feature-${word}`);
      if (feature === '1') {
        await c.write(`${dom}/control/shutdown`, word);
        this.log(`${d.name}: asked domain ${d.domid} to ${word} (control/shutdown)`);
      } else if (o.force) {
        this.forceShutdown(d, reason);
      } else {
        throw new ApiFailure('EOPNOTSUPP', `domain ${d.domid} has no PV control interface (control/feature-${word} is not set): it cannot be asked to ${word}; use force (xl ${o.reboot ? 'reboot' : 'shutdown'} -F)`);
      }
    }
    if (!o.wait && !o.force) return null;
    const limit = o.timeoutMs ?? (o.force ? 10_000 : 0);
    if (limit <= 0) return d.settled;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), limit); });
    const r = await Promise.race([d.settled, timedOut]);
    clearTimeout(timer);
    if (r !== 'timeout') return r;
    if (!o.force) throw new ApiFailure('ETIMEDOUT', `domain ${d.domid} did not shut down within ${limit} ms`);
    this.forceShutdown(d, reason);
    return d.settled;
  }

  // --- other controls ---------------------------------------------------------

  pause(d: Domain): void {
    if (d.state === 'dying') throw new ApiFailure('EBUSY', `domain ${d.domid} is being destroyed`);
    this.ts.hv.pause(d.domid);
    this.emit('change', { domid: d.domid, name: d.name, what: 'paused' });
  }

  unpause(d: Domain): void {
    if (d.state === 'dying') throw new ApiFailure('EBUSY', `domain ${d.domid} is being destroyed`);
    if (!this.ts.hv.info(d.domid)?.paused) throw new ApiFailure('EINVAL', `domain ${d.domid} is not paused`);
    this.ts.hv.unpause(d.domid);
    this.emit('change', { domid: d.domid, name: d.name, what: 'unpaused' });
  }

  async rename(d: Domain, name: unknown): Promise<void> {
    const newName = checkName(name);
    if (newName === d.name) return;
    if (this.nameTaken(newName)) throw new ApiFailure('EEXIST', `a domain named '${newName}' already exists`);
    await this.renameInStore(d, newName);
    const old = d.name;
    d.config = { ...d.config, name: newName };
    d.console.rename(consoleLogPath(this.state.dir, newName));
    this.persist(d);
    if (d.config.autostart) this.state.saveAuto(d.config);
    this.log(`${old}: renamed to '${newName}'`);
    this.emit('change', { domid: d.domid, name: newName, what: 'renamed' });
  }

  /** The memory nodes libxl keeps for a domain, in KiB (memory/target, static-max, videoram: negative reads as none). */
  private async memoryNodes(d: Domain): Promise<{ target: number; staticMax: number; videoram: number }> {
    const c = this.ts.client;
    const dom = `/local/domain/${d.domid}/memory`;
    const read = async (k: string): Promise<number> => {
      const v = await c.tryRead(`${dom}/${k}`);
      if (v === undefined || !/^-?\d+$/.test(v)) throw new ApiFailure('EIO', `cannot get memory info from ${dom}/${k}`);
      return Number(v);
    };
    return { target: await read('target'), staticMax: await read('static-max'), videoram: Math.max(0, await read('videoram')) };
  }

  /** The limit set with a target or a maximum: LIBXL_MAXMEM_CONSTANT above it, within what the domain's memory has room for. */
  private setMaxMem(d: Domain, kib: number): void {
    this.ts.hv.setMaxMem(d.domid, Math.min(kib + LIBXL_MAXMEM_CONSTANT, this.ts.hv.maxMemLimitKiB(d.domid)));
  }

  /**
   * libxl_set_memory_target (enforce, as xl mem-set asks): the new target
   * goes to memory/target, where the guest's balloon driver reads it, and
   * the reservation limit follows it so the guest cannot take more; above
   * memory/static-max is refused as libxl does.
   */
  async setMemoryTarget(d: Domain, targetKiB: number): Promise<void> {
    if (d.state !== 'running') throw new ApiFailure('EINVAL', `domain ${d.domid} is not running`);
    if (!Number.isSafeInteger(targetKiB) || targetKiB < 0) throw einval('the target must be a whole number of KiB');
    const m = await this.memoryNodes(d);
    const target = targetKiB - m.videoram;
    if (target > m.staticMax) throw new ApiFailure('EINVAL', 'memory_dynamic_max must be less than or equal to memory_static_max');
    this.setMaxMem(d, target + m.videoram);
    await this.ts.client.write(`/local/domain/${d.domid}/memory/target`, String(target));
    // the stored configuration follows (libxl keeps the new target for a reboot) when it is whole MiB
    if (target % 1024 === 0 && target > 0) {
      d.config = { ...d.config, memory: target / 1024 };
      this.persist(d);
    }
    this.log(`${d.name}: memory target of domain ${d.domid} set to ${target} KiB`);
  }

  /**
   * libxl_domain_setmaxmem: Xen's limit on what the domain may hold, never
   * below its current target; what it holds above a lower limit stays until
   * it gives it back.
   */
  async setMaxMemory(d: Domain, maxKiB: number): Promise<void> {
    if (d.state !== 'running') throw new ApiFailure('EINVAL', `domain ${d.domid} is not running`);
    if (!Number.isSafeInteger(maxKiB) || maxKiB < 0) throw einval('the maximum must be a whole number of KiB');
    const m = await this.memoryNodes(d);
    if (maxKiB < m.target) throw new ApiFailure('EINVAL', 'memory_static_max must be greater than or equal to memory_dynamic_max');
    const limit = this.ts.hv.maxMemLimitKiB(d.domid);
    if (maxKiB > limit) throw new ApiFailure('EINVAL', `domain ${d.domid}'s memory was made for at most ${limit} KiB (its maxmem): xenode cannot raise the maximum past it`);
    this.setMaxMem(d, maxKiB);
    this.log(`${d.name}: maximum memory of domain ${d.domid} set to ${maxKiB} KiB`);
  }

  /**
   * xl config-update: keeps a new configuration for the domain's next
   * restart (libxl_userdata_store of "xl"); the running domain is unchanged.
   * The domain keeps its name and uuid across that restart.
   */
  /** A disk= entry as the toolstack takes it: served by the daemon's default driver domain when it names the control domain (the default). */
  private diskSpec(d: DiskSpec): VbdSpec {
    const s = vbdSpecOf(d);
    return s.backend === undefined && this.policy.diskBackend ? { ...s, backend: this.policy.diskBackend } : s;
  }

  /** The same for a vif= entry. */
  private vifSpec(v: VifSpec): NicSpec {
    const s = nicSpecOf(v);
    // a vif that named vif-bridge asked for the control domain's host bridge: it stays there
    return s.backend === undefined && !s.hostBridge && this.policy.vifBackend ? { ...s, backend: this.policy.vifBackend } : s;
  }

  /**
   * xl block-attach (libxl_device_disk_add on a running domain): the disk is
   * served at once and kept in the domain's configuration, so it is there
   * again when the domain restarts.
   */
  async attachDisk(d: Domain, spec: unknown): Promise<void> {
    if (d.state !== 'running') throw new ApiFailure('EINVAL', `domain ${d.domid} is not running`);
    if (typeof spec !== 'string') throw einval('disk must be a disk specification string');
    let disk;
    try {
      disk = parseDiskSpec(spec);
      await this.ts.attachDisk(d.domid, this.diskSpec(disk));
    } catch (e) {
      if (e instanceof DiskSpecError || e instanceof DiskError) throw einval(e.message);
      throw e;
    }
    d.config = { ...d.config, disks: [...d.config.disks, disk] };
    this.log(`${d.name}: disk ${disk.vdev} attached`);
  }

  /** xl block-detach (libxl_device_disk_remove): `dev` a vdev or a device number. */
  async detachDisk(d: Domain, dev: unknown): Promise<void> {
    if (typeof dev !== 'string' || dev === '') throw einval('dev must be a vdev or a device number');
    let v;
    try {
      v = await this.ts.detachDisk(d.domid, dev);
    } catch (e) {
      if (e instanceof DiskError) throw new ApiFailure('ENOENT', e.message);
      throw e;
    }
    d.config = { ...d.config, disks: d.config.disks.filter((x) => x.vdev !== v.vdev) };
    this.log(`${d.name}: disk ${v.vdev} detached`);
  }

  /** xl network-attach (libxl_device_nic_add): the vif, with the devid and MAC it got, joins the domain's configuration. */
  async attachNic(d: Domain, spec: unknown): Promise<{ devid: number; mac: string }> {
    if (d.state !== 'running') throw new ApiFailure('EINVAL', `domain ${d.domid} is not running`);
    if (typeof spec !== 'string') throw einval('vif must be a network specification string');
    let vif, nic;
    try {
      vif = parseVifSpec(spec, {});
      nic = await this.ts.attachVif(d.domid, this.vifSpec(vif));
    } catch (e) {
      if (e instanceof VifSpecError || e instanceof NicError) throw einval(e.message);
      throw e;
    }
    d.config = { ...d.config, vifs: [...d.config.vifs, { ...vif, devid: nic.devid, mac: nic.mac }] };
    const where = 'driver' in nic ? `, served by driver domain '${nic.driver}'` : nic.tap ? ` as ${nic.tap}` : '';
    this.log(`${d.name}: vif ${nic.devid} (${nic.mac}) attached on bridge ${nic.bridge}${where}`);
    return { devid: nic.devid, mac: nic.mac };
  }

  /** xl network-detach (libxl_device_nic_remove): `dev` a devid or a MAC. */
  async detachNic(d: Domain, dev: unknown): Promise<void> {
    if (typeof dev !== 'string' || dev === '') throw einval('dev must be a devid or a MAC address');
    let v;
    try {
      v = await this.ts.detachVif(d.domid, dev);
    } catch (e) {
      if (e instanceof NicError) throw new ApiFailure('ENOENT', e.message);
      throw e;
    }
    d.config = { ...d.config, vifs: d.config.vifs.filter((x, i) => (x.devid ?? i) !== v.devid) };
    this.log(`${d.name}: vif ${v.devid} detached`);
  }

  updateConfig(d: Domain, config: DomainConfig): void {
    if (d.state === 'dying') throw new ApiFailure('EBUSY', `domain ${d.domid} is being destroyed`);
    d.nextConfig = config;
    this.log(`${d.name}: configuration for domain ${d.domid}'s next restart updated`);
  }

  /**
   * libxl_domain_core_dump (xc_domain_dumpcore): the domain's memory and
   * vCPU state to `file` in xc_core's layout (core_dump.ts). A running
   * domain is paused for it and unpaused after, as xc_core's caller does
   * for a live dump; a shut-down one is dumped as it stopped.
   */
  async dumpCore(d: Domain, file: string): Promise<number> {
    if (d.state === 'dying') throw new ApiFailure('EBUSY', `domain ${d.domid} is being destroyed`);
    const hv = this.ts.hv;
    const pause = d.state === 'running';
    if (pause) hv.pause(d.domid);
    try {
      // every vCPU out of KVM_RUN before its registers are read (the pause kicked them)
      for (const deadline = Date.now() + 2000; hv.vcpus(d.domid).some((v) => v.state === RUNSTATE.running);) {
        if (Date.now() > deadline) throw new ApiFailure('EBUSY', `domain ${d.domid}'s vCPUs did not stop within 2 s of the pause`);
        await new Promise((r) => setTimeout(r, 5));
      }
      const segments = [...await hv.queryPhysmap(d.domid)].sort((a, b) => a.gfn - b.gfn);
      let regs;
      try {
        regs = await hv.queryVcpuRegisters(d.domid);
      } catch (e) {
        throw new ApiFailure('EIO', (e as Error).message);
      }
      const up = hv.vcpus(d.domid).map((v) => v.up);
      const mem = hv.memory(d.domid).bytes;
      const runs = segments
        .filter((sg) => sg.count > 0 && (sg.hostPage + sg.count) * PAGE_SIZE <= mem.length)
        .map((sg) => ({ gfn: sg.gfn, count: sg.count, bytes: mem.subarray(sg.hostPage * PAGE_SIZE, (sg.hostPage + sg.count) * PAGE_SIZE) }));
      const pages = writeCore(file, {
        vcpus: regs.map((r, i) => ({ ...r, up: up[i] ?? false })),
        runs,
        sharedInfo: hv.sharedInfoCopy(d.domid),
        xen: { major: XEN_MAJOR, minor: XEN_MINOR, extra: EXTRAVERSION, compileInfo: COMPILE_INFO, capabilities: CAPABILITIES, changeset: CHANGESET },
      });
      this.log(`${d.name}: core of domain ${d.domid} written to ${file} (${pages} pages, ${regs.length} vCPUs)`);
      return pages;
    } finally {
      if (pause && this.doms.get(d.domid) === d) hv.unpause(d.domid);
    }
  }

  /**
   * libxl_set_vcpuonline for a PV/PVH domain: cpu/N/availability for every
   * vCPU the domain has, "online" for the first `online`, in one transaction;
   * the guest's own hotplug watcher brings them up or takes them down.
   */
  async setVcpusOnline(d: Domain, online: number): Promise<void> {
    if (d.state !== 'running') throw new ApiFailure('EINVAL', `domain ${d.domid} is not running`);
    const max = this.ts.hv.vcpus(d.domid).length;
    if (!Number.isSafeInteger(online) || online < 0) throw einval('the vCPU count must be a whole number');
    if (online === 0) throw einval('Requested 0 VCPUs!');
    if (online > max) throw einval(`Requested ${online} VCPUs, however maxcpus is ${max}!`);
    const dom = `/local/domain/${d.domid}`;
    await this.ts.client.transaction(async (tx) => {
      await Promise.all([...Array(max).keys()].map((i) => this.ts.client.write(`${dom}/cpu/${i}/availability`, i < online ? 'online' : 'offline', tx)));
    });
    this.log(`${d.name}: ${online} of domain ${d.domid}'s ${max} vCPUs made available`);
  }

  /** libxl_send_sysrq: the key in control/sysrq, which the guest's sysrq watcher reads and clears. */
  async sendSysrq(d: Domain, key: string): Promise<void> {
    if (d.state !== 'running') throw new ApiFailure('EINVAL', `domain ${d.domid} is not running`);
    if (typeof key !== 'string' || key.length !== 1) throw einval('a sysrq is one character');
    await this.ts.client.write(`/local/domain/${d.domid}/control/sysrq`, key);
  }

  /** libxl_send_trigger(LIBXL_TRIGGER_NMI): Xen's -EINVAL for a vCPU the domain does not have. */
  sendNmi(d: Domain, vcpu: number): void {
    if (d.state !== 'running') throw new ApiFailure('EINVAL', `domain ${d.domid} is not running`);
    const n = this.ts.hv.vcpus(d.domid).length;
    if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= n) throw einval(`domain ${d.domid} has no vCPU ${vcpu} (it has ${n})`);
    this.ts.hv.sendNmi(d.domid, vcpu);
  }

  /**
   * libxl_set_vcpuaffinity: a placed vCPU whose pCPU the new hard affinity leaves out is moved into it, as
   * Xen migrates it (a KVM domain's; a software-CPU domain's vCPUs share one worker and are not moved, so
   * that is refused, as is an affinity with no pCPU of the domain's pool). Nothing is set until all can be.
   */
  async pin(d: Domain, vcpu: number | 'all', hard: number[] | null, soft: number[] | null | undefined): Promise<void> {
    const n = d.config.vcpus;
    const ids = vcpu === 'all' ? [...Array(n).keys()] : [vcpu];
    for (const v of ids) {
      if (!Number.isInteger(v) || v < 0 || v >= n) throw einval(`domain ${d.domid} has no vCPU ${v}`);
    }
    for (const c of [...(hard ?? []), ...(soft ?? [])]) {
      if (!Number.isInteger(c) || c < 0 || c >= this.ts.hv.nrPcpus) throw einval(`no pCPU ${c} (this host has ${this.ts.hv.nrPcpus})`);
    }
    const moves: [number, number][] = [];
    if (hard) {
      for (const v of ids) {
        const at = this.ts.hv.vcpuPlacement(d.domid, v);
        if (at < 0 || hard.includes(at)) continue;
        const t = this.ts.hv.vcpuTarget(d.domid, v, hard);
        if (t.pcpu === null) throw new ApiFailure('EINVAL', `vCPU ${v} of domain ${d.domid}: no pCPU of its cpupool is in the hard affinity ${hard.join(',')}`);
        if (!t.movable) {
          throw new ApiFailure('EBUSY', `vCPU ${v} of domain ${d.domid} runs on pCPU ${at}, which the hard affinity ${hard.join(',')} leaves out: a software-CPU domain's vCPUs share one worker and are not moved`);
        }
        moves.push([v, t.pcpu]);
      }
    }
    const set = (v: number) => {
      const cur = d.pins[v] ?? { hard: d.config.cpus, soft: d.config.cpusSoft };
      d.pins[v] = { hard, soft: soft === undefined ? cur.soft : soft };
      // the hypervisor honours it from now on (later moves, the load balancer)
      if (this.ts.hv.vcpuPlacement(d.domid, v) >= 0) this.ts.hv.setVcpuAffinity(d.domid, v, d.pins[v]!.hard, d.pins[v]!.soft);
    };
    for (const [v, to] of moves) {
      try {
        await this.ts.hv.moveVcpu(d.domid, v, to);
      } catch (e) {
        throw new ApiFailure('EBUSY', `moving vCPU ${v} of domain ${d.domid} to pCPU ${to}: ${e instanceof Error ? e.message : String(e)}`);
      }
      set(v); // where it is now is true of it, whatever happens to the next
      this.log(`${d.name}: vCPU ${v} of domain ${d.domid} moved to pCPU ${to}`);
    }
    for (const v of ids) set(v);
    this.log(`${d.name}: vCPU ${vcpu} affinity set to hard ${hard ? hard.join(',') : 'all'}`);
  }

  // --- views ------------------------------------------------------------------

  summary(d: Domain): DomainSummary {
    const info = this.ts.hv.info(d.domid);
    const vcpus = this.ts.hv.vcpus(d.domid);
    const shutdown = d.state === 'shutdown';
    const live = !shutdown && d.state === 'running';
    const online = vcpus.filter((v) => v.state !== RUNSTATE.offline);
    const running = live && online.some((v) => v.state === RUNSTATE.running);
    return {
      domid: d.domid, name: d.name, uuid: d.config.uuid,
      memory: info?.memoryKiB ?? d.config.memory * 1024, maxmem: info?.maxMemKiB ?? d.config.maxmem * 1024,
      vcpus: info?.vcpus ?? d.config.vcpus, onlineVcpus: info?.onlineVcpus ?? 0,
      running, blocked: live && !running && online.length > 0 && online.every((v) => v.state === RUNSTATE.blocked),
      paused: info?.paused ?? false, shutdown, crashed: shutdown && d.shutdownReason === SHUTDOWN.crash, dying: d.state === 'dying',
      shutdownReason: shutdown ? d.shutdownReason : -1,
      cpuTime: (info?.cpuTimeUs ?? 0) / 1e6, startTime: d.startNs, seclabel: d.config.seclabel ?? '',
      cpupool: this.poolName(d.domid),
      accel: this.ts.hv.domainCpu(d.domid),
    };
  }

  private poolName(domid: number): string {
    try {
      return this.ts.hv.cpupools.get(this.ts.hv.domainPool(domid)).name;
    } catch {
      return 'Pool-0'; // not placed yet (being built): every domain starts in Pool-0's bookkeeping
    }
  }

  vcpuList(d: Domain): VcpuSummary[] {
    const names = ['running', 'runnable', 'blocked', 'offline'] as const;
    return this.ts.hv.vcpus(d.domid).map((v) => {
      const pin = d.pins[v.vcpu] ?? { hard: d.config.cpus, soft: d.config.cpusSoft };
      return {
        // an up vCPU of a shut-down domain is stopped there: neither running nor blocked
        domid: d.domid, name: d.name, vcpu: v.vcpu, pcpu: v.up ? v.pcpu : -1,
        state: !v.up ? 'offline' : v.state === RUNSTATE.offline ? 'runnable' : names[v.state] ?? 'offline',
        cpuTime: v.cpuTimeUs / 1e6, hard: pin.hard, soft: pin.soft,
      };
    });
  }
}

export type { Domain };

