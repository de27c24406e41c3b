// The few libc entry points the hardware boundary needs, bound with koffi.
// Every call returns the raw C result; callers turn -1 into an OsError with
// errno so the message names the call that failed.

import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

export const open = libc.func('int open(const char *path, int flags, int mode)') as (p: string, f: number, m: number) => number;
export const close = libc.func('int close(int fd)') as (fd: number) => number;
/** ioctl with a pointer argument (struct in a Buffer, or null). */
export const ioctlPtr = libc.func('int ioctl(int fd, unsigned long req, void *arg)') as (fd: number, req: number, arg: Uint8Array | null) => number;
/** ioctl with an integer argument (KVM_CREATE_VCPU, KVM_CHECK_EXTENSION...). */
export const ioctlInt = libc.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']) as (fd: number, req: number, arg: number) => number;
export const mmap = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off)') as (a: null, len: number, prot: number, flags: number, fd: number, off: number) => unknown;
/** mmap at a given address (MAP_FIXED use): the address as a number, the result as a pointer. */
export const mmapAt = libc.func('mmap', 'void *', ['uint64', 'size_t', 'int', 'int', 'int', 'long']) as (a: bigint, len: number, prot: number, flags: number, fd: number, off: number) => unknown;
export const munmap = libc.func('int munmap(void *addr, size_t len)') as (a: unknown, len: number) => number;
export const memfdCreate = libc.func('int memfd_create(const char *name, unsigned int flags)') as (n: string, f: number) => number;
export const ftruncate = libc.func('int ftruncate(int fd, long len)') as (fd: number, len: number) => number;
const fallocateFn = libc.func('int fallocate(int fd, int mode, long off, long len)');
export const fallocate = fallocateFn as (fd: number, mode: number, off: number, len: number) => number;
/** fallocate on one of koffi's worker threads (a disk's discard must not hold up the event loop): the result to `done` */
export const fallocateAsync = (fd: number, mode: number, off: number, len: number, done: (err: unknown, r: number) => void): void => {
  fallocateFn.async(fd, mode, off, len, done);
};
export const gettid = libc.func('int gettid(void)') as () => number;
export const getpid = libc.func('int getpid(void)') as () => number;
const syscall3 = libc.func('syscall', 'long', ['long', 'long', 'long', 'long']) as (n: number, a: number, b: number, c: number) => number;
export const pthreadSigmask = libc.func('int pthread_sigmask(int how, void *set, void *oldset)') as (how: number, set: Uint8Array | null, old: Uint8Array | null) => number;
export const sigtimedwait = libc.func('int sigtimedwait(void *set, void *info, void *timeout)') as (set: Uint8Array, info: null, ts: Uint8Array) => number;
export const read = libc.func('long read(int fd, void *buf, size_t n)') as (fd: number, buf: Uint8Array, n: number) => number;
export const write = libc.func('long write(int fd, const void *buf, size_t n)') as (fd: number, buf: Uint8Array, n: number) => number;
export const socket = libc.func('int socket(int domain, int type, int protocol)') as (d: number, t: number, p: number) => number;
export const eventfd = libc.func('int eventfd(unsigned int initval, int flags)') as (v: number, f: number) => number;
/** poll(2) over `n` struct pollfd (8 bytes each: int fd, short events, short revents) */
export const poll = libc.func('int poll(void *fds, unsigned long n, int timeout)') as (fds: Uint8Array, n: number, timeout: number) => number;
export const strerror = libc.func('const char *strerror(int errnum)') as (e: number) => string;

const SYS_tgkill = 234; // asm/unistd_64.h
export function tgkill(pid: number, tid: number, sig: number): number {
  return syscall3(SYS_tgkill, pid, tid, sig);
}

export const errno = (): number => koffi.errno();
export const address = (p: unknown): bigint => koffi.address(p);
export const view = (p: unknown, len: number): ArrayBuffer => koffi.view(p, len);

// fcntl.h / sys/mman.h / signal.h values for x86-64 Linux.
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const EAGAIN = 11;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_NONE = 0;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MFD_CLOEXEC = 1;
export const FALLOC_FL_KEEP_SIZE = 1;
export const FALLOC_FL_PUNCH_HOLE = 2;
export const SIG_BLOCK = 0;
export const SIG_UNBLOCK = 1;
export const SIG_SETMASK = 2;
/** glibc's sigset_t is 1024 bits; the kernel's is 64. */
export const SIGSET_BYTES = 128;
export const KERNEL_SIGSET_BYTES = 8;

export class OsError extends Error {
  constructor(readonly call: string, readonly errno: number) {
    super(`${call}: ${strerror(errno)} (errno ${errno})`);
  }
}

/** Returns r, or throws OsError(call, errno) when r is negative. */
export function check(r: number, call: string): number {
  if (r < 0) throw new OsError(call, errno());
  return r;
}

export const EINTR = 4;

/** Runs a call that a signal may interrupt before it did anything (EINTR), retrying it. */
export function retryEintr(fn: () => number, call: string): number {
  for (;;) {
    const r = fn();
    if (r >= 0) return r;
    const e = errno();
    if (e !== EINTR) throw new OsError(call, e);
  }
}

export function isMapFailed(p: unknown): boolean {
  return p === null || address(p) === 0xffffffffffffffffn;
}

export const timerCreate = libc.func('int timer_create(int clockid, void *sevp, void *timerid)') as (c: number, sev: Uint8Array, out: Uint8Array) => number;
export const timerSettime = libc.func('int timer_settime(void *timerid, int flags, void *newv, void *oldv)') as (t: unknown, flags: number, nv: Uint8Array, ov: null) => number;
export const timerDelete = libc.func('int timer_delete(void *timerid)') as (t: unknown) => number;
export const CLOCK_MONOTONIC = 1;
export const TIMER_ABSTIME = 1;
export const SIGEV_THREAD_ID = 4;
/** A pointer value koffi accepts for `void *` parameters, from a raw address. */
export function ptrFromAddress(a: bigint): unknown {
  return koffi.as(koffi.decode(new BigUint64Array([a]), 'void *'), 'void *');
}
