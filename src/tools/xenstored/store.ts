// The xenstore tree: nodes, permissions, generation counts, per-domain
// accounting and transactions (copy-on-write overlays checked against the
// generation counts of the nodes they read).

import { XsError } from './wire.js';

export const PERM_NONE = 0;
export const PERM_READ = 1;
export const PERM_WRITE = 2;
export const PERM_OWNER = 4;
export const PERM_ALL = PERM_READ | PERM_WRITE | PERM_OWNER;

/** One ACL entry. p is PERM_READ|PERM_WRITE bits. Entry 0 is the owner and the default. */
export interface Perm {
  readonly id: number;
  readonly p: number;
}
export type Perms = readonly Perm[];

const PERM_CHARS = ['n', 'r', 'w', 'b'];

export function permToString(e: Perm): string {
  return `${PERM_CHARS[e.p & 3]}${e.id}`;
}

/** Parse one "r5" style entry; null if malformed. */
export function parsePerm(s: string): Perm | null {
  if (s.length < 2 || s.length > 6) return null;
  const c = s.charCodeAt(0);
  let p: number;
  if (c === 0x6e) p = PERM_NONE; // n
  else if (c === 0x72) p = PERM_READ; // r
  else if (c === 0x77) p = PERM_WRITE; // w
  else if (c === 0x62) p = PERM_READ | PERM_WRITE; // b
  else return null;
  let id = 0;
  for (let i = 1; i < s.length; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return null;
    id = id * 10 + d;
  }
  if (id > 0xffff) return null;
  return { id, p };
}

export const DOMID_FIRST_RESERVED = 0x7ff0;

function namesBytes(names: readonly string[]): number {
  let s = 0;
  for (const c of names) s += c.length + 1;
  return s;
}

/** A node of the tree. Nodes are never mutated once published: changes create a new node. */
export class XsNode {
  constructor(
    public readonly value: Buffer,
    public readonly perms: Perms,
    public readonly children: readonly string[],
    public gen: number,
    /**
     * Bytes of the children's names with their NULs (the DIRECTORY payload), carried from node to
     * node so that sizing a big directory such as /local/domain is not a walk over its names.
     */
    public readonly childBytes = namesBytes(children),
  ) {}

  get owner(): number {
    return this.perms[0]!.id;
  }

  /** This node with another value and perms, and the same children. */
  with(value: Buffer, perms: Perms, gen = 0): XsNode {
    return new XsNode(value, perms, this.children, gen, this.childBytes);
  }

  /** This node with one more child. */
  adding(name: string, gen = 0): XsNode {
    return new XsNode(this.value, this.perms, [...this.children, name], gen, this.childBytes + name.length + 1);
  }

  /** This node without the child name. */
  removing(name: string, gen = 0): XsNode {
    const kids = this.children.filter((k) => k !== name);
    return new XsNode(this.value, this.perms, kids, gen, this.childBytes - (this.children.length - kids.length) * (name.length + 1));
  }
}

/** Bytes charged to the owner of a node (memory quota) and the size checked against node-size. */
export function nodeSize(n: XsNode): number {
  return n.value.length + n.perms.length * 8 + n.childBytes;
}
function nodeMem(path: string, n: XsNode): number {
  return path.length + nodeSize(n) + 64;
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
export function joinPath(parent: string, name: string): string {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}
/** Number of components ("/" is 0, "/a/b" is 2; "@x" is 0, "@x/1" is 1). */
export function pathDepth(path: string): number {
  if (path === '/') return 0;
  let d = 0;
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 0x2f) d++;
  return d;
}
/** True if child is path or lies below it. */
export function isAtOrBelow(child: string, path: string): boolean {
  if (path === '/') return child.charCodeAt(0) === 0x2f;
  return child === path || (child.length > path.length && child.startsWith(path) && child.charCodeAt(path.length) === 0x2f);
}

/** Who is asking: everything permission and quota checks need. */
export interface Caller {
  readonly domid: number;
  readonly priv: boolean;
  /** SET_TARGET: the domain this caller acts for (device model), or -1. */
  readonly target: number;
  /** Limits applied to this caller (null for privileged callers). */
  readonly quota: Quota | null;
}

