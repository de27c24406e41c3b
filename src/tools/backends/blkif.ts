// The blkif shared ring (io/ring.h, io/blkif.h) in the two x86 layouts a
// frontend may speak: "x86_64-abi" (natural alignment) and "x86_32-abi"
// (i386 alignment: the 64-bit id and sector_number 4-byte aligned). The
// layout numbers live here only; the backend reads and writes through these.

export const PAGE_SIZE = 4096;
export const SECTOR_SIZE = 512;
/** io/blkif.h */
export const BLKIF_OP_READ = 0;
export const BLKIF_OP_WRITE = 1;
export const BLKIF_OP_FLUSH_DISKCACHE = 3;
export const BLKIF_OP_DISCARD = 5;
export const BLKIF_OP_INDIRECT = 6;
/** struct blkif_request_discard's flag (honoured only where discard-secure is 1) */
export const BLKIF_DISCARD_SECURE = 1;
export const BLKIF_RSP_EOPNOTSUPP = -2;
export const BLKIF_RSP_ERROR = -1;
export const BLKIF_RSP_OKAY = 0;
export const BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
/** io/blkif.h: indirect_grefs[] of struct blkif_request_indirect */
export const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8;
/** struct blkif_request_segment is 8 bytes: 512 of them in an indirect page */
export const SEGS_PER_INDIRECT_FRAME = PAGE_SIZE / 8;
/** the most segments an indirect request may carry here (Linux's blkback: MAX_INDIRECT_SEGMENTS) */
export const MAX_INDIRECT_SEGMENTS = 256;
/** indirect pages a request of MAX_INDIRECT_SEGMENTS needs */
export const MAX_INDIRECT_PAGES = Math.ceil(MAX_INDIRECT_SEGMENTS / SEGS_PER_INDIRECT_FRAME);
/** io/blkif.h: the `info` node's bits */
export const VDISK_CDROM = 1;
export const VDISK_READONLY = 4;

export type BlkifProtocol = 'x86_32-abi' | 'x86_64-abi';

export interface BlkifSegment { gref: number; firstSect: number; lastSect: number }
export interface BlkifRequest {
  operation: number;
  /** u8 in a read/write request, u16 in an indirect one */
  nrSegments: number;
  handle: number;
  id: bigint;
  sectorNumber: bigint;
  /** the segments in the ring slot (none for an indirect request: they are in its indirect pages) */
  segments: BlkifSegment[];
  /** BLKIF_OP_INDIRECT: the operation the segments are for, and the grants of the pages that hold them */
  indirectOp?: number;
  indirectGrefs?: number[];
  /** BLKIF_OP_DISCARD: the sectors from sectorNumber on, and BLKIF_DISCARD_SECURE or 0 */
  nrSectors?: bigint;
  flag?: number;
}

interface Layout { slot: number; id: number; sector: number; seg: number; rspOp: number; rspStatus: number; indHandle: number; indGrefs: number; discNr: number }
const LAYOUTS: Record<BlkifProtocol, Layout> = {
  // struct blkif_request (io/blkif.h): id at 8, sector_number at 16, seg[] at 24 (8 bytes each); 112 bytes.
  // struct blkif_request_indirect: indirect_op at 1, nr_segments (u16) at 2, id at 8, sector_number at 16,
  // handle at 24, indirect_grefs[8] at 28 (Linux's blkif_x86_64_request_indirect, packed, the same).
  // struct blkif_request_discard: flag at 1, handle at 2, id at 8, sector_number at 16, nr_sectors at 24.
  'x86_64-abi': { slot: 112, id: 8, sector: 16, seg: 24, rspOp: 8, rspStatus: 10, indHandle: 24, indGrefs: 28, discNr: 24 },
  // struct blkif_x86_32_request (i386 packing of the same): id at 4, sector_number at 12, seg[] at 20; 108 bytes.
  // Indirect (blkif_x86_32_request_indirect): id at 4, sector_number at 12, handle at 20, indirect_grefs at 24.
  // Discard (blkif_x86_32_request_discard): flag at 1, id at 4, sector_number at 12, nr_sectors at 20.
  'x86_32-abi': { slot: 108, id: 4, sector: 12, seg: 20, rspOp: 8, rspStatus: 10, indHandle: 20, indGrefs: 24, discNr: 20 },
};

