// blkback's request path (Linux's drivers/block/xen-blkback/blkback.c):
// requests taken off a frontend's blkif ring, data moved with grant copy
// (so the same code serves from a de-privileged driver domain), or through
// the frontend's persistent grants mapped once (persistent_grants.ts), host
// I/O on a raw image through async fs, one response per request with the
// request's id. A request the ring or the disk cannot honour is answered
// BLKIF_RSP_ERROR; a ring whose producer runs past its size stops being
// served. Nothing a frontend writes can throw out of here.

import type { BlockImage } from './image.js';
import type { PersistentGrants } from './persistent_grants.js';
import type { XenDevices, GrantCopyOp } from '../libs/devices.js';
import {
  BlkifBackRing, BlkifRequest, BlkifSegment, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_DISCARD,
  BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP, BLKIF_MAX_SEGMENTS_PER_REQUEST, MAX_INDIRECT_SEGMENTS,
  MAX_INDIRECT_PAGES, SEGS_PER_INDIRECT_FRAME, PAGE_SIZE, SECTOR_SIZE, readSegment,
} from './blkif.js';

/** What a service served (Linux's blkback keeps the like in sysfs: rd_req, wr_req, f_req, ds_req, rd_sect, wr_sect). */
export interface BlkifStats {
  rdReq: number;
  wrReq: number;
  /** flushes, with data or without */
  fReq: number;
  dsReq: number;
  /** reads and writes that came as BLKIF_OP_INDIRECT, and the most segments one of them had */
  indirectReq: number;
  maxSegments: number;
  rdSect: number;
  wrSect: number;
  /** requests answered with an error status */
  errReq: number;
  /** segments (data and indirect pages) that went through a persistent grant's mapping instead of a grant copy */
  persistentSegs: number;
}

export function newBlkifStats(): BlkifStats {
  return { rdReq: 0, wrReq: 0, fReq: 0, dsReq: 0, indirectReq: 0, maxSegments: 0, rdSect: 0, wrSect: 0, errReq: 0, persistentSegs: 0 };
}

export interface BlkifServiceOptions {
  devices: XenDevices;
  /** the frontend's domain (whose grants the segments name) */
  frontDomid: number;
  ring: BlkifBackRing;
  /** local event-channel port bound to the frontend's */
  port: number;
  image: BlockImage;
  /** the image's size in 512-byte sectors */
  sectors: bigint;
  readOnly: boolean;
  /** whether feature-discard was offered (BLKIF_OP_DISCARD is refused otherwise) */
  discard?: boolean;
  /** counted into (shared by the queues of one device) */
  stats?: BlkifStats;
  /** a broken ring is said here */
  log?: (line: string) => void;
  /** the ring's persistent grants, when both ends said feature-persistent */
  persistent?: PersistentGrants | null;
}

/** Requests of one ring served at once: the host's I/O for one runs while the next is copied. */
export const MAX_INFLIGHT = 8;

/** What one request in flight works in: its data (up to MAX_INDIRECT_SEGMENTS pages) and its indirect segment pages. */
interface Slot { buf: Uint8Array; indirect: Uint8Array }

export class BlkifService {
  private running = false;
  private again = false;
  private broken = false;
  private readonly slots: Slot[] = [];
  private inflight = 0;
  /** requests taken and not yet answered, in ring order (their status once done) */
  private readonly answers: { req: BlkifRequest; status: number | null }[] = [];
  /** woken when a request completes (a slot is free, or the ring drained) */
  private waiters: (() => void)[] = [];
  readonly stats: BlkifStats;
  private pass: Promise<void> = Promise.resolve();

  constructor(private readonly o: BlkifServiceOptions) {
    this.stats = o.stats ?? newBlkifStats();
  }

  /** Resolves when no pass is under way and no request is in flight. */
  get idle(): Promise<void> {
    return this.pass.then(() => this.until(() => this.inflight === 0));
  }

  /** The frontend notified: serve the ring until it is empty (one pass at a time). */
  kick(): void {
    if (this.broken) return;
    if (this.running) { this.again = true; return; }
    this.running = true;
    // a kick after the pass's last look but before its promise settled set `again` and found it running: run again
    this.pass = this.serve().finally(() => {
      this.running = false;
      if (this.again) this.kick();
    });
  }

  private async until(cond: () => boolean): Promise<void> {
    while (!cond()) await new Promise<void>((r) => this.waiters.push(r));
  }

  private takeSlot(): Slot {
    const s = this.slots.pop();
    if (s) return s;
    return { buf: this.o.devices.gnttab.allocBuffer(MAX_INDIRECT_SEGMENTS * PAGE_SIZE), indirect: this.o.devices.gnttab.allocBuffer(MAX_INDIRECT_PAGES * PAGE_SIZE) };
  }

