// The netif shared rings (io/ring.h, io/netif.h): one transmit ring (the
// frontend's packets to the backend) and one receive ring (the frontend's
// empty buffers, filled by the backend), each a single granted page. netif
// has one layout on x86: every field is naturally aligned at the same place
// for 32- and 64-bit frontends. The layout numbers live here only; netback
// reads and writes through these.

export const PAGE_SIZE = 4096;

/** io/netif.h: netif_tx_request_t.flags */
export const NETTXF_csum_blank = 1 << 0;
export const NETTXF_data_validated = 1 << 1;
export const NETTXF_more_data = 1 << 2;
export const NETTXF_extra_info = 1 << 3;
/** io/netif.h: netif_rx_response_t.flags */
export const NETRXF_data_validated = 1 << 0;
export const NETRXF_csum_blank = 1 << 1;
export const NETRXF_more_data = 1 << 2;
export const NETRXF_extra_info = 1 << 3;
/** io/netif.h: response status */
export const NETIF_RSP_DROPPED = -2;
export const NETIF_RSP_ERROR = -1;
export const NETIF_RSP_OKAY = 0;
/** the response to an extra-info slot */
export const NETIF_RSP_NULL = 1;
/** io/netif.h: netif_extra_info types and flags */
export const XEN_NETIF_EXTRA_TYPE_NONE = 0;
export const XEN_NETIF_EXTRA_TYPE_GSO = 1;
export const XEN_NETIF_EXTRA_TYPE_MAX = 5;
export const XEN_NETIF_EXTRA_FLAG_MORE = 1 << 0;
/** io/netif.h: the largest packet a transmit request may describe (its size field is a u16) */
export const XEN_NETIF_MAX_TX_SIZE = 0xffff;
/** io/netif.h: the slots of one packet every backend must accept */
export const XEN_NETIF_NR_SLOTS_MIN = 18;

/** struct netif_tx_request: gref (u32) at 0, offset at 4, flags at 6, id at 8, size at 10 (u16 each); 12 bytes */
export interface NetifTxRequest { gref: number; offset: number; flags: number; id: number; size: number }
/** struct netif_extra_info: type (u8) at 0, flags (u8) at 1, then 6 bytes of the union (gso, mcast, hash) */
export interface NetifExtraInfo { type: number; flags: number; data: Uint8Array }

/** The union's gso member (io/netif.h): size (u16) at 2, type (u8) at 4, pad (u8) at 5, features (u16) at 6 of the slot */
export function gsoOfExtra(e: NetifExtraInfo): { type: number; size: number } {
  return { size: e.data[0]! | (e.data[1]! << 8), type: e.data[2]! };
}

/** The 6 bytes of the union for a GSO extra: size, type, no pad, no features (none are defined) */
export function gsoExtraData(g: { type: number; size: number }): Uint8Array {
  return Uint8Array.from([g.size & 0xff, (g.size >> 8) & 0xff, g.type, 0, 0, 0]);
}
/** struct netif_rx_request: id (u16) at 0, 2 bytes of padding, gref (u32) at 4; 8 bytes */
export interface NetifRxRequest { id: number; gref: number }
/** struct netif_rx_response: id at 0, offset at 2, flags at 4, status (s16) at 6; 8 bytes */
export interface NetifRxResponse { id: number; offset: number; flags: number; status: number }

/** A ring's slot is the larger of its request and response (io/ring.h's union). */
const TX_SLOT = 12; // netif_tx_request 12, netif_tx_response 4 (id u16, status s16)
const RX_SLOT = 8; // netif_rx_request 8, netif_rx_response 8
const EXTRA_BYTES = 8;
/** io/ring.h: req_prod, req_event, rsp_prod, rsp_event, then 48 bytes of padding before ring[] */
const REQ_PROD = 0, REQ_EVENT = 1, RSP_PROD = 2, RSP_EVENT = 3, RING_OFF = 64;

/** __RING_SIZE: the largest power of two of slots that fits after the header (256 for both netif rings) */
function ringSize(slot: number): number {
  let n = 1;
  while (n * 2 * slot <= PAGE_SIZE - RING_OFF) n *= 2;
  return n;
}

/**
 * One ring page: the index words through Atomics (publishing an index and then reading the other side's
 * event index needs io/ring.h's full barrier, which plain typed-array accesses do not give against the
 * guest's CPU), slots read as copies so that the frontend cannot change a request once it was checked.
 */
