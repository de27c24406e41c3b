/*
 * lapic: checks the local APIC the hypervisor models (there is no in-kernel
 * irqchip): the xAPIC page at 0xFEE00000, the base MSR, spurious-vector
 * enable, self-IPIs through the ICR, TPR masking, EOI and the in-service
 * register, the LVT timer (one-shot, periodic, TSC-deadline), x2APIC mode
 * and its MSRs, and the event-channel upcall delivered through the APIC
 * (HVMOP_set_evtchn_upcall_vector, edge with EOI). PASS/FAIL lines, RESULT.
 */
#include "lib.h"
#include "events.h"

#define SECTION(s) printf("--- %s\n", s)

#define APIC_GPA        0xfee00000UL
#define MSR_APIC_BASE   0x1b
#define MSR_TSC_DEADLINE 0x6e0
#define X2APIC_MSR(off) (0x800 + ((off) >> 4))

enum { APIC_ID = 0x20, APIC_LVR = 0x30, APIC_TPR = 0x80, APIC_EOI = 0xb0, APIC_SVR = 0xf0,
       APIC_ISR = 0x100, APIC_IRR = 0x200, APIC_ICR = 0x300, APIC_ICR2 = 0x310, APIC_LVTT = 0x320,
       APIC_TMICT = 0x380, APIC_TMCCT = 0x390, APIC_TDCR = 0x3e0, APIC_SELF_IPI = 0x3f0 };

#define V_IPI       0x40
#define V_MASKED    0x41
#define V_ONESHOT   0x50
#define V_PERIODIC  0x51
#define V_DEADLINE  0x52
#define V_X2IPI     0x60
#define V_ABOVE_TPR 0x62
#define V_UPCALL    0xf4

static int x2apic;
static volatile uint64_t hits[256];
static volatile uint64_t hit_time[256];
static volatile uint32_t isr_seen;

static uint32_t apic_read(uint32_t off)
{
    if (x2apic)
        return (uint32_t)rdmsr(X2APIC_MSR(off));
    return *(volatile uint32_t *)(APIC_GPA + off);
}

static void apic_write(uint32_t off, uint32_t val)
{
    if (x2apic)
        wrmsr(X2APIC_MSR(off), val);
    else
        *(volatile uint32_t *)(APIC_GPA + off) = val;
}

static int vector_bit(uint32_t base, unsigned vec)
{
    return (apic_read(base + 0x10 * (vec / 32)) >> (vec % 32)) & 1;
}

/* Called from the stubs below with the vector; EOIs as an APIC guest must. */
void lapic_irq(uint64_t vec)
{
    isr_seen = vector_bit(APIC_ISR, (unsigned)vec);
    if (vec == V_UPCALL)
        evtchn_do_upcall();
    hits[vec]++;
    hit_time[vec] = xen_system_time();
    apic_write(APIC_EOI, 0);
}

#define STUB(vec) \
    extern void lapic_stub_##vec(void); \
    asm(".text\n.globl lapic_stub_" #vec "\nlapic_stub_" #vec ":\n" \
        "push %rax\npush %rcx\npush %rdx\npush %rsi\npush %rdi\n" \
        "push %r8\npush %r9\npush %r10\npush %r11\n" \
        "mov $" #vec ", %edi\ncall lapic_irq\n" \
        "pop %r11\npop %r10\npop %r9\npop %r8\n" \
        "pop %rdi\npop %rsi\npop %rdx\npop %rcx\npop %rax\niretq\n");

STUB(0x40) STUB(0x41) STUB(0x50) STUB(0x51) STUB(0x52) STUB(0x60) STUB(0x62) STUB(0xf4)

/* Opens interrupts until `vec` has fired `n` times or ~`ms` of pvclock time passed. */
static void wait_hits(unsigned vec, uint64_t n, uint64_t ms)
{
    uint64_t end = xen_system_time() + ms * 1000000ULL;
    asm volatile ("sti" ::: "memory");
    while (hits[vec] < n && xen_system_time() < end)
        asm volatile ("pause" ::: "memory");
    asm volatile ("cli" ::: "memory");
}

static uint64_t upcall_port_hits;
static void upcall_handler(evtchn_port_t port, void *arg) { upcall_port_hits++; }

