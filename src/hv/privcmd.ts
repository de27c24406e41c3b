// The privileged interface a process domain reaches the hypervisor through:
// what Linux's /dev/xen/evtchn and /dev/xen/gntdev give a driver domain
// (tools/libs/evtchn, tools/libs/gnttab), over a stream the toolstack hands
// the process when it starts it. Every call is made as the process domain
// at the other end, with the checks Xen makes for that domid: a grant names
// the domain it is for, an unbound port the domain that may bind it.
//
// Frames: u32 length of what follows, u32 length of the JSON header, the
// header, then raw bytes (the data of a grant copy's local sides, in the
// order of its operations). A process may instead register memory files
// of its own as copy buffers ('buffer': a memfd it holds, which the
// hypervisor maps): then a copy's local side names a buffer and an offset,
// and only the operations cross the stream. Requests carrying an `id` are answered with the
// same id; notify and unbind are not answered (their errors are the
// caller's bug, logged here). Events come unasked: { op: 'event', port }.

import fs from 'node:fs';
import type { Duplex } from 'node:stream';
import { SharedMemory } from '../kvm/memory.js';
import { GNTST } from './abi/grant_table.js';
import { PAGE_SIZE } from './abi/xen.js';
import { XenError, EINVAL, ESRCH, ENOSYS } from './errno.js';
import type { PortHandler } from './process_domain.js';
import type { Gntdev, GntdevCopySide } from './grant_table.js';
import type { EvtchnDomain } from './evtchn_core.js';

/** A frame's header may not exceed this (a batch of copy operations included). */
export const PRIVCMD_MAX_HEADER = 1 << 20;
/** Nor its data (a batch's local bytes). */
export const PRIVCMD_MAX_DATA = 8 << 20;

/** A registered copy buffer may not exceed this (blkback's largest: a request's 256 segments). */
export const PRIVCMD_MAX_BUFFER = 4 << 20;
/** Nor may a process register more than this many. */
export const PRIVCMD_MAX_BUFFERS = 1024;

/**
 * One side of a copy on the wire: a grant, the caller's own bytes (carried in
 * the frame's data: a source says how many it put there, which are taken
 * whatever becomes of the op), or bytes of a registered buffer.
 */
export type WireCopySide = { domid: number; ref: number; offset: number } | { local: true; bytes?: number } | { buffer: number; offset: number };
export interface WireCopyOp { source: WireCopySide; dest: WireCopySide; len: number }

export type PrivcmdRequest =
  | { op: 'bind'; id: number; domid: number; port: number }
  | { op: 'alloc_unbound'; id: number; remote: number }
  | { op: 'unbind'; port: number }
  | { op: 'notify'; port: number }
  | { op: 'map'; id: number; domid: number; ref: number; readonly: boolean }
  | { op: 'unmap'; id: number; handle: number }
  | { op: 'copy'; id: number; ops: WireCopyOp[] }
  /** a memfd of the caller's, open in it as `fd`, `size` bytes, to be copy buffer `buffer` */
  | { op: 'buffer'; buffer: number; fd: number; size: number };

export type PrivcmdReply =
  | { op: 'event'; port: number }
  | { id: number; error: string; errno?: number }
  | { id: number; port: number }
  | { id: number; status: number }
  /** a mapping: the granter's memory file, open in process `pid` as `fd`, `size` bytes, the page at `hostPage` */
  | { id: number; handle: number; pid: number; fd: number; size: number; hostPage: number }
  | { id: number; statuses: number[] };

export function encodeFrame(header: object, data?: Uint8Array): Buffer {
  const h = Buffer.from(JSON.stringify(header));
  const n = data?.length ?? 0;
  const f = Buffer.allocUnsafe(8 + h.length + n);
  f.writeUInt32LE(4 + h.length + n, 0);
  f.writeUInt32LE(h.length, 4);
  h.copy(f, 8);
  if (data) f.set(data, 8 + h.length);
  return f;
}

/** Splits a byte stream into frames; a frame over the limits or with a broken header is an error (the stream is dropped). */
export class FrameSplitter {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
  }

  /** The next whole frame, null when more bytes are needed; throws on a malformed one. */
  next(): { header: Record<string, unknown>; data: Buffer } | null {
    if (this.buf.length < 8) return null;
    const len = this.buf.readUInt32LE(0), hlen = this.buf.readUInt32LE(4);
    if (hlen > PRIVCMD_MAX_HEADER || len < 4 + hlen || len - 4 - hlen > PRIVCMD_MAX_DATA) throw new Error(`bad frame: ${len} bytes, header ${hlen}`);
    if (this.buf.length < 4 + len) return null;
    const header = JSON.parse(this.buf.subarray(8, 8 + hlen).toString()) as unknown;
    if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new Error('bad frame: the header is not an object');
    const data = this.buf.subarray(8 + hlen, 4 + len);
    this.buf = this.buf.subarray(4 + len);
    return { header: header as Record<string, unknown>, data };
  }
}

