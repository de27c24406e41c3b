// Guest RAM as host shared memory: a memfd mapped MAP_SHARED. The memfd is what
// makes the same pages reachable from every thread (each maps it itself) and,
// later, from another process (a driver domain) through the fd.
//
// V8 counts every ArrayBuffer's length as "external memory" and collects
// garbage when that grows by some tens of MiB, so one ArrayBuffer per mapping
// meant a full GC every dozen domains created (each thread maps each domain).
// Memories up to ARENA_MAX_RANGE are therefore mapped into a per-thread arena:
// 4 GiB of reserved address space with one ArrayBuffer over all of it, made
// once; a domain's memory is a range in it, mapped over the reservation with
// MAP_FIXED and put back to PROT_NONE when closed (a stale access faults, as
// after munmap). Ranges are handed out next-fit, so a freed one is reused as
// late as possible.

import * as libc from './libc.js';

/** Bytes of one arena chunk: the largest ArrayBuffer koffi.view makes. */
const ARENA_CHUNK = 2 ** 32;
/** Memories larger than this get a mapping (and ArrayBuffer) of their own. */
export const ARENA_MAX_RANGE = 2 ** 30;
/** Ranges are whole 2 MiB units of a chunk (so they can be backed by huge pages if the chunk is aligned). */
const ARENA_ALIGN = 2 << 20;

function reserve(size: number): unknown {
  const p = libc.mmap(null, size, libc.PROT_NONE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE, -1, 0);
  if (libc.isMapFailed(p)) throw new libc.OsError(`mmap(reserve ${size} bytes)`, libc.errno());
  return p;
}

/** One reserved 4 GiB region of this thread's arena and its ranges in use. */
class ArenaChunk {
  readonly address: bigint;
  readonly buffer: ArrayBuffer;
  /** ranges in use, sorted by offset */
  private used: { off: number; len: number }[] = [];
  /** where the next search starts (next-fit) */
  private cursor = 0;

  constructor() {
    const p = reserve(ARENA_CHUNK);
    this.address = libc.address(p);
    this.buffer = libc.view(p, ARENA_CHUNK);
  }

  /** A free range of `len` bytes (ARENA_ALIGN multiple), or -1. */
  alloc(len: number): number {
    const off = this.fit(this.cursor, ARENA_CHUNK, len) ?? this.fit(0, this.cursor, len);
    if (off === null) return -1;
    let i = 0;
    while (i < this.used.length && this.used[i]!.off < off) i++;
    this.used.splice(i, 0, { off, len });
    this.cursor = off + len;
    return off;
  }

  /** First gap of `len` bytes starting in [from, to). */
  private fit(from: number, to: number, len: number): number | null {
    let start = from;
    for (const r of this.used) {
      if (r.off + r.len <= start) continue;
      if (r.off >= start + len) break;
      start = r.off + r.len;
    }
    return start < to && start + len <= ARENA_CHUNK ? start : null;
  }

  free(off: number): void {
    const i = this.used.findIndex((r) => r.off === off);
    if (i >= 0) this.used.splice(i, 1);
  }

  get empty(): boolean {
    return this.used.length === 0;
  }
}

/** This thread's arena (module state is per thread: each worker has its own). */
const chunks: ArenaChunk[] = [];

function arenaMap(fd: number, size: number): { chunk: ArenaChunk; off: number } {
  const len = Math.ceil(size / ARENA_ALIGN) * ARENA_ALIGN;
  let chunk: ArenaChunk | undefined;
  let off = -1;
  for (const c of chunks) {
    off = c.alloc(len);
    if (off >= 0) { chunk = c; break; }
  }
  if (!chunk) {
    chunk = new ArenaChunk();
    chunks.push(chunk);
    off = chunk.alloc(len);
  }
  const p = libc.mmapAt(chunk.address + BigInt(off), size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED | libc.MAP_FIXED, fd, 0);
  if (libc.isMapFailed(p)) {
    const e = libc.errno();
    chunk.free(off);
    throw new libc.OsError(`mmap(${size} bytes into the guest memory arena)`, e);
  }
  return { chunk, off };
}

function arenaUnmap(chunk: ArenaChunk, off: number, size: number): void {
  // back to a reservation: the pages go, the address space stays ours
  const p = libc.mmapAt(chunk.address + BigInt(off), size, libc.PROT_NONE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE | libc.MAP_FIXED, -1, 0);
  if (libc.isMapFailed(p)) throw new libc.OsError('mmap(PROT_NONE over a guest memory range)', libc.errno());
  chunk.free(off);
}

export class SharedMemory {
  /** the ArrayBuffer `bytes` is a view of (an arena chunk, or this memory's own mapping): index it from bytes.byteOffset */
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;
  /** Host virtual address of the mapping (for KVM_SET_USER_MEMORY_REGION). */
  readonly address: bigint;
  private readonly arena: { chunk: ArenaChunk; off: number } | null;
  private readonly own: unknown;
  private closed = false;

  private constructor(readonly fd: number, readonly size: number, readonly ownsFd: boolean) {
    if (size <= ARENA_MAX_RANGE) {
      this.arena = arenaMap(fd, size);
      this.own = null;
      this.buffer = this.arena.chunk.buffer;
      this.bytes = new Uint8Array(this.buffer, this.arena.off, size);
      this.address = this.arena.chunk.address + BigInt(this.arena.off);
    } else {
      const p = libc.mmap(null, size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
      if (libc.isMapFailed(p)) throw new libc.OsError(`mmap(${size} bytes)`, libc.errno());
      this.arena = null;
      this.own = p;
      this.buffer = libc.view(p, size);
      this.bytes = new Uint8Array(this.buffer);
      this.address = libc.address(p);
    }
  }

  /** A new zero-filled memfd of `size` bytes (page-multiple), mapped here. Pages are allocated on first touch. */
  static create(name: string, size: number): SharedMemory {
    if (size <= 0 || size % 4096 !== 0) throw new RangeError(`shared memory size ${size} is not a positive page multiple`);
    const fd = libc.check(libc.memfdCreate(name, libc.MFD_CLOEXEC), 'memfd_create');
    try {
      libc.check(libc.ftruncate(fd, size), 'ftruncate');
      return new SharedMemory(fd, size, true);
    } catch (e) {
      libc.close(fd);
      throw e;
    }
  }

  /** Maps an existing memfd (created by another thread of this process) into this thread's view. */
  static attach(fd: number, size: number): SharedMemory {
    return new SharedMemory(fd, size, false);
  }

  /** A DataView over exactly this memory (offsets from its start). */
  dataView(): DataView {
    return new DataView(this.buffer, this.bytes.byteOffset, this.size);
  }

  /** Gives pages back to the host (like a balloon): they read as zero afterwards. */
  discard(offset: number, length: number): void {
    libc.check(libc.fallocate(this.fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, offset, length), 'fallocate(PUNCH_HOLE)');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.arena) arenaUnmap(this.arena.chunk, this.arena.off, this.size);
    else libc.munmap(this.own, this.size);
    if (this.ownsFd) libc.close(this.fd);
  }
}

/** This thread's arena: chunks reserved and ranges in use (tests, diagnostics). */
export function arenaStats(): { chunks: number; empty: number } {
  return { chunks: chunks.length, empty: chunks.filter((c) => c.empty).length };
}
