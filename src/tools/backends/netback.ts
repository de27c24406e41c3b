// netback's data path (Linux's drivers/net/xen-netback/netback.c for
// transmit, rx.c for receive) for one vif: packets the frontend puts on its
// transmit ring are copied out of its granted pages (grant copy only, so the
// same code serves from a driver domain) into one frame handed to the switch;
// frames from the switch wait in a bounded queue until the frontend has
// posted receive buffers, and are copied into them. Every transmit slot is
// answered (NETIF_RSP_NULL for extra-info slots), a bad packet with
// NETIF_RSP_ERROR; a ring whose producer runs past its size, or a packet cut
// off in the middle of the ring, stops the vif (netback's
// xenvif_fatal_tx_err). Nothing a frontend writes can throw out of here.
//
// GSO both ways, as Linux's netback offers it (feature-gso-tcpv4/6): a
// transmitted packet with a GSO extra is one large TCP frame (up to 64 KiB)
// carrying its GSO type and size; a large frame goes to a frontend that said
// it takes that type as one frame over several buffers with the GSO extra
// after the first response, and to one that did not as the TCP segments
// gso.ts cuts (what Linux's stack does for it before netback sees the frame).

import type { GrantCopyOp, XenDevices } from '../libs/devices.js';
import { gsoHeaders, segmentTcp, setPartialCsum, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6, type GsoInfo } from './gso.js';
import {
  gsoExtraData, gsoOfExtra, NetifRxBackRing, NetifTxBackRing, type NetifTxRequest, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY,
  NETRXF_csum_blank, NETRXF_data_validated, NETRXF_extra_info, NETRXF_more_data, NETTXF_csum_blank, NETTXF_data_validated, NETTXF_extra_info,
  NETTXF_more_data, PAGE_SIZE, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_MAX, XEN_NETIF_EXTRA_TYPE_NONE,
  XEN_NETIF_MAX_TX_SIZE,
} from './netif.js';

/** An Ethernet frame as it crosses the switch, with what the sender said of its checksum. */
export interface NetFrame {
  data: Uint8Array;
  /** the L4 checksum is left to be filled in (CHECKSUM_PARTIAL: NETTXF_csum_blank) */
  csumBlank?: boolean;
  /** the checksum is known good (CHECKSUM_UNNECESSARY: NETTXF_data_validated) */
  dataValidated?: boolean;
  /** a TCP frame larger than a segment, to be cut in `size` payload bytes (its checksum always partial: csumBlank) */
  gso?: GsoInfo;
}

/** A frontend's GSO types as a mask (Linux's netback: gso_mask, GSO_BIT(type)) */
export const gsoBit = (type: number): number => 1 << type;
export const GSO_MASK_ALL = gsoBit(XEN_NETIF_GSO_TYPE_TCPV4) | gsoBit(XEN_NETIF_GSO_TYPE_TCPV6);

/** The shortest frame carried: an Ethernet header (ETH_HLEN) */
export const ETH_HLEN = 14;
/** The most slots one transmitted packet may take (Linux's netback: fatal_skb_slots, XEN_NETBK_LEGACY_SLOTS_MAX 20); past it the packet is refused */
export const MAX_TX_SLOTS = 20;
/** Frames held for a frontend that posts no receive buffers (Linux's netback: rx_queue_max, ~512 KiB of full frames) */
export const RX_QUEUE_MAX = 352;
/**
 * And their bytes, now that a frame may be 64 KiB: Linux's netback holds 512 KiB (XENVIF_RX_QUEUE_BYTES) and
 * stops its netdev's queue, which holds 32 frames more (XENVIF_QUEUE_LENGTH), up to 64 KiB each.
 */
export const RX_QUEUE_BYTES = 512 * 1024 + 32 * 65_536;
/** How long a frame may wait for a receive buffer before it is dropped (Linux's netback: rx_drain_timeout_msecs) */
export const RX_DRAIN_MS = 10_000;
/** The most credit a window can hold for one large packet (Linux's netback: tx_add_credit's 128 KiB burst) */
const MAX_CREDIT_BURST = 131_072;

/** A transmit rate limit as the backend's `rate` node gives it (libxl: "<bytes>,<usecs>"): so many bytes per window. */
export interface TxRate {
  bytes: number;
  usec: number;
}

/** The backend's `rate` node as Linux's netback reads it (xen_net_read_rate); null: none, or not two whole numbers. */
export function parseRateNode(s: string | undefined): TxRate | null {
  const m = /^(\d+),(\d+)$/.exec(s ?? '');
  if (!m) return null;
  const bytes = Number(m[1]), usec = Number(m[2]);
  return bytes > 0 && usec > 0 && Number.isSafeInteger(bytes) && usec <= 0xffffffff ? { bytes, usec } : null;
}

