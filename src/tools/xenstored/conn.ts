// Connections: the transport-independent part (watches, transactions,
// identity) and the three transports: Unix socket, guest ring page, and
// in-process.

import type { Socket } from 'node:net';
import type { Caller, Tx } from './store.js';
import {
  FrameReader, HEADER_SIZE, OutBuf, RING_CONNECTION, RING_ERROR, RING_REQ, RING_REQ_CONS, RING_REQ_PROD, RING_RSP,
  RING_RSP_CONS, RING_RSP_PROD, RING_SERVER_FEATURES, XENSTORE_CONNECTED, XENSTORE_ERROR_NONE, XENSTORE_ERROR_PROTO,
  XENSTORE_ERROR_RINGIDX, XENSTORE_RECONNECT, XENSTORE_RING_SIZE, XENSTORE_PAYLOAD_MAX, RING_PAGE_SIZE,
  type XsMessage, XsType, encodeMessage,
} from './wire.js';

export interface Watch {
  /** Absolute path or special name ("@releaseDomain"...). */
  readonly path: string;
  readonly token: string;
  /** True if registered with a relative path: events are reported relative too. */
  readonly relative: boolean;
  /** Maximum depth below path, or -1 for unlimited. */
  readonly depth: number;
}

/** The page + event channel of a guest's xenstore ring, provided by the hypervisor integration. */
export interface DomainRingPort {
  /** The 4096-byte ring page (guest memory: may change at any time). */
  page: Uint8Array;
  /** Raise the guest's event channel. */
  notify(): void;
}

export type NextResult = XsMessage | 'none' | 'oversize' | 'broken';

export abstract class Conn {
  private static nextId = 1;
  readonly id = Conn.nextId++;
  readonly watches = new Map<string, Watch>();
  readonly txs = new Map<number, Tx>();
  nextTxId = 1;
  /** transaction ids below this were a previous xenstored's: a request in one gets EAGAIN, so the client starts it again */
  staleTxBelow = 0;
  /** set while a request of its waits for the hypervisor (INTRODUCE mapping a ring): nothing more is read from it */
  held = false;
  closed = false;
  /** Set while the connection is in the daemon's ready queue. */
  queued = false;
  /** Set while it has output waiting for the end of the turn. */
  dirty = false;
  caller: Caller;

  constructor(readonly domid: number, caller: Caller) {
    this.caller = caller;
  }

  /** Next complete request, if the connection may take one now. */
  abstract next(): NextResult;
  /** Queue one message for the client. */
  abstract send(type: number, reqId: number, txId: number, payload: Buffer | string): void;
  /** Push queued output to the transport. */
  abstract flush(): void;
  /** True while the client is not consuming output fast enough to take more requests. */
  abstract blocked(): boolean;
  /** Bytes queued towards the client and not yet handed over. */
  abstract pendingOutput(): number;
  /** Tear the transport down (idempotent). */
  abstract close(): void;
  abstract describe(): string;
}

const SOCK_HIGH_WATER = 1 << 20;
const SOCK_INPUT_PAUSE = 256 << 10;

export class SocketConn extends Conn {
  private readonly reader = new FrameReader();
  private readonly out = new OutBuf();
  private paused = false;
  onInput: () => void = () => {};
  onClosed: () => void = () => {};

