// Clients of the store: the in-process toolstack connection and a Unix-socket
// client (used by tests and the benchmark). Both pipeline requests and match
// replies in order (the daemon answers each connection's requests in order).

import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import type { LocalConn } from './conn.js';
import type { Xenstored } from './daemon.js';
import { FrameReader, OutBuf, XsError, XsType, XS_ERRORS, splitNul, type XsErrno, type XsMessage } from './wire.js';

interface Pending {
  resolve: (m: XsMessage) => void;
  reject: (e: Error) => void;
}

export interface WatchEvent {
  path: string;
  token: string;
}

/**
 * Request/response plumbing plus typed helpers for every message type.
 * Emits 'watch' (WatchEvent) for each watch event.
 */
export abstract class XsClientBase extends EventEmitter {
  private pending: Pending[] = [];
  private head = 0;
  private nextReq = 1;
  protected closedErr: Error | null = null;

  protected abstract transmit(type: number, reqId: number, txId: number, payload: Buffer): void;
  /** Ends the connection; requests still waiting fail. */
  abstract close(): void;

  /** Deliver one message from the daemon. */
  protected receive(m: XsMessage): void {
    if (m.type === XsType.WATCH_EVENT) {
      const [path = '', token = ''] = splitNul(m.payload);
      this.emit('watch', { path, token } satisfies WatchEvent);
      return;
    }
    const p = this.pending[this.head];
    if (!p) return;
    this.pending[this.head++] = undefined as unknown as Pending;
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    p.resolve(m);
  }

  protected failAll(e: Error): void {
    this.closedErr = e;
    const ps = this.pending.slice(this.head);
    this.pending = [];
    this.head = 0;
    for (const p of ps) p.reject(e);
  }

  /** Number of requests sent and not yet answered. */
  get inflight(): number {
    return this.pending.length - this.head;
  }

