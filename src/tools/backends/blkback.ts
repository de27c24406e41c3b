// blkback's request path (Linux's drivers/block/xen-blkback/blkback.c):
// requests taken off a frontend's blkif ring, data moved with grant copy
// only (so the same code serves from a de-privileged driver domain), host
// I/O on a raw image through async fs, one response per request with the
// request's id. A request the ring or the disk cannot honour is answered
// BLKIF_RSP_ERROR; a ring whose producer runs past its size stops being
// served. Nothing a frontend writes can throw out of here.

import type { FileHandle } from 'node:fs/promises';
import type { XenDevices, GrantCopyOp } from '../libs/devices.js';
import {
  BlkifBackRing, BlkifRequest, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_OKAY, BLKIF_RSP_ERROR,
  BLKIF_RSP_EOPNOTSUPP, BLKIF_MAX_SEGMENTS_PER_REQUEST, PAGE_SIZE, SECTOR_SIZE,
} from './blkif.js';

export interface BlkifServiceOptions {
  devices: XenDevices;
  /** the frontend's domain (whose grants the segments name) */
  frontDomid: number;
  ring: BlkifBackRing;
  /** local event-channel port bound to the frontend's */
  port: number;
  image: FileHandle;
  /** the image's size in 512-byte sectors */
  sectors: bigint;
  readOnly: boolean;
  /** a broken ring is said here */
  log?: (line: string) => void;
}

export class BlkifService {
  private running = false;
  private again = false;
  private broken = false;
  private readonly buf: Uint8Array;
  /** resolves when no request is being served */
  idle: Promise<void> = Promise.resolve();

  constructor(private readonly o: BlkifServiceOptions) {
    this.buf = o.devices.gnttab.allocBuffer(BLKIF_MAX_SEGMENTS_PER_REQUEST * PAGE_SIZE);
  }

  /** The frontend notified: serve the ring until it is empty (one pass at a time). */
  kick(): void {
    if (this.broken) return;
    if (this.running) { this.again = true; return; }
    this.running = true;
    this.idle = this.serve().finally(() => { this.running = false; });
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
        const req = r.takeRequest();
        const status = await this.dispatch(req).catch(() => BLKIF_RSP_ERROR);
        r.putResponse(req.id, req.operation, status);
        if (r.pushResponses()) this.o.devices.evtchn.notify(this.o.port);
      }
    } while (this.again);
  }

  private async dispatch(req: BlkifRequest): Promise<number> {
    // A flush may carry data: Linux's blkfront sends its PREFLUSH and FUA writes as FLUSH_DISKCACHE with
    // their segments (blkback takes it as a write after a flush). The write is made durable as well, so
    // an acknowledged FUA write survives the host.
    const flush = req.operation === BLKIF_OP_FLUSH_DISKCACHE;
    if (flush && req.nrSegments === 0) {
      await this.o.image.datasync();
      return BLKIF_RSP_OKAY;
    }
    if (req.operation !== BLKIF_OP_READ && req.operation !== BLKIF_OP_WRITE && !flush) return BLKIF_RSP_EOPNOTSUPP;
    const write = req.operation === BLKIF_OP_WRITE || flush;
    if (write && this.o.readOnly) return BLKIF_RSP_ERROR;
    if (req.nrSegments === 0 || req.nrSegments > BLKIF_MAX_SEGMENTS_PER_REQUEST) return BLKIF_RSP_ERROR;
    // io/blkif.h: each segment covers sectors first_sect..last_sect of one page (0..7); they follow one another on the disk
    let total = 0;
    const ops: GrantCopyOp[] = [];
    for (const s of req.segments) {
      if (s.lastSect >= PAGE_SIZE / SECTOR_SIZE || s.firstSect > s.lastSect) return BLKIF_RSP_ERROR;
      const len = (s.lastSect - s.firstSect + 1) * SECTOR_SIZE;
      const grant = { domid: this.o.frontDomid, ref: s.gref, offset: s.firstSect * SECTOR_SIZE };
      const local = { buf: this.buf.subarray(total, total + PAGE_SIZE), offset: 0 };
      ops.push(write ? { source: grant, dest: local, len } : { source: local, dest: grant, len });
      total += len;
    }
    const end = req.sectorNumber + BigInt(total / SECTOR_SIZE);
    if (end > this.o.sectors) return BLKIF_RSP_ERROR;
    const pos = Number(req.sectorNumber) * SECTOR_SIZE;
    if (write) {
      if ((await this.o.devices.gnttab.copy(ops)).some((st) => st !== 0)) return BLKIF_RSP_ERROR;
      if (flush) await this.o.image.datasync();
      await writeAll(this.o.image, this.buf.subarray(0, total), pos);
      if (flush) await this.o.image.datasync();
    } else {
      await readAll(this.o.image, this.buf.subarray(0, total), pos);
      if ((await this.o.devices.gnttab.copy(ops)).some((st) => st !== 0)) return BLKIF_RSP_ERROR;
    }
    return BLKIF_RSP_OKAY;
  }

  /** Stops serving; a pass under way finishes its request. */
  stop(): Promise<void> {
    this.broken = true;
    return this.idle;
  }
}

async function readAll(f: FileHandle, b: Uint8Array, pos: number): Promise<void> {
  for (let done = 0; done < b.length; ) {
    const { bytesRead } = await f.read(b, done, b.length - done, pos + done);
    if (bytesRead === 0) { b.fill(0, done); return; }
    done += bytesRead;
  }
}

async function writeAll(f: FileHandle, b: Uint8Array, pos: number): Promise<void> {
  for (let done = 0; done < b.length; ) {
    const { bytesWritten } = await f.write(b, done, b.length - done, pos + done);
    done += bytesWritten;
  }
}