/** struct blkif_request_segment (io/blkif.h): gref, first_sect, last_sect, 2 bytes of padding */
export function readSegment(v: DataView, o: number): BlkifSegment {
  return { gref: v.getUint32(o, true), firstSect: v.getUint8(o + 4), lastSect: v.getUint8(o + 5) };
}
export function writeSegment(v: DataView, o: number, s: BlkifSegment): void {
  v.setUint32(o, s.gref, true);
  v.setUint8(o + 4, s.firstSect);
  v.setUint8(o + 5, s.lastSect);
}
/** io/ring.h: req_prod, req_event, rsp_prod, rsp_event, then 48 bytes of padding before ring[] */
const REQ_PROD = 0, REQ_EVENT = 1, RSP_PROD = 2, RSP_EVENT = 3, RING_OFF = 64; // index words, then the ring at byte 64
/** struct blkif_response: id (u64), operation (u8) at 8, status (s16) at 10, in both layouts */
const RSP_BYTES = 12;
/** io/blkif.h max-ring-page-order: the largest ring offered (Linux's blkback: XENBUS_MAX_RING_GRANT_ORDER) */
export const MAX_RING_PAGE_ORDER = 4;

/**
 * The pages of a ring, in order, seen as one area: a multi-page ring is
 * contiguous in the frontend's memory but mapped here page by page, so a
 * slot may straddle two pages. The shared header is in the first page.
 */
class RingArea {
  readonly length: number;
  /**
   * The shared header's index words (req_prod, req_event, rsp_prod, rsp_event), read and written with
   * Atomics: each side's "publish, then look at the other's event index" needs the full barrier io/ring.h
   * puts there (xen_mb), which plain typed-array accesses do not give against the guest's CPU.
   */
  readonly idx: Uint32Array;
  constructor(readonly pages: Uint8Array[]) {
    for (const p of pages) if (p.length < PAGE_SIZE) throw new Error('a ring page is shorter than a page');
    this.length = pages.length * PAGE_SIZE;
    this.idx = new Uint32Array(pages[0]!.buffer, pages[0]!.byteOffset, RING_OFF / 4);
  }
  /** bytes [off, off + len), copied out */
  read(off: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    for (let done = 0; done < len; ) {
      const at = off + done, o = at % PAGE_SIZE, n = Math.min(len - done, PAGE_SIZE - o);
      out.set(this.pages[Math.floor(at / PAGE_SIZE)]!.subarray(o, o + n), done);
      done += n;
    }
    return out;
  }
  write(off: number, b: Uint8Array): void {
    for (let done = 0; done < b.length; ) {
      const at = off + done, o = at % PAGE_SIZE, n = Math.min(b.length - done, PAGE_SIZE - o);
      this.pages[Math.floor(at / PAGE_SIZE)]!.set(b.subarray(done, done + n), o);
      done += n;
    }
  }
}

/** __RING_SIZE: the largest power of two of slots that fits after the header */
function ringSize(bytes: number, slot: number): number {
  let n = 1;
  while (n * 2 * slot <= bytes - RING_OFF) n *= 2;
  return n;
}

/** The back end of a blkif ring of one or more pages (io/ring.h's BACK_RING). */
export class BlkifBackRing {
  readonly size: number;
  private readonly l: Layout;
  private readonly a: RingArea;
  reqCons = 0;
  rspProdPvt = 0;

  /** `pages`: the ring's pages in the order of ring-ref0.. (a single page for ring-ref) */
  constructor(pages: Uint8Array | Uint8Array[], readonly protocol: BlkifProtocol) {
    this.l = LAYOUTS[protocol];
    this.a = new RingArea(Array.isArray(pages) ? pages : [pages]);
    this.size = ringSize(this.a.length, this.l.slot);
    // BACK_RING_ATTACH at the published rsp_prod (Linux's blkback does the same): a fresh ring starts at 0,
    // and a ring a backend before this one served goes on from the first request it left unanswered
    this.rspProdPvt = this.reqCons = Atomics.load(this.a.idx, RSP_PROD);
  }

  get reqProd(): number { return Atomics.load(this.a.idx, REQ_PROD); }

  /** Requests the frontend produced and we did not consume; more than the ring holds is a broken frontend (-1). */
  unconsumed(): number {
    const n = (this.reqProd - this.reqCons) >>> 0;
    return n > this.size ? -1 : n;
  }

  /** RING_COPY_REQUEST: the next request, copied out so that later guest writes cannot change it. */
  takeRequest(): BlkifRequest {
    const o = RING_OFF + (this.reqCons & (this.size - 1)) * this.l.slot;
    this.reqCons = (this.reqCons + 1) >>> 0;
    const copy = new DataView(this.a.read(o, this.l.slot).buffer);
    const operation = copy.getUint8(0);
    const id = copy.getBigUint64(this.l.id, true), sectorNumber = copy.getBigUint64(this.l.sector, true);
    if (operation === BLKIF_OP_INDIRECT) {
      const indirectGrefs: number[] = [];
      for (let i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++) indirectGrefs.push(copy.getUint32(this.l.indGrefs + i * 4, true));
      return { operation, indirectOp: copy.getUint8(1), nrSegments: copy.getUint16(2, true), handle: copy.getUint16(this.l.indHandle, true), id, sectorNumber, segments: [], indirectGrefs };
    }
    if (operation === BLKIF_OP_DISCARD) {
      return { operation, flag: copy.getUint8(1), nrSegments: 0, handle: copy.getUint16(2, true), id, sectorNumber, segments: [], nrSectors: copy.getBigUint64(this.l.discNr, true) };
    }
    const nrSegments = copy.getUint8(1);
    const segments: BlkifSegment[] = [];
    for (let i = 0; i < Math.min(nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST); i++) segments.push(readSegment(copy, this.l.seg + i * 8));
    return { operation, nrSegments, handle: copy.getUint16(2, true), id, sectorNumber, segments };
  }