const isInt = (v: unknown): v is number => Number.isInteger(v);

/**
 * The domain a privileged stream acts as: a process domain (ProcessDomain),
 * or one process of the control domain (its ports in domain 0's table, only
 * its own reachable through the stream, as Linux's evtchn device gives each
 * opener its own).
 */
export interface PrivcmdDomain {
  readonly domid: number;
  readonly gntdev: Gntdev;
  bindInterdomain(rd: EvtchnDomain, remotePort: number, handler: PortHandler): number;
  allocUnbound(remote: number, handler: PortHandler): number;
  send(port: number): void;
  close(port: number): void;
}

export interface PrivcmdHost {
  /** the event-channel endpoint of a domain (guest or process), null when there is none */
  evtchnDomain(domid: number): EvtchnDomain | null;
  /** the memory file of guest `domid`: its fd in this process and its size */
  memoryFile(domid: number): { fd: number; size: number } | null;
  log(line: string): void;
}

/**
 * Serves one process domain's stream. Ends (leaving the domain to its
 * owner to destroy) when the stream closes or sends a malformed frame.
 */
export class PrivcmdServer {
  private readonly frames = new FrameSplitter();
  private closed = false;
  /** its mappings' handles: only it may unmap them */
  private readonly handles = new Set<number>();
  /** its registered copy buffers, mapped here */
  private readonly buffers = new Map<number, { fd: number; mem: SharedMemory }>();

  /** `peerPid`: the process at the other end (its memory files are opened through /proc/<pid>/fd); without it, no buffers */
  constructor(private readonly pd: PrivcmdDomain, private readonly stream: Duplex, private readonly host: PrivcmdHost, private readonly opts: { mayMap: boolean; peerPid?: number }) {
    stream.on('data', (chunk: Buffer) => this.input(chunk));
    stream.on('error', () => {});
    stream.on('close', () => {
      this.closed = true;
      for (const b of this.buffers.values()) {
        b.mem.close();
        fs.closeSync(b.fd);
      }
      this.buffers.clear();
    });
  }

  /** 'buffer': maps the peer's memfd (nothing else: not another process's, not a file) as copy buffer `id`. */
  private addBuffer(id: unknown, fd: unknown, size: unknown): void {
    const pid = this.opts.peerPid;
    if (pid === undefined) throw new XenError(EINVAL, 'buffer: this process domain may not register buffers');
    if (!isInt(id) || this.buffers.has(id) || this.buffers.size >= PRIVCMD_MAX_BUFFERS) throw new XenError(EINVAL, `buffer ${String(id)}: not a new buffer id, or too many`);
    if (!isInt(fd) || !isInt(size) || size <= 0 || size > PRIVCMD_MAX_BUFFER || size % PAGE_SIZE) throw new XenError(EINVAL, `buffer ${id}: bad fd or size`);
    const path = `/proc/${pid}/fd/${fd}`;
    if (!fs.readlinkSync(path).startsWith('/memfd:')) throw new XenError(EINVAL, `buffer ${id}: fd ${fd} is not a memory file`);
    const local = fs.openSync(path, 'r+');
    try {
      if (fs.fstatSync(local).size < size) throw new XenError(EINVAL, `buffer ${id}: the memory file is smaller than ${size}`);
      this.buffers.set(id, { fd: local, mem: SharedMemory.attach(local, size) });
    } catch (e) {
      fs.closeSync(local);
      throw e;
    }
  }

  private send(header: PrivcmdReply, data?: Uint8Array): void {
    if (!this.closed) this.stream.write(encodeFrame(header, data));
  }

  private input(chunk: Buffer): void {
    this.frames.push(chunk);
    for (;;) {
      let f;
      try {
        f = this.frames.next();
      } catch (e) {
        this.host.log(`d${this.pd.domid}: privcmd: ${(e as Error).message}; connection dropped`);
        this.stream.destroy();
        return;
      }
      if (!f) return;
      this.request(f.header, f.data);
    }
  }