  /**
   * Serves one request in the background. Responses go out in the order the
   * requests were taken, a finished request waiting for those before it: then
   * rsp_prod always counts a prefix of the ring's requests, all answered,
   * and a backend that takes the ring over after this one died (a restarted
   * driver domain) serves exactly the requests from rsp_prod on. The requests
   * still run side by side; only their answers wait.
   */
  private start(req: BlkifRequest): Promise<void> {
    const slot = this.takeSlot();
    this.inflight++;
    const entry: { req: BlkifRequest; status: number | null } = { req, status: null };
    this.answers.push(entry);
    return this.dispatch(req, slot).catch(() => BLKIF_RSP_ERROR).then((status) => {
      if (status !== BLKIF_RSP_OKAY) this.stats.errReq++;
      entry.status = status;
      const r = this.o.ring;
      let put = false;
      while (this.answers.length && this.answers[0]!.status !== null) {
        const { req: q, status: st } = this.answers.shift()!;
        // an indirect request is answered with the operation it carried (Linux's blkfront checks)
        r.putResponse(q.id, q.operation === BLKIF_OP_INDIRECT ? q.indirectOp! : q.operation, st!);
        put = true;
      }
      // RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: the frontend set rsp_event before its last look
      if (put && r.pushResponses()) this.o.devices.evtchn.notify(this.o.port);
      this.slots.push(slot);
      this.inflight--;
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  private async serve(): Promise<void> {
    const r = this.o.ring;
    do {
      this.again = false;
      for (;;) {
        const n = r.unconsumed();
        if (n < 0) {
          this.broken = true;
          this.o.log?.(`blkback: domain ${this.o.frontDomid}: frontend produced more requests than its ring holds; ring no longer served`);
          return;
        }
        if (n === 0 && !r.finalCheckForRequests()) break;
        await this.until(() => this.inflight < MAX_INFLIGHT);
        if (this.broken) return;
        const req = r.takeRequest();
        // A flush or a discard waits for what came before it and is alone in flight, as Linux's
        // blkback drains its ring for them (xen_blk_drain_io): the frontend's ordering rests on it.
        const barrier = req.operation === BLKIF_OP_FLUSH_DISKCACHE || req.operation === BLKIF_OP_DISCARD;
        if (barrier) await this.until(() => this.inflight === 0);
        const done = this.start(req);
        if (barrier) await done;
      }
    } while (this.again);
  }

  private async dispatch(req: BlkifRequest, slot: Slot): Promise<number> {
    if (req.operation === BLKIF_OP_INDIRECT) return this.indirectIo(req, slot);
    if (req.operation === BLKIF_OP_DISCARD) return this.discard(req);
    // A flush may carry data: Linux's blkfront sends its PREFLUSH and FUA writes as FLUSH_DISKCACHE with
    // their segments (blkback takes it as a write after a flush). The write is made durable as well, so
    // an acknowledged FUA write survives the host.
    const flush = req.operation === BLKIF_OP_FLUSH_DISKCACHE;
    if (flush && req.nrSegments === 0) {
      await this.o.image.flush();
      this.stats.fReq++;
      return BLKIF_RSP_OKAY;
    }
    if (req.operation !== BLKIF_OP_READ && req.operation !== BLKIF_OP_WRITE && !flush) return BLKIF_RSP_EOPNOTSUPP;
    if (req.nrSegments === 0 || req.nrSegments > BLKIF_MAX_SEGMENTS_PER_REQUEST) return BLKIF_RSP_ERROR;
    return this.rw(slot, req.operation === BLKIF_OP_WRITE || flush, flush, req.sectorNumber, req.segments);
  }

  /**
   * BLKIF_OP_INDIRECT (io/blkif.h): a read or write whose segments are in pages the frontend granted,
   * 512 to a page, fetched by grant copy (never mapped) before any of them is believed.
   */
  private async indirectIo(req: BlkifRequest, slot: Slot): Promise<number> {
    const op = req.indirectOp;
    if (op !== BLKIF_OP_READ && op !== BLKIF_OP_WRITE) return BLKIF_RSP_ERROR;
    const n = req.nrSegments;
    if (n === 0 || n > MAX_INDIRECT_SEGMENTS) return BLKIF_RSP_ERROR;
    const pages = Math.ceil(n / SEGS_PER_INDIRECT_FRAME);
    const ops: GrantCopyOp[] = [];
    const mapped = await this.persistentPages(req.indirectGrefs!.slice(0, pages));
    for (let i = 0; i < pages; i++) {
      const len = Math.min(n - i * SEGS_PER_INDIRECT_FRAME, SEGS_PER_INDIRECT_FRAME) * 8;
      const into = slot.indirect.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
      // copied out either way: the frontend may change its page while the request is served
      if (mapped[i]) into.set(mapped[i]!.subarray(0, len));
      else ops.push({ source: { domid: this.o.frontDomid, ref: req.indirectGrefs![i]!, offset: 0 }, dest: { buf: into, offset: 0 }, len });
    }
    if (ops.length && (await this.o.devices.gnttab.copy(ops)).some((st) => st !== 0)) return BLKIF_RSP_ERROR;
    const v = new DataView(slot.indirect.buffer, slot.indirect.byteOffset, slot.indirect.byteLength);
    const segments: BlkifSegment[] = [];
    for (let i = 0; i < n; i++) segments.push(readSegment(v, i * 8));
    const status = await this.rw(slot, op === BLKIF_OP_WRITE, false, req.sectorNumber, segments);
    if (status === BLKIF_RSP_OKAY) {
      this.stats.indirectReq++;
      this.stats.maxSegments = Math.max(this.stats.maxSegments, n);
    }
    return status;
  }

  /**
   * BLKIF_OP_DISCARD: the sectors are given back to the host (a hole punched in the image, or zeros
   * written where the file system cannot punch), so they read back as zeros. discard-secure is 0: the
   * flag asks for nothing more.
   */
  private async discard(req: BlkifRequest): Promise<number> {
    if (!this.o.discard) return BLKIF_RSP_EOPNOTSUPP;
    if (this.o.readOnly) return BLKIF_RSP_ERROR;
    const first = req.sectorNumber, n = req.nrSectors!;
    if (first > this.o.sectors || n > this.o.sectors - first) return BLKIF_RSP_ERROR;
    this.stats.dsReq++;
    if (n === 0n) return BLKIF_RSP_OKAY;
    const pos = Number(first) * SECTOR_SIZE, len = Number(n) * SECTOR_SIZE;
    await this.o.image.discard(pos, len);
    return BLKIF_RSP_OKAY;
  }

  /** Each grant's persistent mapping, or null where it has none (no feature-persistent, the ring's limit, or a grant not writable). */
  private async persistentPages(refs: number[]): Promise<(Uint8Array | null)[]> {
    const pg = this.o.persistent;
    if (!pg) return refs.map(() => null);
    const pages = await Promise.all(refs.map((r) => pg.page(r)));
    this.stats.persistentSegs += pages.filter(Boolean).length;
    return pages;
  }

  /** The data of a read or write: the segments checked, the disk's bounds and mode, grant copy (or persistent mappings) and the image. */
  private async rw(slot: Slot, write: boolean, flush: boolean, sector: bigint, segments: BlkifSegment[]): Promise<number> {
    if (write && this.o.readOnly) return BLKIF_RSP_ERROR;
    // io/blkif.h: each segment covers sectors first_sect..last_sect of one page (0..7); they follow one another on the disk
    let total = 0;
    const at: { page: Uint8Array | null; off: number; len: number; into: number }[] = [];
    for (const s of segments) {
      if (s.lastSect >= PAGE_SIZE / SECTOR_SIZE || s.firstSect > s.lastSect) return BLKIF_RSP_ERROR;
      const len = (s.lastSect - s.firstSect + 1) * SECTOR_SIZE;
      at.push({ page: null, off: s.firstSect * SECTOR_SIZE, len, into: total });
      total += len;
    }
    const end = sector + BigInt(total / SECTOR_SIZE);
    if (end > this.o.sectors) return BLKIF_RSP_ERROR;
    const pages = await this.persistentPages(segments.map((s) => s.gref));
    const ops: GrantCopyOp[] = [];
    at.forEach((a, i) => {
      a.page = pages[i]!;
      if (a.page) return;
      const grant = { domid: this.o.frontDomid, ref: segments[i]!.gref, offset: a.off };
      const local = { buf: slot.buf.subarray(a.into, a.into + PAGE_SIZE), offset: 0 };
      ops.push(write ? { source: grant, dest: local, len: a.len } : { source: local, dest: grant, len: a.len });
    });
    const copied = async () => !ops.length || (await this.o.devices.gnttab.copy(ops)).every((st) => st === 0);
    const pos = Number(sector) * SECTOR_SIZE;
    if (write) {
      for (const a of at) if (a.page) slot.buf.set(a.page.subarray(a.off, a.off + a.len), a.into);
      if (!(await copied())) return BLKIF_RSP_ERROR;
      if (flush) await this.o.image.flush();
      await this.o.image.write(slot.buf.subarray(0, total), pos);
      if (flush) await this.o.image.flush();
    } else {
      await this.o.image.read(slot.buf.subarray(0, total), pos);
      for (const a of at) if (a.page) a.page.set(slot.buf.subarray(a.into, a.into + a.len), a.off);
      if (!(await copied())) return BLKIF_RSP_ERROR;
    }
    const st = this.stats;
    if (flush) st.fReq++;
    if (write) { st.wrReq++; st.wrSect += total / SECTOR_SIZE; } else { st.rdReq++; st.rdSect += total / SECTOR_SIZE; }
    return BLKIF_RSP_OKAY;
  }

  /** Stops serving: nothing more is taken off the ring; the requests in flight complete and are answered. */
  stop(): Promise<void> {
    this.broken = true;
    return this.idle;
  }
}
