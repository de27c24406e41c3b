/*
 * smp: brings up the domain's secondary vCPUs as a PVH guest does and checks
 * VCPUOP_initialise/up/down/is_up (public/vcpu.h, public/hvm/hvm_vcpu.h) and
 * IPIs over event channels.
 *
 * vCPU 0 counts the vCPUs by probing VCPUOP_is_up until -ENOENT, checks the
 * error cases, binds one IPI port per AP on itself, then starts each AP with
 * a vcpu_hvm_context in VCPU_HVM_MODE_64B (its own CR0/CR3/CR4/EFER, RIP = the
 * AP entry, RSP = the AP's stack, RDI = its id) and VCPUOP_up.  Each AP loads
 * the GDT (reloading CS/SS/DS: Xen starts it with null selectors) and the IDT,
 * announces itself, binds an IPI port on itself and sends to "its" port on
 * vCPU 0, which replies on the AP's port; the AP checks VCPUOP_is_up on
 * itself, runs a short compute loop and goes down with VCPUOP_down.  vCPU 0
 * sees every AP down, brings one up again (it resumes after its VCPUOP_down),
 * starts the last vCPU in VCPU_HVM_MODE_32B (flat protected mode, paging off:
 * it writes a marker and halts with IF=0, which takes it down), and powers off.
 *
 * Prints PASS/FAIL lines and `RESULT: N passed, M failed`.  Needs >= 2 vCPUs
 * (`xenode run --vcpus 4`); with 4 or more, vCPUs 1..N-2 start in 64-bit mode
 * and the last in 32-bit mode.  Never hangs: every wait has a timeout.
 */
#include "lib.h"
#include "events.h"
#include <xen/hvm/hvm_vcpu.h>

#define BAD_PTR     ((void *)0x100000000000UL)
#define MS          1000000ULL
#define MAX_APS     8
#define AP_STACK    16384
#define COMPUTE_N   20000
#define MARKER32    0x32b17e57u

#define MSR_EFER    0xc0000080

static uint8_t ap_stacks[MAX_APS + 1][AP_STACK] __attribute__((aligned(16)));

/* Shared between vCPU 0 and the APs. */
static volatile unsigned int arrived;
static volatile evtchn_port_t bsp_port[MAX_APS + 1];   /* on vCPU 0, one per AP */
static volatile evtchn_port_t ap_port[MAX_APS + 1];    /* on each AP */
static volatile long ap_bind_rc[MAX_APS + 1];
static volatile long ap_is_up[MAX_APS + 1];
static volatile uint32_t ap_cpuid_id[MAX_APS + 1];
static volatile int ap_got_reply[MAX_APS + 1];
static volatile uint64_t ap_result[MAX_APS + 1];
static volatile int ap_done[MAX_APS + 1];
static volatile int ap_resumed[MAX_APS + 1];
static volatile long ap_down_rc[MAX_APS + 1];
volatile uint32_t ap32_marker;
static volatile int print_lock;

/* GDTR and IDTR of vCPU 0, loaded by the APs. */
struct __attribute__((packed)) desc_ptr { uint16_t limit; uint64_t base; };
struct desc_ptr bsp_gdt, bsp_idt;

void ap_main(unsigned int id);

/*
 * 64-bit AP entry: Xen gives flat segments with null selectors, so load the
 * GDT and reload CS (far return) and the data segments before anything can
 * fault or take an interrupt.  RDI = vCPU id, RSP = the AP's stack top.
 */
asm(".text\n"
    ".globl ap_entry64\n"
    "ap_entry64:\n"
    "  lgdt bsp_gdt(%rip)\n"
    "  pushq $0x08\n"
    "  leaq 1f(%rip), %rax\n"
    "  pushq %rax\n"
    "  lretq\n"
    "1: movl $0x10, %eax\n"
    "  movl %eax, %ds\n  movl %eax, %es\n  movl %eax, %ss\n  movl %eax, %fs\n  movl %eax, %gs\n"
    "  lidt bsp_idt(%rip)\n"
    "  call ap_main\n"
    "2: cli\n  hlt\n  jmp 2b\n"
    /* 32-bit AP entry: flat protected mode, no paging; marker, then HLT with
     * IF=0 (Xen: the vCPU goes down). */
    ".code32\n"
    ".globl ap_entry32\n"
    "ap_entry32:\n"
    "  movl $" "0x32b17e57" ", ap32_marker\n"
    "3: cli\n  hlt\n  jmp 3b\n"
    ".code64\n");
