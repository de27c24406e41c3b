// The control domain's toolstack core (libxl's role), shared by `xenode run`,
// `xenode demo` and the daemon: one hypervisor, one xenstored, and for each
// domain the builder, the console backend and the xenstore connection.

import { randomUUID } from 'node:crypto';
import type { AccelMode } from '../hv/accel.js';
import { Hypervisor } from '../hv/hypervisor.js';
import type { XsClientBase } from './xenstored/index.js';
import { inProcessXenstored, XenstoredProcess, type XenstoredService } from './xenstored_service.js';
import { buildPvhDomain, startBuiltDomain, specialPageOffset, BuiltDomain, BuildConfig } from './builder.js';
import { connectServices, removeDomainNodes, DomainServices } from './services.js';
import { localDevices, type XenDevices } from './libs/devices.js';
import { addVbds, addDriverVbds, vbdDevids, DiskError, type DriverVbd, type VbdDevice, type VbdSpec } from './disk.js';
import { DriverDomains } from './driver_domains.js';
import { addVifs, addDriverVifs, NicError, settleNics, type DriverNic, type NicDevice, type NicSpec } from './net.js';
import { NetSwitches } from './backends/netswitch.js';
import { XenbusState } from './backends/xenbus.js';

/** How long a device's removal waits for the frontend to close before it goes anyway (libxl's LIBXL_DESTROY_TIMEOUT). */
export const DISK_REMOVE_TIMEOUT_MS = 10_000;

/** A device's two ends and the backend serving it, as a removal needs them. */
interface RemovableDevice {
  frontendPath: string;
  backendPath: string;
  backend: { requestClose(): Promise<void>; close(): Promise<void> };
}

/** The 16 bytes of a canonical UUID string (the domain handle Xen keeps). */
export function uuidBytes(uuid: string): Uint8Array {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`not a UUID: '${uuid}'`);
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

export interface ToolstackOptions {
  pcpus?: number;
  /** xenstored log sink (default: stderr) */
  log?: (line: string) => void;
  /** the device backends' log sink (blkback's complaints about a frontend; default: `log`) */
  backendLog?: (line: string) => void;
  /** also serve xenstored on this Unix socket (for xenstore-* tools, XENSTORED_PATH) */
  xenstoredSocket?: string;
  /**
   * xenstored as a process of its own on `xenstoredSocket`, its journal and
   * its domains' connections in these files (the daemon's way: it may be
   * killed and comes back); without it, xenstored runs in this process
   */
  xenstoredProcess?: { dbPath: string; domainsPath: string };
  /** serve the privileged socket here for driver domains that connect by themselves (`xenode driver-domain --connect`) */
  privcmdSocket?: string;
  /** KVM VMs kept made ahead for new domains (Hypervisor.start's vmPool; default none) */
  vmPool?: number;
  /** which CPU runs guests (default auto) */
  accel?: AccelMode;
  /** the pCPUs' scheduler (Xen's sched=; default credit2) */
  sched?: string;
  /** records per pCPU scheduling trace ring (Hypervisor.start's traceRecords) */
  traceRecords?: number;
}

export interface CreateOptions {
  /** the domain's UUID (canonical text form); random when absent */
  uuid?: string;
  /** leave the domain paused after building it (xl create -p) */
  paused?: boolean;
  /** filled in with where the time went (ms) */
  timings?: CreateTimings;
  /** scheduling parameters under the domain's pool's scheduler (weight, cap; period, budget, extratime) */
  sched?: Record<string, number>;
  /** virtual disks, served by the control domain's blkback or by the driver domain a spec names */
  disks?: VbdSpec[];
  /** virtual network interfaces, served by the control domain's netback, each on its bridge's switch */
  vifs?: NicSpec[];
}

export interface CreateTimings {
  /** domain creation, kernel load, rings, grant seeds, handing it (paused) to its pCPU */
  build: number;
  /** console backend, xenstore skeleton, INTRODUCE, disks (the pCPU sets the domain up meanwhile) */
  xenstore: number;
  /** the unpause (nothing when created paused) */
  unpause: number;
}

