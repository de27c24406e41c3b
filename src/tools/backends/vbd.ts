// One virtual block device's backend (Linux's xen-blkback/xenbus.c): the
// xenbus handshake around the request path in blkback.ts. Everything comes
// from the backend directory the toolstack wrote (params, mode, frontend,
// frontend-id, device-type); the backend publishes the disk's geometry and
// features, waits in InitWait for the frontend's ring and event channel,
// connects, and follows the frontend through Closing and Closed, back to
// InitWait when a new frontend takes the device over (GRUB hands a disk to
// the kernel it loads that way). A frontend that writes nonsense gets the
// device closed with a message in the backend's `error` node; nothing it
// writes throws out of here.

import { availableParallelism } from 'node:os';
import type { GrantMapping, XenDevices } from '../libs/devices.js';
import { BlkifBackRing, type BlkifProtocol, MAX_INDIRECT_SEGMENTS, MAX_RING_PAGE_ORDER, PAGE_SIZE, SECTOR_SIZE, VDISK_CDROM, VDISK_READONLY } from './blkif.js';
import { BlkifService, newBlkifStats, type BlkifStats } from './blkback.js';
import { openImage, type BlockImage, type ImageFormat } from './image.js';
import { XenbusState, parseXenbusState, type XenbusStateValue, XENBUS_STATE_NAMES } from './xenbus.js';

/**
 * `params` as libxl writes it: the target, or `<format>:<target>` for a
 * format other than raw (its qdisk convention), served through qemu-nbd.
 */
export function parseParams(params: string): { format: ImageFormat; target: string } {
  const m = /^(raw|qcow2|qcow|vhd|qed):(.*)$/s.exec(params);
  return m ? { format: m[1] as ImageFormat, target: m[2]! } : { format: 'raw', target: params };
}

export interface VbdBackendOptions {
  devices: XenDevices;
  /** the backend directory, /local/domain/<backend>/backend/vbd/<frontend>/<devid> */
  path: string;
  log?: (line: string) => void;
  /** multi-queue-max-queues to offer (MAX_QUEUES) */
  maxQueues?: number;
}

/** One ring of the device (a queue, with multi-queue), served on its own port by its own service. */
interface Queue {
  /** the ring's pages, ring-ref0.. in order */
  ring: GrantMapping[];
  port: number;
  service: BlkifService;
}

/**
 * multi-queue-max-queues: as many rings as the host has CPUs to serve them, up to 4
 * (Linux's blkback offers one per online CPU; its blkfront asks for at most 4 by default).
 */
export const MAX_QUEUES = Math.min(4, availableParallelism());
/** discard-granularity, bytes */
const DISCARD_GRANULARITY = 4096;

export class VbdBackend {
  private image: BlockImage | null = null;
  private sectors = 0n;
  private readOnly = false;
  private discard = false;
  private frontPath = '';
  private frontDomid = -1;
  private conn: Queue[] | null = null;
  private state: XenbusStateValue = XenbusState.Initialising;
  private readonly token: string;
  private readonly onWatch = (ev: { path: string; token: string }) => {
    if (ev.token === this.token) this.queue(() => this.frontendChanged());
  };
  /** watch events are handled one after another */
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  private readonly maxQueues: number;
  /** what the device's queues served, over every connection */
  readonly stats: BlkifStats = newBlkifStats();
  /** the transport of the last connection: its layout, queues and pages per ring */
  lastConnection: { protocol: BlkifProtocol; queues: number; ringPages: number } | null = null;

  private constructor(private readonly o: VbdBackendOptions) {
    this.token = `vbd-backend:${o.path}`;
    this.maxQueues = o.maxQueues ?? MAX_QUEUES;
  }

  /**
   * Opens the image the backend directory names, publishes the disk and
   * waits in InitWait for the frontend. Throws (writing `hotplug-status`
   * error and leaving no watch) when the directory or the image is unusable.
   */
  static async start(o: VbdBackendOptions): Promise<VbdBackend> {
    const b = new VbdBackend(o);
    try {
      await b.setup();
    } catch (e) {
      await b.image?.close().catch(() => {});
      const msg = (e as Error).message;
      await o.devices.xenstore.write(`${o.path}/hotplug-error`, msg).catch(() => {});
      await o.devices.xenstore.write(`${o.path}/hotplug-status`, 'error').catch(() => {});
      throw e;
    }
    return b;
  }