int main(void)
{
    uint32_t a, b, c, d;
    /* pvclock (xen_system_time) lives in shared_info: map it first. */
    if (!shared_info_map())
        return 1;
    SECTION("CPUID and the base MSR");
    cpuid(1, 0, &a, &b, &c, &d);
    check_eq("cpuid-apic", (d >> 9) & 1, 1);
    check_eq("cpuid-x2apic", (c >> 21) & 1, 1);
    check_eq("cpuid-tsc-deadline", (c >> 24) & 1, 1);
    uint64_t base = rdmsr(MSR_APIC_BASE);
    check_eq("apicbase-address", (long)(base & ~0xfffUL), (long)APIC_GPA);
    check_eq("apicbase-enabled", (base >> 11) & 1, 1);
    check_eq("apicbase-bsp", (base >> 8) & 1, 1);
    check_eq("apicbase-not-x2apic", (base >> 10) & 1, 0);

    SECTION("xAPIC registers");
    check_eq("id-is-vcpu-id", apic_read(APIC_ID) >> 24, xen_vcpu_id);
    uint32_t lvr = apic_read(APIC_LVR);
    check_eq("version", lvr & 0xff, 0x14);
    check_eq("max-lvt", (lvr >> 16) & 0xff, 5);
    apic_write(APIC_LVR, 0);
    check_eq("version-read-only", apic_read(APIC_LVR), lvr);
    check_eq("lvtt-masked-at-reset", (apic_read(APIC_LVTT) >> 16) & 1, 1);
    apic_write(APIC_SVR, 0x1ff);   /* software enable, spurious vector 0xff */
    check_eq("svr-enabled", apic_read(APIC_SVR), 0x1ff);

    idt_set_gate(V_IPI, lapic_stub_0x40);
    idt_set_gate(V_MASKED, lapic_stub_0x41);
    idt_set_gate(V_ONESHOT, lapic_stub_0x50);
    idt_set_gate(V_PERIODIC, lapic_stub_0x51);
    idt_set_gate(V_DEADLINE, lapic_stub_0x52);
    idt_set_gate(V_X2IPI, lapic_stub_0x60);
    idt_set_gate(V_ABOVE_TPR, lapic_stub_0x62);
    idt_set_gate(V_UPCALL, lapic_stub_0xf4);

    SECTION("self-IPI, IRR, ISR, EOI");
    apic_write(APIC_ICR2, 0);
    apic_write(APIC_ICR, V_IPI | 0x40000 /* shorthand self */);
    check_eq("self-ipi-in-irr", vector_bit(APIC_IRR, V_IPI), 1);
    check_eq("self-ipi-held-while-cli", hits[V_IPI], 0);
    wait_hits(V_IPI, 1, 2000);
    check_eq("self-ipi-delivered", hits[V_IPI], 1);
    check_eq("in-service-during-handler", isr_seen, 1);
    check_eq("isr-clear-after-eoi", vector_bit(APIC_ISR, V_IPI), 0);
    check_eq("irr-clear-after-delivery", vector_bit(APIC_IRR, V_IPI), 0);

    SECTION("TPR masks lower priority classes");
    /* Judged by an event, not a time window: a class-6 IPI sent after the
     * class-4 one is delivered while the class-4 one stays requested. */
    apic_write(APIC_TPR, 0x50);
    apic_write(APIC_ICR, V_MASKED | 0x40000);
    apic_write(APIC_ICR, V_ABOVE_TPR | 0x40000);
    wait_hits(V_ABOVE_TPR, 1, 2000);
    check_eq("tpr-passes-class-6", hits[V_ABOVE_TPR], 1);
    check_eq("tpr-holds-class-4", hits[V_MASKED], 0);
    check_eq("tpr-held-stays-in-irr", vector_bit(APIC_IRR, V_MASKED), 1);
    apic_write(APIC_TPR, 0);
    wait_hits(V_MASKED, 1, 2000);
    check_eq("tpr-lowered-delivers", hits[V_MASKED], 1);

    SECTION("LVT timer");
    apic_write(APIC_TDCR, 0xb);        /* divide by 1: 100 MHz, 10 ns a count */
    apic_write(APIC_LVTT, V_ONESHOT);  /* one-shot, unmasked */
    uint64_t t0 = xen_system_time();
    apic_write(APIC_TMICT, 200000);    /* 2 ms */
    check_true("tmcct-counts-down", apic_read(APIC_TMCCT) <= 200000 && apic_read(APIC_TMCCT) > 0, "tmcct %u", apic_read(APIC_TMCCT));
    wait_hits(V_ONESHOT, 1, 2000);
    check_eq("oneshot-fired", hits[V_ONESHOT], 1);
    check_true("oneshot-not-early", hit_time[V_ONESHOT] - t0 >= 2000000, "after %lu ns", hit_time[V_ONESHOT] - t0);
    wait_hits(V_ONESHOT, 2, 10);
    check_eq("oneshot-fires-once", hits[V_ONESHOT], 1);
    check_eq("tmcct-zero-after-expiry", apic_read(APIC_TMCCT), 0);

    apic_write(APIC_LVTT, V_PERIODIC | 0x20000);
    apic_write(APIC_TMICT, 100000);    /* 1 ms */
    wait_hits(V_PERIODIC, 3, 2000);
    apic_write(APIC_LVTT, V_PERIODIC | 0x20000 | 0x10000);   /* mask */
    apic_write(APIC_TMICT, 0);
    check_true("periodic-fired-3-times", hits[V_PERIODIC] >= 3, "%lu", hits[V_PERIODIC]);

    apic_write(APIC_LVTT, V_DEADLINE | 0x40000);   /* TSC-deadline mode */
    check_eq("tsc-deadline-mode-set", (apic_read(APIC_LVTT) >> 17) & 3, 2);
    wrmsr(MSR_TSC_DEADLINE, rdtsc() + 2000000);   /* ~1 ms at 2 GHz */
    wait_hits(V_DEADLINE, 1, 2000);
    check_eq("tsc-deadline-fired", hits[V_DEADLINE], 1);
    check_eq("tsc-deadline-msr-cleared", (long)rdmsr(MSR_TSC_DEADLINE), 0);

    SECTION("x2APIC");
    wrmsr(MSR_APIC_BASE, base | (1UL << 10));
    x2apic = 1;
    check_eq("x2apic-enabled", (rdmsr(MSR_APIC_BASE) >> 10) & 1, 1);
    check_eq("x2apic-id", (long)rdmsr(X2APIC_MSR(APIC_ID)), xen_vcpu_id);
    check_eq("x2apic-version", (long)(rdmsr(X2APIC_MSR(APIC_LVR)) & 0xff), 0x14);
    check_eq("xapic-page-inert-in-x2apic", *(volatile uint32_t *)(APIC_GPA + APIC_LVR), (long)0xffffffffU);
    wrmsr(X2APIC_MSR(APIC_SELF_IPI), V_X2IPI);
    wait_hits(V_X2IPI, 1, 2000);
    check_eq("x2apic-self-ipi", hits[V_X2IPI], 1);
    wrmsr(X2APIC_MSR(APIC_ICR), V_X2IPI | 0x40000);
    wait_hits(V_X2IPI, 2, 2000);
    check_eq("x2apic-icr-self", hits[V_X2IPI], 2);

    SECTION("event-channel upcall through the APIC");
    check_eq("evtchn_init", evtchn_init(), 0);
    struct xen_hvm_evtchn_upcall_vector uv = { .vcpu = 0, .vector = V_UPCALL };
    check_eq("set_evtchn_upcall_vector", HYPERVISOR_hvm_op(HVMOP_set_evtchn_upcall_vector, &uv), 0);
    evtchn_port_t port;
    check_eq("bind_ipi", evtchn_bind_ipi(0, &port), 0);
    evtchn_bind_handler(port, upcall_handler, NULL);
    for (int i = 0; i < 3; i++) {
        check_eq("send", evtchn_send(port), 0);
        wait_hits(V_UPCALL, (uint64_t)i + 1, 2000);
    }
    check_eq("upcall-vector-entries", hits[V_UPCALL], 3);
    check_eq("upcall-port-handler", upcall_port_hits, 3);
    check_eq("upcall-in-service-in-handler", isr_seen, 1);
    /* every upcall came in through the APIC vector, none through CALLBACK_IRQ's */
    check_eq("all-upcalls-through-apic-vector", this_cpu()->upcalls, hits[V_UPCALL]);

    return check_summary() ? 1 : 0;
}