export interface ToolstackDomain {
  domid: number;
  name: string;
  uuid: string;
  built: BuiltDomain;
  services: DomainServices;
  disks: VbdDevice[];
  /** disks driver domains serve */
  driverDisks: DriverVbd[];
  vifs: NicDevice[];
  /** vifs driver domains serve */
  driverVifs: DriverNic[];
}

export class Toolstack {
  private readonly live = new Map<number, ToolstackDomain>();
  /** the control domain's own store transactions run one at a time: concurrent skeletons would only conflict and retry */
  private storeQueue: Promise<unknown> = Promise.resolve();

  private serialized<T>(f: () => Promise<T>): Promise<T> {
    const r = this.storeQueue.then(f, f);
    this.storeQueue = r.catch(() => {});
    return r;
  }

  /** the control domain's backend devices (its own xenstore connection: backends' watches stay apart from the toolstack's) */
  readonly devices: XenDevices;
  /** the host's Ethernet switches, by bridge name: the vifs on one reach each other */
  readonly switches = new NetSwitches();
  /** driver domains, started on first use of their name (a disk's backend=) and again when they die */
  readonly driverDomains: DriverDomains;
  /** domains that shut down and are not destroyed yet (a xenstored started again hears of them) */
  private readonly dead = new Set<number>();

  private constructor(readonly hv: Hypervisor, readonly xs: XenstoredService, readonly client: XsClientBase, private readonly backendClient: XsClientBase, private readonly builds: Map<number, BuiltDomain>, private readonly log: (line: string) => void) {
    this.devices = localDevices(hv, this.backendClient);
    this.driverDomains = new DriverDomains(hv, xs, client, this.log);
    hv.on('shutdown', (domid) => {
      this.live.get(domid)?.services.console.drain();
      this.dead.add(domid);
      xs.domainDied(domid);
    });
  }

  static async start(o: ToolstackOptions = {}): Promise<Toolstack> {
    const hv = await Hypervisor.start({ pcpus: o.pcpus, vmPool: o.vmPool, accel: o.accel, sched: o.sched, traceRecords: o.traceRecords });
    const builds = new Map<number, BuiltDomain>();
    const log = o.log ?? ((l: string) => process.stderr.write(`xenstored: ${l}\n`));
    let dead = (): Iterable<number> => [];
    let xs: XenstoredService;
    try {
      if (o.xenstoredProcess) {
        if (!o.xenstoredSocket) throw new Error('xenstored as a process needs its socket (xenstoredSocket)');
        xs = await XenstoredProcess.start(hv, { socketPath: o.xenstoredSocket, ...o.xenstoredProcess, log, deadDomains: () => dead() });
      } else {
        xs = await inProcessXenstored(hv, (domid, gfn) => {
          const b = builds.get(domid);
          return b && gfn === b.storeGfn ? specialPageOffset(b.build, gfn) : null;
        }, { socketPath: o.xenstoredSocket, log: o.log });
      }
    } catch (e) {
      await hv.shutdownAll();
      throw e;
    }
    const ts = new Toolstack(hv, xs, await xs.connect(), await xs.connect(), builds, o.backendLog ?? o.log ?? ((l) => process.stderr.write(`${l}\n`)));
    dead = () => ts.dead;
    if (o.privcmdSocket) await ts.driverDomains.listen(o.privcmdSocket);
    return ts;
  }

