// The xenstore daemon: connections, request dispatch, watches, domains,
// quotas and the fair scheduler. No process-global state: any number of
// Xenstored instances may live in one process.

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { LocalClient } from './client.js';
import { Conn, LocalConn, RingConn, SocketConn, type DomainRingPort, type Watch } from './conn.js';
import { Persist } from './persist.js';
import {
  DEFAULT_QUOTA, DOMID_FIRST_RESERVED, PERM_OWNER, PERM_READ, QUOTA_NAMES, Store, Tx, isAtOrBelow, parsePerm,
  pathDepth, permFor, permToString, type Caller, type Change, type Perm, type Perms, type Quota,
} from './store.js';
import {
  FEATURE_ERROR, FEATURE_RECONNECTION, FEATURE_WATCH_DEPTH, XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX,
  XENSTORE_REL_PATH_MAX, XsError, XsType, splitNul, typeName, type XsMessage,
} from './wire.js';

export type { DomainRingPort } from './conn.js';

export interface XenstoredHooks {
  /**
   * Map a guest's ring page on INTRODUCE (null makes INTRODUCE fail with
   * EINVAL). A promise (the ring reached through another process's
   * hypervisor interface) holds that connection's later requests until it
   * settles.
   */
  mapDomainRing?(domid: number, gfn: number, port: number): DomainRingPort | null | Promise<DomainRingPort | null>;
  /** Called when a domain is released (unmap its page, unbind its port). */
  unmapDomainRing?(domid: number, ring: DomainRingPort): void;
}

export interface XenstoredOptions {
  /** Listen on this Unix socket (connections there are domain 0, privileged). */
  socketPath?: string;
  /** Journal file; absent for a memory-only store. */
  dbPath?: string;
  /**
   * The introduced domains' connections (ring, port, features, target,
   * watches), rewritten before any reply that changed them leaves. At start,
   * a xenstored that finds it maps each ring again and takes its connection
   * up where the last one stopped (its requests still in the ring are
   * answered, each watch fires once).
   */
  domainsPath?: string;
  /** fdatasync the journal on every commit group (default true). */
  fsync?: boolean;
  hooks?: XenstoredHooks;
  /** Log sink (default: stderr with a "xenstored:" prefix). */
  log?: (line: string) => void;
  /** Global quota overrides. */
  quota?: Partial<Quota>;
  /** Requests handled per connection per scheduling turn (fairness). */
  budget?: number;
}

export const SERVER_FEATURES = FEATURE_RECONNECTION | FEATURE_ERROR | FEATURE_WATCH_DEPTH;
const SPECIALS = ['@introduceDomain', '@releaseDomain'] as const;
const PRIV: Caller = Object.freeze({ domid: 0, priv: true, target: -1, quota: null });
const OK = 'OK\0';

interface Domain {
  domid: number;
  conn: RingConn;
  gfn: number;
  port: number;
  features: number;
  quotaOverride: Partial<Quota>;
  quota: Quota;
  shutdown: boolean;
  target: number;
}

/** What `domainsPath` keeps of a domain's connection. */
interface DomainRecord {
  domid: number;
  gfn: number;
  port: number;
  features: number;
  target: number;
  shutdown: boolean;
  quotaOverride: Partial<Quota>;
  nextTxId: number;
  watches: { path: string; token: string; relative: boolean; depth: number }[];
}
const DOMAINS_VERSION = 1;

function isDomainRecord(r: unknown): r is DomainRecord {
  if (typeof r !== 'object' || r === null) return false;
  const o = r as Record<string, unknown>;
  const int = (v: unknown) => Number.isInteger(v);
  return int(o.domid) && (o.domid as number) > 0 && (o.domid as number) < DOMID_FIRST_RESERVED && int(o.gfn) && int(o.port) && int(o.features)
    && int(o.target) && typeof o.shutdown === 'boolean' && typeof o.quotaOverride === 'object' && o.quotaOverride !== null && int(o.nextTxId)
    && Array.isArray(o.watches) && o.watches.every((w: unknown) => {
      const x = w as Record<string, unknown>;
      return typeof x === 'object' && x !== null && typeof x.path === 'string' && typeof x.token === 'string' && typeof x.relative === 'boolean' && int(x.depth);
    });
}

/** Requests after which the domains' connection state is saved again: a guest's on its ring, the toolstack's about domains. */
const RING_STATE_OPS = new Set<number>([XsType.WATCH, XsType.UNWATCH, XsType.RESET_WATCHES]);
const DOMAIN_STATE_OPS = new Set<number>([XsType.INTRODUCE, XsType.RELEASE, XsType.RESUME, XsType.SET_TARGET, XsType.SET_FEATURE, XsType.SET_QUOTA]);

function isDigits(s: string): boolean {
  if (s.length === 0 || s.length > 20) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

function parseDomid(s: string | undefined): number {
  if (s === undefined || !isDigits(s)) throw new XsError('EINVAL', 'bad domain id');
  const d = Number(s);
  if (d >= DOMID_FIRST_RESERVED) throw new XsError('EINVAL', 'bad domain id');
  return d;
}

function parseUint(s: string | undefined, max = 0xffffffff): number {
  if (s === undefined || !isDigits(s)) throw new XsError('EINVAL', 'bad number');
  const n = Number(s);
  if (n > max) throw new XsError('EINVAL', 'number out of range');
  return n;
}

/** The single string argument of a request (terminating NUL optional, nothing after it). */
function oneArg(p: Buffer): string {
  const i = p.indexOf(0);
  if (i < 0) return p.toString('latin1', 0, p.length);
  if (i !== p.length - 1) throw new XsError('EINVAL', 'trailing data');
  return p.toString('latin1', 0, i);
}

function validChars(s: string, from: number): boolean {
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A-Z a-z 0-9 - / _ @
    if ((c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 47 && c <= 57) || c === 45 || c === 95 || c === 64) {
      if (c === 47 && s.charCodeAt(i - 1) === 47) return false; // "//"
      continue;
    }
    return false;
  }
  return true;
}