export interface Quota {
  nodes: number;
  watches: number;
  transactions: number;
  outstanding: number;
  transactionNodes: number;
  memory: number;
  memorySoft: number;
  nodeSize: number;
  pathMax: number;
  permissions: number;
}

/** cxenstored's defaults for unprivileged domains. */
export const DEFAULT_QUOTA: Readonly<Quota> = Object.freeze({
  nodes: 1000,
  watches: 128,
  transactions: 10,
  outstanding: 20,
  transactionNodes: 1024,
  memory: 2621440,
  memorySoft: 2097152,
  nodeSize: 2048,
  pathMax: 2048,
  permissions: 5,
});

/** Wire names of the quotas (GET_QUOTA/SET_QUOTA and CONTROL quota). */
export const QUOTA_NAMES: Record<string, keyof Quota> = {
  nodes: 'nodes',
  watches: 'watches',
  transactions: 'transactions',
  outstanding: 'outstanding',
  'transaction-nodes': 'transactionNodes',
  memory: 'memory',
  'memory-soft': 'memorySoft',
  'node-size': 'nodeSize',
  'path-max': 'pathMax',
  permissions: 'permissions',
};

/** Rights of a caller over a node with these perms (PERM_* bits). */
export function permFor(c: Caller, perms: Perms): number {
  if (c.priv) return PERM_ALL;
  const owner = perms[0]!.id;
  if (owner === c.domid || owner === c.target) return PERM_ALL;
  for (let i = 1; i < perms.length; i++) {
    const e = perms[i]!;
    if (e.id === c.domid || e.id === c.target) return e.p;
  }
  return perms[0]!.p;
}

/** A change to report to watchers. */
export interface Change {
  readonly kind: 'change' | 'rm';
  readonly path: string;
  /** Perms that decide who may see the event (the node's, or the deleted node's). */
  readonly perms: Perms;
  /** For SET_PERMS: the previous perms (a watcher allowed by either sees the event). */
  readonly oldPerms?: Perms;
  /** For rm: the deleted descendants (path, perms), excluding path itself. */
  readonly removed?: readonly { path: string; perms: Perms }[];
}

export class Tx {
  /** Copy-on-write nodes; null marks a deletion. */
  readonly overlay = new Map<string, XsNode | null>();
  /**
   * Every node first seen in the main store (null: it was absent), as seen
   * then. Later reads in the transaction return the same node (repeatable
   * reads, as cxenstored), and commit fails if any of them changed since.
   */
  readonly reads = new Map<string, XsNode | null>();
  readonly changes: Change[] = [];
  /** Node count and memory changes per owner inside the transaction. */
  readonly nodeDelta = new Map<number, number>();
  readonly memDelta = new Map<number, number>();
  constructor(
    public readonly id: number,
    public readonly startGen: number,
    /**
     * Most distinct nodes the transaction may access (the caller's transaction-nodes quota, as
     * cxenstored since XSA-326): every node read, written or found absent is remembered until the end.
     */
    public readonly maxNodes = Infinity,
  ) {}
}

export interface Journal {
  put(path: string, node: XsNode): void;
  del(path: string): void;
}

interface Acct {
  nodes: number;
  mem: number;
}

const EMPTY_VALUE = Buffer.alloc(0);
const NO_CHILDREN: readonly string[] = Object.freeze([]);
export const ROOT_PERMS: Perms = Object.freeze([{ id: 0, p: PERM_NONE }]);

export class Store {
  readonly nodes = new Map<string, XsNode>();
  /** Global generation counter; every modification gets a new value. */
  gen = 0;
  private readonly acct = new Map<number, Acct>();
  /** paths of the nodes each domain owns, kept with the accounting: releasing a domain must not walk the whole store */
  private readonly owned = new Map<number, Set<string>>();
  journal: Journal | null = null;
  /** Called for every change made outside a transaction and for each change of a committed one. */
  onChange: (c: Change) => void = () => {};
  /** Called when an unprivileged owner crosses its soft memory quota. */
  onSoftQuota: (domid: number, mem: number) => void = () => {};

  constructor() {
    this.nodes.set('/', new XsNode(EMPTY_VALUE, ROOT_PERMS, NO_CHILDREN, 0));
    this.charge('/', this.nodes.get('/')!, 1);
  }