  /**
   * Builds a domain, connects its console (output to `output`) and xenstore,
   * writes its xenstore skeleton and unpauses it. Throws (leaving nothing
   * behind) if the kernel cannot be loaded.
   */
  async create(cfg: BuildConfig, output: (b: Uint8Array) => void, opts: CreateOptions = {}): Promise<ToolstackDomain> {
    const t0 = performance.now();
    const uuid = opts.uuid ?? randomUUID();
    if (opts.disks) vbdDevids(opts.disks); // a bad vdev is refused before anything is built
    if (opts.vifs) settleNics(opts.vifs); // so is a bad MAC or a repeated devid
    const built = buildPvhDomain(this.hv, { ...cfg, uuid: cfg.uuid ?? uuidBytes(uuid) });
    // Scheduling parameters before any worker runs it (a bad one undoes the build).
    try {
      if (opts.sched && Object.keys(opts.sched).length) this.hv.schedAdjust(built.domid, opts.sched);
    } catch (e) {
      await this.hv.destroy(built.domid);
      throw e;
    }
    this.builds.set(built.domid, built);
    // Handed to its pCPU now, still paused: the worker sets it up while the
    // xenstore skeleton is written, and not one guest instruction runs before
    // the unpause below (libxl's order: build, xenstore, introduce, unpause).
    startBuiltDomain(this.hv, built, { paused: true });
    const t1 = performance.now();
    let services: DomainServices | undefined;
    let disks: VbdDevice[] = [];
    const driverDisks: DriverVbd[] = [];
    let vifs: NicDevice[] = [];
    const driverVifs: DriverNic[] = [];
    try {
      services = await this.serialized(() => connectServices(this.hv, this.xs, this.client, built, {
        name: cfg.name, uuid, vcpus: Math.max(cfg.vcpus, cfg.maxVcpus ?? 0), onlineVcpus: cfg.vcpus, memoryKiB: cfg.memoryMiB * 1024, maxMemKiB: (cfg.maxMemMiB ?? cfg.memoryMiB) * 1024, output,
      }));
      // the guest finds its disks' frontend directories from its first instruction (GRUB lists device/vbd at once)
      const local = opts.disks?.filter((s) => s.backend === undefined) ?? [];
      if (local.length) disks = await addVbds(this.devices, built.domid, local, this.log);
      for (const s of opts.disks ?? []) if (s.backend !== undefined) driverDisks.push(...await this.addDriverDisk(built.domid, s));
      // devids and MACs settled over the whole list, then each vif to the domain that serves it
      const nics = opts.vifs?.length ? settleNics(opts.vifs) : [];
      const localNics = nics.filter((n) => n.backend === undefined);
      if (localNics.length) vifs = await addVifs(this.devices, this.switches, built.domid, localNics, this.log);
      for (const n of nics) if (n.backend !== undefined) driverVifs.push(...await this.addDriverVif(built.domid, n));
    } catch (e) {
      services?.close();
      for (const v of disks) await v.backend.close();
      for (const v of vifs) await v.backend.close();
      await this.serialized(() => this.removeDriverDevices([...driverDisks, ...driverVifs]));
      this.builds.delete(built.domid);
      await this.hv.destroy(built.domid);
      await this.serialized(() => removeDomainNodes(this.client, built.domid, uuid));
      throw e;
    }
    const t2 = performance.now();
    const d: ToolstackDomain = { domid: built.domid, name: cfg.name, uuid, built, services, disks, driverDisks, vifs, driverVifs };
    this.live.set(d.domid, d);
    if (!opts.paused) this.hv.unpause(d.domid);
    if (opts.timings) Object.assign(opts.timings, { build: t1 - t0, xenstore: t2 - t1, unpause: performance.now() - t2 });
    return d;
  }

  /**
   * Adds a disk to a running domain (xl block-attach): its nodes written and
   * its backend started as at create; the guest's xenbus sees the new
   * frontend directory and probes it.
   */
  async attachDisk(domid: number, spec: VbdSpec): Promise<VbdDevice | DriverVbd> {
    const d = this.live.get(domid);
    if (!d) throw new DiskError(`domain ${domid} is not running here`);
    const [devid] = vbdDevids([spec]);
    const other = [...d.disks, ...d.driverDisks].find((x) => x.devid === devid);
    if (other) throw new DiskError(`disk ${spec.target}: vdev '${spec.vdev}' is the same device as '${other.vdev}', already attached`);
    if (spec.backend !== undefined) {
      const [v] = await this.addDriverDisk(domid, spec);
      d.driverDisks.push(v!);
      return v!;
    }
    const [v] = await addVbds(this.devices, domid, [spec], this.log);
    d.disks.push(v!);
    return v!;
  }

