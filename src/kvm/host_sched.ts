// The host's side of a thread's scheduling: which host CPUs it may run on
// (sched_setaffinity) and its Linux scheduling class (SCHED_FIFO at a
// real-time priority, or SCHED_OTHER). For threads that run vCPUs; no Xen
// policy here. Every call names a thread by its Linux tid (0 = the caller).

import koffi from 'koffi';
import * as libc from './libc.js';

const c = koffi.load('libc.so.6');
const schedSetaffinity = c.func('int sched_setaffinity(int pid, size_t size, void *mask)') as (pid: number, size: number, mask: Uint8Array) => number;
const schedGetaffinity = c.func('int sched_getaffinity(int pid, size_t size, void *mask)') as (pid: number, size: number, mask: Uint8Array) => number;
const schedSetscheduler = c.func('int sched_setscheduler(int pid, int policy, void *param)') as (pid: number, policy: number, param: Uint8Array) => number;
const schedGetscheduler = c.func('int sched_getscheduler(int pid)') as (pid: number) => number;
const schedGetparam = c.func('int sched_getparam(int pid, void *param)') as (pid: number, param: Uint8Array) => number;
const schedGetPriorityMax = c.func('int sched_get_priority_max(int policy)') as (policy: number) => number;

/** sched.h (x86-64 Linux). */
export const SCHED_OTHER = 0;
export const SCHED_FIFO = 1;
/** A cpu_set_t of 1024 CPUs, glibc's CPU_SETSIZE. */
const CPUSET_BYTES = 128;
const EPERM = 1;
const EINVAL = 22;

/** Why the host refused, in words that say what to change. */
export class HostSchedError extends Error {
  constructor(readonly call: string, readonly errno: number, why: string) {
    super(`${call}: ${why}`);
  }
}

/** The host CPUs `tid` may run on. */
export function getAffinity(tid = 0): number[] {
  const mask = new Uint8Array(CPUSET_BYTES);
  libc.check(schedGetaffinity(tid, CPUSET_BYTES, mask), 'sched_getaffinity');
  const out: number[] = [];
  for (let i = 0; i < CPUSET_BYTES * 8; i++) if (mask[i >> 3]! & (1 << (i & 7))) out.push(i);
  return out;
}

/** Restricts `tid` to `cpus` (host CPU numbers). */
export function setAffinity(tid: number, cpus: readonly number[]): void {
  const mask = new Uint8Array(CPUSET_BYTES);
  for (const cpu of cpus) {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= CPUSET_BYTES * 8) throw new RangeError(`host CPU ${cpu} is out of range 0..${CPUSET_BYTES * 8 - 1}`);
    mask[cpu >> 3]! |= 1 << (cpu & 7);
  }
  if (schedSetaffinity(tid, CPUSET_BYTES, mask) === 0) return;
  const e = libc.errno();
  if (e === EINVAL) throw new HostSchedError('sched_setaffinity', e, `host CPUs ${cpus.join(',')} are not available to this process (its cpuset, taskset or the CPUs online)`);
  if (e === EPERM) throw new HostSchedError('sched_setaffinity', e, 'not permitted to change this thread\'s CPU affinity');
  throw new HostSchedError('sched_setaffinity', e, libc.strerror(e));
}

/** `tid`'s scheduling class and static priority. */
export function getPolicy(tid = 0): { policy: 'fifo' | 'other' | 'other-class'; priority: number } {
  const p = libc.check(schedGetscheduler(tid), 'sched_getscheduler') & 0xff;
  const param = new Uint8Array(4);
  libc.check(schedGetparam(tid, param), 'sched_getparam');
  const priority = new DataView(param.buffer).getInt32(0, true);
  return { policy: p === SCHED_FIFO ? 'fifo' : p === SCHED_OTHER ? 'other' : 'other-class', priority };
}

/** The highest SCHED_FIFO priority (99 on Linux). */
export function fifoPriorityMax(): number {
  return schedGetPriorityMax(SCHED_FIFO);
}

/**
 * Puts `tid` in SCHED_FIFO at `priority` (1..99), or back in SCHED_OTHER
 * with priority 0. A refusal says what the host must grant.
 */
export function setRealtime(tid: number, priority: number): void {
  const max = fifoPriorityMax();
  if (!Number.isInteger(priority) || priority < 0 || priority > max) throw new RangeError(`real-time priority must be 0 (none) or 1..${max}, got ${priority}`);
  const param = new Uint8Array(4);
  new DataView(param.buffer).setInt32(0, priority, true);
  if (schedSetscheduler(tid, priority ? SCHED_FIFO : SCHED_OTHER, param) === 0) return;
  const e = libc.errno();
  if (e === EPERM) {
    throw new HostSchedError('sched_setscheduler', e, `SCHED_FIFO ${priority} not permitted: the process needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least ${priority} (ulimit -r), and, in a cgroup with the cpu controller, a real-time budget (cpu.rt_runtime_us)`);
  }
  throw new HostSchedError('sched_setscheduler', e, libc.strerror(e));
}