  constructor(private readonly sock: Socket, caller: Caller) {
    // the caller's domain: 0 on xenstored's socket, a process domain's own on its stream
    super(caller.domid, caller);
    sock.setNoDelay?.(true);
    sock.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      this.updateFlow();
      this.onInput();
    });
    sock.on('drain', () => {
      this.updateFlow();
      this.onInput();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = true;
      this.onClosed();
    });
    sock.resume(); // a stream handed over paused (pauseOnConnect) starts only when asked to
  }

  /**
   * Stop reading from the socket while too much input is waiting or the
   * client is not reading its replies; start again when both have drained.
   */
  updateFlow(): void {
    if (this.closed) return;
    const stop = this.reader.buffered > SOCK_INPUT_PAUSE || this.sock.writableLength > SOCK_HIGH_WATER;
    if (stop && !this.paused) {
      this.paused = true;
      this.sock.pause();
    } else if (!stop && this.paused) {
      this.paused = false;
      this.sock.resume();
    }
  }

  next(): NextResult {
    if (this.closed) return 'broken';
    if (this.sock.writableLength > SOCK_HIGH_WATER) {
      this.updateFlow();
      return 'none';
    }
    const r = this.reader.next();
    if (r === 'need-more') {
      if (this.paused) this.updateFlow();
      return 'none';
    }
    return r;
  }

  send(type: number, reqId: number, txId: number, payload: Buffer | string): void {
    if (!this.closed) this.out.message(type, reqId, txId, payload);
  }

  flush(): void {
    if (this.out.length === 0 || this.closed) return;
    this.sock.write(this.out.take());
  }

  blocked(): boolean {
    return this.sock.writableLength > SOCK_HIGH_WATER;
  }

  pendingOutput(): number {
    return this.out.length + this.sock.writableLength;
  }

  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.sock.destroy();
    }
  }

  describe(): string {
    return `socket connection ${this.id}`;
  }
}

/** In-process connection: requests are objects, replies are handed to a callback. */
export class LocalConn extends Conn {
  private inq: XsMessage[] = [];
  private inHead = 0;
  private outq: XsMessage[] = [];
  private outBytes = 0;
  onReply: (m: XsMessage) => void = () => {};

  submit(m: XsMessage): void {
    this.inq.push(m);
  }

  next(): NextResult {
    if (this.closed) return 'broken';
    if (this.inHead >= this.inq.length) return 'none';
    const m = this.inq[this.inHead]!;
    this.inq[this.inHead++] = undefined as unknown as XsMessage;
    if (this.inHead === this.inq.length) {
      this.inq = [];
      this.inHead = 0;
    }
    return m;
  }

  send(type: number, reqId: number, txId: number, payload: Buffer | string): void {
    const p = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
    this.outq.push({ type, reqId, txId, payload: p });
    this.outBytes += p.length + HEADER_SIZE;
  }

  flush(): void {
    const q = this.outq;
    this.outq = [];
    this.outBytes = 0;
    for (const m of q) this.onReply(m);
  }

  blocked(): boolean {
    return false;
  }

  pendingOutput(): number {
    return this.outBytes;
  }

  close(): void {
    this.closed = true;
  }

  describe(): string {
    return `local connection ${this.id} (domain ${this.domid})`;
  }
}

/**
 * A guest's ring page (struct xenstore_domain_interface). The page is shared
 * with the guest, so every index is read once into a local and checked, and
 * message bytes are copied out before they are parsed.
 */
export class RingConn extends Conn {
  private reader = new FrameReader();
  /** queued messages, each with the request index its last byte acknowledges (-1: a watch event, nothing) */
  private outq: { bytes: Buffer; ack: number }[] = [];
  private outOff = 0;
  private outBytes = 0;
  private view: DataView;
  /**
   * The request ring's consumer index is moved only past requests whose
   * replies are in the response ring: a xenstored that dies before it
   * answers leaves them in the ring, and the one restarted from its state
   * reads and answers them. `reqEnd` is where the last request handed out by
   * next() ends; the bytes after it that were copied out are in `reader`.
   */
  private reqEnd: number;
  broken = false;
  /** Messages dropped because the guest did not consume its events. */
  droppedEvents = 0;
  /** How long the daemon waits before looking at the ring again by itself (needsPoll), 0 when it need not. */
  pollDelay = 0;
  /** Max messages queued before we stop taking requests (quota "outstanding"). */
  outstanding = 20;
  log: (line: string) => void = () => {};
  /** Called when the guest asked for a reconnect: the daemon drops watches and transactions. */
  onReset: () => void = () => {};

