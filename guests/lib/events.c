/*
 * Event-channel upcalls (2-level ABI) through HVM_PARAM_CALLBACK_IRQ's vector.
 *
 * The upcall path runs at CPL0, which PVM hosts emulate instruction by
 * instruction: the stub saves only the caller-saved registers and the handler
 * touches only the words the selector names.
 */
#include "events.h"

#define MSR_GS_BASE 0xc0000101

struct evtchn_cpu evtchn_cpus[EVTCHN_MAX_VCPUS];
volatile uint64_t evtchn_unhandled;
enum wait_mode wait_mode = WAIT_HLT;
static int evtchn_ready;            /* evtchn_init() succeeded */

static struct {
    evtchn_handler_t fn;
    void *arg;
} handlers[EVTCHN_NR_PORTS];

#define WORD_BITS (sizeof(xen_ulong_t) * 8)

/*
 * The vector's entry: the CPU pushed SS, RSP, RFLAGS, CS, RIP (40 bytes, RSP
 * 16-aligned before), nine pushes make 112 bytes, so the call is made with
 * RSP 16-aligned as the ABI wants.  Callee-saved registers are the C code's
 * business; the library is built with -mgeneral-regs-only (no FPU/SSE state).
 */
asm(".text\n"
    ".balign 16\n"
    ".globl evtchn_upcall_entry\n"
    "evtchn_upcall_entry:\n"
    "  push %rax\n  push %rcx\n  push %rdx\n  push %rsi\n  push %rdi\n"
    "  push %r8\n  push %r9\n  push %r10\n  push %r11\n"
    "  call evtchn_do_upcall\n"
    "  pop %r11\n  pop %r10\n  pop %r9\n  pop %r8\n"
    "  pop %rdi\n  pop %rsi\n  pop %rdx\n  pop %rcx\n  pop %rax\n"
    "  iretq\n");

/* Xen's order (public/xen.h, "event channel upcall"): clear the vCPU's
 * upcall_pending, take the selector, then each selected word's pending &
 * ~mask, clearing every pending bit before its handler runs.  Repeat while
 * Xen raised the flag again meanwhile. */
void evtchn_do_upcall(void)
{
    struct evtchn_cpu *c = this_cpu();
    struct vcpu_info *vi = c->vcpu_info;
    struct shared_info *s = shared_info;
    c->upcalls++;
    do {
        vi->evtchn_upcall_pending = 0;
        xen_ulong_t sel = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
        while (sel) {
            unsigned int w = __builtin_ctzl(sel);
            sel &= sel - 1;
            xen_ulong_t bits = s->evtchn_pending[w] & ~s->evtchn_mask[w];
            while (bits) {
                unsigned int b = __builtin_ctzl(bits);
                bits &= bits - 1;
                __atomic_fetch_and(&s->evtchn_pending[w], ~(1UL << b), __ATOMIC_SEQ_CST);
                evtchn_port_t port = w * WORD_BITS + b;
                c->events++;
                if (handlers[port].fn)
                    handlers[port].fn(port, handlers[port].arg);
                else
                    evtchn_unhandled++;
            }
        }
    } while (*(volatile uint8_t *)&vi->evtchn_upcall_pending);
}

static void cpu_init(unsigned int vcpu)
{
    struct evtchn_cpu *c = &evtchn_cpus[vcpu];
    c->self = c;
    c->vcpu_id = vcpu;
    c->vcpu_info = &shared_info->vcpu_info[vcpu];
    wrmsr(MSR_GS_BASE, (uintptr_t)c);
}