  /** Send a raw request; resolves with the reply (ERROR replies included). */
  rawRequest(type: number, payload: Buffer | string, txId = 0): Promise<XsMessage> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const body = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
    return new Promise<XsMessage>((resolve, reject) => {
      this.pending.push({ resolve, reject });
      const id = this.nextReq;
      this.nextReq = (this.nextReq + 1) >>> 0;
      this.transmit(type, id, txId, body);
    });
  }

  /** Send a request; resolves with the reply payload or rejects with XsError. */
  async request(type: number, payload: Buffer | string, txId = 0): Promise<Buffer> {
    const m = await this.rawRequest(type, payload, txId);
    if (m.type === XsType.ERROR) {
      const name = m.payload.toString('latin1').replace(/\0.*$/s, '');
      throw new XsError((XS_ERRORS as readonly string[]).includes(name) ? (name as XsErrno) : 'EIO', name);
    }
    return m.payload;
  }

  private static str(b: Buffer): string {
    const z = b.indexOf(0);
    return b.toString('latin1', 0, z < 0 ? b.length : z);
  }

  async readBuffer(path: string, tx = 0): Promise<Buffer> {
    return this.request(XsType.READ, `${path}\0`, tx);
  }
  async read(path: string, tx = 0): Promise<string> {
    return (await this.readBuffer(path, tx)).toString('utf8');
  }
  /** read(), but undefined instead of ENOENT. */
  async tryRead(path: string, tx = 0): Promise<string | undefined> {
    try {
      return await this.read(path, tx);
    } catch (e) {
      if (e instanceof XsError && e.errno === 'ENOENT') return undefined;
      throw e;
    }
  }
  async write(path: string, value: string | Buffer, tx = 0): Promise<void> {
    const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    await this.request(XsType.WRITE, Buffer.concat([Buffer.from(`${path}\0`, 'latin1'), v]), tx);
  }
  async mkdir(path: string, tx = 0): Promise<void> {
    await this.request(XsType.MKDIR, `${path}\0`, tx);
  }
  async rm(path: string, tx = 0): Promise<void> {
    await this.request(XsType.RM, `${path}\0`, tx);
  }
  async directory(path: string, tx = 0): Promise<string[]> {
    return splitNul(await this.request(XsType.DIRECTORY, `${path}\0`, tx));
  }
  /** DIRECTORY_PART from offset: [generation, names, complete]. */
  async directoryPart(path: string, offset: number, tx = 0): Promise<{ gen: string; names: string[]; complete: boolean }> {
    const b = await this.request(XsType.DIRECTORY_PART, `${path}\0${offset}\0`, tx);
    const z = b.indexOf(0);
    const gen = b.toString('latin1', 0, z);
    const rest = b.subarray(z + 1);
    const complete = rest.length === 0 || (rest.length >= 1 && rest[rest.length - 1] === 0 && (rest.length === 1 || rest[rest.length - 2] === 0));
    const names = splitNul(rest).filter((s) => s.length > 0);
    return { gen, names, complete };
  }
  async getPerms(path: string, tx = 0): Promise<string[]> {
    return splitNul(await this.request(XsType.GET_PERMS, `${path}\0`, tx));
  }
  async setPerms(path: string, perms: string[], tx = 0): Promise<void> {
    await this.request(XsType.SET_PERMS, `${path}\0${perms.map((p) => `${p}\0`).join('')}`, tx);
  }
  async watch(path: string, token: string, depth?: number): Promise<void> {
    await this.request(XsType.WATCH, `${path}\0${token}\0${depth === undefined ? '' : `${depth}\0`}`);
  }
  async unwatch(path: string, token: string): Promise<void> {
    await this.request(XsType.UNWATCH, `${path}\0${token}\0`);
  }
  async resetWatches(): Promise<void> {
    await this.request(XsType.RESET_WATCHES, '\0');
  }
  async transactionStart(): Promise<number> {
    return Number(XsClientBase.str(await this.request(XsType.TRANSACTION_START, '\0')));
  }
  async transactionEnd(tx: number, commit = true): Promise<void> {
    await this.request(XsType.TRANSACTION_END, commit ? 'T\0' : 'F\0', tx);
  }
  /**
   * Run fn in a transaction, retrying on EAGAIN (up to `retries` times): at
   * commit (a conflict), or inside it (the transaction died with the
   * xenstored that gave it out).
   */
  async transaction<T>(fn: (tx: number) => Promise<T>, retries = 100): Promise<T> {
    for (let i = 0; ; i++) {
      const tx = await this.transactionStart();
      let r: T;
      try {
        r = await fn(tx);
      } catch (e) {
        await this.transactionEnd(tx, false).catch(() => {});
        if (e instanceof XsError && e.errno === 'EAGAIN' && i < retries) continue;
        throw e;
      }
      try {
        await this.transactionEnd(tx, true);
        return r;
      } catch (e) {
        if (!(e instanceof XsError && e.errno === 'EAGAIN') || i >= retries) throw e;
      }
    }
  }
  async getDomainPath(domid: number): Promise<string> {
    return XsClientBase.str(await this.request(XsType.GET_DOMAIN_PATH, `${domid}\0`));
  }
  async introduce(domid: number, gfn: number, port: number): Promise<void> {
    await this.request(XsType.INTRODUCE, `${domid}\0${gfn}\0${port}\0`);
  }
  async release(domid: number): Promise<void> {
    await this.request(XsType.RELEASE, `${domid}\0`);
  }
  async resume(domid: number): Promise<void> {
    await this.request(XsType.RESUME, `${domid}\0`);
  }
  async isDomainIntroduced(domid: number): Promise<boolean> {
    return XsClientBase.str(await this.request(XsType.IS_DOMAIN_INTRODUCED, `${domid}\0`)) === 'T';
  }
  async setTarget(domid: number, target: number): Promise<void> {
    await this.request(XsType.SET_TARGET, `${domid}\0${target}\0`);
  }
  async getFeature(domid?: number): Promise<number> {
    return Number(XsClientBase.str(await this.request(XsType.GET_FEATURE, domid === undefined ? '' : `${domid}\0`)));
  }
  async setFeature(domid: number, value: number): Promise<void> {
    await this.request(XsType.SET_FEATURE, `${domid}\0${value}\0`);
  }
  async getQuota(name?: string, domid?: number): Promise<string> {
    const args = [domid, name].filter((x) => x !== undefined).map((x) => `${x}\0`).join('');
    return XsClientBase.str(await this.request(XsType.GET_QUOTA, args));
  }
  async setQuota(name: string, value: number, domid?: number): Promise<void> {
    await this.request(XsType.SET_QUOTA, `${domid === undefined ? '' : `${domid}\0`}${name}\0${value}\0`);
  }
  async control(...args: string[]): Promise<string> {
    return XsClientBase.str(await this.request(XsType.CONTROL, args.map((a) => `${a}\0`).join('')));
  }

  /** Resolve with the next watch event matching token (and path if given). */
  waitWatch(token: string, path?: string, timeoutMs = 5000): Promise<WatchEvent> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('watch', on);
        reject(new Error(`timeout waiting for watch ${token} ${path ?? ''}`));
      }, timeoutMs);
      const on = (e: WatchEvent): void => {
        if (e.token === token && (path === undefined || e.path === path)) {
          clearTimeout(t);
          this.off('watch', on);
          resolve(e);
        }
      };
      this.on('watch', on);
    });
  }
}