export interface NetifStats {
  txPackets: number;
  txBytes: number;
  /** transmitted packets answered with an error */
  txErrors: number;
  /** transmitted IPv4 packets dropped for a source the vif's `ip` does not name (answered okay, as a bridge's filter drops them) */
  txSpoofed: number;
  rxPackets: number;
  rxBytes: number;
  /** frames dropped: queue full, waited too long, too large for the frontend, or a failed copy */
  rxDropped: number;
  /** the most ring slots one packet took: transmitted (with its extra-info slots), received (with its GSO extra) */
  txMaxSlots: number;
  rxMaxSlots: number;
  /** transmitted packets with a GSO extra (counted in txPackets too) */
  txGsoPackets: number;
  /** frames received whole with a GSO extra (in rxPackets too) */
  rxGsoPackets: number;
  /** GSO frames cut into segments for a frontend that could not take them whole (each segment in rxPackets) */
  rxGsoSegmented: number;
}

export function newNetifStats(): NetifStats {
  return { txPackets: 0, txBytes: 0, txErrors: 0, txSpoofed: 0, rxPackets: 0, rxBytes: 0, rxDropped: 0, txMaxSlots: 0, rxMaxSlots: 0, txGsoPackets: 0, rxGsoPackets: 0, rxGsoSegmented: 0 };
}

export interface NetifServiceOptions {
  devices: XenDevices;
  frontDomid: number;
  tx: NetifTxBackRing;
  rx: NetifRxBackRing;
  /** local ports: the same one for both rings unless the frontend split them */
  txPort: number;
  rxPort: number;
  /** the frontend said feature-sg 1: a frame may span several receive buffers */
  rxSg: boolean;
  /** the GSO types the frontend takes whole (feature-gso-tcpv4/6: gsoBit of each); none when absent */
  rxGso?: number;
  /** each frame the frontend transmitted */
  deliver: (f: NetFrame) => void;
  /** whether a transmitted frame may go on (the vif's anti-spoofing, antispoof.ts); all may when absent */
  txFilter?: ((frame: Uint8Array) => boolean) | null;
  stats?: NetifStats;
  log?: (line: string) => void;
  /** how long a frame may wait for a buffer (default RX_DRAIN_MS) */
  rxDrainMs?: number;
  /** what the frontend may transmit per window; unlimited when absent */
  txRate?: TxRate | null;
}

interface Queued { f: NetFrame; at: number }