  /** A disk served by the driver domain its spec names (started if it is not running). */
  private async addDriverDisk(domid: number, spec: VbdSpec): Promise<DriverVbd[]> {
    let dd;
    try {
      dd = await this.driverDomains.ensure(spec.backend!);
    } catch (e) {
      throw new DiskError(`disk ${spec.vdev} (${spec.target}): ${(e as Error).message}`);
    }
    return this.serialized(() => addDriverVbds(this.client, domid, dd, [spec]));
  }

  /** A settled vif served by the driver domain it names (started if it is not running). */
  private async addDriverVif(domid: number, nic: ReturnType<typeof settleNics>[number]): Promise<DriverNic[]> {
    let dd;
    try {
      dd = await this.driverDomains.ensure(nic.backend!);
    } catch (e) {
      throw new NicError(`vif ${nic.devid}: ${(e as Error).message}`);
    }
    return this.serialized(() => addDriverVifs(this.client, domid, dd, [nic]));
  }

  /** A driver domain's device directories removed: its backend lets go of the device when it sees them go. */
  private async removeDriverDevices(vs: { frontendPath: string; backendPath: string }[]): Promise<void> {
    for (const v of vs) for (const p of [v.frontendPath, v.backendPath]) await this.client.rm(p).catch(() => {});
  }

  /** Removes a disk from a running domain (xl block-detach, as removeDevice does it): `dev` is a vdev or a device number. */
  async detachDisk(domid: number, dev: string): Promise<VbdDevice | DriverVbd> {
    const d = this.live.get(domid);
    const named = (x: { vdev: string; devid: number }) => x.vdev === dev || String(x.devid) === dev;
    return this.detach(domid, d?.disks, d?.driverDisks, named, (x) => `disk ${x.vdev}`, () => new DiskError(`Device ${dev} not connected`));
  }

  /** The device `named` picks, among the control domain's or the driver domains', removed (removeDevice) and forgotten. */
  private async detach<L extends RemovableDevice, R extends { frontendPath: string; backendPath: string }>(domid: number, local: L[] | undefined, remote: R[] | undefined,
    named: (x: L | R) => boolean, what: (x: L | R) => string, missing: () => Error): Promise<L | R> {
    const dv = remote?.find(named);
    if (dv) {
      await this.removeDevice(domid, what(dv), { ...dv, backend: this.remoteBackend(dv.backendPath) });
      remote!.splice(remote!.indexOf(dv), 1);
      return dv;
    }
    const v = local?.find(named);
    if (!v) throw missing();
    await this.removeDevice(domid, what(v), v);
    local!.splice(local!.indexOf(v), 1);
    return v;
  }

  /**
   * A device in a driver domain as libxl removes it: the control domain
   * writes online 0 and Closing into the backend directory, and the driver
   * domain's backend lets go once the directory is removed.
   */
  private remoteBackend(backendPath: string): RemovableDevice['backend'] {
    return {
      requestClose: () => this.serialized(() => this.client.transaction(async (tx) => {
        await this.client.write(`${backendPath}/online`, '0', tx);
        await this.client.write(`${backendPath}/state`, String(XenbusState.Closing), tx);
      })),
      close: async () => {},
    };
  }