  private async setup(): Promise<void> {
    const xs = this.o.devices.xenstore, p = this.o.path;
    const params = await xs.read(`${p}/params`);
    const mode = await xs.read(`${p}/mode`);
    const devtype = (await xs.tryRead(`${p}/device-type`)) ?? 'disk';
    this.frontPath = await xs.read(`${p}/frontend`);
    this.frontDomid = Number(await xs.read(`${p}/frontend-id`));
    if (mode !== 'r' && mode !== 'w') throw new Error(`${p}/mode: '${mode}' is neither r nor w`);
    this.readOnly = mode === 'r';
    const { format, target } = parseParams(params);
    this.image = await openImage(target, format, this.readOnly);
    this.sectors = this.image.size / BigInt(SECTOR_SIZE);
    const info = (this.readOnly ? VDISK_READONLY : 0) | (devtype === 'cdrom' ? VDISK_CDROM : 0);
    // io/blkif.h discard-enable: the toolstack's say (libxl's discard/no-discard, default on); never on a read-only disk
    this.discard = !this.readOnly && (await xs.tryRead(`${p}/discard-enable`)) !== '0';
    await xs.transaction(async (tx) => {
      // blkback's connect(): what a frontend reads before it sends a request
      await xs.write(`${p}/sector-size`, String(SECTOR_SIZE), tx);
      await xs.write(`${p}/physical-sector-size`, String(SECTOR_SIZE), tx);
      await xs.write(`${p}/sectors`, String(this.sectors), tx);
      await xs.write(`${p}/info`, String(info), tx);
      await xs.write(`${p}/feature-flush-cache`, '1', tx);
      await xs.write(`${p}/feature-barrier`, '0', tx);
      await xs.write(`${p}/feature-max-indirect-segments`, String(MAX_INDIRECT_SEGMENTS), tx);
      await xs.write(`${p}/multi-queue-max-queues`, String(this.maxQueues), tx);
      await xs.write(`${p}/max-ring-page-order`, String(MAX_RING_PAGE_ORDER), tx);
      await xs.write(`${p}/feature-discard`, this.discard ? '1' : '0', tx);
      if (this.discard) {
        // a discard punches whole blocks of the image's file system and zeroes the rest: any extent works,
        // the file system's block is the one that frees space
        await xs.write(`${p}/discard-granularity`, String(DISCARD_GRANULARITY), tx);
        await xs.write(`${p}/discard-alignment`, '0', tx);
        await xs.write(`${p}/discard-secure`, '0', tx);
      }
      await xs.write(`${p}/hotplug-status`, 'connected', tx);
    });
    await this.switchState(XenbusState.InitWait);
    xs.on('watch', this.onWatch);
    await xs.watch(`${this.frontPath}/state`, this.token);
  }

  private queue(f: () => Promise<void>): void {
    this.chain = this.chain.then(f).catch((e: unknown) => this.o.log?.(`vbd ${this.o.path}: ${(e as Error).message}`));
  }

  private async switchState(s: XenbusStateValue): Promise<void> {
    this.state = s;
    await this.o.devices.xenstore.write(`${this.o.path}/state`, String(s));
  }

  /** xenbus_dev_fatal: the reason in `error`, the device closing */
  private async fatal(msg: string): Promise<void> {
    this.o.log?.(`vbd ${this.o.path}: ${msg}`);
    await this.o.devices.xenstore.write(`${this.o.path}/error`, msg).catch(() => {});
    await this.disconnect();
    await this.switchState(XenbusState.Closing);
  }

  /** frontend_changed in xen-blkback/xenbus.c */
  private async frontendChanged(): Promise<void> {
    if (this.closed) return;
    const fs = parseXenbusState(await this.o.devices.xenstore.tryRead(`${this.frontPath}/state`));
    if (fs === null) return; // gone, or not a state: nothing to follow
    switch (fs) {
      case XenbusState.Initialising:
        // a new frontend after the last one closed (GRUB's hand-over): offer the device again
        if (this.state === XenbusState.Closed) await this.switchState(XenbusState.InitWait);
        return;
      case XenbusState.Initialised:
      case XenbusState.Connected:
        if (this.state === XenbusState.Connected || this.conn) return;
        if (this.state !== XenbusState.InitWait) return;
        await this.connect();
        return;
      case XenbusState.Closing:
        await this.disconnect();
        await this.switchState(XenbusState.Closing);
        return;
      case XenbusState.Closed:
        await this.disconnect();
        await this.switchState(XenbusState.Closed);
        return;
      default:
        return;
    }
  }

