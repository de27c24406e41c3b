/*
 * fifo: self-checking test of FIFO event channels (public/event_channel.h)
 * as a Linux-like PVH guest uses them.
 *
 * Delivery the way current Linux sets it up: a per-vCPU upcall vector
 * (HVMOP_set_evtchn_upcall_vector, through the local APIC, EOI'd), then
 * HVM_PARAM_CALLBACK_IRQ = 1 (GSI 1: "this guest is Xen-aware") which must
 * succeed.  A port bound and raised under 2-level carries over when
 * EVTCHNOP_init_control switches the domain to FIFO; event array pages come
 * from EVTCHNOP_expand_array with every word MASKED (as Linux prepares them);
 * ports are bound at several priorities, raised with interrupts off, and the
 * upcall handler consumes the queues as Linux's events_fifo.c does (HEAD,
 * clear LINKED by compare-and-swap, follow LINK, READY bits): the events
 * must come out highest priority first, each queue in order.  Then masking,
 * unmask re-raising, set_priority, the error cases, EVTCHNOP_reset back to
 * 2-level and, when booted with maxport=N (N > 4095) on the command line and
 * that many event channels, ports beyond 4095 only under FIFO.
 *
 * The handler is a few dozen instructions at CPL0 (PVM hosts emulate CPL0 at
 * ~1 us each); the library is built without SSE.  PASS/FAIL lines, then
 * `RESULT: N passed, M failed`; powers off if all passed, crashes otherwise.
 */
#include "events.h"

#define SECTION(s) printf("--- %s\n", s)

#define APIC_GPA        0xfee00000UL
#define APIC_EOI        0xb0
#define APIC_SVR        0xf0
#define UPCALL_VECTOR   0xf4
#define BAD_GFN         0xfffffffffULL   /* a hole: far beyond guest RAM */
#define LEGACY_LAST_PORT 4095            /* EVTCHN_2L_NR_CHANNELS - 1, 64-bit */
#define ARRAY_PAGES     8                /* 8192 ports: enough for maxport=8191 */
/* Event words per event array page (Xen's EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, not in the public header). */
#define EVTCHN_FIFO_EVENT_WORDS_PER_PAGE (PAGE_SIZE / sizeof(event_word_t))

#define PENDING (1U << EVTCHN_FIFO_PENDING)
#define MASKED  (1U << EVTCHN_FIFO_MASKED)
#define LINKED  (1U << EVTCHN_FIFO_LINKED)
#define BUSY    (1U << EVTCHN_FIFO_BUSY)

static uint8_t control_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t control_page1[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));   /* vCPU 1's, at offset 64 */
static event_word_t event_array[ARRAY_PAGES][EVTCHN_FIFO_EVENT_WORDS_PER_PAGE] __attribute__((aligned(PAGE_SIZE)));
static struct evtchn_fifo_control_block *cb;

/* What the handler saw: ports in the order taken, and how many upcalls. */
static volatile evtchn_port_t got[64];
static volatile unsigned int ngot;
static volatile unsigned int upcalls;
static uint32_t local_head[EVTCHN_FIFO_MAX_QUEUES];

static inline volatile event_word_t *word(evtchn_port_t p)
{
    return &event_array[p / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE][p % EVTCHN_FIFO_EVENT_WORDS_PER_PAGE];
}

static long op(int cmd, void *arg) { return HYPERVISOR_event_channel_op(cmd, arg); }

static uint64_t gfn_of(const void *p) { return (uintptr_t)p >> 12; }

static long init_control(uint64_t gfn, uint32_t offset, uint32_t vcpu, uint8_t *link_bits)
{
    struct evtchn_init_control ic = { .control_gfn = gfn, .offset = offset, .vcpu = vcpu };
    long rc = op(EVTCHNOP_init_control, &ic);
    if (link_bits)
        *link_bits = ic.link_bits;
    return rc;
}

static long expand_array(uint64_t gfn)
{
    struct evtchn_expand_array ea = { .array_gfn = gfn };
    return op(EVTCHNOP_expand_array, &ea);
}