  /**
   * Adds a vif to a running domain (xl network-attach): the next free devid
   * unless the spec names one (libxl__device_nextid), its nodes and backend
   * as at create; the guest's netfront probes the new device.
   */
  async attachVif(domid: number, spec: NicSpec): Promise<NicDevice | DriverNic> {
    const d = this.live.get(domid);
    if (!d) throw new NicError(`domain ${domid} is not running here`);
    const all = [...d.vifs, ...d.driverVifs];
    const devid = spec.devid ?? all.reduce((n, v) => Math.max(n, v.devid + 1), 0);
    if (all.some((v) => v.devid === devid)) throw new NicError(`vif ${devid}: devid ${devid} is already used`);
    if (spec.backend !== undefined) {
      const [v] = await this.addDriverVif(domid, settleNics([{ ...spec, devid }])[0]!);
      d.driverVifs.push(v!);
      return v!;
    }
    const [v] = await addVifs(this.devices, this.switches, domid, [{ ...spec, devid }], this.log);
    d.vifs.push(v!);
    return v!;
  }

  /** Removes a vif (xl network-detach; libxl_device_nic_remove): `dev` its devid or its MAC. */
  async detachVif(domid: number, dev: string): Promise<NicDevice | DriverNic> {
    const d = this.live.get(domid);
    const mac = dev.toLowerCase();
    const named = (x: { mac: string; devid: number }) => (dev.includes(':') ? x.mac === mac : String(x.devid) === dev);
    return this.detach(domid, d?.vifs, d?.driverVifs, named, (x) => `vif ${x.devid}`, () => new NicError(`Unknown device ${dev}`));
  }

  /**
   * libxl's device removal: the backend asks the frontend to close and, once
   * it has (or never connected, or after DISK_REMOVE_TIMEOUT_MS, as libxl
   * forces), stops; both directories are removed.
   */
  private async removeDevice(domid: number, what: string, v: RemovableDevice): Promise<void> {
    await v.backend.requestClose();
    const feState = async () => Number(await this.client.tryRead(`${v.frontendPath}/state`).catch(() => undefined) ?? 0);
    const end = Date.now() + DISK_REMOVE_TIMEOUT_MS;
    for (let s = await feState(); s === XenbusState.Initialised || s === XenbusState.Connected || s === XenbusState.Closing; s = await feState()) {
      if (Date.now() > end) {
        this.log(`d${domid}: ${what}: the frontend did not close within ${DISK_REMOVE_TIMEOUT_MS / 1000} s; removed anyway`);
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await v.backend.close();
    await this.serialized(async () => {
      for (const p of [v.frontendPath, v.backendPath]) await this.client.rm(p).catch(() => {});
    });
  }

  domain(domid: number): ToolstackDomain | undefined {
    return this.live.get(domid);
  }

  /**
   * Destroys a domain, releases it from xenstore (@releaseDomain fires) and
   * removes its xenstore nodes as libxl does (/local/domain/<id>, /libxl/<id>,
   * and /vm/<uuid> unless `keepVm`: a restarted domain reuses it).
   */
  async destroy(domid: number, o: { keepVm?: boolean } = {}): Promise<void> {
    const d = this.live.get(domid);
    this.live.delete(domid);
    d?.services.close();
    for (const v of d?.disks ?? []) await v.backend.close();
    for (const v of d?.vifs ?? []) await v.backend.close();
    this.builds.delete(domid);
    await this.hv.destroy(domid);
    this.dead.delete(domid);
    // the driver domains' backends let go when their directories go
    await this.serialized(async () => {
      for (const [type, devs] of [['vbd', d?.driverDisks ?? []], ['vif', d?.driverVifs ?? []]] as const) {
        for (const dd of new Set(devs.map((v) => v.driverDomid))) await this.client.rm(`/local/domain/${dd}/backend/${type}/${domid}`).catch(() => {});
      }
    });
    await this.serialized(() => removeDomainNodes(this.client, domid, d && !o.keepVm ? d.uuid : null));
  }

  async shutdown(): Promise<void> {
    for (const id of [...this.live.keys()]) await this.destroy(id);
    await this.driverDomains.stopAll();
    this.devices.close();
    this.backendClient.close();
    this.client.close();
    await this.xs.stop();
    await this.hv.shutdownAll();
  }
}