  /** Make sure / , /tool and /tool/xenstored exist (as cxenstored does at start). */
  initDefaults(): void {
    const dom0: Caller = { domid: 0, priv: true, target: -1, quota: null };
    this.mkdir(dom0, null, '/tool');
    this.mkdir(dom0, null, '/tool/xenstored');
  }

  accounting(domid: number): { nodes: number; mem: number } {
    const a = this.acct.get(domid);
    return { nodes: a?.nodes ?? 0, mem: a?.mem ?? 0 };
  }
  accountingAll(): Map<number, { nodes: number; mem: number }> {
    return new Map([...this.acct].map(([k, v]) => [k, { ...v }]));
  }

  private charge(path: string, n: XsNode, sign: 1 | -1): void {
    const o = n.owner;
    let a = this.acct.get(o);
    if (!a) {
      a = { nodes: 0, mem: 0 };
      this.acct.set(o, a);
    }
    a.nodes += sign;
    a.mem += sign * nodeMem(path, n);
    if (a.nodes === 0 && a.mem === 0) this.acct.delete(o);
    let paths = this.owned.get(o);
    if (sign > 0) {
      if (!paths) this.owned.set(o, (paths = new Set()));
      paths.add(path);
    } else if (paths) {
      paths.delete(path);
      if (paths.size === 0) this.owned.delete(o);
    }
  }

  // ---- raw access (main store or transaction view) ----

  /** The node visible at path (recording the read generation inside a transaction). */
  get(tx: Tx | null, path: string): XsNode | undefined {
    if (tx === null) return this.nodes.get(path);
    const o = tx.overlay.get(path);
    if (o !== undefined) return o ?? undefined;
    const r = tx.reads.get(path);
    if (r !== undefined) return r ?? undefined;
    // Every node an operation touches is looked up here before the operation changes anything,
    // so refusing the access keeps the operation all-or-nothing.
    if (tx.reads.size >= tx.maxNodes) throw new XsError('ENOSPC', 'too many nodes in transaction');
    const n = this.nodes.get(path);
    tx.reads.set(path, n ?? null);
    return n;
  }

  private put(c: Caller | null, tx: Tx | null, path: string, n: XsNode, prev: XsNode | undefined): void {
    if (tx === null) {
      n.gen = ++this.gen;
      if (prev) this.charge(path, prev, -1);
      this.nodes.set(path, n);
      this.charge(path, n, 1);
      this.journal?.put(path, n);
      if (c && c.quota) this.checkSoft(n.owner, c.quota);
      return;
    }
    n.gen = this.gen;
    tx.overlay.set(path, n);
    if (prev) txAcct(tx, prev.owner, -1, -nodeMem(path, prev));
    txAcct(tx, n.owner, 1, nodeMem(path, n));
  }

  private del(tx: Tx | null, path: string, prev: XsNode): void {
    if (tx === null) {
      this.nodes.delete(path);
      this.charge(path, prev, -1);
      return;
    }
    tx.overlay.set(path, null);
    txAcct(tx, prev.owner, -1, -nodeMem(path, prev));
  }

  private checkSoft(domid: number, q: Quota): void {
    const a = this.acct.get(domid);
    if (a && a.mem > q.memorySoft) this.onSoftQuota(domid, a.mem);
  }

  /**
   * A transaction keeps one change per modifying request until it ends; like oxenstored's
   * per-transaction request quota, the node quota also bounds those (rewriting one node forever).
   */
  private checkTxChanges(tx: Tx | null): void {
    if (tx && tx.changes.length >= tx.maxNodes) throw new XsError('ENOSPC', 'too many changes in transaction');
  }

  private emit(tx: Tx | null, ch: Change): void {
    if (tx) tx.changes.push(ch);
    else this.onChange(ch);
  }

