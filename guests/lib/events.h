/*
 * Event channels as a PVH guest receives them (2-level ABI).
 * (The xenstore client is in xenstore.h.)
 *
 * Delivery: HVM_PARAM_CALLBACK_IRQ = (HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) |
 * EVTCHN_UPCALL_VECTOR (public/hvm/params.h).  Xen injects that vector while
 * the vCPU's evtchn_upcall_pending is set and RFLAGS.IF is open; the handler
 * clears evtchn_upcall_pending, exchanges evtchn_pending_sel with 0, scans
 * evtchn_pending & ~evtchn_mask of each selected word, clears each pending
 * bit and calls the port's handler (public/xen.h describes the order).
 *
 * Interrupts are off (cli) after evtchn_init(); open them with local_irq_enable()
 * or sleep with wait_for_event().  The handlers run in interrupt context at
 * CPL0: keep them short (PVM hosts emulate CPL0 at ~1 us per instruction).
 *
 * SMP: each vCPU finds its own vcpu_info through its GS base, which points at
 * its `struct evtchn_cpu` (set by evtchn_init() for the boot vCPU 0 and by
 * evtchn_vcpu_init(id) on each secondary vCPU, which also loads the IDT).
 */
#ifndef GUEST_EVENTS_H
#define GUEST_EVENTS_H

#include "lib.h"

#define EVTCHN_UPCALL_VECTOR  0xf3
/* 2-level ABI with 64-bit words: 64 words of 64 ports (public/xen.h, EVTCHN_2L_NR_CHANNELS). */
#define EVTCHN_NR_PORTS       (sizeof(xen_ulong_t) * 8 * sizeof(xen_ulong_t) * 8)
/* Vectors the library can route: legacy vcpu_info slots in shared_info. */
#define EVTCHN_MAX_VCPUS      XEN_LEGACY_MAX_VCPUS

typedef void (*evtchn_handler_t)(evtchn_port_t port, void *arg);

/* Per-vCPU state, reachable through %gs:0. */
struct evtchn_cpu {
    struct evtchn_cpu *self;            /* %gs:0 */
    struct vcpu_info *vcpu_info;        /* %gs:8 */
    uint32_t vcpu_id;
    volatile uint64_t upcalls;          /* vector entries on this vCPU */
    volatile uint64_t events;           /* handlers called (or unhandled ports) */
};
extern struct evtchn_cpu evtchn_cpus[EVTCHN_MAX_VCPUS];
/* Ports that became pending with no handler bound (counted, then dropped). */
extern volatile uint64_t evtchn_unhandled;

/* Maps shared_info, installs the vector gate, loads the IDT and sets
 * HVM_PARAM_CALLBACK_IRQ; interrupts stay disabled.  Returns 0 or the failing
 * hypercall's -errno (-1 if shared_info could not be mapped). */
long evtchn_init(void);
/* On a secondary vCPU, before opening interrupts: IDT + this vCPU's GS base. */
void evtchn_vcpu_init(unsigned int vcpu);

static inline struct evtchn_cpu *this_cpu(void)
{
    struct evtchn_cpu *c;
    asm volatile ("mov %%gs:0, %0" : "=r" (c));
    return c;
}
static inline unsigned int smp_vcpu_id(void) { return this_cpu()->vcpu_id; }

/* The entry stub for the vector (save caller-saved registers, handler, iretq). */
extern void evtchn_upcall_entry(void);
/* The handler itself (what the stub calls); interrupts must be off. */
void evtchn_do_upcall(void);

void evtchn_bind_handler(evtchn_port_t port, evtchn_handler_t fn, void *arg);
void evtchn_unbind_handler(evtchn_port_t port);

/* Bits in shared_info (atomic, any vCPU). */
void evtchn_mask(evtchn_port_t port);
int evtchn_is_masked(evtchn_port_t port);
int evtchn_is_pending(evtchn_port_t port);
void evtchn_clear_pending(evtchn_port_t port);
/* EVTCHNOP_unmask: clears the mask and lets Xen re-raise a pending event. */
long evtchn_unmask(evtchn_port_t port);

/* EVTCHNOP wrappers: 0 or -errno; the new port in *port. */
long evtchn_alloc_unbound(domid_t remote_dom, evtchn_port_t *port);
long evtchn_bind_interdomain(domid_t remote_dom, evtchn_port_t remote_port, evtchn_port_t *port);
long evtchn_bind_virq(uint32_t virq, uint32_t vcpu, evtchn_port_t *port);
long evtchn_bind_ipi(uint32_t vcpu, evtchn_port_t *port);
long evtchn_bind_vcpu(evtchn_port_t port, uint32_t vcpu);
long evtchn_close(evtchn_port_t port);
long evtchn_status(domid_t dom, evtchn_port_t port, struct evtchn_status *st);

static inline void local_irq_disable(void) { asm volatile ("cli" ::: "memory"); }
/* sti, then if an upcall is already pending, a cheap hypercall so that it is
 * injected now (Linux's xen_force_evtchn_callback): the host may not exit for
 * the interrupt window on its own (PVM here does not). */
void local_irq_enable(void);

/*
 * Sleeps until an upcall has been handled on this vCPU.  Call it with
 * interrupts disabled, after checking the condition you wait for; it returns
 * with interrupts disabled.  So a handler can never run between the check and
 * the sleep:
 *
 *     local_irq_disable();
 *     while (!done)
 *         wait_for_event();
 *     local_irq_enable();
 *
 * WAIT_HLT (default) is Linux's PVH idle, `sti; hlt` (the STI shadow makes
 * the pair atomic; Xen turns HLT into SCHEDOP_block).  WAIT_BLOCK calls
 * SCHEDOP_block with interrupts still disabled unless evtchn_upcall_pending
 * is already set, then takes the upcall with local_irq_enable().
 */
enum wait_mode { WAIT_HLT, WAIT_BLOCK };
extern enum wait_mode wait_mode;
void wait_for_event(void);

/* True once evtchn_init() has set up the upcall (the xenstore client sleeps on its port then). */
int evtchn_is_ready(void);

/* The xenstore client (xenstore.h) came with this header first; samples still find it here. */
#include "xenstore.h"

#endif