  /** connect_ring in xen-blkback/xenbus.c: the protocol, the number of queues, each queue's ring and port. */
  private async connect(): Promise<void> {
    const xs = this.o.devices.xenstore, f = this.frontPath;
    const protoText = (await xs.tryRead(`${f}/protocol`)) ?? 'x86_64-abi';
    if (protoText !== 'x86_32-abi' && protoText !== 'x86_64-abi') return this.fatal(`unknown fe protocol ${protoText}`);
    const protocol: BlkifProtocol = protoText;
    const nqText = await xs.tryRead(`${f}/multi-queue-num-queues`);
    const nq = nqText === undefined ? 1 : /^\d+$/.test(nqText) ? Number(nqText) : NaN;
    if (!(nq >= 1 && nq <= this.maxQueues)) return this.fatal(`guest requested ${nqText ?? ''} queues, exceeding the maximum of ${this.maxQueues}`);
    // a multi-page ring: ring-page-order in the frontend's directory, ring-ref0.. in each queue's
    const orderText = await xs.tryRead(`${f}/ring-page-order`);
    const order = orderText === undefined ? null : /^\d+$/.test(orderText) ? Number(orderText) : NaN;
    if (order !== null && !(order <= MAX_RING_PAGE_ORDER)) {
      return this.fatal(`${f}/ring-page-order: '${orderText}' exceeds max-ring-page-order ${MAX_RING_PAGE_ORDER}`);
    }
    // io/blkif.h: one queue keeps the flat nodes; more have theirs under queue-N
    const dirs = nq === 1 ? [f] : Array.from({ length: nq }, (_, i) => `${f}/queue-${i}`);
    const queues: Queue[] = [];
    for (const dir of dirs) {
      const q = await this.connectQueue(dir, protocol, order);
      if (typeof q === 'string') {
        await this.release(queues);
        return this.fatal(q);
      }
      queues.push(q);
    }
    this.conn = queues;
    this.lastConnection = { protocol, queues: queues.length, ringPages: order === null ? 1 : 1 << order };
    await this.switchState(XenbusState.Connected);
    // requests queued before the event channels were bound
    for (const q of queues) q.service.kick();
  }

  /** read_per_ring_refs: one queue's ring mapped (each of its pages) and port bound, or why not. */
  private async connectQueue(dir: string, protocol: BlkifProtocol, order: number | null): Promise<Queue | string> {
    const xs = this.o.devices.xenstore, gnttab = this.o.devices.gnttab;
    const portText = await xs.tryRead(`${dir}/event-channel`);
    if (portText === undefined || !/^\d+$/.test(portText)) return `reading ${dir}/event-channel: '${portText ?? ''}' is not a port`;
    const names = order === null ? ['ring-ref'] : Array.from({ length: 1 << order }, (_, i) => `ring-ref${i}`);
    const refs: number[] = [];
    for (const name of names) {
      const t = await xs.tryRead(`${dir}/${name}`);
      if (t === undefined || !/^\d+$/.test(t)) return `reading ${dir}/${name}: '${t ?? ''}' is not a grant reference`;
      refs.push(Number(t));
    }
    const ring: GrantMapping[] = [];
    const unmapAll = async () => { for (const m of ring) await gnttab.unmap(m.handle); };
    for (const ref of refs) {
      const m = await gnttab.map(this.frontDomid, ref, false);
      if (typeof m === 'number') {
        await unmapAll();
        return `mapping ring-ref ${refs.join(',')} port ${portText}: GNTST ${m}`;
      }
      ring.push(m);
      if (m.page.length < PAGE_SIZE) {
        await unmapAll();
        return `ring-ref ${ref}: short page`;
      }
    }
    let service: BlkifService | null = null;
    let port: number;
    try {
      port = await this.o.devices.evtchn.bindInterdomain(this.frontDomid, Number(portText), () => service?.kick());
    } catch (e) {
      await unmapAll();
      return `binding event-channel ${portText}: ${(e as Error).message}`;
    }
    service = new BlkifService({
      devices: this.o.devices, frontDomid: this.frontDomid, ring: new BlkifBackRing(ring.map((m) => m.page), protocol), port,
      image: this.image!, sectors: this.sectors, readOnly: this.readOnly, discard: this.discard, stats: this.stats, log: this.o.log,
    });
    return { ring, port, service };
  }

  /** xen_blkif_disconnect: no request in flight, the rings unmapped, the ports closed */
  private async disconnect(): Promise<void> {
    const c = this.conn;
    if (!c) return;
    this.conn = null;
    await this.release(c);
  }

  private async release(queues: Queue[]): Promise<void> {
    for (const q of queues) {
      await q.service.stop();
      this.o.devices.evtchn.unbind(q.port);
      for (const m of q.ring) await this.o.devices.gnttab.unmap(m.handle);
    }
  }

  /** The xenbus state the backend last published (for tests and `xl block-list`). */
  get xenbusState(): string {
    return XENBUS_STATE_NAMES[this.state]!;
  }

  /**
   * The toolstack wants the device back (libxl's device removal: `online` 0,
   * state Closing): the frontend is asked to close, and its Closed lets go of
   * the ring. Resolves once Closing is published.
   */
  requestClose(): Promise<void> {
    const done = this.chain.then(async () => {
      if (this.closed) return;
      await this.o.devices.xenstore.write(`${this.o.path}/online`, '0');
      if (this.state !== XenbusState.Closed) await this.switchState(XenbusState.Closing);
    });
    this.chain = done.catch(() => {});
    return done;
  }

  /** Stops the backend (the device is being removed or its frontend destroyed); the nodes are the toolstack's to remove. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const xs = this.o.devices.xenstore;
    xs.off('watch', this.onWatch);
    await xs.unwatch(`${this.frontPath}/state`, this.token).catch(() => {});
    await this.chain;
    await this.disconnect();
    await this.image?.close().catch(() => {});
    this.image = null;
  }
}
