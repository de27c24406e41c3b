// Guest RAM as host shared memory: a memfd mapped MAP_SHARED. The memfd is what
// makes the same pages reachable from every thread (each maps it itself) and,
// later, from another process (a driver domain) through the fd.

import * as libc from './libc.js';

export class SharedMemory {
  private mapping: unknown;
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;
  /** Host virtual address of the mapping (for KVM_SET_USER_MEMORY_REGION). */
  readonly address: bigint;
  private closed = false;

  private constructor(readonly fd: number, readonly size: number, readonly ownsFd: boolean) {
    const p = libc.mmap(null, size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
    if (libc.isMapFailed(p)) throw new libc.OsError(`mmap(${size} bytes)`, libc.errno());
    this.mapping = p;
    this.address = libc.address(p);
    this.buffer = libc.view(p, size);
    this.bytes = new Uint8Array(this.buffer);
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

  /** Gives pages back to the host (like a balloon): they read as zero afterwards. */
  discard(offset: number, length: number): void {
    libc.check(libc.fallocate(this.fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, offset, length), 'fallocate(PUNCH_HOLE)');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.munmap(this.mapping, this.size);
    if (this.ownsFd) libc.close(this.fd);
  }
}