static long set_priority(evtchn_port_t port, uint32_t prio)
{
    struct evtchn_set_priority sp = { .port = port, .priority = prio };
    return op(EVTCHNOP_set_priority, &sp);
}

/* ------------------------------------------------------------ the upcall */

/* Linux's consume_one_event: take the queue's head, unlink it, follow LINK. */
static void consume_one(unsigned int q, uint32_t *ready)
{
    evtchn_port_t port = local_head[q] ? local_head[q] : __atomic_load_n(&cb->head[q], __ATOMIC_SEQ_CST);
    volatile event_word_t *w = word(port);
    event_word_t old = *w;
    while (!__atomic_compare_exchange_n(w, &old, old & ~(LINKED | EVTCHN_FIFO_LINK_MASK), 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
    uint32_t next = old & EVTCHN_FIFO_LINK_MASK;
    if (!next)
        *ready &= ~(1U << q);
    if ((old & PENDING) && !(old & MASKED)) {
        __atomic_fetch_and(w, ~PENDING, __ATOMIC_SEQ_CST);
        if (ngot < ARRAY_SIZE(got))
            got[ngot] = port;
        ngot++;
    }
    local_head[q] = next;
}

void fifo_do_upcall(void)
{
    upcalls++;
    shared_info->vcpu_info[0].evtchn_upcall_pending = 0;
    uint32_t ready = __atomic_exchange_n(&cb->ready, 0, __ATOMIC_SEQ_CST);
    while (ready) {
        consume_one((unsigned int)__builtin_ctz(ready), &ready);
        ready |= __atomic_exchange_n(&cb->ready, 0, __ATOMIC_SEQ_CST);
    }
    *(volatile uint32_t *)(APIC_GPA + APIC_EOI) = 0;
}

asm(".text\n"
    ".balign 16\n"
    "fifo_upcall_entry:\n"
    "  push %rax\n  push %rcx\n  push %rdx\n  push %rsi\n  push %rdi\n"
    "  push %r8\n  push %r9\n  push %r10\n  push %r11\n"
    "  call fifo_do_upcall\n"
    "  pop %r11\n  pop %r10\n  pop %r9\n  pop %r8\n"
    "  pop %rdi\n  pop %rsi\n  pop %rdx\n  pop %rcx\n  pop %rax\n"
    "  iretq\n");
extern void fifo_upcall_entry(void);

/* Opens interrupts until `n` upcalls in all were taken, or 200 ms. */
static void wait_upcalls(unsigned int n)
{
    uint64_t end = xen_system_time() + 200000000ULL;
    asm volatile ("sti" ::: "memory");
    while (upcalls < n && xen_system_time() < end)
        asm volatile ("pause" ::: "memory");
    asm volatile ("cli" ::: "memory");
}

/* Linux's unmask: clear MASKED in the word unless it is pending (or BUSY); then Xen must re-raise it. */
static long guest_unmask(evtchn_port_t port)
{
    volatile event_word_t *w = word(port);
    event_word_t old = *w;
    for (;;) {
        if (old & PENDING)
            return evtchn_unmask(port);
        event_word_t cur = old & ~BUSY;
        if (__atomic_compare_exchange_n(w, &cur, cur & ~MASKED, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return 0;
        old = cur;
    }
}

static int got_is(const evtchn_port_t *want, unsigned int n)
{
    if (ngot != n)
        return 0;
    for (unsigned int i = 0; i < n; i++)
        if (got[i] != want[i])
            return 0;
    return 1;
}

static void show_got(char *buf, size_t size)
{
    size_t at = 0;
    for (unsigned int i = 0; i < ngot && i < ARRAY_SIZE(got) && at + 12 < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%u", i ? "," : "", got[i]);
    buf[at] = 0;
}

/* --------------------------------------------------------------- checks */

int main(void)
{
    char buf[256];
    uint64_t v;

    SECTION("delivery: per-vCPU upcall vector, then CALLBACK_IRQ = GSI 1");
    local_irq_disable();
    check_true("shared_info", shared_info_map() != NULL, "not mapped");
    idt_set_gate(UPCALL_VECTOR, fifo_upcall_entry);
    idt_load();
    *(volatile uint32_t *)(APIC_GPA + APIC_SVR) = 0x1ff; /* software-enable the APIC */
    struct xen_hvm_evtchn_upcall_vector uv = { .vcpu = 0, .vector = UPCALL_VECTOR };
    check_eq("set_evtchn_upcall_vector", HYPERVISOR_hvm_op(HVMOP_set_evtchn_upcall_vector, &uv), 0);
    check_eq("callback_irq-gsi1", hvm_set_param(HVM_PARAM_CALLBACK_IRQ, 1), 0);
    check_true("callback_irq-gsi1-readback", hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &v) == 0 && v == 1, "value 0x%lx", v);
    check_eq("callback_irq-pci-intx",
             hvm_set_param(HVM_PARAM_CALLBACK_IRQ, ((uint64_t)HVM_PARAM_CALLBACK_TYPE_PCI_INTX << 56) | (3 << 8) | 1), 0);
    check_eq("callback_irq-gsi1-again", hvm_set_param(HVM_PARAM_CALLBACK_IRQ, 1), 0);

    SECTION("before FIFO");
    evtchn_port_t pre;
    check_eq("bind_ipi-2level", evtchn_bind_ipi(0, &pre), 0);
    check_eq("send-2level", evtchn_send(pre), 0);
    check_eq("pending-in-2level-bitmap", evtchn_is_pending(pre), 1);
    shared_info->vcpu_info[0].evtchn_upcall_pending = 0; /* taken without opening interrupts */
    check_eq("expand_array-before-init-EOPNOTSUPP", expand_array(gfn_of(event_array)), -EOPNOTSUPP);
    check_eq("set_priority-before-init-ENOSYS", set_priority(pre, 3), -ENOSYS);
    check_eq("init_control-bad-gfn-EINVAL", init_control(BAD_GFN, 0, 0, NULL), -EINVAL);
    check_eq("init_control-crosses-page-EINVAL", init_control(gfn_of(control_page), PAGE_SIZE - 64, 0, NULL), -EINVAL);
    check_eq("init_control-unaligned-EINVAL", init_control(gfn_of(control_page), 4, 0, NULL), -EINVAL);
    check_eq("init_control-no-vcpu-ENOENT", init_control(gfn_of(control_page), 0, 99, NULL), -ENOENT);
    check_eq("still-2level-after-errors", expand_array(gfn_of(event_array)), -EOPNOTSUPP);

    SECTION("switch to FIFO");
    uint8_t link_bits = 0;
    cb = (struct evtchn_fifo_control_block *)control_page;
    check_eq("init_control", init_control(gfn_of(control_page), 0, 0, &link_bits), 0);
    check_eq("link_bits", link_bits, EVTCHN_FIFO_LINK_BITS);
    check_eq("init_control-twice-EINVAL", init_control(gfn_of(control_page), 0, 0, NULL), -EINVAL);
    for (unsigned int i = 0; i < EVTCHN_FIFO_EVENT_WORDS_PER_PAGE; i++)
        event_array[0][i] = MASKED;
    check_eq("expand_array-bad-gfn-EINVAL", expand_array(BAD_GFN), -EINVAL);
    check_eq("expand_array", expand_array(gfn_of(event_array[0])), 0);
    check_eq("carried-port-pending-masked", *word(pre), PENDING | MASKED);
    check_eq("no-upcall-yet", shared_info->vcpu_info[0].evtchn_upcall_pending, 0);

    SECTION("queues and priorities");
    evtchn_port_t a, b, c, lu, lb;
    check_eq("bind_ipi-a", evtchn_bind_ipi(0, &a), 0);
    check_eq("bind_ipi-b", evtchn_bind_ipi(0, &b), 0);
    check_eq("bind_ipi-c", evtchn_bind_ipi(0, &c), 0);
    check_eq("alloc_unbound-self", evtchn_alloc_unbound(DOMID_SELF, &lu), 0);
    check_eq("bind_interdomain-self", evtchn_bind_interdomain(DOMID_SELF, lu, &lb), 0);
    check_eq("new-local-port-pending-masked", *word(lb), PENDING | MASKED);
    check_eq("set_priority-b-2", set_priority(b, 2), 0);
    check_eq("set_priority-c-12", set_priority(c, 12), 0);
    check_eq("set_priority-16-EINVAL", set_priority(a, EVTCHN_FIFO_PRIORITY_MIN + 1), -EINVAL);
    check_eq("set_priority-bad-port-EINVAL", set_priority(100000, 1), -EINVAL);
    check_eq("unmask-a", guest_unmask(a), 0);
    check_eq("unmask-b", guest_unmask(b), 0);
    check_eq("unmask-c", guest_unmask(c), 0);
    check_eq("unmask-lu", guest_unmask(lu), 0);
    check_eq("words-unmasked", (*word(a) | *word(b) | *word(c) | *word(lu)) & MASKED, 0);
    check_eq("send-c", evtchn_send(c), 0);
    check_eq("send-a", evtchn_send(a), 0);
    check_eq("send-b", evtchn_send(b), 0);
    check_eq("unmask-pre-reraises", guest_unmask(pre), 0);   /* pending: EVTCHNOP_unmask links it */
    check_eq("unmask-lb-reraises", guest_unmask(lb), 0);
    check_eq("send-lb-to-lu", evtchn_send(lb), 0);
    check_eq("ready-bits", cb->ready, (1U << 2) | (1U << 7) | (1U << 12));
    check_eq("head-prio2", cb->head[2], b);
    check_eq("head-prio7", cb->head[7], a);
    check_eq("head-prio12", cb->head[12], c);
    check_eq("a-links-pre", *word(a), PENDING | LINKED | pre);
    check_eq("pre-links-lb", *word(pre), PENDING | LINKED | lb);
    check_eq("lb-links-lu", *word(lb), PENDING | LINKED | lu);
    check_eq("lu-is-tail", *word(lu), PENDING | LINKED);
    check_eq("upcall-pending", shared_info->vcpu_info[0].evtchn_upcall_pending, 1);
    wait_upcalls(1);
    {
        const evtchn_port_t want[] = { b, a, pre, lb, lu, c };
        show_got(buf, sizeof(buf));
        check_true("delivered-in-priority-order", got_is(want, ARRAY_SIZE(want)), "got %s want %u,%u,%u,%u,%u,%u",
                   buf, b, a, pre, lb, lu, c);
    }
    check_eq("one-upcall", upcalls, 1);
    check_eq("words-clean", (*word(a) | *word(b) | *word(c) | *word(pre) | *word(lb) | *word(lu)) & (LINKED | PENDING), 0);

    SECTION("masking and unmask");
    ngot = 0;
    __atomic_fetch_or(word(a), MASKED, __ATOMIC_SEQ_CST);
    check_eq("send-masked", evtchn_send(a), 0);
    check_eq("masked-pending-not-linked", *word(a), PENDING | MASKED);
    check_eq("masked-no-ready", cb->ready, 0);
    wait_upcalls(2);
    check_eq("masked-no-upcall", upcalls, 1);
    check_eq("unmask-pending", guest_unmask(a), 0);
    wait_upcalls(2);
    check_eq("unmask-delivers", upcalls, 2);
    check_true("unmask-delivers-port", ngot == 1 && got[0] == a, "ngot %u", ngot);

    SECTION("priority change and a queue emptied meanwhile");
    ngot = 0;
    check_eq("set_priority-a-0", set_priority(a, 0), 0);
    check_eq("send-a-prio0", evtchn_send(a), 0);
    check_eq("head-prio0", cb->head[0], a);
    check_eq("send-b-again", evtchn_send(b), 0);
    check_eq("head-prio2-again", cb->head[2], b);
    wait_upcalls(3);
    check_true("prio0-before-prio2", ngot == 2 && got[0] == a && got[1] == b, "ngot %u", ngot);

    unsigned int nr_vcpus = 1;
    while (nr_vcpus < 64 && HYPERVISOR_vcpu_op(VCPUOP_is_up, nr_vcpus, NULL) != -ENOENT)
        nr_vcpus++;
    if (nr_vcpus > 1) {
        SECTION("per-vCPU queues (vCPU 1 exists, down)");
        struct evtchn_fifo_control_block *cb1 = (struct evtchn_fifo_control_block *)(control_page1 + 64);
        evtchn_port_t v1p;
        unsigned int before = upcalls;
        check_eq("init_control-vcpu1", init_control(gfn_of(control_page1), 64, 1, NULL), 0);
        check_eq("bind_ipi-vcpu1", evtchn_bind_ipi(1, &v1p), 0);
        check_eq("unmask-vcpu1-port", guest_unmask(v1p), 0);
        check_eq("send-vcpu1", evtchn_send(v1p), 0);
        check_eq("bind_vcpu-lu-to-vcpu1", evtchn_bind_vcpu(lu, 1), 0);
        check_eq("send-lb-to-lu-on-vcpu1", evtchn_send(lb), 0);
        check_eq("vcpu1-head", cb1->head[7], v1p);
        check_eq("vcpu1-ready", cb1->ready, 1U << 7);
        check_eq("vcpu1-link", *word(v1p), PENDING | LINKED | lu);
        check_eq("vcpu1-upcall-pending", shared_info->vcpu_info[1].evtchn_upcall_pending, 1);
        check_eq("vcpu0-queues-untouched", cb->ready, 0);
        wait_upcalls(before + 1);
        check_eq("vcpu0-no-upcall", upcalls, before);
    }

    SECTION("close and reset back to 2-level");
    check_eq("close-c", evtchn_close(c), 0);
    check_eq("reset", op(EVTCHNOP_reset, &(struct evtchn_reset){ .dom = DOMID_SELF }), 0);
    check_eq("after-reset-expand-EOPNOTSUPP", expand_array(gfn_of(event_array[1])), -EOPNOTSUPP);
    check_eq("after-reset-set_priority-ENOSYS", set_priority(1, 1), -ENOSYS);
    evtchn_port_t p2;
    check_eq("after-reset-bind_ipi", evtchn_bind_ipi(0, &p2), 0);
    evtchn_mask(p2);
    check_eq("after-reset-send", evtchn_send(p2), 0);
    check_eq("after-reset-2level-pending", evtchn_is_pending(p2), 1);

    uint64_t maxport = cmdline_u64("maxport", 0);
    if (maxport > LEGACY_LAST_PORT && maxport < ARRAY_PAGES * EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) {
        SECTION("ports beyond 4095 only under FIFO");
        evtchn_port_t p = 0, last = 0;
        while (evtchn_alloc_unbound(DOMID_SELF, &p) == 0)
            last = p;
        check_eq("2level-last-port", last, LEGACY_LAST_PORT);
        check_eq("reset-again", op(EVTCHNOP_reset, &(struct evtchn_reset){ .dom = DOMID_SELF }), 0);
        memset(control_page, 0, sizeof(control_page));
        memset(local_head, 0, sizeof(local_head));
        check_eq("init_control-again", init_control(gfn_of(control_page), 0, 0, NULL), 0);
        long rc = 0;
        for (unsigned int i = 0; i < ARRAY_PAGES; i++) {
            for (unsigned int j = 0; j < EVTCHN_FIFO_EVENT_WORDS_PER_PAGE; j++)
                event_array[i][j] = MASKED;
            rc |= expand_array(gfn_of(event_array[i]));
        }
        check_eq("expand_array-8-pages", rc, 0);
        while (evtchn_alloc_unbound(DOMID_SELF, &p) == 0)
            last = p;
        check_eq("fifo-last-port", last, (long)maxport);
        evtchn_port_t high = (evtchn_port_t)maxport - 100, ipi;
        check_eq("close-high", evtchn_close(high), 0);
        check_eq("bind_ipi-high", evtchn_bind_ipi(0, &ipi), 0);
        check_eq("bind_ipi-high-port", ipi, high);
        check_eq("unmask-high", guest_unmask(ipi), 0);
        ngot = 0;
        unsigned int before = upcalls;
        check_eq("send-high", evtchn_send(ipi), 0);
        wait_upcalls(before + 1);
        check_true("high-port-delivered", ngot == 1 && got[0] == high, "ngot %u", ngot);
    }

    return check_summary() ? 1 : 0;
}
