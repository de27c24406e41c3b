/*
 * Event-channel upcalls (2-level ABI) through HVM_PARAM_CALLBACK_IRQ's vector,
 * and a xenstore client over the store ring (public/io/xs_wire.h).
 *
 * The upcall path runs at CPL0, which PVM hosts emulate instruction by
 * instruction: the stub saves only the caller-saved registers and the handler
 * touches only the words the selector names.
 */
#include "events.h"
#include <xen/io/xs_wire.h>

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

/* ---------------------------------------------------------- xenstore */
static volatile struct xenstore_domain_interface *xs_ring;
static evtchn_port_t xs_port;
static uint32_t xs_req_id;
volatile uint64_t xs_events;

static void xs_event(evtchn_port_t port, void *arg)
{
    xs_events++;
}

long xs_init(void)
{
    uint64_t pfn = 0, port = 0;
    long rc = hvm_get_param(HVM_PARAM_STORE_PFN, &pfn);
    if (rc == 0)
        rc = hvm_get_param(HVM_PARAM_STORE_EVTCHN, &port);
    if (rc)
        return rc;
    if (!pfn || pfn >= (1UL << 20))        /* the identity map covers 4 GiB */
        return -EINVAL;
    xs_ring = (volatile struct xenstore_domain_interface *)(uintptr_t)(pfn << 12);
    xs_port = port;
    if (evtchn_ready)
        evtchn_bind_handler(xs_port, xs_event, NULL);
    return 0;
}

static int irqs_enabled(void)
{
    unsigned long f;
    asm volatile ("pushf; pop %0" : "=r" (f));
    return (f >> 9) & 1;
}

/* Waits for the store port (upcall) if events are set up, else yields. */
static void xs_wait(int (*ready)(void))
{
    if (!evtchn_ready || !irqs_enabled()) {
        while (!ready())
            sched_yield();
        return;
    }
    local_irq_disable();
    while (!ready())
        wait_for_event();
    local_irq_enable();
}

static int xs_req_space(void) { return xs_ring->req_prod - xs_ring->req_cons < XENSTORE_RING_SIZE; }
static int xs_rsp_avail(void) { return xs_ring->rsp_prod != xs_ring->rsp_cons; }

static void xs_put(const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        xs_wait(xs_req_space);
        XENSTORE_RING_IDX prod = xs_ring->req_prod;
        size_t chunk = XENSTORE_RING_SIZE - (prod - xs_ring->req_cons);
        if (chunk > n)
            chunk = n;
        for (size_t i = 0; i < chunk; i++)
            xs_ring->req[MASK_XENSTORE_IDX(prod + i)] = p[i];
        barrier();                  /* data before the index (x86: stores ordered) */
        xs_ring->req_prod = prod + chunk;
        evtchn_send(xs_port);
        p += chunk;
        n -= chunk;
    }
}

/* Copies n bytes of the response stream to data (NULL: discard). */
static void xs_get(void *data, size_t n)
{
    char *p = data;
    while (n) {
        xs_wait(xs_rsp_avail);
        XENSTORE_RING_IDX cons = xs_ring->rsp_cons;
        size_t chunk = xs_ring->rsp_prod - cons;
        if (chunk > n)
            chunk = n;
        barrier();
        for (size_t i = 0; i < chunk; i++) {
            char ch = xs_ring->rsp[MASK_XENSTORE_IDX(cons + i)];
            if (p)
                *p++ = ch;
        }
        barrier();
        xs_ring->rsp_cons = cons + chunk;
        evtchn_send(xs_port);
        n -= chunk;
    }
}

static long xs_errno(const char *name)
{
    static const struct { const char *name; long err; } errs[] = {
        { "EINVAL", EINVAL }, { "EACCES", EACCES }, { "EEXIST", EEXIST }, { "EISDIR", EISDIR },
        { "ENOENT", ENOENT }, { "ENOMEM", ENOMEM }, { "ENOSPC", ENOSPC }, { "EIO", EIO },
        { "ENOTEMPTY", ENOTEMPTY }, { "ENOSYS", ENOSYS }, { "EROFS", EROFS }, { "EBUSY", EBUSY },
        { "EAGAIN", EAGAIN }, { "EISCONN", EISCONN }, { "E2BIG", E2BIG }, { "EPERM", EPERM },
    };
    for (unsigned i = 0; i < ARRAY_SIZE(errs); i++)
        if (!strncmp(name, errs[i].name, 12))
            return -errs[i].err;
    return -EIO;
}