  /** Check the caller may add `count` nodes (of `bytes` bytes) that it will own. */
  private checkCreateQuota(c: Caller, tx: Tx | null, count: number, bytes: number): void {
    const q = c.quota;
    if (!q) return;
    const a = this.acct.get(c.domid);
    const nodes = (a?.nodes ?? 0) + (tx?.nodeDelta.get(c.domid) ?? 0);
    if (nodes + count > q.nodes) throw new XsError('ENOSPC', `domain ${c.domid} node quota`);
    const mem = (a?.mem ?? 0) + (tx?.memDelta.get(c.domid) ?? 0);
    if (mem + bytes > q.memory) throw new XsError('ENOMEM', `domain ${c.domid} memory quota`);
  }

  private checkNodeSize(c: Caller, n: XsNode): void {
    if (c.quota && nodeSize(n) > c.quota.nodeSize) throw new XsError('ENOSPC', 'node too large');
  }

  private need(c: Caller, n: XsNode, right: number): void {
    if ((permFor(c, n.perms) & right) !== right) throw new XsError('EACCES');
  }

  // ---- operations (paths are canonical and validated by the caller) ----

  read(c: Caller, tx: Tx | null, path: string): Buffer {
    const n = this.get(tx, path);
    if (!n) throw new XsError('ENOENT');
    this.need(c, n, PERM_READ);
    return n.value;
  }

  /** Node for DIRECTORY / DIRECTORY_PART after the read check. */
  dirNode(c: Caller, tx: Tx | null, path: string): XsNode {
    const n = this.get(tx, path);
    if (!n) throw new XsError('ENOENT');
    this.need(c, n, PERM_READ);
    return n;
  }

  getPerms(c: Caller, tx: Tx | null, path: string): Perms {
    const n = this.get(tx, path);
    if (!n) throw new XsError('ENOENT');
    this.need(c, n, PERM_READ);
    return n.perms;
  }

  /** Perms of a new node created by c below a parent with these perms. */
  private inherit(c: Caller, parent: Perms): Perms {
    if (c.priv) return parent;
    const out: Perm[] = [{ id: c.domid, p: parent[0]!.p }];
    for (let i = 1; i < parent.length; i++) if (parent[i]!.id !== c.domid) out.push(parent[i]!);
    return out;
  }

  /**
   * Create path and any missing ancestors (value for the last one). Returns
   * false if the node already existed (nothing done).
   */
  private create(c: Caller, tx: Tx | null, path: string, value: Buffer): void {
    // Find the nearest existing ancestor.
    const missing: string[] = [path];
    let anc = parentOf(path);
    let ancNode = this.get(tx, anc);
    while (!ancNode) {
      missing.push(anc);
      anc = parentOf(anc);
      ancNode = this.get(tx, anc);
    }
    this.need(c, ancNode, PERM_WRITE);
    const perms = this.inherit(c, ancNode.perms);
    if (c.quota) {
      if (perms.length > c.quota.permissions) throw new XsError('ENOSPC', 'too many permissions');
      let bytes = value.length;
      for (const m of missing) bytes += m.length + 64 + perms.length * 8 + m.length;
      this.checkCreateQuota(c, tx, missing.length, bytes);
      if (value.length + perms.length * 8 > c.quota.nodeSize) throw new XsError('ENOSPC', 'node too large');
      // The existing ancestor grows by one child name.
    }
    // Link the topmost missing node into the existing ancestor.
    const top = missing[missing.length - 1]!;
    const grown = ancNode.adding(baseName(top));
    if (c.quota && grown.owner === c.domid) this.checkNodeSize(c, grown);
    this.put(c, tx, anc, grown, ancNode);
    for (let i = missing.length - 1; i >= 0; i--) {
      const p = missing[i]!;
      const kids = i > 0 ? [baseName(missing[i - 1]!)] : NO_CHILDREN;
      this.put(c, tx, p, new XsNode(i === 0 ? value : EMPTY_VALUE, perms, kids, 0), undefined);
    }
  }

