// xenode's extension to sched_op: exclusivity (sched/exclusive.ts). Xen has
// none; the C header guests/lib/xenode_sched.h is the ABI, and
// abi/layout.test.ts checks these numbers and the layout against it.

import { struct } from './layout.js';

/** sched_op's sub-op: far above Xen's SCHEDOP_* (0..7, public/sched.h), so a future Xen op does not collide. */
export const SCHEDOP_xenode_exclusive = 64;

/** sched_xenode_exclusive.cmd. */
export const XENODE_EXCLUSIVE = { acquire: 0, release: 1, bind: 2, query: 3 } as const;

/** struct sched_xenode_exclusive; the same on both ABIs. */
export const SchedXenodeExclusive = struct('sched_xenode_exclusive', 40, {
  cmd: [0, 'u32'], // IN
  port: [4, 'u32'], // IN: bind's trigger port (0 = none)
  timeout: [8, 'u64'], // IN: acquire's hold in ns (0 = the granted limit)
  expires: [16, 'u64'], // OUT: system time the hypervisor takes the machine back (0 = nobody holds it)
  limit: [24, 'u64'], // OUT: the granted limit in ns
  holder: [32, 'u16'], // OUT: the domain holding the machine, DOMID_INVALID if none
});

/** Why an exclusive period ended: the scheduling trace's `release` record carries it. */
export const EXCLUSIVE_END = { released: 0, expired: 1, gone: 2 } as const;
export const EXCLUSIVE_END_NAMES = ['released', 'expired', 'gone'];

/** The most xl.cfg's exclusive_ms may grant (a minute). */
export const EXCLUSIVE_MAX_MS = 60_000;