export class NetifService {
  private broken = false;
  private txRunning = false;
  private txAgain = false;
  private rxRunning = false;
  private rxAgain = false;
  private txPass: Promise<void> = Promise.resolve();
  private rxPass: Promise<void> = Promise.resolve();
  private readonly txBuf: Uint8Array;
  private readonly rxBuf: Uint8Array;
  private readonly rxQueue: Queued[] = [];
  private rxQueueBytes = 0;
  private drainTimer: NodeJS.Timeout | null = null;
  readonly stats: NetifStats;
  private readonly drainMs: number;
  /** Linux's netback credit scheduler: bytes left in this window, when it began (ms), the timer that refills it */
  private remainingCredit: number;
  private creditWindowStart = performance.now();
  private creditTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: NetifServiceOptions) {
    this.stats = o.stats ?? newNetifStats();
    this.drainMs = o.rxDrainMs ?? RX_DRAIN_MS;
    this.remainingCredit = o.txRate?.bytes ?? Infinity;
    // a whole packet of up to 64 KiB, and a page of room past its end for the last copy's view
    this.txBuf = o.devices.gnttab.allocBuffer(XEN_NETIF_MAX_TX_SIZE + 1 + PAGE_SIZE);
    this.rxBuf = o.devices.gnttab.allocBuffer(XEN_NETIF_MAX_TX_SIZE + 1 + PAGE_SIZE);
  }

  /** Resolves when neither ring is being served. */
  get idle(): Promise<void> {
    return Promise.all([this.txPass, this.rxPass]).then(() => {});
  }

  /** Frames waiting for receive buffers. */
  get queued(): number { return this.rxQueue.length; }

  /** Whether a frame sent now would be queued (frames from a tap are not read while not). */
  get hasRoom(): boolean { return this.rxQueue.length < RX_QUEUE_MAX && this.rxQueueBytes < RX_QUEUE_BYTES; }

  /** The frontend notified on the transmit ring (or on its only port). */
  kickTx(): void {
    if (this.broken) return;
    if (this.txRunning) { this.txAgain = true; return; }
    this.txRunning = true;
    // a kick after the pass's last look but before its promise settled set txAgain and found it running: run again
    this.txPass = this.serveTx().catch((e: unknown) => this.fail(`transmit: ${(e as Error).message}`)).finally(() => {
      this.txRunning = false;
      if (this.txAgain) this.kickTx();
    });
  }

  /** The frontend posted receive buffers (or notified on its only port). */
  kickRx(): void {
    if (this.broken) return;
    if (this.rxRunning) { this.rxAgain = true; return; }
    this.rxRunning = true;
    this.rxPass = this.serveRx().catch((e: unknown) => this.fail(`receive: ${(e as Error).message}`)).finally(() => {
      this.rxRunning = false;
      if (this.rxAgain) this.kickRx();
    });
  }

  /** A frame for the frontend: queued (or dropped when the queue is full) and sent once it has buffers. */
  send(f: NetFrame): void {
    if (this.broken) return;
    this.expire();
    if (!this.hasRoom) { this.stats.rxDropped++; return; }
    this.rxQueue.push({ f, at: performance.now() });
    this.rxQueueBytes += f.data.length;
    this.armDrain();
    this.kickRx();
  }

  private fail(why: string): void {
    if (this.broken) return;
    this.broken = true;
    this.o.log?.(`netback: domain ${this.o.frontDomid}: ${why}; vif no longer served`);
    this.stats.rxDropped += this.rxQueue.length;
    this.clearQueue();
    this.disarmDrain();
  }

  private clearQueue(): void {
    this.rxQueue.length = 0;
    this.rxQueueBytes = 0;
  }

  private shiftQueue(): NetFrame {
    const { f } = this.rxQueue.shift()!;
    this.rxQueueBytes -= f.data.length;
    return f;
  }

  /** Drops the frames that waited longer than the drain time (the frontend stopped posting buffers). */
  private expire(): void {
    const old = performance.now() - this.drainMs;
    let n = 0;
    while (n < this.rxQueue.length && this.rxQueue[n]!.at <= old) n++;
    for (let i = 0; i < n; i++) this.shiftQueue();
    this.stats.rxDropped += n;
  }

  private armDrain(): void {
    if (this.drainTimer || !this.rxQueue.length) return;
    const wait = Math.max(1, this.rxQueue[0]!.at + this.drainMs - performance.now());
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      this.expire();
      this.armDrain();
    }, wait);
    this.drainTimer.unref();
  }

  private disarmDrain(): void {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
  }

  private async serveTx(): Promise<void> {
    const r = this.o.tx;
    do {
      this.txAgain = false;
      for (;;) {
        if (this.broken) return;
        const n = r.unconsumed();
        if (n < 0) return this.fail('frontend produced more transmit requests than its ring holds');
        if (n === 0 && !r.waitFor(1)) break;
        // over its rate: the packet stays on the ring until the credit timer refills the window
        if (this.o.txRate) {
          const size = r.peekSize();
          if (this.remainingCredit < size && this.txCreditExceeded(size)) break;
        }
        await this.txPacket();
      }
    } while (this.txAgain);
  }

  /**
   * tx_credit_exceeded: a new window's credit once the last one has run its time; when the packet still
   * does not fit, a timer at the window's end refills it and looks at the ring again.
   */
  private txCreditExceeded(size: number): boolean {
    if (this.creditTimer) return true;
    const now = performance.now();
    const next = this.creditWindowStart + this.o.txRate!.usec / 1000;
    if (now >= next) {
      this.creditWindowStart = now;
      this.addCredit(size);
    }
    if (size <= this.remainingCredit) return false;
    this.creditTimer = setTimeout(() => {
      this.creditTimer = null;
      if (this.broken) return;
      this.addCredit(this.o.tx.unconsumed() > 0 ? this.o.tx.peekSize() : 0);
      this.kickTx();
    }, next - now);
    this.creditTimer.unref();
    this.creditWindowStart = next;
    return true;
  }

  /** tx_add_credit: a window's bytes more, held to one window's worth or the next packet (up to 128 KiB), whichever is more. */
  private addCredit(nextSize: number): void {
    const bytes = this.o.txRate!.bytes;
    const maxBurst = Math.max(Math.min(nextSize, MAX_CREDIT_BURST), bytes);
    this.remainingCredit = Math.min(this.remainingCredit + bytes, maxBurst);
  }

  /** One packet: its first request, its extra-info slots, its further fragments (xenvif_tx_build_gops). */
  private async txPacket(): Promise<void> {
    const r = this.o.tx;
    const first = r.takeRequest();
    this.remainingCredit -= first.size;
    let status = NETIF_RSP_OKAY;
    let extras = 0;
    let gso: GsoInfo | undefined;
    if (first.flags & NETTXF_extra_info) {
      for (let more = true; more; ) {
        if (r.unconsumed() <= 0) return this.fail('a packet\'s extra info is missing from the ring');
        const e = r.takeExtra();
        extras++;
        if (e.type === XEN_NETIF_EXTRA_TYPE_GSO) {
          // xenvif_set_skb_gso: a GSO size of 0 or a type other than TCPv4/v6 is fatal to the vif
          const g = gsoOfExtra(e);
          if (g.size === 0) return this.fail('GSO size must not be zero');
          if (g.type !== XEN_NETIF_GSO_TYPE_TCPV4 && g.type !== XEN_NETIF_GSO_TYPE_TCPV6) return this.fail(`bad GSO type ${g.type}`);
          gso = g;
        } else if (e.type === XEN_NETIF_EXTRA_TYPE_NONE || e.type >= XEN_NETIF_EXTRA_TYPE_MAX) {
          status = NETIF_RSP_ERROR;
        }
        // multicast and hash extras only inform the backend, which has no use for them
        more = (e.flags & XEN_NETIF_EXTRA_FLAG_MORE) !== 0;
      }
    }
    const frags: NetifTxRequest[] = [];
    for (let last = first; last.flags & NETTXF_more_data; ) {
      if (r.unconsumed() <= 0) return this.fail('a packet is cut off in the middle of the transmit ring');
      last = r.takeRequest();
      frags.push(last);
    }
    if (status === NETIF_RSP_OKAY) status = await this.txCopy(first, frags);
    let f: NetFrame | null = null;
    if (status === NETIF_RSP_OKAY) {
      f = { data: this.txBuf.slice(0, first.size), csumBlank: (first.flags & NETTXF_csum_blank) !== 0, dataValidated: (first.flags & NETTXF_data_validated) !== 0 };
      if (gso) {
        // a GSO packet is TCP of its type with whole headers (Linux's netback drops it at checksum_setup,
        // or the stack at segmentation; here the frontend is told); its checksum is partial, and made so
        // when the frontend did not say csum_blank (checksum_setup's rx_gso_checksum_fixup)
        const h = gsoHeaders(f.data, gso);
        if (!h) {
          status = NETIF_RSP_ERROR;
          f = null;
        } else {
          if (!f.csumBlank) setPartialCsum(f.data, h);
          f = { data: f.data, csumBlank: true, gso };
        }
      }
    }
    if (f) {
      this.stats.txPackets++;
      this.stats.txBytes += f.data.length;
      if (f.gso) this.stats.txGsoPackets++;
      this.stats.txMaxSlots = Math.max(this.stats.txMaxSlots, 1 + extras + frags.length);
      if (!this.o.txFilter || this.o.txFilter(f.data)) this.o.deliver(f);
      else this.stats.txSpoofed++;
    } else {
      this.stats.txErrors++;
    }
    // a response in every slot taken, in their order: the packet's status, NULL for the extras
    r.putResponse(first.id, status);
    for (let i = 0; i < extras; i++) r.putResponse(0, NETIF_RSP_NULL);
    for (const f of frags) r.putResponse(f.id, status);
    if (r.pushResponses()) this.o.devices.evtchn.notify(this.o.txPort);
  }

  /**
   * io/netif.h: the first request's size is the whole packet's; each further one carries its own part,
   * the first the rest. Every part within its page; the whole an Ethernet frame of at most 64 KiB.
   */
  private async txCopy(first: NetifTxRequest, frags: NetifTxRequest[]): Promise<number> {
    if (1 + frags.length > MAX_TX_SLOTS) return NETIF_RSP_ERROR;
    const rest = frags.reduce((s, f) => s + f.size, 0);
    if (first.size < ETH_HLEN || rest > first.size) return NETIF_RSP_ERROR;
    const parts = [{ ...first, size: first.size - rest }, ...frags];
    const ops: GrantCopyOp[] = [];
    let at = 0;
    for (const p of parts) {
      if (p.offset + p.size > PAGE_SIZE) return NETIF_RSP_ERROR;
      if (p.size === 0) continue;
      ops.push({ source: { domid: this.o.frontDomid, ref: p.gref, offset: p.offset }, dest: { buf: this.txBuf.subarray(at, at + PAGE_SIZE), offset: 0 }, len: p.size });
      at += p.size;
    }
    if ((await this.o.devices.gnttab.copy(ops)).some((st) => st !== 0)) return NETIF_RSP_ERROR;
    return NETIF_RSP_OKAY;
  }

  private async serveRx(): Promise<void> {
    const r = this.o.rx;
    do {
      this.rxAgain = false;
      while (this.rxQueue.length) {
        if (this.broken) return;
        const { f, at } = this.rxQueue[0]!;
        const len = f.data.length;
        const data = Math.max(1, Math.ceil(len / PAGE_SIZE));
        const fits = (data === 1 || this.o.rxSg) && len <= XEN_NETIF_MAX_TX_SIZE;
        if (f.gso && !(fits && ((this.o.rxGso ?? 0) & gsoBit(f.gso.type)))) {
          // what Linux's stack does for a netdev without that TSO feature: the segments in its place
          this.shiftQueue();
          const h = gsoHeaders(f.data, f.gso);
          if (!h) { this.stats.rxDropped++; continue; }
          this.stats.rxGsoSegmented++;
          const segs = segmentTcp(f.data, h, f.gso.size, false).map((d) => ({ f: { data: d, csumBlank: true }, at }));
          this.rxQueue.unshift(...segs);
          for (const q of segs) this.rxQueueBytes += q.f.data.length;
          continue;
        }
        if (!fits || len === 0) {
          this.shiftQueue();
          this.stats.rxDropped++;
          continue;
        }
        // the GSO extra takes a slot of its own (xenvif_rx_ring_slots_available)
        const slots = data + (f.gso ? 1 : 0);
        const n = r.unconsumed();
        if (n < 0) return this.fail('frontend produced more receive requests than its ring holds');
        // not enough buffers: ask to be told when there are (the frontend has feature-rx-notify)
        if (n < slots && !r.waitFor(slots)) break;
        this.shiftQueue();
        await this.rxFrame(f, data);
      }
      if (!this.rxQueue.length) this.disarmDrain();
    } while (this.rxAgain);
  }

  /**
   * One frame into `slots` receive buffers, a page each from offset 0 (xenvif_rx_skb); a GSO frame's extra
   * in the slot after the first (rx.c: extras go after the first data slot), its request's buffer unused.
   */
  private async rxFrame(f: NetFrame, slots: number): Promise<void> {
    const r = this.o.rx;
    const len = f.data.length;
    this.rxBuf.set(f.data);
    const first = r.takeRequest();
    // the slot after the first: its request consumed now, the extra written over its response below
    if (f.gso) r.takeRequest();
    const reqs = [first, ...Array.from({ length: slots - 1 }, () => r.takeRequest())];
    const ops: GrantCopyOp[] = reqs.map((q, i) => ({
      source: { buf: this.rxBuf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), offset: 0 },
      dest: { domid: this.o.frontDomid, ref: q.gref, offset: 0 },
      len: Math.min(PAGE_SIZE, len - i * PAGE_SIZE),
    }));
    const st = await this.o.devices.gnttab.copy(ops);
    const ok = st.every((s) => s === 0);
    // netback's rx.c: CHECKSUM_PARTIAL is passed on as csum_blank (and validated), CHECKSUM_UNNECESSARY as validated
    const csum = f.csumBlank ? NETRXF_csum_blank | NETRXF_data_validated : f.dataValidated ? NETRXF_data_validated : 0;
    reqs.forEach((q, i) => {
      const flags = (i === 0 ? csum | (f.gso ? NETRXF_extra_info : 0) : 0) | (i < slots - 1 ? NETRXF_more_data : 0);
      r.putResponse({ id: q.id, offset: 0, flags, status: ok ? ops[i]!.len : NETIF_RSP_ERROR });
      if (i === 0 && f.gso) r.putExtra({ type: XEN_NETIF_EXTRA_TYPE_GSO, flags: 0, data: gsoExtraData(f.gso) });
    });
    if (ok) {
      this.stats.rxPackets++;
      this.stats.rxBytes += len;
      if (f.gso) this.stats.rxGsoPackets++;
      this.stats.rxMaxSlots = Math.max(this.stats.rxMaxSlots, slots + (f.gso ? 1 : 0));
    } else {
      this.stats.rxDropped++;
    }
    if (r.pushResponses()) this.o.devices.evtchn.notify(this.o.rxPort);
  }

  /** Stops serving: nothing more is taken off either ring, queued frames are dropped. */
  stop(): Promise<void> {
    this.broken = true;
    this.disarmDrain();
    if (this.creditTimer) clearTimeout(this.creditTimer);
    this.creditTimer = null;
    this.clearQueue();
    return this.idle;
  }
}