extern char ap_entry64[], ap_entry32[];

static uint64_t now(void)
{
    return xen_system_time();
}

static void lock(void)
{
    while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
        asm volatile ("pause");
}

static void unlock(void)
{
    __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
}

static long poll_ports(const volatile evtchn_port_t *ports, unsigned int n, uint64_t timeout)
{
    evtchn_port_t p[MAX_APS + 1];
    for (unsigned int i = 0; i < n; i++)
        p[i] = ports[i];
    struct sched_poll sp = { .nr_ports = n, .timeout = timeout };
    set_xen_guest_handle(sp.ports, p);
    return HYPERVISOR_sched_op(SCHEDOP_poll, &sp);
}

static void sleep_ms(uint64_t ms)
{
    uint64_t end = now() + ms * MS;
    while (now() < end)
        poll_ports(NULL, 0, end);
}

static uint64_t compute(unsigned int seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (unsigned int i = 0; i < COMPUTE_N; i++)
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

static long vcpu_op(int cmd, unsigned int vcpu, void *arg)
{
    return HYPERVISOR_vcpu_op(cmd, vcpu, arg);
}

/* ------------------------------------------------------------------- APs */
void ap_main(unsigned int id)
{
    evtchn_vcpu_init(id);
    uint32_t a, b, c, d;
    cpuid(xen_cpuid_base + 4, 0, &a, &b, &c, &d);
    ap_cpuid_id[id] = (a & XEN_HVM_CPUID_VCPU_ID_PRESENT) ? b : 0xffffffffu;
    unsigned int n = __atomic_add_fetch(&arrived, 1, __ATOMIC_SEQ_CST);
    lock();
    printf("smp: vCPU %u up (CPUID vcpu_id %u), %u AP(s) arrived\n", id, ap_cpuid_id[id], n);
    unlock();

    evtchn_port_t mine = 0;
    ap_bind_rc[id] = evtchn_bind_ipi(id, &mine);
    ap_port[id] = mine;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (ap_bind_rc[id] == 0) {
        evtchn_send(bsp_port[id]);
        uint64_t end = now() + 5000 * MS;
        while (!evtchn_is_pending(mine) && now() < end)
            poll_ports(&ap_port[id], 1, end);
        ap_got_reply[id] = evtchn_is_pending(mine);
        evtchn_clear_pending(mine);
    }
    ap_is_up[id] = vcpu_op(VCPUOP_is_up, id, NULL);
    ap_result[id] = compute(id);
    __atomic_store_n(&ap_done[id], 1, __ATOMIC_SEQ_CST);
    ap_down_rc[id] = vcpu_op(VCPUOP_down, id, NULL);
    /* Only reached when vCPU 0 brings this vCPU up again. */
    __atomic_store_n(&ap_resumed[id], 1, __ATOMIC_SEQ_CST);
    vcpu_op(VCPUOP_down, id, NULL);
}

/* -------------------------------------------------------------- vCPU 0 */
static uint64_t read_cr(int n)
{
    uint64_t v = 0;
    switch (n) {
    case 0: asm volatile ("mov %%cr0, %0" : "=r" (v)); break;
    case 3: asm volatile ("mov %%cr3, %0" : "=r" (v)); break;
    case 4: asm volatile ("mov %%cr4, %0" : "=r" (v)); break;
    }
    return v;
}

static void ctx64(struct vcpu_hvm_context *c, unsigned int id)
{
    memset(c, 0, sizeof(*c));
    c->mode = VCPU_HVM_MODE_64B;
    struct vcpu_hvm_x86_64 *r = &c->cpu_regs.x86_64;
    r->cr0 = read_cr(0);
    r->cr3 = read_cr(3);
    r->cr4 = read_cr(4);
    r->efer = rdmsr(MSR_EFER);
    r->rip = (uintptr_t)ap_entry64;
    r->rsp = (uintptr_t)&ap_stacks[id][AP_STACK];
    r->rdi = id;
    r->rflags = 0x2;
}

static void ctx32(struct vcpu_hvm_context *c, unsigned int id)
{
    memset(c, 0, sizeof(*c));
    c->mode = VCPU_HVM_MODE_32B;
    struct vcpu_hvm_x86_32 *r = &c->cpu_regs.x86_32;
    r->cr0 = 0x11;                          /* PE | ET, paging off */
    r->eip = (uint32_t)(uintptr_t)ap_entry32;
    r->esp = (uint32_t)(uintptr_t)&ap_stacks[id][AP_STACK];
    r->eflags = 0x2;
    r->cs_limit = r->ds_limit = r->ss_limit = r->es_limit = 0xffffffff;
    r->cs_ar = 0xc9b;                       /* flat 32-bit code, DPL0 */
    r->ds_ar = r->ss_ar = r->es_ar = 0xc93; /* flat data */
    r->tr_limit = 0x67;
    r->tr_ar = 0x8b;                        /* busy 32-bit TSS */
}

/* Waits until cond(id) holds or `ms` pass; returns whether it holds. */
static int wait_until(int (*cond)(unsigned int), unsigned int id, uint64_t ms)
{
    uint64_t end = now() + ms * MS;
    while (!cond(id)) {
        if (now() >= end)
            return 0;
        sleep_ms(2);
    }
    return 1;
}

static int is_down(unsigned int id) { return vcpu_op(VCPUOP_is_up, id, NULL) == 0; }
static int is_done(unsigned int id) { return ap_done[id]; }
static int has_resumed(unsigned int id) { return ap_resumed[id]; }
static int marker_set(unsigned int id) { return ap32_marker == MARKER32; }

int main(void)
{
    long rc = evtchn_init();
    if (!check_eq("evtchn_init", rc, 0))
        return check_summary();
    asm volatile ("sgdt %0" : "=m" (bsp_gdt));
    asm volatile ("sidt %0" : "=m" (bsp_idt));

    printf("--- vCPU count\n");
    unsigned int n = 0;
    while (n < 1024 && (rc = vcpu_op(VCPUOP_is_up, n, NULL)) >= 0)
        n++;
    check_eq("is_up-probe-ends-enoent", rc, -ENOENT);
    check_eq("is_up-vcpu0", vcpu_op(VCPUOP_is_up, 0, NULL), 1);
    printf("INFO %u vCPUs\n", n);
    if (!check_true("at-least-2-vcpus", n >= 2, "%u vCPU(s): run with --vcpus 4", n))
        return check_summary();
    for (unsigned int i = 1; i < n; i++) {
        char name[40];
        snprintf(name, sizeof(name), "is_up-vcpu%u-initially-down", i);
        check_eq(name, vcpu_op(VCPUOP_is_up, i, NULL), 0);
    }
    unsigned int last = n - 1 > MAX_APS ? MAX_APS : n - 1;
    /* vCPUs 1..nr64 start in 64-bit mode; with 3+ APs the last one in 32-bit mode. */
    unsigned int nr64 = last >= 3 ? last - 1 : last;

    printf("--- error cases\n");
    struct vcpu_hvm_context c;
    ctx64(&c, 1);
    check_eq("up-uninitialised-einval", vcpu_op(VCPUOP_up, 1, NULL), -EINVAL);
    check_eq("up-no-vcpu-enoent", vcpu_op(VCPUOP_up, n, NULL), -ENOENT);
    check_eq("initialise-no-vcpu-enoent", vcpu_op(VCPUOP_initialise, n, &c), -ENOENT);
    check_eq("is_up-no-vcpu-enoent", vcpu_op(VCPUOP_is_up, 1000, NULL), -ENOENT);
    check_eq("down-no-vcpu-enoent", vcpu_op(VCPUOP_down, 1000, NULL), -ENOENT);
    check_eq("initialise-vcpu0-eexist", vcpu_op(VCPUOP_initialise, 0, &c), -EEXIST);
    check_eq("initialise-badptr-efault", vcpu_op(VCPUOP_initialise, 1, BAD_PTR), -EFAULT);
    c.mode = 2;
    check_eq("initialise-bad-mode-einval", vcpu_op(VCPUOP_initialise, 1, &c), -EINVAL);
    ctx64(&c, 1);
    c.cpu_regs.x86_64.cr0 &= ~0x80000000ULL;
    check_eq("initialise-64b-no-paging-einval", vcpu_op(VCPUOP_initialise, 1, &c), -EINVAL);
    ctx64(&c, 1);
    c.cpu_regs.x86_64.efer &= ~0x100ULL;
    check_eq("initialise-64b-no-lme-einval", vcpu_op(VCPUOP_initialise, 1, &c), -EINVAL);
    ctx32(&c, 1);
    c.cpu_regs.x86_32.cs_ar = 0xc93;
    check_eq("initialise-32b-data-cs-einval", vcpu_op(VCPUOP_initialise, 1, &c), -EINVAL);
    ctx32(&c, 1);
    c.cpu_regs.x86_32.tr_ar = 0;
    check_eq("initialise-32b-null-tr-einval", vcpu_op(VCPUOP_initialise, 1, &c), -EINVAL);
    check_eq("up-after-failed-initialise-einval", vcpu_op(VCPUOP_up, 1, NULL), -EINVAL);
    check_eq("is_up-after-failed-initialise", vcpu_op(VCPUOP_is_up, 1, NULL), 0);
    /* Last, as a wrong success leaves vCPU 1 initialised: it is then never
     * brought up (it would run at a non-canonical RIP). */
    ctx64(&c, 1);
    c.cpu_regs.x86_64.rip = 0x0000800000000000ULL;
    int spoiled = !check_eq("initialise-64b-noncanonical-rip-einval", vcpu_op(VCPUOP_initialise, 1, &c), -EINVAL);

    /* The 64-bit APs: vCPUs 1..nr64 (without a spoiled vCPU 1). */
    unsigned int aps[MAX_APS], nr_aps = 0;
    for (unsigned int i = spoiled ? 2 : 1; i <= nr64; i++)
        aps[nr_aps++] = i;
    if (!check_true("some-64-bit-ap", nr_aps > 0, "no vCPU left to start in 64-bit mode"))
        return check_summary();

    printf("--- bring-up (64-bit)\n");
    for (unsigned int k = 0; k < nr_aps; k++) {
        unsigned int i = aps[k];
        evtchn_port_t p = 0;
        char name[48];
        snprintf(name, sizeof(name), "bind_ipi-vcpu0-for-ap%u", i);
        check_eq(name, evtchn_bind_ipi(0, &p), 0);
        bsp_port[i] = p;
    }
    for (unsigned int k = 0; k < nr_aps; k++) {
        unsigned int i = aps[k];
        char name[48];
        ctx64(&c, i);
        snprintf(name, sizeof(name), "initialise-64b-vcpu%u", i);
        check_eq(name, vcpu_op(VCPUOP_initialise, i, &c), 0);
        snprintf(name, sizeof(name), "initialise-again-vcpu%u-eexist", i);
        check_eq(name, vcpu_op(VCPUOP_initialise, i, &c), -EEXIST);
        snprintf(name, sizeof(name), "is_up-vcpu%u-before-up", i);
        check_eq(name, vcpu_op(VCPUOP_is_up, i, NULL), 0);
        snprintf(name, sizeof(name), "up-vcpu%u", i);
        check_eq(name, vcpu_op(VCPUOP_up, i, NULL), 0);
        snprintf(name, sizeof(name), "up-again-vcpu%u", i);
        check_eq(name, vcpu_op(VCPUOP_up, i, NULL), 0);
    }

    printf("--- IPIs\n");
    /* Reply to each AP's IPI on its own port; 10 s for all of them. */
    unsigned int replied = 0;
    int done_reply[MAX_APS + 1] = { 0 };
    evtchn_port_t list[MAX_APS];
    for (unsigned int k = 0; k < nr_aps; k++)
        list[k] = bsp_port[aps[k]];
    uint64_t end = now() + 10000 * MS;
    while (replied < nr_aps && now() < end) {
        poll_ports(list, nr_aps, now() + 100 * MS);
        for (unsigned int k = 0; k < nr_aps; k++) {
            unsigned int i = aps[k];
            if (!done_reply[i] && evtchn_is_pending(bsp_port[i])) {
                evtchn_clear_pending(bsp_port[i]);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                evtchn_send(ap_port[i]);
                done_reply[i] = 1;
                replied++;
            }
        }
    }
    check_eq("aps-arrived", arrived, nr_aps);
    check_eq("ipis-from-aps", replied, nr_aps);
    for (unsigned int k = 0; k < nr_aps; k++) {
        unsigned int i = aps[k];
        char name[48];
        snprintf(name, sizeof(name), "ap%u-done", i);
        check_true(name, wait_until(is_done, i, 10000), "vCPU %u did not finish", i);
        snprintf(name, sizeof(name), "ap%u-cpuid-vcpu-id", i);
        check_eq(name, ap_cpuid_id[i], i);
        snprintf(name, sizeof(name), "ap%u-bind_ipi", i);
        check_eq(name, ap_bind_rc[i], 0);
        snprintf(name, sizeof(name), "ap%u-got-reply-ipi", i);
        check_true(name, ap_got_reply[i], "no IPI from vCPU 0 on port %u", ap_port[i]);
        snprintf(name, sizeof(name), "ap%u-is_up-self", i);
        check_eq(name, ap_is_up[i], 1);
        snprintf(name, sizeof(name), "ap%u-compute", i);
        check_true(name, ap_result[i] == compute(i), "result 0x%lx", (unsigned long)ap_result[i]);
    }

    printf("--- down\n");
    for (unsigned int k = 0; k < nr_aps; k++) {
        unsigned int i = aps[k];
        char name[48];
        snprintf(name, sizeof(name), "ap%u-down-self", i);
        check_true(name, wait_until(is_down, i, 5000), "vCPU %u still up", i);
        snprintf(name, sizeof(name), "initialise-downed-vcpu%u-eexist", i);
        check_eq(name, vcpu_op(VCPUOP_initialise, i, &c), -EEXIST);
    }
    /* Up again: the AP resumes after its VCPUOP_down, which returned 0. */
    unsigned int r = aps[0];
    check_eq("up-downed-ap", vcpu_op(VCPUOP_up, r, NULL), 0);
    check_true("ap-resumes-after-down", wait_until(has_resumed, r, 5000), "vCPU %u did not resume", r);
    check_eq("ap-down-returned-0", ap_down_rc[r], 0);
    check_true("ap-down-again", wait_until(is_down, r, 5000), "vCPU %u still up", r);

    if (last > nr64) {
        printf("--- 32-bit bring-up\n");
        unsigned int id = last;
        ctx32(&c, id);
        check_eq("initialise-32b", vcpu_op(VCPUOP_initialise, id, &c), 0);
        check_eq("up-32b", vcpu_op(VCPUOP_up, id, NULL), 0);
        check_true("ap32-marker", wait_until(marker_set, id, 5000), "marker 0x%x", ap32_marker);
        check_true("ap32-hlt-if0-goes-down", wait_until(is_down, id, 5000), "vCPU %u still up", id);
    }

    for (unsigned int i = 1; i < n; i++) {
        char name[48];
        if (spoiled && i == 1)
            continue;
        snprintf(name, sizeof(name), "vcpu%u-down-at-end", i);
        check_eq(name, vcpu_op(VCPUOP_is_up, i, NULL), 0);
    }
    return check_summary();
}