  write(c: Caller, tx: Tx | null, path: string, value: Buffer): void {
    this.checkTxChanges(tx);
    if (path === '/') {
      const root = this.get(tx, '/')!;
      this.need(c, root, PERM_WRITE);
      const n = root.with(value, root.perms);
      this.checkNodeSize(c, n);
      this.put(c, tx, '/', n, root);
      this.emit(tx, { kind: 'change', path, perms: n.perms });
      return;
    }
    const cur = this.get(tx, path);
    if (cur) {
      this.need(c, cur, PERM_WRITE);
      const n = cur.with(value, cur.perms);
      if (c.quota) {
        this.checkNodeSize(c, n);
        const a = this.acct.get(cur.owner);
        const delta = value.length - cur.value.length;
        if (cur.owner === c.domid && delta > 0 && (a?.mem ?? 0) + (tx?.memDelta.get(c.domid) ?? 0) + delta > c.quota.memory) {
          throw new XsError('ENOMEM', `domain ${c.domid} memory quota`);
        }
      }
      this.put(c, tx, path, n, cur);
      this.emit(tx, { kind: 'change', path, perms: n.perms });
      return;
    }
    this.create(c, tx, path, value);
    this.emit(tx, { kind: 'change', path, perms: this.get(tx, path)!.perms });
  }

  mkdir(c: Caller, tx: Tx | null, path: string): void {
    this.checkTxChanges(tx);
    const cur = this.get(tx, path);
    if (cur) return;
    this.create(c, tx, path, EMPTY_VALUE);
    this.emit(tx, { kind: 'change', path, perms: this.get(tx, path)!.perms });
  }

  rm(c: Caller, tx: Tx | null, path: string): void {
    this.checkTxChanges(tx);
    if (path === '/') throw new XsError('EINVAL', 'cannot remove the root');
    const cur = this.get(tx, path);
    if (!cur) {
      if (this.get(tx, parentOf(path))) return; // absent with a parent: fine
      throw new XsError('ENOENT');
    }
    this.need(c, cur, PERM_WRITE);
    const parentPath = parentOf(path);
    const parent = this.get(tx, parentPath)!;
    // Collect the subtree (children first for deletion).
    const removed: { path: string; perms: Perms; node: XsNode }[] = [];
    const walk = (p: string, n: XsNode): void => {
      for (const k of n.children) {
        const cp = joinPath(p, k);
        const cn = this.get(tx, cp);
        if (cn) {
          walk(cp, cn);
          removed.push({ path: cp, perms: cn.perms, node: cn });
        }
      }
    };
    walk(path, cur);
    const name = baseName(path);
    const np = parent.removing(name);
    for (const r of removed) this.del(tx, r.path, r.node);
    this.del(tx, path, cur);
    if (tx === null) this.journal?.del(path);
    this.put(null, tx, parentPath, np, parent);
    this.emit(tx, { kind: 'rm', path, perms: cur.perms, removed: removed.map((r) => ({ path: r.path, perms: r.perms })) });
  }

  setPerms(c: Caller, tx: Tx | null, path: string, perms: Perms): void {
    this.checkTxChanges(tx);
    const cur = this.get(tx, path);
    if (!cur) throw new XsError('ENOENT');
    this.need(c, cur, PERM_OWNER);
    if (!c.priv && perms[0]!.id !== cur.perms[0]!.id) throw new XsError('EPERM', 'only privileged domains change owners');
    const n = cur.with(cur.value, perms);
    if (c.quota) {
      if (perms.length > c.quota.permissions) throw new XsError('ENOSPC', 'too many permissions');
      this.checkNodeSize(c, n);
    }
    this.put(c, tx, path, n, cur);
    this.emit(tx, { kind: 'change', path, perms, oldPerms: cur.perms });
  }

  // ---- transactions ----

  /** Apply a transaction or throw EAGAIN if a node it read has changed since. */
  commit(tx: Tx): Change[] {
    if (this.gen !== tx.startGen) {
      for (const [p, seen] of tx.reads) {
        if ((this.nodes.get(p) ?? null) !== seen) throw new XsError('EAGAIN');
      }
    }
    for (const [p, n] of tx.overlay) {
      const prev = this.nodes.get(p);
      if (n === null) {
        if (prev) {
          this.nodes.delete(p);
          this.charge(p, prev, -1);
          this.journal?.del(p);
        }
      } else {
        n.gen = ++this.gen;
        if (prev) this.charge(p, prev, -1);
        this.nodes.set(p, n);
        this.charge(p, n, 1);
        this.journal?.put(p, n);
      }
    }
    for (const ch of tx.changes) this.onChange(ch);
    return tx.changes;
  }

