// A process domain's devices (libs/devices.ts) over the privileged stream
// its toolstack gave it (hv/privcmd.ts): event channels and grants as that
// domain, each call a frame to the hypervisor's process. A grant copy's
// local side is a buffer from allocBuffer: a memory file of this process's
// that the hypervisor maps too (registered once), so only the operations
// cross the stream; bytes from anywhere else travel in the frame. Either way
// the process never sees a guest page it was not granted. A grant map (for
// rings) maps the granter's memory file, which only a process domain
// trusted with maps is told of.

import fs from 'node:fs';
import type { Duplex } from 'node:stream';
import { SharedMemory } from '../../kvm/memory.js';
import { GNTST } from '../../hv/abi/grant_table.js';
import { PAGE_SIZE } from '../../hv/abi/xen.js';
import { encodeFrame, FrameSplitter, PRIVCMD_MAX_BUFFER, PRIVCMD_MAX_BUFFERS, type PrivcmdReply, type WireCopyOp } from '../../hv/privcmd.js';
import type { GrantCopyOp, GrantMapping, XenDevices } from './devices.js';
import type { XsClientBase } from '../xenstored/client.js';

/** A granter's memory file mapped here, shared by the grants of it mapped at once. */
interface MappedFile { key: string; fd: number; mem: SharedMemory; users: number }

export class PrivcmdError extends Error {
  constructor(message: string, readonly errno?: number) {
    super(message);
    this.name = 'PrivcmdError';
  }
}

