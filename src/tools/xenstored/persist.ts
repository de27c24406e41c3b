// Durable store: an append-only journal of node records with group commit.
//
// File layout: an 8-byte magic "XSJRNL1\n", then records:
//   u32 bodyLen | u32 crc32(body) | body
//   body = u8 op | u16 pathLen | path
//          op 1 (PUT): u16 nPerms | nPerms × (u8 rw-bits, u16 domid) | u32 valueLen | value
//          op 2 (DEL): nothing more (the node and everything below it go)
// Records are buffered while a scheduling turn runs and written with a single
// write() followed by fdatasync() before any reply of that turn leaves the
// daemon, so an acknowledged change is on disk. A torn or corrupt tail (crash
// in the middle of a write) is detected by length/CRC and cut off at load.
// When the journal grows well past the live data it is compacted: a fresh
// snapshot (PUT records in pre-order) is written to a temporary file, synced,
// and renamed over the journal.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Journal, Perms, Store, XsNode } from './store.js';

const MAGIC = Buffer.from('XSJRNL1\n', 'latin1');
const OP_PUT = 1;
const OP_DEL = 2;

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

export function crc32(b: Buffer, start = 0, end = b.length): number {
  let c = -1;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

function encodePut(p: string, n: XsNode): Buffer {
  const plen = p.length;
  const bodyLen = 1 + 2 + plen + 2 + n.perms.length * 3 + 4 + n.value.length;
  const b = Buffer.allocUnsafe(8 + bodyLen);
  let o = 8;
  b[o++] = OP_PUT;
  b.writeUInt16LE(plen, o);
  o += 2;
  o += b.write(p, o, 'latin1');
  b.writeUInt16LE(n.perms.length, o);
  o += 2;
  for (const e of n.perms) {
    b[o++] = e.p;
    b.writeUInt16LE(e.id, o);
    o += 2;
  }
  b.writeUInt32LE(n.value.length, o);
  o += 4;
  n.value.copy(b, o);
  b.writeUInt32LE(bodyLen, 0);
  b.writeUInt32LE(crc32(b, 8), 4);
  return b;
}

function encodeDel(p: string): Buffer {
  const bodyLen = 1 + 2 + p.length;
  const b = Buffer.allocUnsafe(8 + bodyLen);
  b[8] = OP_DEL;
  b.writeUInt16LE(p.length, 9);
  b.write(p, 11, 'latin1');
  b.writeUInt32LE(bodyLen, 0);
  b.writeUInt32LE(crc32(b, 8), 4);
  return b;
}

export interface LoadResult {
  records: number;
  /** Bytes of valid journal; anything after was a torn/corrupt tail. */
  validBytes: number;
  truncatedBytes: number;
}

/** Replay a journal image into a store. */
export function replay(data: Buffer, store: Store): LoadResult {
  if (data.length < MAGIC.length || !data.subarray(0, MAGIC.length).equals(MAGIC)) {
    if (data.length === 0) return { records: 0, validBytes: 0, truncatedBytes: 0 };
    throw new Error('not a xenstored journal (bad magic)');
  }
  let o = MAGIC.length;
  let records = 0;
  while (o + 8 <= data.length) {
    const len = data.readUInt32LE(o);
    if (len < 3 || o + 8 + len > data.length) break;
    if (crc32(data, o + 8, o + 8 + len) !== data.readUInt32LE(o + 4)) break;
    const body = data.subarray(o + 8, o + 8 + len);
    const op = body[0];
    const plen = body.readUInt16LE(1);
    if (3 + plen > len) break;
    const p = body.toString('latin1', 3, 3 + plen);
    if (op === OP_PUT) {
      let q = 3 + plen;
      if (q + 2 > len) break;
      const np = body.readUInt16LE(q);
      q += 2;
      if (q + np * 3 + 4 > len || np === 0) break;
      const perms: { id: number; p: number }[] = [];
      for (let i = 0; i < np; i++) {
        perms.push({ p: body[q]! & 3, id: body.readUInt16LE(q + 1) });
        q += 3;
      }
      const vlen = body.readUInt32LE(q);
      q += 4;
      if (q + vlen !== len) break;
      store.replayPut(p, Buffer.from(body.subarray(q, q + vlen)), perms as Perms);
    } else if (op === OP_DEL) {
      store.replayDel(p);
    } else break;
    o += 8 + len;
    records++;
  }
  return { records, validBytes: o, truncatedBytes: data.length - o };
}

export interface PersistOptions {
  /** fdatasync after each group of records (default true). */
  fsync?: boolean;
  log?: (line: string) => void;
}

/** The journal file bound to a store. */
export class Persist implements Journal {
  private fd = -1;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private fileBytes = 0;
  private snapshotBytes = 0;
  private readonly fsync: boolean;
  private readonly log: (line: string) => void;
  /** Counters for memreport. */
  stats = { flushes: 0, records: 0, compactions: 0 };

  constructor(
    readonly file: string,
    opts: PersistOptions = {},
  ) {
    this.fsync = opts.fsync ?? true;
    this.log = opts.log ?? (() => {});
  }

  /** Load the journal (if any) into store, compact it, and start journaling. */
  open(store: Store): LoadResult {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    let res: LoadResult = { records: 0, validBytes: 0, truncatedBytes: 0 };
    let data: Buffer | null = null;
    try {
      data = fs.readFileSync(this.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (data) {
      res = replay(data, store);
      if (res.truncatedBytes > 0) this.log(`journal ${this.file}: dropped ${res.truncatedBytes} bytes of torn tail after ${res.records} records`);
    }
    this.compact(store);
    store.journal = this;
    return res;
  }

  put(p: string, n: XsNode): void {
    const b = encodePut(p, n);
    this.pending.push(b);
    this.pendingBytes += b.length;
  }

  del(p: string): void {
    const b = encodeDel(p);
    this.pending.push(b);
    this.pendingBytes += b.length;
  }

  get dirty(): boolean {
    return this.pending.length > 0;
  }

  /** Write and sync everything buffered. Returns true if anything was written. */
  flush(store: Store): boolean {
    if (this.pending.length === 0 || this.fd < 0) return false;
    const buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.stats.records += this.pending.length;
    this.pending = [];
    this.pendingBytes = 0;
    writeAll(this.fd, buf);
    if (this.fsync) fs.fdatasyncSync(this.fd);
    this.fileBytes += buf.length;
    this.stats.flushes++;
    if (this.fileBytes > Math.max(4 << 20, this.snapshotBytes * 4)) this.compact(store);
    return true;
  }

  /** Rewrite the journal as a snapshot of the store. */
  compact(store: Store): void {
    const tmp = `${this.file}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      const parts: Buffer[] = [MAGIC];
      let bytes = MAGIC.length;
      store.forEach((p, n) => {
        const b = encodePut(p, n);
        parts.push(b);
        bytes += b.length;
      });
      writeAll(fd, Buffer.concat(parts, bytes));
      fs.fsyncSync(fd);
      this.snapshotBytes = bytes;
      this.fileBytes = bytes;
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
    syncDir(path.dirname(this.file));
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = fs.openSync(this.file, 'a', 0o600);
    this.pending = [];
    this.pendingBytes = 0;
    this.stats.compactions++;
  }

  get sizes(): { file: number; snapshot: number } {
    return { file: this.fileBytes, snapshot: this.snapshotBytes };
  }

  close(store: Store): void {
    if (this.fd < 0) return;
    this.flush(store);
    fs.closeSync(this.fd);
    this.fd = -1;
    if (store.journal === this) store.journal = null;
  }
}

function writeAll(fd: number, b: Buffer): void {
  let o = 0;
  while (o < b.length) o += fs.writeSync(fd, b, o, b.length - o);
}

function syncDir(dir: string): void {
  let fd = -1;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}