long evtchn_init(void)
{
    local_irq_disable();
    if (!shared_info_map())
        return -1;
    cpu_init(xen_vcpu_id > 0 ? (unsigned int)xen_vcpu_id : 0);
    idt_set_gate(EVTCHN_UPCALL_VECTOR, evtchn_upcall_entry);
    idt_load();
    long rc = hvm_set_param(HVM_PARAM_CALLBACK_IRQ,
                            ((uint64_t)HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | EVTCHN_UPCALL_VECTOR);
    evtchn_ready = rc == 0;
    return rc;
}

void evtchn_vcpu_init(unsigned int vcpu)
{
    local_irq_disable();
    idt_load();
    cpu_init(vcpu);
}

void evtchn_bind_handler(evtchn_port_t port, evtchn_handler_t fn, void *arg)
{
    if (port >= EVTCHN_NR_PORTS)
        return;
    handlers[port].arg = arg;
    barrier();
    handlers[port].fn = fn;
}

void evtchn_unbind_handler(evtchn_port_t port)
{
    if (port < EVTCHN_NR_PORTS)
        handlers[port].fn = NULL;
}

/* ------------------------------------------------------------- bits */
void evtchn_mask(evtchn_port_t port)
{
    __atomic_fetch_or(&shared_info->evtchn_mask[port / WORD_BITS], 1UL << (port % WORD_BITS),
                      __ATOMIC_SEQ_CST);
}

int evtchn_is_masked(evtchn_port_t port)
{
    return (((volatile xen_ulong_t *)shared_info->evtchn_mask)[port / WORD_BITS] >>
            (port % WORD_BITS)) & 1;
}

int evtchn_is_pending(evtchn_port_t port)
{
    return (((volatile xen_ulong_t *)shared_info->evtchn_pending)[port / WORD_BITS] >>
            (port % WORD_BITS)) & 1;
}

void evtchn_clear_pending(evtchn_port_t port)
{
    __atomic_fetch_and(&shared_info->evtchn_pending[port / WORD_BITS],
                       ~(1UL << (port % WORD_BITS)), __ATOMIC_SEQ_CST);
}

long evtchn_unmask(evtchn_port_t port)
{
    struct evtchn_unmask u = { .port = port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &u);
}

/* ------------------------------------------------------------- ops */
long evtchn_alloc_unbound(domid_t remote_dom, evtchn_port_t *port)
{
    struct evtchn_alloc_unbound a = { .dom = DOMID_SELF, .remote_dom = remote_dom };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &a);
    if (rc == 0 && port)
        *port = a.port;
    return rc;
}

long evtchn_bind_interdomain(domid_t remote_dom, evtchn_port_t remote_port, evtchn_port_t *port)
{
    struct evtchn_bind_interdomain b = { .remote_dom = remote_dom, .remote_port = remote_port };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_interdomain, &b);
    if (rc == 0 && port)
        *port = b.local_port;
    return rc;
}

long evtchn_bind_virq(uint32_t virq, uint32_t vcpu, evtchn_port_t *port)
{
    struct evtchn_bind_virq b = { .virq = virq, .vcpu = vcpu };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_virq, &b);
    if (rc == 0 && port)
        *port = b.port;
    return rc;
}

long evtchn_bind_ipi(uint32_t vcpu, evtchn_port_t *port)
{
    struct evtchn_bind_ipi b = { .vcpu = vcpu };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_ipi, &b);
    if (rc == 0 && port)
        *port = b.port;
    return rc;
}

long evtchn_bind_vcpu(evtchn_port_t port, uint32_t vcpu)
{
    struct evtchn_bind_vcpu b = { .port = port, .vcpu = vcpu };
    return HYPERVISOR_event_channel_op(EVTCHNOP_bind_vcpu, &b);
}

long evtchn_close(evtchn_port_t port)
{
    struct evtchn_close c = { .port = port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_close, &c);
}

long evtchn_status(domid_t dom, evtchn_port_t port, struct evtchn_status *st)
{
    memset(st, 0, sizeof(*st));
    st->dom = dom;
    st->port = port;
    return HYPERVISOR_event_channel_op(EVTCHNOP_status, st);
}

static int upcall_pending(void)
{
    return *(volatile uint8_t *)&this_cpu()->vcpu_info->evtchn_upcall_pending;
}

void local_irq_enable(void)
{
    asm volatile ("sti" ::: "memory");
    if (evtchn_ready && upcall_pending())
        HYPERVISOR_xen_version(XENVER_version, NULL);
}

void wait_for_event(void)
{
    if (wait_mode == WAIT_BLOCK) {
        if (!upcall_pending())
            HYPERVISOR_sched_op(SCHEDOP_block, NULL);
        local_irq_enable();
        local_irq_disable();
    } else {
        asm volatile ("sti; hlt; cli" ::: "memory");
    }
}

int evtchn_is_ready(void)
{
    return evtchn_ready;
}