/** The devices of process domain `domid`, its calls going over `stream`. */
export function processDevices(domid: number, stream: Duplex, xenstore: XsClientBase): XenDevices & { closed: Promise<void> } {
  /** copy buffers registered with the hypervisor: where each lies in the ArrayBuffer its bytes view */
  const buffers: { id: number; mem: SharedMemory; buffer: ArrayBufferLike; start: number; end: number }[] = [];
  /** the registered buffer and offset of a local side, if its bytes are in one */
  const inBuffer = (buf: Uint8Array, offset: number, len: number): { buffer: number; offset: number } | null => {
    const at = buf.byteOffset + offset;
    const b = buffers.find((x) => x.buffer === buf.buffer && at >= x.start && at + len <= x.end);
    return b ? { buffer: b.id, offset: at - b.start } : null;
  };
  const frames = new FrameSplitter();
  const waiting = new Map<number, { resolve: (r: { header: PrivcmdReply; data: Buffer }) => void; reject: (e: Error) => void }>();
  const handlers = new Map<number, () => void>();
  /** events for a port whose bind's answer is still on its way to its caller (they come in the same read) */
  const early = new Set<number>();
  const files = new Map<string, MappedFile>();
  const mappings = new Map<number, MappedFile>();
  let nextId = 1;
  let gone: Error | null = null;
  let markClosed!: () => void;
  const closed = new Promise<void>((r) => { markClosed = r; });

  const fail = (e: Error) => {
    if (gone) return;
    gone = e;
    for (const w of waiting.values()) w.reject(e);
    waiting.clear();
    markClosed();
  };
  stream.on('data', (chunk: Buffer) => {
    frames.push(chunk);
    for (;;) {
      let f;
      try { f = frames.next(); } catch (e) { stream.destroy(e as Error); return; }
      if (!f) return;
      const h = f.header as PrivcmdReply;
      if ('op' in h) {
        const handler = handlers.get(h.port);
        if (handler) handler();
        else early.add(h.port);
        continue;
      }
      const w = waiting.get(h.id);
      waiting.delete(h.id);
      w?.resolve({ header: h, data: f.data });
    }
  });
  stream.on('error', (e) => fail(e));
  stream.on('close', () => fail(new PrivcmdError('the hypervisor closed the privileged interface')));

  const call = (header: Record<string, unknown>, data?: Uint8Array): Promise<{ header: PrivcmdReply; data: Buffer }> => {
    if (gone) return Promise.reject(gone);
    const id = nextId++;
    return new Promise((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      stream.write(encodeFrame({ ...header, id }, data));
    });
  };
  const tell = (header: Record<string, unknown>) => {
    if (!gone) stream.write(encodeFrame(header));
  };
  const failed = (h: PrivcmdReply): PrivcmdError | null => ('error' in h ? new PrivcmdError(h.error, h.errno) : null);

  const release = (f: MappedFile) => {
    if (--f.users > 0) return;
    files.delete(f.key);
    f.mem.close();
    fs.closeSync(f.fd);
  };

  /** A call that answers with a new local port: its handler set before any event for it is lost. */
  const newPort = async (req: Record<string, unknown>, onEvent: () => void): Promise<number> => {
    const { header } = await call(req);
    const err = failed(header);
    if (err) throw err;
    const port = (header as { port: number }).port;
    handlers.set(port, onEvent);
    // a bound port starts pending (an event may have been sent before the bind): its event may have come first
    if (early.delete(port)) queueMicrotask(onEvent);
    return port;
  };

  return {
    domid,
    xenstore,
    closed,
    evtchn: {
      bindInterdomain: (remoteDomid, remotePort, onEvent) => newPort({ op: 'bind', domid: remoteDomid, port: remotePort }, onEvent),
      allocUnbound: (remote, onEvent) => newPort({ op: 'alloc_unbound', remote }, onEvent),
      notify: (port) => tell({ op: 'notify', port }),
      unbind: (port) => {
        handlers.delete(port);
        early.delete(port);
        tell({ op: 'unbind', port });
      },
    },
    gnttab: {
      copy: async (ops: GrantCopyOp[]) => {
        const wire: WireCopyOp[] = [];
        const out: Uint8Array[] = [];
        const inline: boolean[] = [];
        for (const op of ops) {
          const s = op.source, d = op.dest;
          const sb = 'buf' in s ? inBuffer(s.buf, s.offset, op.len) : null, db = 'buf' in d ? inBuffer(d.buf, d.offset, op.len) : null;
          const bytes = 'buf' in s && !sb ? s.buf.subarray(s.offset, s.offset + op.len) : null;
          if (bytes) out.push(bytes);
          inline.push('buf' in d && !db);
          wire.push({ source: 'buf' in s ? sb ?? { local: true, bytes: bytes!.length } : s, dest: 'buf' in d ? db ?? { local: true } : d, len: op.len });
        }
        const { header, data } = await call({ op: 'copy', ops: wire }, out.length ? Buffer.concat(out) : undefined);
        const err = failed(header);
        if (err) throw err;
        const statuses = (header as { statuses: number[] }).statuses;
        let at = 0;
        ops.forEach((op, i) => {
          const d = op.dest;
          // a registered buffer was written in place; bytes for anywhere else came back in the frame
          if (statuses[i] !== GNTST.okay || !('buf' in d) || !inline[i]) return;
          d.buf.set(data.subarray(at, at + op.len), d.offset);
          at += op.len;
        });
        return statuses;
      },
      map: async (granter, ref, readonly): Promise<GrantMapping | number> => {
        const { header } = await call({ op: 'map', domid: granter, ref, readonly });
        const err = failed(header);
        if (err) throw err;
        if ('status' in header) return header.status;
        const m = header as { handle: number; pid: number; fd: number; size: number; hostPage: number };
        const key = `${m.pid}:${m.fd}:${granter}`;
        let f = files.get(key);
        try {
          if (!f) {
            // the hypervisor's open file, reached through its process (same user): the guest's memory as it maps it
            const fd = fs.openSync(`/proc/${m.pid}/fd/${m.fd}`, 'r+');
            try {
              f = { key, fd, mem: SharedMemory.attach(fd, m.size), users: 0 };
            } catch (e) {
              fs.closeSync(fd);
              throw e;
            }
            files.set(key, f);
          }
        } catch {
          await call({ op: 'unmap', handle: m.handle }).catch(() => {});
          return GNTST.bad_domain;
        }
        f.users++;
        mappings.set(m.handle, f);
        return { handle: m.handle, domid: granter, ref, readonly, page: f.mem.bytes.subarray(m.hostPage * PAGE_SIZE, (m.hostPage + 1) * PAGE_SIZE) };
      },
      unmap: async (handle) => {
        const { header } = await call({ op: 'unmap', handle });
        const err = failed(header);
        if (err) throw err;
        const f = mappings.get(handle);
        mappings.delete(handle);
        if (f) release(f);
        return (header as { status: number }).status;
      },
      allocBuffer: (bytes) => {
        const size = Math.ceil(Math.max(bytes, 1) / PAGE_SIZE) * PAGE_SIZE;
        if (size > PRIVCMD_MAX_BUFFER || buffers.length >= PRIVCMD_MAX_BUFFERS || gone) return new Uint8Array(bytes);
        const mem = SharedMemory.create('privcmd-copy-buffer', size);
        const id = buffers.length + 1;
        buffers.push({ id, mem, buffer: mem.bytes.buffer, start: mem.bytes.byteOffset, end: mem.bytes.byteOffset + size });
        // in order with the copies that use it: the stream carries frames in order
        tell({ op: 'buffer', buffer: id, fd: mem.fd, size });
        return mem.bytes.subarray(0, bytes);
      },
    },
    close: () => {
      for (const f of [...files.values()]) {
        f.users = 1;
        release(f);
      }
      mappings.clear();
      handlers.clear();
      stream.end();
      for (const b of buffers.splice(0)) b.mem.close();
    },
  };
}