export class Xenstored {
  readonly store = new Store();
  private readonly conns = new Set<Conn>();
  private readonly domains = new Map<number, Domain>();
  private readonly specialPerms = new Map<string, Perms>();
  private quota: Quota;
  private server: net.Server | null = null;
  private persist: Persist | null = null;
  private ready: Conn[] = [];
  private scheduled = false;
  private watchCount = 0;
  private trace = false;
  private started = false;
  private readonly budget: number;
  private readonly hooks: XenstoredHooks;
  readonly log: (line: string) => void;
  /** Counters for memreport/benchmarks. */
  readonly stats = { requests: 0, events: 0, turns: 0, commits: 0, conflicts: 0, closedBad: 0 };

  constructor(readonly opts: XenstoredOptions = {}) {
    this.quota = { ...DEFAULT_QUOTA, ...opts.quota };
    this.budget = opts.budget ?? 128;
    this.hooks = opts.hooks ?? {};
    this.log = opts.log ?? ((l) => process.stderr.write(`xenstored: ${l}\n`));
    for (const s of SPECIALS) this.specialPerms.set(s, [{ id: 0, p: 0 }]);
    this.store.onChange = (c) => this.fireChange(c);
    this.store.onSoftQuota = (d, m) => this.log(`domain ${d} over soft memory quota (${m} bytes)`);
  }

