/*
 * xenode's extension to sched_op (public/sched.h): exclusivity, a domain
 * having the whole machine to itself for a bounded time (mixed criticality).
 * Xen has no such operation.  The hypervisor's side is src/hv/sched/exclusive.ts;
 * this header is the ABI, checked against it by src/hv/abi/layout.test.ts.
 *
 *   HYPERVISOR_sched_op(SCHEDOP_xenode_exclusive, struct sched_xenode_exclusive *)
 *
 * Only a domain granted the right (xl.cfg exclusive_ms = N, the longest it
 * may hold the machine, in ms) may use it: any other gets -EPERM for every
 * command.  A bad command or field is -EINVAL.
 *
 *  XENODE_EXCLUSIVE_acquire: every other domain's vCPU, on every pCPU, stops
 *    running; the call returns (0) once all have stopped.  `timeout` is the
 *    hold in ns (0 = the granted limit; above it -EINVAL).  OUT: `expires`
 *    (system time at which the hypervisor ends the period), `limit`,
 *    `holder`.  -EBUSY while any domain, the caller included, holds it.
 *    -ETIME when the period ran out before every pCPU had stopped the
 *    others (a hold shorter than the host takes to reach them all).
 *  XENODE_EXCLUSIVE_release: ends the caller's period: 0, or -ENOENT when it
 *    holds none (it expired).  Shutting down or being destroyed also ends it.
 *  XENODE_EXCLUSIVE_bind: `port` (one of the caller's event channels in use,
 *    0 = none) becomes its trigger: an event sent to it starts a period of
 *    the whole limit, as acquire would (ignored while one is in progress; the
 *    event is delivered either way).  Closing the port unbinds it.
 *  XENODE_EXCLUSIVE_query: OUT `holder` (DOMID_INVALID when none), `expires`
 *    (0 when none) and `limit`.
 */
#ifndef XENODE_SCHED_H
#define XENODE_SCHED_H

#include <stdint.h>

/* Far above Xen's SCHEDOP_* (0..7), so a future Xen operation does not collide. */
#define SCHEDOP_xenode_exclusive 64

#define XENODE_EXCLUSIVE_acquire 0
#define XENODE_EXCLUSIVE_release 1
#define XENODE_EXCLUSIVE_bind    2
#define XENODE_EXCLUSIVE_query   3

struct sched_xenode_exclusive {
    uint32_t cmd;       /* IN: XENODE_EXCLUSIVE_* */
    uint32_t port;      /* IN: bind's trigger port (0 = none); 0 otherwise */
    uint64_t timeout;   /* IN: acquire's hold in ns (0 = the limit); 0 otherwise */
    uint64_t expires;   /* OUT: system time (ns) the period ends, 0 = none */
    uint64_t limit;     /* OUT: the granted limit (ns) */
    uint16_t holder;    /* OUT: the domain holding the machine, DOMID_INVALID if none */
    uint16_t pad[3];
};

#endif