  /** Writes a response (struct blkif_response: id, operation, status) into the next private response slot. */
  putResponse(id: bigint, operation: number, status: number): void {
    const o = RING_OFF + (this.rspProdPvt & (this.size - 1)) * this.l.slot;
    // the byte between operation and status is padding in both layouts
    const r = new DataView(this.a.read(o, RSP_BYTES).buffer);
    r.setBigUint64(0, id, true);
    r.setUint8(this.l.rspOp, operation);
    r.setInt16(this.l.rspStatus, status, true);
    this.a.write(o, new Uint8Array(r.buffer));
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
  }

  /** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publishes the responses; whether the frontend asked to be told. */
  pushResponses(): boolean {
    const h = this.a.idx;
    const old = Atomics.load(h, RSP_PROD);
    const now = this.rspProdPvt;
    Atomics.store(h, RSP_PROD, now);
    return ((now - Atomics.load(h, RSP_EVENT)) >>> 0) < ((now - old) >>> 0);
  }

  /** RING_FINAL_CHECK_FOR_REQUESTS: asks for an event on the next request, then looks once more. */
  finalCheckForRequests(): boolean {
    if (this.unconsumed() !== 0) return true;
    Atomics.store(this.a.idx, REQ_EVENT, (this.reqCons + 1) >>> 0);
    return this.unconsumed() !== 0;
  }
}

/** The frontend's side, for tests that play a blkfront. */
export class BlkifFrontRing {
  private readonly l: Layout;
  private readonly a: RingArea;
  reqProdPvt = 0;
  rspCons = 0;
  readonly size: number;
  constructor(pages: Uint8Array | Uint8Array[], readonly protocol: BlkifProtocol) {
    this.l = LAYOUTS[protocol];
    this.a = new RingArea(Array.isArray(pages) ? pages : [pages]);
    this.size = ringSize(this.a.length, this.l.slot);
    Atomics.store(this.a.idx, REQ_EVENT, 1);
    Atomics.store(this.a.idx, RSP_EVENT, 1);
  }
  /** Writes a raw request (nrSegments as given, even if hostile). */
  put(r: BlkifRequest): void {
    const o = RING_OFF + (this.reqProdPvt & (this.size - 1)) * this.l.slot;
    const v = new DataView(new ArrayBuffer(this.l.slot));
    v.setUint8(0, r.operation);
    v.setBigUint64(this.l.id, r.id, true);
    v.setBigUint64(this.l.sector, r.sectorNumber, true);
    if (r.operation === BLKIF_OP_INDIRECT) {
      v.setUint8(1, r.indirectOp ?? 0);
      v.setUint16(2, r.nrSegments, true);
      v.setUint16(this.l.indHandle, r.handle, true);
      (r.indirectGrefs ?? []).slice(0, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST).forEach((g, i) => v.setUint32(this.l.indGrefs + i * 4, g, true));
    } else if (r.operation === BLKIF_OP_DISCARD) {
      v.setUint8(1, r.flag ?? 0);
      v.setUint16(2, r.handle, true);
      v.setBigUint64(this.l.discNr, r.nrSectors ?? 0n, true);
    } else {
      v.setUint8(1, r.nrSegments);
      v.setUint16(2, r.handle, true);
      r.segments.slice(0, BLKIF_MAX_SEGMENTS_PER_REQUEST).forEach((s, i) => writeSegment(v, this.l.seg + i * 8, s));
    }
    this.a.write(o, new Uint8Array(v.buffer));
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
  }
  /** Publishes requests (req_prod) regardless of ring space. */
  push(prod = this.reqProdPvt): void { Atomics.store(this.a.idx, REQ_PROD, prod >>> 0); }
  /** Responses published since the last call. */
  responses(): { id: bigint; operation: number; status: number }[] {
    const out = [];
    const prod = Atomics.load(this.a.idx, RSP_PROD);
    while (this.rspCons !== prod) {
      const o = RING_OFF + (this.rspCons & (this.size - 1)) * this.l.slot;
      const v = new DataView(this.a.read(o, RSP_BYTES).buffer);
      out.push({ id: v.getBigUint64(0, true), operation: v.getUint8(this.l.rspOp), status: v.getInt16(this.l.rspStatus, true) });
      this.rspCons = (this.rspCons + 1) >>> 0;
    }
    Atomics.store(this.a.idx, RSP_EVENT, (this.rspCons + 1) >>> 0);
    return out;
  }
}