  private request(h: Record<string, unknown>, data: Buffer): void {
    const id = isInt(h.id) ? h.id : -1;
    try {
      switch (h.op) {
        case 'bind': {
          if (!isInt(h.domid) || !isInt(h.port)) throw new XenError(EINVAL, 'bind: domid and port must be integers');
          const rd = this.host.evtchnDomain(h.domid);
          if (!rd) throw new XenError(ESRCH, `no domain ${h.domid}`);
          const port = this.pd.bindInterdomain(rd, h.port, (p) => this.send({ op: 'event', port: p }));
          this.send({ id, port });
          return;
        }
        case 'alloc_unbound': {
          if (!isInt(h.remote)) throw new XenError(EINVAL, 'alloc_unbound: remote must be a domid');
          const port = this.pd.allocUnbound(h.remote, (p) => this.send({ op: 'event', port: p }));
          this.send({ id, port });
          return;
        }
        case 'unbind':
          if (isInt(h.port)) this.pd.close(h.port);
          return;
        case 'notify':
          if (isInt(h.port)) this.pd.send(h.port);
          return;
        case 'map': {
          if (!isInt(h.domid) || !isInt(h.ref)) return this.send({ id, status: GNTST.general_error });
          if (!this.opts.mayMap) return this.send({ id, status: GNTST.permission_denied });
          const file = this.host.memoryFile(h.domid);
          if (!file) return this.send({ id, status: GNTST.bad_domain });
          const m = this.pd.gntdev.map(h.domid, h.ref, h.readonly === true);
          if (typeof m === 'number') return this.send({ id, status: m });
          this.handles.add(m.handle);
          this.send({ id, handle: m.handle, pid: process.pid, fd: file.fd, size: file.size, hostPage: m.hostPage });
          return;
        }
        case 'unmap': {
          if (!isInt(h.handle) || !this.handles.delete(h.handle)) return this.send({ id, status: GNTST.bad_handle });
          this.send({ id, status: this.pd.gntdev.unmap(h.handle) });
          return;
        }
        case 'copy':
          return this.copy(id, h.ops, data);
        case 'buffer':
          return this.addBuffer(h.buffer, h.fd, h.size);
        default:
          throw new XenError(ENOSYS, `unknown operation '${String(h.op)}'`);
      }
    } catch (e) {
      const errno = e instanceof XenError ? e.errno : undefined;
      if (id >= 0) this.send({ id, error: (e as Error).message, errno });
      else this.host.log(`d${this.pd.domid}: privcmd ${String(h.op)}: ${(e as Error).message}`);
    }
  }

  /** GNTTABOP_copy as the process domain: local sources come in the frame's data, local destinations go back in the reply's. */
  private copy(id: number, raw: unknown, data: Buffer): void {
    if (!Array.isArray(raw)) return this.send({ id, error: 'copy: ops must be a list' });
    let at = 0; // where the next local source's bytes start in `data`
    const side = (s: unknown, len: number, src: boolean): GntdevCopySide | number => {
      if (typeof s !== 'object' || s === null) return GNTST.bad_copy_arg;
      const o = s as Record<string, unknown>;
      if (o.buffer !== undefined) {
        // a registered buffer: the copy reads or writes it in place
        const b = isInt(o.buffer) ? this.buffers.get(o.buffer) : undefined;
        if (!b || !isInt(o.offset) || o.offset < 0 || o.offset + len > b.mem.size) return GNTST.bad_copy_arg;
        return { buf: b.mem.bytes.subarray(o.offset, o.offset + len), offset: 0 };
      }
      if (o.local === true) {
        if (!src) return { buf: new Uint8Array(len), offset: 0 };
        const buf = inline!;
        return buf.length === len ? { buf, offset: 0 } : GNTST.bad_copy_arg;
      }
      if (!isInt(o.domid) || !isInt(o.ref) || !isInt(o.offset)) return GNTST.bad_copy_arg;
      return { domid: o.domid, ref: o.ref, offset: o.offset };
    };
    const statuses: number[] = [];
    const out: Uint8Array[] = [];
    let inline: Buffer | null = null;
    for (const op of raw as unknown[]) {
      const o = (typeof op === 'object' && op !== null ? op : {}) as Record<string, unknown>;
      // an inline source's bytes are taken first, so a bad op cannot shift the ones after it
      const src = (typeof o.source === 'object' && o.source !== null ? o.source : {}) as Record<string, unknown>;
      const bytes = src.local === true && isInt(src.bytes) && src.bytes >= 0 ? src.bytes : 0;
      inline = data.subarray(at, at + bytes);
      at += bytes;
      const len = o.len;
      if (!isInt(len) || len < 0 || len > PAGE_SIZE) {
        statuses.push(GNTST.bad_copy_arg);
        continue;
      }
      const source = side(o.source, len, true), dest = side(o.dest, len, false);
      if (typeof source === 'number' || typeof dest === 'number') {
        statuses.push(typeof source === 'number' ? source : dest as number);
        continue;
      }
      const [st] = this.pd.gntdev.copy([{ source, dest, len }]);
      statuses.push(st!);
      if (st === GNTST.okay && 'buf' in dest && (o.dest as Record<string, unknown>).local === true) out.push(dest.buf);
    }
    this.send({ id, statuses }, out.length ? Buffer.concat(out) : undefined);
  }

  /** The process is gone: its mappings go with its domain (ProcessDomain.destroy). */
  get ended(): boolean {
    return this.closed;
  }
}
