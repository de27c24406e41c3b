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
import { PersistentGrants } from './persistent_grants.js';
import { openImage, type BlockImage, type ImageFormat } from './image.js';
import { XenbusBackend, XenbusState } from './xenbus.js';

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
  /** the ring had answers already: a backend before this one served it (a driver domain restarted) */
  takenOver: boolean;
  /** its persistent grants, when the frontend said feature-persistent */
  persistent: PersistentGrants | null;
}

/**
 * multi-queue-max-queues: as many rings as the host has CPUs to serve them, up to 4
 * (Linux's blkback offers one per online CPU; its blkfront asks for at most 4 by default).
 */
export const MAX_QUEUES = Math.min(4, availableParallelism());
/** discard-granularity, bytes */
const DISCARD_GRANULARITY = 4096;

export class VbdBackend extends XenbusBackend {
  private image: BlockImage | null = null;
  private sectors = 0n;
  private readOnly = false;
  private discard = false;
  private conn: Queue[] | null = null;
  private readonly maxQueues: number;
  /** what the device's queues served, over every connection */
  readonly stats: BlkifStats = newBlkifStats();
  /** the transport of the last connection: its layout, queues and pages per ring */
  lastConnection: { protocol: BlkifProtocol; queues: number; ringPages: number; persistent: boolean } | null = null;

  private constructor(o: VbdBackendOptions) {
    super(o.devices, o.path, 'vbd', o.log);
    this.maxQueues = o.maxQueues ?? MAX_QUEUES;
  }

  /**
   * Opens the image the backend directory names, publishes the disk and
   * waits in InitWait for the frontend. Throws (writing `hotplug-status`
   * error and leaving no watch) when the directory or the image is unusable.
   */
  static async start(o: VbdBackendOptions): Promise<VbdBackend> {
    const b = new VbdBackend(o);
    await b.setupOrReport(() => b.setup());
    return b;
  }

  private async setup(): Promise<void> {
    const xs = this.devices.xenstore, p = this.path;
    const params = await xs.read(`${p}/params`);
    const mode = await xs.read(`${p}/mode`);
    const devtype = (await xs.tryRead(`${p}/device-type`)) ?? 'disk';
    await this.readFrontend();
    if (mode !== 'r' && mode !== 'w') throw new Error(`${p}/mode: '${mode}' is neither r nor w`);
    this.readOnly = mode === 'r';
    const { format, target } = parseParams(params);
    this.image = await openImage(target, format, this.readOnly);
    this.sectors = this.image.size / BigInt(SECTOR_SIZE);
    const info = (this.readOnly ? VDISK_READONLY : 0) | (devtype === 'cdrom' ? VDISK_CDROM : 0);
    // io/blkif.h discard-enable: the toolstack's say (libxl's discard/no-discard, default on); never on a read-only disk
    this.discard = !this.readOnly && (await xs.tryRead(`${p}/discard-enable`)) !== '0';
    // blkback's connect(): what a frontend reads before it sends a request
    await this.offer([
      ['sector-size', String(SECTOR_SIZE)],
      ['physical-sector-size', String(SECTOR_SIZE)],
      ['sectors', String(this.sectors)],
      ['info', String(info)],
      ['feature-flush-cache', '1'],
      ['feature-barrier', '0'],
      ['feature-persistent', '1'],
      ['feature-max-indirect-segments', String(MAX_INDIRECT_SEGMENTS)],
      ['multi-queue-max-queues', String(this.maxQueues)],
      ['max-ring-page-order', String(MAX_RING_PAGE_ORDER)],
      ['feature-discard', this.discard ? '1' : '0'],
      // a discard punches whole blocks of the image's file system and zeroes the rest: any extent works,
      // the file system's block is the one that frees space
      ...(this.discard ? [['discard-granularity', String(DISCARD_GRANULARITY)], ['discard-alignment', '0'], ['discard-secure', '0']] as [string, string][] : []),
    ]);
  }

  protected get connected(): boolean { return this.conn !== null; }

  /** connect_ring in xen-blkback/xenbus.c: the protocol, the number of queues, each queue's ring and port. */
  protected async connect(): Promise<void> {
    const xs = this.devices.xenstore, f = this.frontPath;
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
    // feature-persistent both ways (connect_ring): the frontend keeps its granted pages, each ring maps them once
    const persistent = (await xs.tryRead(`${f}/feature-persistent`))?.trim() === '1';
    const queues: Queue[] = [];
    for (const dir of dirs) {
      const q = await this.connectQueue(dir, protocol, order, persistent);
      if (typeof q === 'string') {
        await this.releaseQueues(queues);
        return this.fatal(q);
      }
      queues.push(q);
    }
    this.conn = queues;
    this.lastConnection = { protocol, queues: queues.length, ringPages: order === null ? 1 : 1 << order, persistent };
    await this.switchState(XenbusState.Connected);
    // requests queued before the event channels were bound; a frontend whose last answers went out
    // just before the previous backend died may not have been told of them
    for (const q of queues) {
      q.service.kick();
      if (q.takenOver) this.devices.evtchn.notify(q.port);
    }
  }

  /** read_per_ring_refs: one queue's ring mapped (each of its pages) and port bound, or why not. */
  private async connectQueue(dir: string, protocol: BlkifProtocol, order: number | null, persistentGrants: boolean): Promise<Queue | string> {
    const xs = this.devices.xenstore, gnttab = this.devices.gnttab;
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
      port = await this.devices.evtchn.bindInterdomain(this.frontDomid, Number(portText), () => service?.kick());
    } catch (e) {
      await unmapAll();
      return `binding event-channel ${portText}: ${(e as Error).message}`;
    }
    const back = new BlkifBackRing(ring.map((m) => m.page), protocol);
    const persistent = persistentGrants ? new PersistentGrants(gnttab, this.frontDomid) : null;
    service = new BlkifService({
      devices: this.devices, frontDomid: this.frontDomid, ring: back, port, persistent,
      image: this.image!, sectors: this.sectors, readOnly: this.readOnly, discard: this.discard, stats: this.stats, log: this.log,
    });
    return { ring, port, service, takenOver: back.rspProdPvt !== 0, persistent };
  }

  /** xen_blkif_disconnect: no request in flight, the rings unmapped, the ports closed */
  protected async disconnect(): Promise<void> {
    const c = this.conn;
    if (!c) return;
    this.conn = null;
    await this.releaseQueues(c);
  }

  private async releaseQueues(queues: Queue[]): Promise<void> {
    for (const q of queues) {
      await q.service.stop();
      await q.persistent?.close();
      this.devices.evtchn.unbind(q.port);
      for (const m of q.ring) await this.devices.gnttab.unmap(m.handle);
    }
  }

  protected override async closeDevice(): Promise<void> {
    await this.image?.close().catch(() => {});
    this.image = null;
  }
}