  /** Load the journal and listen on the socket (if configured). */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.opts.dbPath) {
      this.persist = new Persist(this.opts.dbPath, { fsync: this.opts.fsync ?? true, log: this.log });
      const r = this.persist.open(this.store);
      if (r.records > 0) this.log(`loaded ${this.store.nodes.size} nodes from ${this.opts.dbPath} (${r.records} records)`);
    }
    this.store.initDefaults();
    this.flushPersist();
    if (this.opts.domainsPath) await this.restoreDomains(this.opts.domainsPath);
    if (this.opts.socketPath) await this.listen(this.opts.socketPath);
  }

  private async listen(sockPath: string): Promise<void> {
    fs.mkdirSync(path.dirname(sockPath), { recursive: true });
    try {
      if (fs.lstatSync(sockPath).isSocket()) fs.unlinkSync(sockPath);
    } catch {
      // absent
    }
    const server = net.createServer((s) => this.acceptSocket(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sockPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => this.log(`socket server error: ${e.message}`));
    try {
      fs.chmodSync(sockPath, 0o600);
    } catch {
      // best effort
    }
    this.server = server;
  }

  /** Close every connection and the socket, and sync the journal. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    const srv = this.server;
    this.server = null;
    for (const c of [...this.conns]) if (!(c instanceof RingConn)) this.dropConn(c);
    for (const d of [...this.domains.values()]) this.dropConn(d.conn);
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
    this.persist?.close(this.store);
    this.persist = null;
  }

  // ---- connections ----

  private acceptSocket(s: net.Socket): void {
    const c = new SocketConn(s, PRIV);
    c.onInput = () => this.socketInput(c);
    c.onClosed = () => this.dropConn(c);
    this.conns.add(c);
  }

  /**
   * A stream the toolstack opened for process domain `domid` (a driver
   * domain it started): xenstore's wire protocol as on the socket, but the
   * connection is that domain's, unprivileged, with its permissions and
   * quota. Its watches and transactions end with the stream.
   */
  attachDomainStream(s: net.Socket, domid: number): void {
    const c = new SocketConn(s, this.callerFor(domid));
    c.onInput = () => this.socketInput(c);
    c.onClosed = () => this.dropConn(c);
    this.conns.add(c);
  }

  /**
   * The toolstack's handle: an in-process client with async read/write/
   * mkdir/rm/directory/setPerms/watch/transaction/introduce/release/...
   * (domid 0 is privileged; another domid acts as that guest).
   */
  openClient(domid = 0): LocalClient {
    return new LocalClient(this, domid);
  }

  /** An in-process connection. domid 0 is privileged; others are treated as that guest. */
  connectLocal(domid = 0): LocalConn {
    const c = new LocalConn(domid, this.callerFor(domid));
    this.conns.add(c);
    return c;
  }

  /** Queue a request from a local connection. */
  submitLocal(c: LocalConn, m: XsMessage): void {
    c.submit(m);
    this.kick(c);
  }

  closeLocal(c: LocalConn): void {
    this.dropConn(c);
  }

  private callerFor(domid: number): Caller {
    if (domid === 0) return PRIV;
    const d = this.domains.get(domid);
    return { domid, priv: false, target: d?.target ?? -1, quota: d?.quota ?? this.quota };
  }

  private dropConn(c: Conn): void {
    if (!this.conns.delete(c)) return;
    if (c instanceof RingConn) {
      clearTimeout(this.polls.get(c));
      this.polls.delete(c);
    }
    this.watchCount -= c.watches.size;
    c.watches.clear();
    c.txs.clear();
    c.close();
  }

  private kick(c: Conn): void {
    if (!c.queued) {
      c.queued = true;
      this.ready.push(c);
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.turnFn);
    }
  }

  /**
   * Socket input is handled straight away (no extra event-loop hop) unless a
   * turn is already pending, in which case it joins that turn. Replies leave
   * at once when nothing needs syncing; otherwise they wait for the next
   * scheduled turn, which group-commits every change made meanwhile.
   */
  private socketInput(c: Conn): void {
    if (this.scheduled || this.inTurn) {
      this.kick(c);
      return;
    }
    if (!c.queued) {
      c.queued = true;
      this.ready.push(c);
    }
    this.turn(true);
  }

  private markDirty(c: Conn): void {
    if (!c.dirty) {
      c.dirty = true;
      this.dirtyList.push(c);
    }
  }
  private dirtyList: Conn[] = [];

  private readonly turnFn = (): void => {
    this.scheduled = false;
    this.turn(false);
  };
  private inTurn = false;

  /**
   * One scheduling turn: every ready connection handles up to `budget`
   * requests (round robin, so no client starves the others), then the journal
   * is synced and only then is any reply released. With mayDefer, a turn
   * that left journal records unsynced hands the sync and the replies over to
   * a scheduled turn instead (group commit).
   */
  private turn(mayDefer: boolean): void {
    this.inTurn = true;
    this.stats.turns++;
    const work = this.ready;
    this.ready = [];
    for (const c of work) {
      c.queued = false;
      if (c.closed || c.held) continue;
      if (c instanceof RingConn) {
        c.checkReconnect();
        this.markDirty(c); // the guest may have consumed responses
      }
      let n = 0;
      for (; n < this.budget; n++) {
        const r = c.next();
        if (r === 'none') break;
        if (r === 'broken') break;
        if (r === 'oversize') {
          this.stats.closedBad++;
          this.log(`${c.describe()}: request payload over ${XENSTORE_PAYLOAD_MAX} bytes; closing the connection`);
          if (!(c instanceof RingConn)) this.dropConn(c);
          break;
        }
        this.handle(c, r);
      }
      if (n === this.budget && !c.closed) this.kick(c);
      if (n > 0) {
        this.markDirty(c);
        if (c instanceof RingConn) c.pollDelay = 0;
      }
    }
    this.inTurn = false;
    if (this.persist?.dirty) {
      if (mayDefer) {
        this.kickFlush();
        return;
      }
      this.flushPersist();
    }
    if (this.domainsDirty) this.saveDomains();
    const dirty = this.dirtyList;
    this.dirtyList = [];
    for (const c of dirty) {
      c.dirty = false;
      c.flush();
      // A ring whose guest is waiting on an unblocked queue gets another pass.
      if (c instanceof RingConn && !c.blocked() && c.hasInput()) this.kick(c);
      else if (c instanceof RingConn && c.needsPoll()) this.poll(c);
    }
  }

  /** Looks at a ring again soon, then less and less often, while the rest of a request may come without an event. */
  private poll(c: RingConn): void {
    if (this.polls.has(c)) return;
    c.pollDelay = Math.min(100, c.pollDelay ? c.pollDelay * 2 : 1);
    const t = setTimeout(() => {
      this.polls.delete(c);
      if (c.closed) return;
      if (!c.needsPoll()) c.pollDelay = 0;
      this.kick(c);
    }, c.pollDelay);
    t.unref?.();
    this.polls.set(c, t);
  }
  private readonly polls = new Map<RingConn, NodeJS.Timeout>();

  private flushPersist(): void {
    if (!this.persist) return;
    try {
      this.persist.flush(this.store);
    } catch (e) {
      // A store we cannot persist is a fatal condition: refuse to acknowledge anything further.
      this.log(`journal write failed: ${(e as Error).message}`);
      throw e;
    }
  }

  // ---- request dispatch ----

  private reply(c: Conn, m: XsMessage, payload: Buffer | string): void {
    if (this.trace) this.log(`OUT ${c.describe()} ${typeName(m.type)} ${m.reqId} ${traceStr(payload)}`);
    c.send(m.type, m.reqId, m.txId, payload);
  }

  private handle(c: Conn, m: XsMessage): void {
    this.stats.requests++;
    if (this.trace) this.log(`IN  ${c.describe()} ${typeName(m.type)} ${m.reqId} tx=${m.txId} ${traceStr(m.payload)}`);
    try {
      if (m.txId !== 0 && m.txId < c.staleTxBelow && !c.txs.has(m.txId)) throw new XsError('EAGAIN', 'transaction of a previous xenstored');
      this.dispatch(c, m);
      if ((c instanceof RingConn ? RING_STATE_OPS : DOMAIN_STATE_OPS).has(m.type)) this.domainsChanged();
    } catch (e) {
      this.replyError(c, m, e);
    }
  }

  private replyError(c: Conn, m: XsMessage, e: unknown): void {
    let errno = 'EIO';
    if (e instanceof XsError) errno = e.errno;
    else this.log(`internal error on ${typeName(m.type)} from ${c.describe()}: ${(e as Error).stack ?? e}`);
    if (this.trace) this.log(`OUT ${c.describe()} ERROR ${m.reqId} ${errno}`);
    c.send(XsType.ERROR, m.reqId, m.txId, `${errno}\0`);
  }

  private txOf(c: Conn, id: number): Tx | null {
    if (id === 0) return null;
    const t = c.txs.get(id);
    if (!t) throw new XsError('ENOENT', 'no such transaction');
    return t;
  }

  private needPriv(c: Conn): void {
    if (!c.caller.priv) throw new XsError('EACCES', 'privileged operation');
  }

  /** Canonical absolute path of a request path (relative paths live under /local/domain/<domid>). */
  canonical(c: Conn, p: string, allowSpecial = false): string {
    const n = p.length;
    if (n === 0) throw new XsError('EINVAL', 'empty path');
    let abs: string;
    const c0 = p.charCodeAt(0);
    if (c0 === 47) {
      abs = p;
    } else if (c0 === 64) {
      if (!allowSpecial) throw new XsError('EINVAL', 'special path not allowed here');
      abs = p;
    } else {
      if (n > XENSTORE_REL_PATH_MAX) throw new XsError('EINVAL', 'relative path too long');
      abs = `/local/domain/${c.domid}/${p}`;
    }
    if (abs.length > XENSTORE_ABS_PATH_MAX) throw new XsError('EINVAL', 'path too long');
    if (abs.length > 1 && abs.charCodeAt(abs.length - 1) === 47) throw new XsError('EINVAL', 'trailing slash');
    if (!validChars(abs, 1)) throw new XsError('EINVAL', 'bad path');
    const q = c.caller.quota;
    if (q && c0 !== 64) {
      const pre = `/local/domain/${c.domid}/`;
      const len = abs.startsWith(pre) ? abs.length - pre.length : abs.length;
      if (len > q.pathMax) throw new XsError('EINVAL', 'path too long for quota');
    }
    return abs;
  }

  private dispatch(c: Conn, m: XsMessage): void {
    const s = this.store;
    switch (m.type) {
      case XsType.READ: {
        const p = this.canonical(c, oneArg(m.payload));
        this.reply(c, m, s.read(c.caller, this.txOf(c, m.txId), p));
        return;
      }
      case XsType.WRITE: {
        const pl = m.payload;
        const z = pl.indexOf(0);
        if (z < 0) throw new XsError('EINVAL', 'write without value separator');
        const p = this.canonical(c, pl.toString('latin1', 0, z));
        const tx = this.txOf(c, m.txId);
        s.write(c.caller, tx, p, Buffer.from(pl.subarray(z + 1)));
        this.reply(c, m, OK);
        return;
      }
      case XsType.MKDIR: {
        const p = this.canonical(c, oneArg(m.payload));
        s.mkdir(c.caller, this.txOf(c, m.txId), p);
        this.reply(c, m, OK);
        return;
      }
      case XsType.RM: {
        const p = this.canonical(c, oneArg(m.payload));
        s.rm(c.caller, this.txOf(c, m.txId), p);
        this.reply(c, m, OK);
        return;
      }
      case XsType.DIRECTORY: {
        const p = this.canonical(c, oneArg(m.payload));
        const n = s.dirNode(c.caller, this.txOf(c, m.txId), p);
        if (n.childBytes > XENSTORE_PAYLOAD_MAX) throw new XsError('E2BIG', 'use DIRECTORY_PART');
        const b = Buffer.allocUnsafe(n.childBytes);
        let o = 0;
        for (const k of n.children) {
          o += b.write(k, o, 'latin1');
          b[o++] = 0;
        }
        this.reply(c, m, b);
        return;
      }
      case XsType.DIRECTORY_PART: {
        const a = splitNul(m.payload);
        if (a.length !== 2) throw new XsError('EINVAL');
        const p = this.canonical(c, a[0]!);
        const off = parseUint(a[1]);
        const n = s.dirNode(c.caller, this.txOf(c, m.txId), p);
        const all = n.children.length ? `${n.children.join('\0')}\0` : '';
        const gen = `${n.gen}\0`;
        if (off >= all.length) {
          this.reply(c, m, `${gen}\0`);
          return;
        }
        const maxLen = XENSTORE_PAYLOAD_MAX - gen.length - 1;
        let end = off;
        while (end < all.length) {
          const z = all.indexOf('\0', end);
          if (z + 1 - off > maxLen) break;
          end = z + 1;
        }
        let out = gen + all.slice(off, end);
        if (end === all.length) out += '\0';
        this.reply(c, m, out);
        return;
      }
      case XsType.GET_PERMS: {
        const p = this.canonical(c, oneArg(m.payload), true);
        const perms = p.charCodeAt(0) === 64 ? this.special(c, p, PERM_READ) : s.getPerms(c.caller, this.txOf(c, m.txId), p);
        this.reply(c, m, perms.map((e) => `${permToString(e)}\0`).join(''));
        return;
      }
      case XsType.SET_PERMS: {
        const a = splitNul(m.payload);
        if (a.length < 2) throw new XsError('EINVAL', 'no permissions');
        const p = this.canonical(c, a[0]!, true);
        const perms: Perm[] = [];
        for (let i = 1; i < a.length; i++) {
          const e = parsePerm(a[i]!);
          if (!e) throw new XsError('EINVAL', `bad permission ${a[i]}`);
          perms.push(e);
        }
        if (p.charCodeAt(0) === 64) {
          const cur = this.special(c, p, PERM_OWNER);
          if (!c.caller.priv && perms[0]!.id !== cur[0]!.id) throw new XsError('EPERM');
          this.specialPerms.set(p, perms);
        } else {
          s.setPerms(c.caller, this.txOf(c, m.txId), p, perms);
        }
        this.reply(c, m, OK);
        return;
      }
      case XsType.WATCH: {
        const a = splitNul(m.payload);
        if (a.length < 2 || a.length > 3) throw new XsError('EINVAL');
        const raw = a[0]!;
        const p = this.canonical(c, raw, true);
        const depth = a.length === 3 ? parseUint(a[2], 0xffff) : -1;
        const token = a[1]!;
        const key = `${p}\0${token}`;
        if (c.watches.has(key)) throw new XsError('EEXIST');
        const q = c.caller.quota;
        if (q && c.watches.size >= q.watches) throw new XsError('E2BIG', 'watch quota');
        const relative = raw.charCodeAt(0) !== 47 && raw.charCodeAt(0) !== 64;
        const w: Watch = { path: p, token, relative, depth };
        c.watches.set(key, w);
        this.watchCount++;
        this.reply(c, m, OK);
        // A new watch fires once straight away.
        this.sendEvent(c, raw, token);
        return;
      }
      case XsType.UNWATCH: {
        const a = splitNul(m.payload);
        if (a.length !== 2) throw new XsError('EINVAL');
        const p = this.canonical(c, a[0]!, true);
        if (!c.watches.delete(`${p}\0${a[1]}`)) throw new XsError('ENOENT');
        this.watchCount--;
        this.reply(c, m, OK);
        return;
      }
      case XsType.RESET_WATCHES: {
        this.watchCount -= c.watches.size;
        c.watches.clear();
        c.txs.clear();
        this.reply(c, m, OK);
        return;
      }
      case XsType.TRANSACTION_START: {
        if (m.txId !== 0) {
          if (c.txs.has(m.txId)) throw new XsError('EBUSY');
          throw new XsError('ENOENT');
        }
        const q = c.caller.quota;
        if (q && c.txs.size >= q.transactions) throw new XsError('ENOSPC', 'transaction quota');
        let id = c.nextTxId;
        while (id === 0 || c.txs.has(id)) id = (id + 1) >>> 0;
        c.nextTxId = (id + 1) >>> 0;
        c.txs.set(id, new Tx(id, s.gen, q?.transactionNodes));
        this.reply(c, m, `${id}\0`);
        return;
      }
      case XsType.TRANSACTION_END: {
        const arg = oneArg(m.payload);
        if (arg !== 'T' && arg !== 'F') throw new XsError('EINVAL');
        const tx = c.txs.get(m.txId);
        if (!tx || m.txId === 0) throw new XsError('ENOENT');
        c.txs.delete(m.txId);
        if (arg === 'T') {
          try {
            s.commit(tx);
            this.stats.commits++;
          } catch (e) {
            if (e instanceof XsError && e.errno === 'EAGAIN') this.stats.conflicts++;
            throw e;
          }
        }
        this.reply(c, m, OK);
        return;
      }
      case XsType.GET_DOMAIN_PATH: {
        const d = parseDomid(oneArg(m.payload));
        this.reply(c, m, `/local/domain/${d}\0`);
        return;
      }
      case XsType.INTRODUCE: {
        this.needPriv(c);
        const a = splitNul(m.payload);
        if (a.length < 3) throw new XsError('EINVAL');
        const domid = parseDomid(a[0]);
        if (domid === 0) throw new XsError('EINVAL', 'domain 0 is local');
        const gs = a[1]!;
        if (!/^-?[0-9]{1,20}$/.test(gs)) throw new XsError('EINVAL', 'bad gfn');
        const gfn = Number(gs);
        const port = parseUint(a[2]);
        const done = this.introduce(domid, gfn, port);
        if (done instanceof Promise) {
          c.held = true;
          done.then(() => this.reply(c, m, OK), (e: unknown) => this.replyError(c, m, e)).finally(() => {
            c.held = false;
            this.domainsChanged();
            this.markDirty(c);
            this.kick(c);
          });
          return;
        }
        this.reply(c, m, OK);
        return;
      }
      case XsType.RELEASE: {
        this.needPriv(c);
        const domid = parseDomid(oneArg(m.payload));
        this.release(domid);
        this.reply(c, m, OK);
        return;
      }
      case XsType.IS_DOMAIN_INTRODUCED: {
        this.needPriv(c);
        const domid = parseDomid(oneArg(m.payload));
        this.reply(c, m, domid === 0 || this.domains.has(domid) ? 'T\0' : 'F\0');
        return;
      }
      case XsType.RESUME: {
        this.needPriv(c);
        this.domain(parseDomid(oneArg(m.payload))).shutdown = false;
        this.reply(c, m, OK);
        return;
      }
      case XsType.SET_TARGET: {
        this.needPriv(c);
        const a = splitNul(m.payload);
        if (a.length !== 2) throw new XsError('EINVAL');
        const target = parseDomid(a[1]);
        const d = this.domain(parseDomid(a[0]));
        if (target !== 0 && !this.domains.has(target)) throw new XsError('ENOENT');
        d.target = target;
        this.refreshCaller(d);
        this.reply(c, m, OK);
        return;
      }
      case XsType.GET_FEATURE: {
        const a = splitNul(m.payload);
        if (a.length === 0) {
          this.reply(c, m, `${SERVER_FEATURES}\0`);
          return;
        }
        if (a.length !== 1) throw new XsError('EINVAL');
        const domid = parseDomid(a[0]);
        if (!c.caller.priv && domid !== c.domid) throw new XsError('EACCES');
        if (domid === 0) {
          this.reply(c, m, `${SERVER_FEATURES}\0`);
          return;
        }
        this.reply(c, m, `${this.domain(domid).features}\0`);
        return;
      }
      case XsType.SET_FEATURE: {
        this.needPriv(c);
        const a = splitNul(m.payload);
        if (a.length !== 2) throw new XsError('EINVAL');
        const d = this.domain(parseDomid(a[0]));
        const v = parseUint(a[1]);
        if ((v & ~SERVER_FEATURES) !== 0) throw new XsError('EINVAL', 'unsupported feature bits');
        d.features = v;
        d.conn.setFeatures(v);
        this.reply(c, m, OK);
        return;
      }
      case XsType.GET_QUOTA: {
        this.needPriv(c);
        const a = splitNul(m.payload);
        if (a.length === 0) {
          this.reply(c, m, `${Object.keys(QUOTA_NAMES).join(' ')}\0`);
          return;
        }
        if (a.length > 2) throw new XsError('EINVAL');
        const key = QUOTA_NAMES[a[a.length - 1]!];
        if (!key) throw new XsError('EINVAL', 'unknown quota');
        const q = a.length === 2 ? this.domain(parseDomid(a[0])).quota : this.quota;
        this.reply(c, m, `${q[key]}\0`);
        return;
      }
      case XsType.SET_QUOTA: {
        this.needPriv(c);
        const a = splitNul(m.payload);
        if (a.length !== 2 && a.length !== 3) throw new XsError('EINVAL');
        const key = QUOTA_NAMES[a[a.length - 2]!];
        if (!key) throw new XsError('EINVAL', 'unknown quota');
        const v = parseUint(a[a.length - 1]);
        if (a.length === 3) this.setDomainQuota(parseDomid(a[0]), key, v);
        else this.setGlobalQuota(key, v);
        this.reply(c, m, OK);
        return;
      }
      case XsType.CONTROL: {
        this.needPriv(c);
        const a = splitNul(m.payload);
        if (a.length === 0) throw new XsError('EINVAL');
        this.reply(c, m, `${this.control(a[0]!, a.slice(1))}\0`);
        return;
      }
      default:
        throw new XsError('EINVAL', `unknown message type ${m.type}`);
    }
  }

  /** The introduced domain domid (ENOENT if it is not). */
  private domain(domid: number): Domain {
    const d = this.domains.get(domid);
    if (!d) throw new XsError('ENOENT', 'domain not introduced');
    return d;
  }

  private special(c: Conn, p: string, right: number): Perms {
    const perms = this.specialPerms.get(p);
    if (!perms) throw new XsError('ENOENT');
    if ((permFor(c.caller, perms) & right) !== right) throw new XsError('EACCES');
    return perms;
  }

  // ---- watches ----

  private sendEvent(c: Conn, p: string, token: string): void {
    if (p.length + token.length + 2 > XENSTORE_PAYLOAD_MAX) return;
    if (c instanceof RingConn && c.caller.quota && c.pendingOutput() > c.caller.quota.memory) {
      if (c.droppedEvents++ % 1000 === 0) this.log(`domain ${c.domid} does not consume watch events; dropping (${c.droppedEvents})`);
      return;
    }
    this.stats.events++;
    c.send(XsType.WATCH_EVENT, 0, 0, `${p}\0${token}\0`);
    this.markDirty(c);
  }

  private eventPath(c: Conn, w: Watch, p: string): string {
    if (!w.relative) return p;
    const pre = `/local/domain/${c.domid}/`;
    return p.startsWith(pre) ? p.slice(pre.length) : p;
  }

  private fireChange(ch: Change): void {
    if (this.watchCount === 0) return;
    let removed: Map<string, Perms> | null = null;
    const dp = pathDepth(ch.path);
    for (const c of this.conns) {
      if (c.watches.size === 0) continue;
      for (const w of c.watches.values()) {
        if (w.path.charCodeAt(0) === 64) continue;
        if (isAtOrBelow(ch.path, w.path)) {
          if (w.depth >= 0 && dp - pathDepth(w.path) > w.depth) continue;
          const r = permFor(c.caller, ch.perms) | (ch.oldPerms ? permFor(c.caller, ch.oldPerms) : 0);
          if ((r & PERM_READ) === 0) continue;
          this.sendEvent(c, this.eventPath(c, w, ch.path), w.token);
        } else if (ch.kind === 'rm' && ch.removed && ch.removed.length > 0 && isAtOrBelow(w.path, ch.path)) {
          if (!removed) removed = new Map(ch.removed.map((r) => [r.path, r.perms]));
          const perms = removed.get(w.path);
          if (!perms || (permFor(c.caller, perms) & PERM_READ) === 0) continue;
          this.sendEvent(c, this.eventPath(c, w, w.path), w.token);
        }
      }
    }
  }

  /** Fire @introduceDomain / @releaseDomain for a domain. */
  private fireSpecial(name: string, domid: number): void {
    if (this.watchCount === 0) return;
    const one = `${name}/${domid}`;
    const perms = this.specialPerms.get(name)!;
    for (const c of this.conns) {
      if (c.watches.size === 0) continue;
      if (!c.caller.priv && (permFor(c.caller, perms) & PERM_READ) === 0) continue;
      for (const w of c.watches.values()) {
        if (w.path === name) this.sendEvent(c, w.depth >= 1 ? one : name, w.token);
        else if (w.path === one) this.sendEvent(c, one, w.token);
      }
    }
  }

  // ---- domains ----

  /** INTRODUCE: map the guest's ring and start serving it (a promise while the hook's mapping is on its way). */
  introduce(domid: number, gfn: number, port: number): void | Promise<void> {
    let ring: DomainRingPort | null | Promise<DomainRingPort | null> = null;
    try {
      ring = this.hooks.mapDomainRing ? this.hooks.mapDomainRing(domid, gfn, port) : null;
    } catch (e) {
      this.log(`INTRODUCE ${domid}: mapping gfn ${gfn} port ${port} failed: ${(e as Error).message}`);
    }
    if (ring instanceof Promise) {
      return ring.then((r) => this.introduced(domid, gfn, port, r), (e: unknown) => {
        this.log(`INTRODUCE ${domid}: mapping gfn ${gfn} port ${port} failed: ${(e as Error).message}`);
        this.introduced(domid, gfn, port, null);
      });
    }
    this.introduced(domid, gfn, port, ring);
  }

  private introduced(domid: number, gfn: number, port: number, ring: DomainRingPort | null, restored?: DomainRecord): void {
    if (!ring || !(ring.page instanceof Uint8Array) || ring.page.length < 4096) throw new XsError('EINVAL', 'cannot map the ring');
    const existing = this.domains.get(domid);
    if (existing) {
      // Re-introduction rebinds the event channel (and page) but keeps the connection state.
      existing.gfn = gfn;
      existing.port = port;
      existing.conn.setPort(ring);
      existing.conn.setFeatures(existing.features);
      this.kick(existing.conn);
      return;
    }
    const d: Domain = {
      domid, conn: null as unknown as RingConn, gfn, port, features: restored?.features ?? SERVER_FEATURES,
      quotaOverride: { ...restored?.quotaOverride }, quota: { ...this.quota, ...restored?.quotaOverride },
      shutdown: restored?.shutdown ?? false, target: restored?.target ?? -1,
    };
    this.domains.set(domid, d);
    const conn = new RingConn(domid, ring, this.callerFor(domid));
    conn.outstanding = d.quota.outstanding;
    conn.log = this.log;
    conn.onReset = () => {
      this.watchCount -= conn.watches.size;
      conn.watches.clear();
      conn.txs.clear();
      this.domainsChanged();
    };
    d.conn = conn;
    conn.setFeatures(d.features);
    this.conns.add(conn);
    if (restored) {
      // ids the last xenstored gave out (and a margin for those it gave since it last saved) are stale
      conn.nextTxId = conn.staleTxBelow = ((restored.nextTxId >>> 0) + 0x10000) >>> 0 || 1;
      for (const w of restored.watches) {
        conn.watches.set(`${w.path}\0${w.token}`, { path: w.path, token: w.token, relative: w.relative, depth: w.depth });
        this.watchCount++;
        // an event may have been lost with the last xenstored: each watch fires once, as on registration
        this.sendEvent(conn, this.eventPath(conn, w, w.path), w.token);
      }
    } else {
      this.fireSpecial('@introduceDomain', domid);
    }
    this.kick(conn);
  }

  // ---- the domains' connections across restarts ----

  private domainsDirty = false;
  /** The domain file is written again at the end of this turn (when there is one). */
  private domainsChanged(): void {
    if (this.opts.domainsPath) this.domainsDirty = true;
  }

  private saveDomains(): void {
    this.domainsDirty = false;
    const file = this.opts.domainsPath;
    if (!file) return;
    const domains: DomainRecord[] = [...this.domains.values()].map((d) => ({
      domid: d.domid, gfn: d.gfn, port: d.port, features: d.features, target: d.target, shutdown: d.shutdown,
      quotaOverride: d.quotaOverride, nextTxId: d.conn.nextTxId,
      watches: [...d.conn.watches.values()].map((w) => ({ path: w.path, token: w.token, relative: w.relative, depth: w.depth })),
    }));
    const tmp = `${file}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, JSON.stringify({ version: DOMAINS_VERSION, domains }));
      if (this.opts.fsync ?? true) fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  }

  /** Takes up the connections a previous xenstored left in `file`; one whose ring cannot be mapped again is dropped, and said so. */
  private async restoreDomains(file: string): Promise<void> {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return; // a first start
    }
    let recs: DomainRecord[];
    try {
      const o = JSON.parse(text) as { version?: unknown; domains?: unknown };
      if (o.version !== DOMAINS_VERSION || !Array.isArray(o.domains)) throw new Error(`not a version ${DOMAINS_VERSION} domain list`);
      recs = o.domains.filter(isDomainRecord);
      if (recs.length !== o.domains.length) this.log(`${file}: ${o.domains.length - recs.length} malformed domain record(s) ignored`);
    } catch (e) {
      this.log(`${file}: ${(e as Error).message}; no connections restored`);
      return;
    }
    for (const r of recs) {
      try {
        const ring = await this.hooks.mapDomainRing?.(r.domid, r.gfn, r.port);
        this.introduced(r.domid, r.gfn, r.port, ring ?? null, r);
        this.log(`domain ${r.domid}: connection restored (${r.watches.length} watch(es))`);
      } catch (e) {
        this.log(`domain ${r.domid}: its connection cannot be restored: ${(e as Error).message}`);
      }
    }
    this.domainsDirty = true;
    this.kickFlush();
  }

  /** RELEASE: forget the domain, drop its connection and the nodes it owns, fire @releaseDomain. */
  release(domid: number): void {
    const d = this.domain(domid);
    this.domains.delete(domid);
    this.dropConn(d.conn);
    try {
      this.hooks.unmapDomainRing?.(domid, d.conn.port);
    } catch (e) {
      // as for mapping: a failing hook must not leave the domain's nodes behind or @releaseDomain unsaid
      this.log(`release of domain ${domid}: unmapping its ring failed: ${(e as Error).message}`);
    }
    for (const p of this.store.ownedRoots(domid)) {
      try {
        this.store.rm(PRIV, null, p);
      } catch (e) {
        this.log(`release of domain ${domid}: removing ${p}: ${(e as Error).message}`);
      }
    }
    for (const c of this.conns) if (c.caller.target === domid) c.caller = { ...c.caller, target: -1 };
    for (const o of this.domains.values()) if (o.target === domid) {
      o.target = -1;
      this.refreshCaller(o);
    }
    this.fireSpecial('@releaseDomain', domid);
  }

  /** The hypervisor reports that a domain shut down, crashed or died: fire @releaseDomain once. */
  domainDied(domid: number): void {
    const d = this.domains.get(domid);
    if (d) {
      if (d.shutdown) return;
      d.shutdown = true;
      this.domainsChanged();
    }
    this.fireSpecial('@releaseDomain', domid);
    this.kickFlush();
  }

  /** The guest kicked its xenstore event channel. */
  ringNotified(domid: number): void {
    const d = this.domains.get(domid);
    if (d) this.kick(d.conn);
  }

  isIntroduced(domid: number): boolean {
    return domid === 0 || this.domains.has(domid);
  }

  /** Run a turn soon even if no connection has input (to flush events). */
  private kickFlush(): void {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.turnFn);
    }
  }

  private refreshCaller(d: Domain): void {
    d.conn.caller = this.callerFor(d.domid);
    d.conn.outstanding = d.quota.outstanding;
  }

  setGlobalQuota(key: keyof Quota, v: number): void {
    this.quota = { ...this.quota, [key]: v };
    for (const d of this.domains.values()) {
      d.quota = { ...this.quota, ...d.quotaOverride };
      this.refreshCaller(d);
    }
    for (const c of this.conns) if (c instanceof LocalConn && !c.caller.priv) c.caller = this.callerFor(c.domid);
  }

  setDomainQuota(domid: number, key: keyof Quota, v: number): void {
    const d = this.domain(domid);
    d.quotaOverride = { ...d.quotaOverride, [key]: v };
    d.quota = { ...this.quota, ...d.quotaOverride };
    this.refreshCaller(d);
  }

  getQuota(domid?: number): Quota {
    return { ...(domid === undefined ? this.quota : this.domain(domid).quota) };
  }

  // ---- CONTROL ----

  private control(cmd: string, args: string[]): string {
    switch (cmd) {
      case 'help':
        return ['check', 'log [on|off]', 'print <text>', 'memreport', 'quota [<domid>]', 'quota set <name> <value>',
          'quota <domid> set <name> <value>', 'quota-soft', 'help'].join('\n') + '\n';
      case 'log':
        if (args.length === 0) return this.trace ? 'on' : 'off';
        if (args[0] === 'on') this.trace = true;
        else if (args[0] === 'off') this.trace = false;
        else throw new XsError('EINVAL');
        return 'OK';
      case 'print':
        this.log(args.join(' '));
        return 'OK';
      case 'check': {
        const p = this.store.check();
        return p.length === 0 ? 'OK' : p.join('\n');
      }
      case 'memreport':
        return this.memreport();
      case 'quota':
        return this.controlQuota(args);
      case 'quota-soft':
        if (args.length === 0) return `memory-soft: ${this.quota.memorySoft}\n`;
        if (args[0] === 'set' && args.length === 3 && args[1] === 'memory') {
          this.setGlobalQuota('memorySoft', parseUint(args[2]));
          return 'OK';
        }
        throw new XsError('EINVAL');
      default:
        throw new XsError('EINVAL', `unknown control command ${cmd}`);
    }
  }

  private controlQuota(args: string[]): string {
    const fmt = (q: Quota): string => Object.entries(QUOTA_NAMES).map(([n, k]) => `${n}: ${q[k]}`).join('\n') + '\n';
    if (args.length === 0) return fmt(this.quota);
    if (args[0] === 'set') {
      if (args.length !== 3) throw new XsError('EINVAL');
      const key = QUOTA_NAMES[args[1]!];
      if (!key) throw new XsError('EINVAL', 'unknown quota');
      this.setGlobalQuota(key, parseUint(args[2]));
      return 'OK';
    }
    const domid = parseDomid(args[0]);
    if (args.length === 4 && args[1] === 'set') {
      const key = QUOTA_NAMES[args[2]!];
      if (!key) throw new XsError('EINVAL', 'unknown quota');
      this.setDomainQuota(domid, key, parseUint(args[3]));
      return 'OK';
    }
    if (args.length !== 1) throw new XsError('EINVAL');
    const d = this.domain(domid);
    const a = this.store.accounting(domid);
    return `${fmt(d.quota)}used nodes: ${a.nodes}\nused memory: ${a.mem}\nwatches: ${d.conn.watches.size}\ntransactions: ${d.conn.txs.size}\n`;
  }

  memreport(): string {
    const lines: string[] = [];
    let watches = 0;
    let txs = 0;
    let out = 0;
    for (const c of this.conns) {
      watches += c.watches.size;
      txs += c.txs.size;
      out += c.pendingOutput();
    }
    const mu = process.memoryUsage();
    lines.push(`nodes: ${this.store.nodes.size}`);
    lines.push(`generation: ${this.store.gen}`);
    lines.push(`connections: ${this.conns.size} (domains introduced: ${this.domains.size})`);
    lines.push(`watches: ${watches}`);
    lines.push(`transactions: ${txs}`);
    lines.push(`queued output bytes: ${out}`);
    lines.push(`requests: ${this.stats.requests} events: ${this.stats.events} commits: ${this.stats.commits} conflicts: ${this.stats.conflicts}`);
    if (this.persist) {
      const z = this.persist.sizes;
      lines.push(`journal: ${this.persist.file} ${z.file} bytes (snapshot ${z.snapshot}), ${this.persist.stats.flushes} syncs, ${this.persist.stats.compactions} compactions`);
    }
    lines.push(`process: rss ${mu.rss} heapUsed ${mu.heapUsed} external ${mu.external}`);
    for (const [d, a] of [...this.store.accountingAll()].sort((x, y) => x[0] - y[0])) {
      lines.push(`domain ${d}: nodes ${a.nodes} memory ${a.mem}`);
    }
    return lines.join('\n') + '\n';
  }
}

function traceStr(p: Buffer | string): string {
  const s = typeof p === 'string' ? p : p.subarray(0, 200).toString('latin1');
  return JSON.stringify(s.replace(/\0/g, '|'));
}
