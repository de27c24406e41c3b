/*
 * sipi: starts vCPU 1 the way Linux starts its secondary CPUs on PVH
 * (native_cpu_up: INIT, INIT de-assert, then two STARTUP IPIs through the
 * local APIC's ICR) into a real-mode trampoline copied below 1 MiB, as Xen's
 * vlapic does it (vlapic_init_sipi_one, hvm_vcpu_reset_state).
 *
 * The trampoline, at 0x8000 (STARTUP vector 0x08), runs in real mode with
 * IF=0: it counts its runs, records CS and CR0, computes with 16-bit
 * registers and memory (a real-mode segment: DS = 0x0700 reaches 0x7000),
 * and halts with IF=0, which takes the vCPU down.  vCPU 0 checks that it ran
 * exactly once for the two STARTUPs, in real mode at CS 0x0800, that INIT
 * alone started nothing, and that the vCPU is down afterwards.
 *
 * Then the way Linux brings back a CPU it offlined (its play_dead halts with
 * IF=0): INIT of the halted vCPU resets it and STARTUP runs the trampoline
 * again, in real mode.  Last, INIT of a vCPU that is running (the trampoline
 * spins when told to) takes it down as Xen does, and STARTUP starts it again.
 *
 * Prints PASS/FAIL lines and `RESULT: N passed, M failed`.  Needs 2 vCPUs
 * (`xenode run --vcpus 2`).  Never hangs: every wait has a timeout.
 */
#include "lib.h"
#include <xen/vcpu.h>

#define APIC_GPA    0xfee00000UL
#define APIC_ICR    0x300
#define APIC_ICR2   0x310
#define ICR_INIT    0x500
#define ICR_STARTUP 0x600
#define ICR_LEVEL   0x8000
#define ICR_ASSERT  0x4000
#define TRAMPOLINE  0x8000UL
#define DATA        0x7000UL       /* the trampoline's DS:0 */
#define MS          1000000ULL

/* What the trampoline leaves at DATA (its DS = 0x0700). */
struct tramp_data {
    uint16_t runs;
    uint16_t cs;
    uint32_t cr0;
    uint16_t sum;          /* 1 + 2 + ... + 100, computed in 16-bit registers */
    uint16_t spin;         /* set by vCPU 0: spin with IF=0 instead of halting */
    uint16_t spinning;     /* set by the trampoline as it starts spinning */
};

extern const uint8_t tramp_start[], tramp_end[];
__asm__(
    ".pushsection .rodata\n"
    ".code16\n"
    "tramp_start:\n"
    "    cli\n"
    "    movw $0x0700, %ax\n"
    "    movw %ax, %ds\n"
    "    incw 0\n"                  /* runs */
    "    movw %cs, %ax\n"
    "    movw %ax, 2\n"             /* cs */
    "    movl %cr0, %eax\n"
    "    movl %eax, 4\n"            /* cr0 */
    "    xorw %ax, %ax\n"
    "    movw $100, %cx\n"
    "1:  addw %cx, %ax\n"
    "    loop 1b\n"
    "    movw %ax, 8\n"             /* sum */
    "    cmpw $0, 10\n"             /* spin */
    "    je 2f\n"
    "    movw $1, 12\n"             /* spinning */
    "3:  jmp 3b\n"
    "2:  hlt\n"
    "    jmp 2b\n"
    "tramp_end:\n"
    ".code64\n"
    ".popsection\n");

static void apic_write(unsigned int off, uint32_t v)
{
    *(volatile uint32_t *)(APIC_GPA + off) = v;
}

static void ipi(unsigned int apic_id, uint32_t low)
{
    apic_write(APIC_ICR2, apic_id << 24);
    apic_write(APIC_ICR, low);
}

static int wait_for(volatile uint16_t *p, uint16_t want, uint64_t ms)
{
    uint64_t end = xen_system_time() + ms * MS;
    while (*p != want && xen_system_time() < end)
        sched_yield();
    return *p == want;
}