  constructor(domid: number, public port: DomainRingPort, caller: Caller) {
    super(domid, caller);
    this.view = RingConn.viewOf(port.page);
    this.reqEnd = this.view.getUint32(RING_REQ_CONS, true);
  }

  /** How far request bytes were copied out of the ring. */
  private get rcons(): number {
    return (this.reqEnd + this.reader.buffered) >>> 0;
  }

  private static viewOf(page: Uint8Array): DataView {
    if (page.length < RING_PAGE_SIZE) throw new Error('ring page must be 4096 bytes');
    return new DataView(page.buffer, page.byteOffset, RING_PAGE_SIZE);
  }

  setPort(port: DomainRingPort): void {
    this.port = port;
    this.view = RingConn.viewOf(port.page);
  }

  setFeatures(f: number): void {
    this.view.setUint32(RING_SERVER_FEATURES, f >>> 0, true);
  }

  private fail(code: number, why: string): void {
    if (this.broken) return;
    this.broken = true;
    this.view.setUint32(RING_ERROR, code, true);
    this.log(`domain ${this.domid}: ${why}; ring connection stopped`);
    this.port.notify();
  }

  /** Handle a guest-requested reconnect; true if one happened. */
  checkReconnect(): boolean {
    if (this.view.getUint32(RING_CONNECTION, true) !== XENSTORE_RECONNECT) return false;
    this.reader = new FrameReader();
    this.outq = [];
    this.reqEnd = 0;
    this.outOff = 0;
    this.outBytes = 0;
    this.broken = false;
    this.onReset();
    const v = this.view;
    v.setUint32(RING_REQ_CONS, 0, true);
    v.setUint32(RING_REQ_PROD, 0, true);
    v.setUint32(RING_RSP_CONS, 0, true);
    v.setUint32(RING_RSP_PROD, 0, true);
    v.setUint32(RING_ERROR, XENSTORE_ERROR_NONE, true);
    v.setUint32(RING_CONNECTION, XENSTORE_CONNECTED, true);
    this.port.notify();
    return true;
  }

  /** Copy the request bytes not read yet out of the ring. */
  private pull(): void {
    const v = this.view;
    const acked = v.getUint32(RING_REQ_CONS, true);
    const prod = v.getUint32(RING_REQ_PROD, true);
    if (((prod - acked) >>> 0) > XENSTORE_RING_SIZE) {
      this.fail(XENSTORE_ERROR_RINGIDX, `bad request ring indexes cons=${acked} prod=${prod}`);
      return;
    }
    const cons = this.rcons;
    const avail = (prod - cons) >>> 0;
    if (avail > XENSTORE_RING_SIZE) {
      // the guest moved its producer back, or the consumer index past what was read
      this.fail(XENSTORE_ERROR_RINGIDX, `bad request ring indexes cons=${acked} prod=${prod} (read up to ${cons})`);
      return;
    }
    if (avail === 0) return;
    const chunk = Buffer.allocUnsafe(avail);
    const page = this.port.page;
    const start = cons & (XENSTORE_RING_SIZE - 1);
    const first = Math.min(avail, XENSTORE_RING_SIZE - start);
    chunk.set(page.subarray(RING_REQ + start, RING_REQ + start + first), 0);
    if (first < avail) chunk.set(page.subarray(RING_REQ, RING_REQ + avail - first), first);
    this.reader.push(chunk);
  }

  /** Moves the request consumer index forward to `idx` (never back); true if it moved. */
  private ackTo(idx: number): boolean {
    const cur = this.view.getUint32(RING_REQ_CONS, true);
    if (((idx - cur) | 0) <= 0) return false;
    this.view.setUint32(RING_REQ_CONS, idx >>> 0, true);
    return true;
  }