/** The toolstack's in-process connection (domain 0 unless told otherwise). */
export class LocalClient extends XsClientBase {
  private readonly conn: LocalConn;
  constructor(private readonly daemon: Xenstored, domid = 0) {
    super();
    this.conn = daemon.connectLocal(domid);
    this.conn.onReply = (m) => this.receive(m);
  }
  protected transmit(type: number, reqId: number, txId: number, payload: Buffer): void {
    this.daemon.submitLocal(this.conn, { type, reqId, txId, payload });
  }
  get domid(): number {
    return this.conn.domid;
  }
  close(): void {
    this.daemon.closeLocal(this.conn);
    this.failAll(new Error('connection closed'));
  }
}

/** A connection to the Unix socket at `path`. */
function connectUnix(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(path);
    s.once('error', (e) => {
      s.destroy();
      reject(e);
    });
    s.once('connect', () => {
      s.removeAllListeners('error');
      resolve(s);
    });
  });
}

/** Hands each message `sock` brings to `each`, in order; an oversize one ends the socket. */
function onMessages(sock: net.Socket, each: (m: XsMessage) => void): void {
  const reader = new FrameReader();
  sock.on('data', (chunk: Buffer) => {
    reader.push(chunk);
    for (;;) {
      const r = reader.next();
      if (r === 'need-more') break;
      if (r === 'oversize') {
        sock.destroy(new Error('oversize reply'));
        break;
      }
      each(r);
    }
  });
}

/** Requests framed as they are made and written once a turn of the event loop, to whichever socket is there then. */
class WriteBatch {
  private out = new OutBuf(4096);
  private scheduled = false;

  constructor(private readonly sock: () => net.Socket | null) {}

  message(type: number, reqId: number, txId: number, payload: Buffer): void {
    this.out.message(type, reqId, txId, payload);
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      const s = this.sock();
      if (this.out.length && s) s.write(this.out.take());
    });
  }

  /** Forgets what was not written yet. */
  drop(): void {
    this.out = new OutBuf(4096);
  }
}

/** A client over the daemon's Unix socket. */
export class SocketClient extends XsClientBase {
  private readonly batch = new WriteBatch(() => this.sock);

  private constructor(readonly sock: net.Socket) {
    super();
    sock.setNoDelay(true);
    onMessages(sock, (m) => this.receive(m));
    sock.on('error', (e) => this.failAll(e));
    sock.on('close', () => this.failAll(new Error('connection closed')));
  }

  /** A client on a stream already connected (a process domain's, handed over by its toolstack). */
  static over(sock: net.Socket): SocketClient {
    return new SocketClient(sock);
  }

  static async connect(path: string): Promise<SocketClient> {
    return new SocketClient(await connectUnix(path));
  }

  protected transmit(type: number, reqId: number, txId: number, payload: Buffer): void {
    this.batch.message(type, reqId, txId, payload);
  }

  /** Write raw bytes (tests: malformed input). */
  writeRaw(b: Buffer): void {
    this.sock.write(b);
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }
}

interface Sent {
  type: number;
  reqId: number;
  txId: number;
  payload: Buffer;
  /** a watch registered again after a reconnect: its reply is the client's own, not a caller's */
  internal?: boolean;
  /** answered without asking xenstored (a transaction of a dead connection): this reply */
  synthetic?: XsMessage;
}

/** How long a reconnecting client waits for xenstored to come back before failing its requests. */
export const RECONNECT_TIMEOUT_MS = 30_000;

/**
 * A socket client that outlives its xenstored: when the connection drops
 * (xenstored killed and started again) it connects again, registers its
 * watches again (each fires once, so a change made meanwhile is not
 * missed), and sends again every request that had no answer. A request in a
 * transaction the dead connection had open is answered EAGAIN, so
 * `transaction()` starts it over. After RECONNECT_TIMEOUT_MS without a
 * xenstored, everything fails.
 */
export class ReconnectingClient extends XsClientBase {
  private sock: net.Socket | null = null;
  private readonly batch = new WriteBatch(() => this.sock);
  private sent: Sent[] = [];
  private queued: Sent[] = [];
  private readonly watches = new Map<string, Buffer>();
  private readonly liveTx = new Set<number>();
  private internalReq = 0x80000000;
  private closing = false;
  /** connections made (1 until the first reconnect) */
  connects = 0;

  /** `stream()`: a new connection to xenstored, or a rejection to try again after a pause */
  private constructor(private readonly stream: () => Promise<net.Socket>, private readonly what: string, private readonly timeoutMs: number) {
    super();
  }

