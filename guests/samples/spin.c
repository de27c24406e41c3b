/*
 * spin: a CPL3 compute guest (for scheduling tests).
 *
 * Sets up a TSS and drops to ring 3 with iretq (sysretq #GPs at CPL0 on PVM
 * hosts, and SYSCALL does not reach ring 0 there, so neither is used).  Ring 3
 * spins computing an LCG and prints one line per round through a system call
 * gate (ud2 with rax = number, handled by the #UD handler at CPL0, which also
 * works on PVM where `int $N` from CPL3 arrives as #UD anyway).  rounds=N on
 * the command line stops after N rounds (default 0 = run forever),
 * round_bits=B sets 2^B iterations per round (default 26).  Before leaving,
 * ring 3 calls xen_version through the hypercall page, which must not run.
 * Which answer proves that depends on the host, so ring 3 first probes it
 * with an OUT to port 0x80 (where writes vanish): where that OUT reaches the
 * hypervisor (IOPL is 3), so does the stub's, and Xen's CPL3 check must
 * answer -EPERM; where the host CPU refuses OUT at CPL3 whatever IOPL says
 * (PVM), the probe takes #GP, the hypervisor is never asked, and the guest
 * says so instead of counting the #GP as the hypervisor's refusal.  The exit
 * system call then powers off from ring 0.
 */
#include "lib.h"

#define USER_CS 0x2b
#define USER_DS 0x23

static uint8_t user_stack[16384] __attribute__((aligned(16)));
static uint8_t kernel_stack[16384] __attribute__((aligned(16)));
static uint64_t rounds, round_bits;
static volatile uint64_t sink;

#define SYS_WRITE 1
#define SYS_EXIT  2
#define HC_GP     0x6770   /* marker: the ring-3 hypercall stub took #GP */
#define IO_GP     0x6771   /* marker: the ring-3 port 0x80 probe took #GP */

long spin_syscall(uint64_t a1, uint64_t a2, uint64_t nr);
extern char spin_io_probe[];
static volatile long io_probe;    /* 0: the probe's OUT went through; IO_GP: it faulted */

/* Ring 3 OUTs fault on hosts that do not honour IOPL (PVM): skip the probe or
 * the hypercall stub and report the #GP to the caller. */
static int gp_hook(struct trap_frame *f)
{
    uintptr_t page = (uintptr_t)hypercall_page;
    if (f->vector == 13 && (f->cs & 3) == 3 && f->rip == (uintptr_t)spin_io_probe) {
        f->rip += 2;                       /* outb %al, $0x80 */
        f->rax = IO_GP;
        return 1;
    }
    if (f->vector == 13 && (f->cs & 3) == 3 && f->rip >= page && f->rip < page + 4096) {
        f->rip = *(uint64_t *)f->rsp;      /* return address of the call */
        f->rsp += 8;
        f->rax = HC_GP;
        return 1;
    }
    /* The system call gate: ud2 at CPL3 with rax = number, rdi/rsi = args. */
    if (f->vector == 6 && (f->cs & 3) == 3 && *(uint16_t *)f->rip == 0x0b0f) {
        f->rax = spin_syscall(f->rdi, f->rsi, f->rax);
        f->rip += 2;
        return 1;
    }
    return 0;
}

/* Ring 0 side of the system call gate. */
long spin_syscall(uint64_t a1, uint64_t a2, uint64_t nr)
{
    if (nr == SYS_WRITE) {
        console_write((const char *)a1, a2);
        return 0;
    }
    long rc = (long)a1;
    printf("spin: back in ring 0 after %lu rounds\n", a2);
    if (xen_present) {
        if (io_probe == IO_GP) {
            printf("spin: this host's CPU refuses OUT at CPL3 (the port 0x80 probe took #GP): "
                   "the hypercall stub cannot reach the hypervisor, whose CPL3 -> -EPERM check is not exercised here\n");
            check_true("cpl3-hypercall-stopped-by-host-cpu", rc == HC_GP,
                       "got %ld, want the stub's #GP like the probe's", rc);
        } else {
            printf("spin: OUT at CPL3 reaches the hypervisor here (the port 0x80 probe exited to it): "
                   "the hypercall must be refused by the hypervisor\n");
            check_true("cpl3-hypercall-EPERM", rc == -EPERM, "got %ld want -EPERM (%d)", rc, -EPERM);
        }
        check_summary();
    }
    shutdown(checks_failed ? SHUTDOWN_crash : SHUTDOWN_poweroff);
}

static long user_syscall(uint64_t nr, uint64_t a1, uint64_t a2)
{
    long rc;
    asm volatile ("ud2" : "=a" (rc) : "0" (nr), "D" (a1), "S" (a2) : "memory");
    return rc;
}

static void user_print(const char *fmt, ...)
{
    char buf[96];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    user_syscall(SYS_WRITE, (uintptr_t)buf, n);
}

/* Ring 3: whether an OUT at CPL3 gets past the host CPU (see gp_hook). */
static void __attribute__((noinline)) user_probe_io(void)
{
    long r = 0;
    asm volatile (".globl spin_io_probe\nspin_io_probe: outb %%al, $0x80" : "+a" (r) :: "memory");
    io_probe = r;
}

static void __attribute__((noreturn)) user_main(void)
{
    uint16_t cs;
    asm volatile ("mov %%cs, %0" : "=r" (cs));
    user_print("spin: running at CPL%u\n", cs & 3);

    uint64_t x = 0x1234567, done = 0;
    for (;;) {
        uint64_t t0 = rdtsc();
        for (uint64_t i = 0; i < (1UL << round_bits); i++)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
        sink = x;
        done++;
        user_print("spin: round %lu (%lu tsc ticks)\n", done, rdtsc() - t0);
        if (rounds && done >= rounds)
            break;
    }

    user_probe_io();
    long rc = xen_present ? HYPERVISOR_xen_version(XENVER_version, NULL) : -EPERM;
    user_syscall(SYS_EXIT, rc, done);
    for (;;)
        ;
}

int main(void)
{
    rounds = cmdline_u64("rounds", 0);
    round_bits = cmdline_u64("round_bits", 26);
    if (round_bits > 40)
        round_bits = 40;
    printf("spin: entering ring 3 (rounds=%lu, 0 = forever; 2^%lu iterations per round)\n",
           rounds, round_bits);
    pvcons_flush();

    trap_hook = gp_hook;
    tss_init((uintptr_t)kernel_stack + sizeof(kernel_stack));

    uint64_t ursp = (uintptr_t)user_stack + sizeof(user_stack) - 8;
    asm volatile ("pushq %[ss]; pushq %[rsp]; pushq %[fl]; pushq %[cs]; pushq %[rip]; iretq"
                  :: [ss] "i" (USER_DS), [rsp] "r" (ursp), [fl] "i" (0x3002),
                     [cs] "i" (USER_CS), [rip] "r" (user_main)
                  : "memory");
    __builtin_unreachable();
}