int main(void)
{
    volatile struct tramp_data *d = (volatile struct tramp_data *)DATA;
    long up;

    /* xen_system_time, which bounds every wait, reads the pvclock in shared_info: map it first. */
    if (!shared_info_map()) {
        check_true("shared-info-mapped", 0, "XENMEM_add_to_physmap failed");
        return check_summary();
    }
    if (HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL) < 0) {
        check_true("at-least-2-vcpus", 0, "run with --vcpus 2");
        return check_summary();
    }
    memcpy((void *)TRAMPOLINE, tramp_start, tramp_end - tramp_start);
    memset((void *)DATA, 0, sizeof(*d));
    check_eq("ap-starts-down", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 0);

    /* INIT assert and de-assert: a vCPU that never ran waits for STARTUP. */
    ipi(1, ICR_INIT | ICR_LEVEL | ICR_ASSERT);
    ipi(1, ICR_INIT | ICR_LEVEL);
    for (int i = 0; i < 20; i++)
        sched_yield();
    check_eq("init-starts-nothing", d->runs, 0);
    check_eq("init-leaves-it-down", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 0);

    /* Two STARTUPs, as Linux sends: the second finds the vCPU started. */
    ipi(1, ICR_STARTUP | (TRAMPOLINE >> 12));
    ipi(1, ICR_STARTUP | (TRAMPOLINE >> 12));
    check_true("trampoline-ran", wait_for(&d->runs, 1, 5000), "runs %u", d->runs);
    check_eq("cs-is-vector-shl-8", d->cs, (long)(TRAMPOLINE >> 4));
    check_eq("real-mode-cr0-pe-clear", d->cr0 & 1, 0);
    check_eq("real-mode-cr0-et", (d->cr0 >> 4) & 1, 1);
    check_true("real-mode-arithmetic", wait_for(&d->sum, 5050, 1000), "sum %u", d->sum);

    /* HLT with IF=0 takes it down; one run for both STARTUPs. */
    uint64_t end = xen_system_time() + 5000 * MS;
    while ((up = HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL)) == 1 && xen_system_time() < end)
        sched_yield();
    check_eq("hlt-if0-goes-down", up, 0);
    check_eq("one-run-for-two-startups", d->runs, 1);

    /* Bringing back a halted vCPU, as Linux's cpu_up after an offline: INIT resets it, STARTUP restarts it. */
    d->cs = 0;
    d->cr0 = 0xffffffff;
    ipi(1, ICR_INIT | ICR_LEVEL | ICR_ASSERT);
    ipi(1, ICR_INIT | ICR_LEVEL);
    check_eq("init-of-halted-stays-down", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 0);
    ipi(1, ICR_STARTUP | (TRAMPOLINE >> 12));
    ipi(1, ICR_STARTUP | (TRAMPOLINE >> 12));
    check_true("init-startup-restarts-halted", wait_for(&d->runs, 2, 5000), "runs %u", d->runs);
    check_eq("restart-cs-is-vector-shl-8", d->cs, (long)(TRAMPOLINE >> 4));
    check_eq("restart-in-real-mode", d->cr0 & 1, 0);

    /* INIT of a running vCPU takes it down (Xen's hvm_vcpu_down, vcpu_reset); STARTUP starts it again. */
    end = xen_system_time() + 5000 * MS;
    while (HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL) == 1 && xen_system_time() < end)
        sched_yield();
    d->spin = 1;
    ipi(1, ICR_INIT | ICR_LEVEL | ICR_ASSERT);
    ipi(1, ICR_INIT | ICR_LEVEL);
    ipi(1, ICR_STARTUP | (TRAMPOLINE >> 12));
    check_true("spinning-vcpu-ran", wait_for(&d->spinning, 1, 5000), "runs %u", d->runs);
    check_eq("spinning-vcpu-is-up", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 1);
    ipi(1, ICR_INIT | ICR_LEVEL | ICR_ASSERT);
    check_eq("init-takes-running-down", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 0);
    d->spin = 0;
    ipi(1, ICR_INIT | ICR_LEVEL);
    ipi(1, ICR_STARTUP | (TRAMPOLINE >> 12));
    check_true("startup-after-init-of-running", wait_for(&d->runs, 4, 5000), "runs %u", d->runs);
    end = xen_system_time() + 5000 * MS;
    while ((up = HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL)) == 1 && xen_system_time() < end)
        sched_yield();
    check_eq("restarted-halts-down", up, 0);
    return check_summary();
}