class RingPage {
  readonly size: number;
  readonly idx: Uint32Array;
  constructor(readonly page: Uint8Array, readonly slot: number) {
    if (page.length < PAGE_SIZE) throw new Error('a ring page is shorter than a page');
    this.size = ringSize(slot);
    this.idx = new Uint32Array(page.buffer, page.byteOffset, RING_OFF / 4);
  }
  at(i: number): number { return RING_OFF + (i & (this.size - 1)) * this.slot; }
  read(i: number): DataView {
    const o = this.at(i);
    return new DataView(this.page.slice(o, o + this.slot).buffer);
  }
  write(i: number, v: DataView, len: number): void {
    this.page.set(new Uint8Array(v.buffer, 0, len), this.at(i));
  }
}

/** The back end of one of the two rings (io/ring.h's BACK_RING): the index arithmetic both share. */
abstract class BackRing {
  protected readonly r: RingPage;
  reqCons = 0;
  rspProdPvt = 0;
  constructor(page: Uint8Array, slot: number) {
    this.r = new RingPage(page, slot);
    // BACK_RING_ATTACH at the published rsp_prod: 0 on a fresh ring; on one a backend before this one served
    // (a restarted driver domain), the requests it left unanswered are served again (a frame sent twice at worst)
    this.reqCons = this.rspProdPvt = Atomics.load(this.r.idx, RSP_PROD);
  }
  get size(): number { return this.r.size; }
  get reqProd(): number { return Atomics.load(this.r.idx, REQ_PROD); }

  /** Requests produced and not consumed; more than the ring holds is a broken frontend (-1). */
  unconsumed(): number {
    const n = (this.reqProd - this.reqCons) >>> 0;
    return n > this.size ? -1 : n;
  }

  /** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publishes the responses; whether the frontend asked to be told. */
  pushResponses(): boolean {
    const h = this.r.idx;
    const old = Atomics.load(h, RSP_PROD);
    const now = this.rspProdPvt;
    Atomics.store(h, RSP_PROD, now);
    return ((now - Atomics.load(h, RSP_EVENT)) >>> 0) < ((now - old) >>> 0);
  }

  /**
   * Asks for an event once the frontend has produced `n` requests past those consumed (n = 1:
   * RING_FINAL_CHECK_FOR_REQUESTS; more: netback waiting for the buffers of a whole packet), then
   * looks once more: whether that many are there now.
   */
  waitFor(n: number): boolean {
    const have = () => { const u = this.unconsumed(); return u < 0 || u >= n; };
    if (have()) return true;
    Atomics.store(this.r.idx, REQ_EVENT, (this.reqCons + n) >>> 0);
    return have();
  }
}

export class NetifTxBackRing extends BackRing {
  constructor(page: Uint8Array) { super(page, TX_SLOT); }

  /** The size of the next request, left on the ring (the credit check looks before it takes). */
  peekSize(): number {
    return this.r.read(this.reqCons).getUint16(10, true);
  }

  /** RING_COPY_REQUEST of a netif_tx_request. */
  takeRequest(): NetifTxRequest {
    const v = this.r.read(this.reqCons);
    this.reqCons = (this.reqCons + 1) >>> 0;
    return { gref: v.getUint32(0, true), offset: v.getUint16(4, true), flags: v.getUint16(6, true), id: v.getUint16(8, true), size: v.getUint16(10, true) };
  }

  /** The next slot as a netif_extra_info (it follows a request with NETTXF_extra_info). */
  takeExtra(): NetifExtraInfo {
    const v = this.r.read(this.reqCons);
    this.reqCons = (this.reqCons + 1) >>> 0;
    return { type: v.getUint8(0), flags: v.getUint8(1), data: new Uint8Array(v.buffer.slice(2, EXTRA_BYTES)) };
  }

  /** struct netif_tx_response: id (u16) at 0, status (s16) at 2 */
  putResponse(id: number, status: number): void {
    const v = new DataView(new ArrayBuffer(4));
    v.setUint16(0, id, true);
    v.setInt16(2, status, true);
    this.r.write(this.rspProdPvt, v, 4);
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
  }
}

export class NetifRxBackRing extends BackRing {
  constructor(page: Uint8Array) { super(page, RX_SLOT); }