  // ---- whole-store helpers ----

  /** Paths (pre-order) of nodes owned by domid that are not below another such node. */
  ownedRoots(domid: number): string[] {
    const mine = this.owned.get(domid);
    if (!mine) return [];
    const out: string[] = [];
    for (const p of mine) {
      if (p === '/') continue;
      // a root: no ancestor is the domain's too (removing the root takes its subtree)
      let q = parentOf(p);
      while (q !== '/' && !mine.has(q)) q = parentOf(q);
      if (q === '/') out.push(p);
    }
    return out.sort();
  }

  /** Visit every node in pre-order (parents before children). */
  forEach(fn: (path: string, n: XsNode) => void): void {
    const walk = (p: string): void => {
      const n = this.nodes.get(p);
      if (!n) return;
      fn(p, n);
      for (const k of n.children) walk(joinPath(p, k));
    };
    walk('/');
  }

  /** Consistency check: every node reachable, children exist, accounting matches. */
  check(): string[] {
    const problems: string[] = [];
    let reached = 0;
    const acct = new Map<number, Acct>();
    this.forEach((p, n) => {
      reached++;
      const a = acct.get(n.owner) ?? { nodes: 0, mem: 0 };
      a.nodes++;
      a.mem += nodeMem(p, n);
      acct.set(n.owner, a);
      const seen = new Set<string>();
      for (const k of n.children) {
        if (seen.has(k)) problems.push(`${p}: duplicate child ${k}`);
        seen.add(k);
        if (!this.nodes.has(joinPath(p, k))) problems.push(`${p}: missing child ${k}`);
      }
      if (n.childBytes !== namesBytes(n.children)) problems.push(`${p}: children size off`);
      if (n.perms.length === 0) problems.push(`${p}: no perms`);
    });
    if (reached !== this.nodes.size) problems.push(`${this.nodes.size - reached} unreachable nodes`);
    for (const [d, a] of acct) {
      const b = this.acct.get(d);
      if (!b || b.nodes !== a.nodes || b.mem !== a.mem) problems.push(`accounting of domain ${d} is off`);
    }
    for (const d of this.acct.keys()) if (!acct.has(d)) problems.push(`stale accounting for domain ${d}`);
    return problems;
  }

  /** Load a node during replay: create missing ancestors, keep existing children. */
  replayPut(path: string, value: Buffer, perms: Perms): void {
    const prev = this.nodes.get(path);
    if (prev) {
      const n = prev.with(value, perms, ++this.gen);
      this.charge(path, prev, -1);
      this.nodes.set(path, n);
      this.charge(path, n, 1);
      return;
    }
    if (path !== '/') {
      const pp = parentOf(path);
      if (!this.nodes.has(pp)) this.replayPut(pp, EMPTY_VALUE, perms);
      const parent = this.nodes.get(pp)!;
      const np = parent.adding(baseName(path), ++this.gen);
      this.charge(pp, parent, -1);
      this.nodes.set(pp, np);
      this.charge(pp, np, 1);
    }
    const n = new XsNode(value, perms, NO_CHILDREN, ++this.gen);
    this.nodes.set(path, n);
    this.charge(path, n, 1);
  }

  replayDel(path: string): void {
    const n = this.nodes.get(path);
    if (!n || path === '/') return;
    const drop = (p: string, x: XsNode): void => {
      for (const k of x.children) {
        const cp = joinPath(p, k);
        const cn = this.nodes.get(cp);
        if (cn) drop(cp, cn);
      }
      this.nodes.delete(p);
      this.charge(p, x, -1);
    };
    drop(path, n);
    const pp = parentOf(path);
    const parent = this.nodes.get(pp);
    if (parent) {
      const name = baseName(path);
      const np = parent.removing(name, ++this.gen);
      this.charge(pp, parent, -1);
      this.nodes.set(pp, np);
      this.charge(pp, np, 1);
    }
  }
}

function txAcct(tx: Tx, domid: number, nodes: number, mem: number): void {
  tx.nodeDelta.set(domid, (tx.nodeDelta.get(domid) ?? 0) + nodes);
  tx.memDelta.set(domid, (tx.memDelta.get(domid) ?? 0) + mem);
}
