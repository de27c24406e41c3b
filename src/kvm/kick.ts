// Kicking a vCPU that is inside KVM_RUN on another thread, without any JS
// signal handler: the kick signal is blocked in the vCPU's thread at all times
// except inside KVM_RUN (KVM_SET_SIGNAL_MASK). A tgkill() aimed at that thread
// then either interrupts KVM_RUN (EINTR) or, if the thread is elsewhere, stays
// pending and makes the next KVM_RUN return at once. consume() clears it.

import * as libc from './libc.js';

/** A real-time signal glibc and Node leave alone (glibc reserves 32 and 33). */
export const KICK_SIGNAL = 40;

function sigsetWith(bytes: number, sig: number): Uint8Array {
  const s = new Uint8Array(bytes);
  s[(sig - 1) >> 3]! |= 1 << ((sig - 1) & 7);
  return s;
}

export interface KickTarget {
  pid: number;
  tid: number;
}

/**
 * Prepares the calling thread to run vCPUs: blocks the kick signal here and
 * returns the kernel sigset to install with Vcpu.setSignalMask (the thread's
 * mask without the kick signal) and this thread's identity for kickers.
 */
export function prepareVcpuThread(): { runMask: Uint8Array; target: KickTarget } {
  const kick = sigsetWith(libc.SIGSET_BYTES, KICK_SIGNAL);
  const old = new Uint8Array(libc.SIGSET_BYTES);
  libc.check(libc.pthreadSigmask(libc.SIG_BLOCK, kick, old), 'pthread_sigmask');
  const runMask = old.slice(0, libc.KERNEL_SIGSET_BYTES);
  runMask[(KICK_SIGNAL - 1) >> 3]! &= ~(1 << ((KICK_SIGNAL - 1) & 7));
  return { runMask, target: { pid: libc.getpid(), tid: libc.gettid() } };
}

/** Interrupts the thread's KVM_RUN (or its next one). Safe from any thread. */
export function kick(t: KickTarget): void {
  libc.tgkill(t.pid, t.tid, KICK_SIGNAL);
}

const kickSet = sigsetWith(libc.SIGSET_BYTES, KICK_SIGNAL);
const zeroTimeout = new Uint8Array(16); // struct timespec {0, 0}

/** Consumes a pending kick on the calling thread; true if there was one. */
export function consumeKick(): boolean {
  return libc.sigtimedwait(kickSet, null, zeroTimeout) === KICK_SIGNAL;
}