  next(): NextResult {
    if (this.closed || this.broken) return 'broken';
    if (this.blocked()) return 'none';
    let r = this.reader.next();
    if (r === 'need-more') {
      this.pull();
      if (this.broken) return 'broken';
      r = this.reader.next();
      // a request longer than the ring arrives only as its start is consumed
      if (r === 'need-more' && this.reader.buffered >= XENSTORE_RING_SIZE && this.ackTo(this.rcons)) this.port.notify();
    }
    if (r === 'need-more') return 'none';
    if (r === 'oversize') {
      this.fail(XENSTORE_ERROR_PROTO, `request payload over ${XENSTORE_PAYLOAD_MAX} bytes`);
      return 'oversize';
    }
    this.reqEnd = (this.reqEnd + HEADER_SIZE + r.payload.length) >>> 0;
    return r;
  }

  /** True if request bytes are waiting in the ring or in our reassembly buffer. */
  hasInput(): boolean {
    if (this.broken || this.closed) return false;
    if (this.reader.complete) return true;
    return this.view.getUint32(RING_REQ_PROD, true) !== this.rcons;
  }

  /**
   * True when the guest may write more without an event: Linux's xb_write
   * signals only a ring it finds consumed (req_prod <= req_cons), so while
   * the consumer index stays behind a request that is not whole yet, and no
   * reply is on its way to make the guest signal, the daemon has to look
   * again by itself.
   */
  needsPoll(): boolean {
    if (this.broken || this.closed || this.outq.length > 0) return false;
    return this.view.getUint32(RING_REQ_CONS, true) !== this.view.getUint32(RING_REQ_PROD, true);
  }

  send(type: number, reqId: number, txId: number, payload: Buffer | string): void {
    if (this.closed) return;
    const bytes = encodeMessage(type, reqId, txId, payload);
    // anything but an event answers the request next() handed out last
    this.outq.push({ bytes, ack: type === XsType.WATCH_EVENT ? -1 : this.reqEnd });
    this.outBytes += bytes.length;
  }

  flush(): void {
    if (this.broken || this.closed || this.outq.length === 0) return;
    const v = this.view;
    const cons = v.getUint32(RING_RSP_CONS, true);
    const prod = v.getUint32(RING_RSP_PROD, true);
    const used = (prod - cons) >>> 0;
    if (used > XENSTORE_RING_SIZE) {
      this.fail(XENSTORE_ERROR_RINGIDX, `bad response ring indexes cons=${cons} prod=${prod}`);
      return;
    }
    let space = XENSTORE_RING_SIZE - used;
    let p = prod;
    const page = this.port.page;
    let ack = -1;
    while (space > 0 && this.outq.length > 0) {
      const { bytes: m, ack: a } = this.outq[0]!;
      const n = Math.min(space, m.length - this.outOff);
      let done = 0;
      while (done < n) {
        const at = p & (XENSTORE_RING_SIZE - 1);
        const k = Math.min(n - done, XENSTORE_RING_SIZE - at);
        page.set(m.subarray(this.outOff + done, this.outOff + done + k), RING_RSP + at);
        done += k;
        p = (p + k) >>> 0;
      }
      space -= n;
      this.outOff += n;
      this.outBytes -= n;
      if (this.outOff === m.length) {
        this.outq.shift();
        if (a >= 0) ack = a;
        this.outOff = 0;
      }
    }
    if (p !== prod) v.setUint32(RING_RSP_PROD, p, true);
    // the replies are in the ring before their requests leave it: a crash between the two repeats a reply, never loses one
    const moved = ack >= 0 && this.ackTo(ack);
    if (p !== prod || moved) this.port.notify();
  }

  blocked(): boolean {
    return this.outq.length >= this.outstanding;
  }

  pendingOutput(): number {
    return this.outBytes;
  }

  close(): void {
    this.closed = true;
  }

  describe(): string {
    return `domain ${this.domid} ring`;
  }
}
