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

/**
 * Makes the calling thread the one that takes kicks by waiting for them (the
 * software CPU's helper): blocks the kick signal here; returns the thread id to aim at.
 */
export function takeKickSignal(): number {
  libc.check(libc.pthreadSigmask(libc.SIG_BLOCK, kickSet, null), 'pthread_sigmask');
  return libc.gettid();
}

/** Waits up to `ms` for a kick aimed at this thread; true if one came. */
export function waitKick(ms: number): boolean {
  const ts = new DataView(new ArrayBuffer(16));
  ts.setBigInt64(0, BigInt(Math.floor(ms / 1000)), true);
  ts.setBigInt64(8, BigInt((ms % 1000) * 1_000_000), true);
  return libc.sigtimedwait(kickSet, null, new Uint8Array(ts.buffer)) === KICK_SIGNAL;
}
const zeroTimeout = new Uint8Array(16); // struct timespec {0, 0}

/** Consumes a pending kick on the calling thread; true if there was one. */
export function consumeKick(): boolean {
  return libc.sigtimedwait(kickSet, null, zeroTimeout) === KICK_SIGNAL;
}

/**
 * A POSIX timer that kicks one thread (SIGEV_THREAD_ID with the kick signal)
 * at an absolute CLOCK_MONOTONIC time: how a pCPU worker preempts the guest
 * at the end of a slice or at a guest timer's deadline while inside KVM_RUN.
 */
export class KickTimer {
  private readonly id: unknown;
  private readonly spec = new Uint8Array(32);
  private readonly specView = new DataView(this.spec.buffer);
  private armedAt = -1n;

  constructor(tid: number) {
    const sev = new Uint8Array(64); // struct sigevent
    const dv = new DataView(sev.buffer);
    dv.setInt32(8, KICK_SIGNAL, true); // sigev_signo
    dv.setInt32(12, libc.SIGEV_THREAD_ID, true); // sigev_notify
    dv.setInt32(16, tid, true); // _sigev_un._tid
    const out = new Uint8Array(8);
    libc.check(libc.timerCreate(libc.CLOCK_MONOTONIC, sev, out), 'timer_create');
    this.id = koffiPtr(new DataView(out.buffer).getBigUint64(0, true));
  }

  /** Arms for absolute monotonic time `ns` (process.hrtime.bigint() clock); 0 disarms. */
  arm(ns: bigint): void {
    if (ns === this.armedAt) return;
    this.armedAt = ns;
    const dv = this.specView;
    dv.setBigInt64(0, 0n, true);
    dv.setBigInt64(8, 0n, true);
    dv.setBigInt64(16, ns / 1_000_000_000n, true);
    dv.setBigInt64(24, ns % 1_000_000_000n, true);
    libc.check(libc.timerSettime(this.id, ns === 0n ? 0 : libc.TIMER_ABSTIME, this.spec, null), 'timer_settime');
  }

  close(): void {
    libc.timerDelete(this.id);
  }
}

function koffiPtr(v: bigint): unknown {
  return libc.ptrFromAddress(v);
}