  /** A client of the xenstored on the Unix socket `path`. */
  static connect(path: string, timeoutMs = RECONNECT_TIMEOUT_MS): Promise<ReconnectingClient> {
    return ReconnectingClient.over(() => connectUnix(path), `xenstored at ${path}`, timeoutMs);
  }

  /** A client whose connections come from `stream` (a process domain's, handed to it by its toolstack each time). */
  static async over(stream: () => Promise<net.Socket>, what = 'xenstored', timeoutMs = RECONNECT_TIMEOUT_MS): Promise<ReconnectingClient> {
    const c = new ReconnectingClient(stream, what, timeoutMs);
    await c.dial(Date.now() + timeoutMs);
    return c;
  }

  private async dial(deadline: number): Promise<void> {
    for (;;) {
      if (this.closing) throw new Error('connection closed');
      try {
        const s = await this.stream();
        if (this.closing) {
          s.destroy();
          throw new Error('connection closed');
        }
        this.attach(s);
        return;
      } catch (e) {
        if (this.closing) throw e;
        if (Date.now() > deadline) throw new Error(`${this.what} did not come back within ${this.timeoutMs / 1000} s: ${(e as Error).message}`, { cause: e });
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private attach(s: net.Socket): void {
    this.sock = s;
    this.connects++;
    s.setNoDelay(true);
    onMessages(s, (m) => this.fromServer(m));
    s.on('error', () => {});
    s.on('close', () => this.dropped(s));
    if (this.connects > 1) {
      // its watches first, then what had no answer, in the order it was asked
      const old = this.sent;
      this.sent = [];
      for (const payload of this.watches.values()) this.send({ type: XsType.WATCH, reqId: this.internalReq++ >>> 0, txId: 0, payload, internal: true });
      for (const f of old) {
        if (f.internal) continue;
        if (!f.synthetic) {
          this.send(f);
          continue;
        }
        this.sent.push(f); // answered already, in its turn
        this.deliverSynthetic();
      }
    }
    const q = this.queued;
    this.queued = [];
    for (const f of q) this.send(f);
    this.emit('connected', this.connects);
  }

  private dropped(s: net.Socket): void {
    if (this.sock !== s) return;
    this.sock = null;
    this.batch.drop(); // its frames are in `sent`, to go again
    this.liveTx.clear();
    if (this.closing) return this.failAll(new Error('connection closed'));
    this.emit('disconnected');
    this.dial(Date.now() + this.timeoutMs).catch((e: Error) => {
      this.sent = [];
      this.queued = [];
      this.failAll(e);
      this.emit('failed', e);
    });
  }

  private send(f: Sent): void {
    if (f.txId !== 0 && !this.liveTx.has(f.txId)) {
      f.synthetic = { type: XsType.ERROR, reqId: f.reqId, txId: f.txId, payload: Buffer.from('EAGAIN\0', 'latin1') };
      this.sent.push(f);
      this.deliverSynthetic();
      return;
    }
    this.sent.push(f);
    this.batch.message(f.type, f.reqId, f.txId, f.payload);
  }

  private fromServer(m: XsMessage): void {
    if (m.type === XsType.WATCH_EVENT) return this.receive(m);
    const f = this.sent.shift();
    if (!f) return;
    if (!f.internal) this.answer(f, m);
    this.deliverSynthetic();
  }

  private answer(f: Sent, m: XsMessage): void {
    if (f.type === XsType.TRANSACTION_START && m.type !== XsType.ERROR) this.liveTx.add(Number(m.payload.toString('latin1').replace(/\0.*$/s, '')));
    if (f.type === XsType.TRANSACTION_END) this.liveTx.delete(f.txId);
    this.receive(m);
  }

  private deliverSynthetic(): void {
    while (this.sent.length && this.sent[0]!.synthetic) {
      const f = this.sent.shift()!;
      this.receive(f.synthetic!);
    }
  }

  protected transmit(type: number, reqId: number, txId: number, payload: Buffer): void {
    if (type === XsType.WATCH || type === XsType.UNWATCH) {
      const [p = '', token = ''] = splitNul(payload);
      if (type === XsType.WATCH) this.watches.set(`${p}\0${token}`, payload);
      else this.watches.delete(`${p}\0${token}`);
    } else if (type === XsType.RESET_WATCHES) {
      this.watches.clear();
    }
    const f: Sent = { type, reqId, txId, payload };
    if (this.sock) this.send(f);
    else this.queued.push(f);
  }

  close(): void {
    this.closing = true;
    if (this.sock) {
      this.sock.end();
      this.sock.destroy();
    } else {
      this.failAll(new Error('connection closed'));
    }
  }
}