long xs_request(uint32_t type, const char *const *parts, unsigned int nparts,
                char *reply, size_t size)
{
    if (!xs_ring)
        return -ENODEV;
    struct xsd_sockmsg m = { .type = type, .req_id = ++xs_req_id, .tx_id = 0, .len = 0 };
    size_t lens[8];
    if (nparts > ARRAY_SIZE(lens))
        return -E2BIG;
    for (unsigned i = 0; i < nparts; i++) {
        /* Every part NUL-terminated except a written value (the last part of XS_WRITE). */
        lens[i] = strlen(parts[i]) + !(type == XS_WRITE && i == nparts - 1);
        m.len += lens[i];
    }
    if (m.len > XENSTORE_PAYLOAD_MAX)
        return -E2BIG;
    xs_put(&m, sizeof(m));
    for (unsigned i = 0; i < nparts; i++)
        xs_put(parts[i], lens[i]);
    for (;;) {
        struct xsd_sockmsg r;
        xs_get(&r, sizeof(r));
        if (r.type == XS_WATCH_EVENT || r.req_id != m.req_id) {
            xs_get(NULL, r.len);        /* not ours (no watches are set): skip */
            continue;
        }
        char err[16];
        if (r.type == XS_ERROR) {
            size_t k = r.len < sizeof(err) - 1 ? r.len : sizeof(err) - 1;
            xs_get(err, k);
            xs_get(NULL, r.len - k);
            err[k] = 0;
            return xs_errno(err);
        }
        size_t k = r.len < size ? r.len : size;
        xs_get(reply, k);
        xs_get(NULL, r.len - k);
        if (reply && k < size)
            reply[k] = 0;
        return r.len;
    }
}

long xs_read(const char *path, char *buf, size_t size)
{
    const char *parts[] = { path };
    return xs_request(XS_READ, parts, 1, buf, size);
}

long xs_write(const char *path, const char *value)
{
    const char *parts[] = { path, value };
    long rc = xs_request(XS_WRITE, parts, 2, NULL, 0);
    return rc < 0 ? rc : 0;
}

long xs_rm(const char *path)
{
    const char *parts[] = { path };
    long rc = xs_request(XS_RM, parts, 1, NULL, 0);
    return rc < 0 ? rc : 0;
}

long xs_set_perms(const char *path, const char *const *perms, unsigned int n)
{
    const char *parts[8] = { path };
    if (n + 1 > ARRAY_SIZE(parts))
        return -E2BIG;
    for (unsigned i = 0; i < n; i++)
        parts[i + 1] = perms[i];
    long rc = xs_request(XS_SET_PERMS, parts, n + 1, NULL, 0);
    return rc < 0 ? rc : 0;
}

long xs_domain_path(char *buf, size_t size)
{
    char id[12];
    snprintf(id, sizeof(id), "%d", xen_domid);
    const char *parts[] = { id };
    long rc = xs_request(XS_GET_DOMAIN_PATH, parts, 1, buf, size);
    return rc < 0 ? rc : 0;
}

long xs_read_u64_wait(const char *path, uint64_t *value, uint64_t timeout_ms)
{
    uint64_t deadline = xen_system_time() + timeout_ms * 1000000;
    char buf[24];
    for (;;) {
        long rc = xs_read(path, buf, sizeof(buf));
        if (rc > 0) {
            uint64_t v = 0;
            for (long i = 0; i < rc && buf[i]; i++) {
                if (buf[i] < '0' || buf[i] > '9')
                    return -EINVAL;
                v = v * 10 + (buf[i] - '0');
            }
            *value = v;
            return 0;
        }
        if (rc != -ENOENT && rc != -EACCES)
            return rc < 0 ? rc : -EINVAL;
        if (xen_system_time() > deadline)
            return -ETIMEDOUT;
        sched_yield();
    }
}