  takeRequest(): NetifRxRequest {
    const v = this.r.read(this.reqCons);
    this.reqCons = (this.reqCons + 1) >>> 0;
    return { id: v.getUint16(0, true), gref: v.getUint32(4, true) };
  }

  /**
   * A netif_extra_info in the response slot (8 bytes: the whole slot); the slot's request is consumed
   * with it, its buffer left unused, as Linux's netback writes it over the response (xenvif_rx_extra_slot).
   */
  putExtra(e: { type: number; flags: number; data: Uint8Array }): void {
    const v = new DataView(new ArrayBuffer(RX_SLOT));
    v.setUint8(0, e.type);
    v.setUint8(1, e.flags);
    new Uint8Array(v.buffer).set(e.data.subarray(0, EXTRA_BYTES - 2), 2);
    this.r.write(this.rspProdPvt, v, RX_SLOT);
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
  }

  putResponse(r: NetifRxResponse): void {
    const v = new DataView(new ArrayBuffer(RX_SLOT));
    v.setUint16(0, r.id, true);
    v.setUint16(2, r.offset, true);
    v.setUint16(4, r.flags, true);
    v.setInt16(6, r.status, true);
    this.r.write(this.rspProdPvt, v, RX_SLOT);
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
  }
}

/** The frontend's side of both rings, for tests that play a netfront. */
abstract class FrontRing {
  protected readonly r: RingPage;
  reqProdPvt = 0;
  rspCons = 0;
  constructor(page: Uint8Array, slot: number) {
    this.r = new RingPage(page, slot);
    Atomics.store(this.r.idx, REQ_EVENT, 1);
    Atomics.store(this.r.idx, RSP_EVENT, 1);
  }
  get size(): number { return this.r.size; }
  /** Publishes requests (req_prod) regardless of ring space; whether the backend asked to be told. */
  push(prod = this.reqProdPvt): boolean {
    const old = Atomics.load(this.r.idx, REQ_PROD);
    Atomics.store(this.r.idx, REQ_PROD, prod >>> 0);
    return ((prod - Atomics.load(this.r.idx, REQ_EVENT)) >>> 0) < ((prod - old) >>> 0);
  }
  protected takeResponses<T>(read: (v: DataView) => T): T[] {
    const out: T[] = [];
    const prod = Atomics.load(this.r.idx, RSP_PROD);
    while (this.rspCons !== prod) {
      out.push(read(this.r.read(this.rspCons)));
      this.rspCons = (this.rspCons + 1) >>> 0;
    }
    Atomics.store(this.r.idx, RSP_EVENT, (this.rspCons + 1) >>> 0);
    return out;
  }
}

export class NetifTxFrontRing extends FrontRing {
  constructor(page: Uint8Array) { super(page, TX_SLOT); }
  put(q: NetifTxRequest): void {
    const v = new DataView(new ArrayBuffer(TX_SLOT));
    v.setUint32(0, q.gref, true);
    v.setUint16(4, q.offset, true);
    v.setUint16(6, q.flags, true);
    v.setUint16(8, q.id, true);
    v.setUint16(10, q.size, true);
    this.r.write(this.reqProdPvt, v, TX_SLOT);
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
  }
  putExtra(e: { type: number; flags: number; data?: Uint8Array }): void {
    const v = new DataView(new ArrayBuffer(TX_SLOT));
    v.setUint8(0, e.type);
    v.setUint8(1, e.flags);
    new Uint8Array(v.buffer).set((e.data ?? new Uint8Array()).subarray(0, EXTRA_BYTES - 2), 2);
    this.r.write(this.reqProdPvt, v, TX_SLOT);
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
  }
  responses(): { id: number; status: number }[] {
    return this.takeResponses((v) => ({ id: v.getUint16(0, true), status: v.getInt16(2, true) }));
  }
}

export class NetifRxFrontRing extends FrontRing {
  constructor(page: Uint8Array) { super(page, RX_SLOT); }
  put(q: NetifRxRequest): void {
    const v = new DataView(new ArrayBuffer(RX_SLOT));
    v.setUint16(0, q.id, true);
    v.setUint32(4, q.gref, true);
    this.r.write(this.reqProdPvt, v, RX_SLOT);
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
  }
  responses(): NetifRxResponse[] {
    return this.takeResponses((v) => ({ id: v.getUint16(0, true), offset: v.getUint16(2, true), flags: v.getUint16(4, true), status: v.getInt16(6, true) }));
  }
}
