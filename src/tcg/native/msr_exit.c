/*
 * The software CPU's native pieces (libxenode_tcg.so, loaded RTLD_GLOBAL
 * before libunicorn):
 *
 * 1. RDMSR and WRMSR as precise exits. Unicorn 2.1.4 offers no hook on them:
 *    QEMU's helpers handle the MSRs QEMU knows, ignore writes to the others and
 *    read them as 0, with no #GP. Both helpers first call QEMU's SVM intercept
 *    check through the PLT; this library provides that symbol and raises a
 *    pseudo-exception from there (QEMU's own raise path, from the helper's
 *    return address), so the engine stops exactly at the instruction and the
 *    hypervisor decides: its own MSRs, QEMU's (done with passthrough on), or
 *    #GP. xenode never runs guests in SVM guest mode (SVM is hidden from them),
 *    where the original check would do anything else.
 *
 * 2. Stopping between blocks. A stop (a kick, the pCPU timer, a device
 *    write) is QEMU's own kick, cpu_exit: the engine leaves at the next
 *    translated block's entry, where the state is exact (a block is at most
 *    512 instructions, a loop is a block that jumps to itself, and each pass
 *    of a REP string instruction is a block of its own); this library wraps
 *    QEMU's cpu_exec (reached through the PLT) and ends the run there.
 *    uc_emu_stop is not used for that: it also sets Unicorn's stop_request,
 *    and while that is set Unicorn skips the instruction hooks still to come
 *    in the block (an RDTSC then reads the host's TSC, a CPUID the host's
 *    leaves, an OUT goes nowhere). Unicorn also checks for a stop after
 *    every guest load and store and leaves from there with the state of the
 *    instruction's start, after its access was done: the instruction runs
 *    again (an `inc [mem]` counts twice, a device sees its write twice). This
 *    library provides that check's code generator (check_exit_request,
 *    reached through the PLT) and emits nothing. There is no code hook:
 *    Unicorn's makes every instruction sync EFLAGS and call out, several
 *    times the cost of the guest code itself.
 *
 * 3. The interrupt window as QEMU finds it: while an interrupt waits for the
 *    guest, the run asks for QEMU's CPU_INTERRUPT_HARD. QEMU takes it between
 *    blocks once IF is 1 and no STI/MOV SS shadow holds (it ends a block at
 *    STI, POPF, IRET and after a shadowed instruction for that), checking its
 *    SVM intercept first: there this library stops the engine, and the
 *    delivery that follows (Unicorn has no interrupt controller to take the
 *    vector from) is dropped: the hypervisor delivers the interrupt itself.
 *
 * 4. Port I/O that exits. An OUT or IN to a port the hypervisor handles
 *    between runs (the hypercall port) must stop the engine right after it,
 *    which a hook cannot do without a per-instruction check (see 2). This
 *    library provides QEMU's port I/O helpers, which generated code reaches
 *    through libunicorn's GOT: for such a port it raises a pseudo-exception
 *    from the helper's return address, so the engine stops exactly at the
 *    instruction, as for RDMSR/WRMSR, and the vCPU completes it as KVM would;
 *    other ports go to QEMU's helpers (and Unicorn's hooks) as before.
 *
 * 5. RDTSC and RDTSCP: a native hook reads the TSC the guest sees (a linear
 *    function of CLOCK_MONOTONIC, as the vCPU defines it) without a call into
 *    JavaScript.
 *
 * 6. Leaving CPL 0: a block hook ends the run before the first block outside
 *    CPL 0 when asked (a vCPU whose kernel runs here and whose CPL 3 code
 *    runs in KVM).
 */
#include "shim.h"
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define SVM_EXIT_INTR 0x60
#define SVM_EXIT_MSR 0x7c
/* CPU_INTERRUPT_HARD (QEMU include/hw/core/cpu.h) */
#define CPU_INTERRUPT_HARD 0x0002

typedef void (*raise_fn)(void *env, int exception_index, int error_code, uintptr_t retaddr);
typedef int (*stop_fn)(void *uc);
typedef int (*start_fn)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout, size_t count);
typedef void (*cpu_fn)(void *cpu);
typedef void (*cpu_mask_fn)(void *cpu, int mask);
typedef void (*hardirq_fn)(void *env, int intno, int is_hw);
typedef void (*out_fn)(void *env, uint32_t port, uint32_t data);
typedef uint32_t (*in_fn)(void *env, uint32_t port);
typedef int (*exec_fn)(void *uc, void *cpu);
typedef int (*reg_fn)(void *uc, int regid, void *value);

static raise_fn xenode_raise;
static stop_fn xenode_stop;
static start_fn xenode_start;
static cpu_fn real_cpu_exit;
static exec_fn real_cpu_exec;
static cpu_mask_fn *interrupt_handler; /* &cpu_interrupt_handler: what cpu_interrupt() calls */
static cpu_mask_fn reset_interrupt;
static hardirq_fn real_hardirq;
static int xenode_vector;
static int xenode_io_vector;
static out_fn real_out[3];
static in_fn real_in[3];
static reg_fn reg_read, reg_write;
static __thread int xenode_pass;

/*
 * libunicorn's own functions (helpers: outb, outw, outl, inb, inw, inl, then
 * code_pages.c's), the
 * pseudo-exceptions the intr hook sees for RDMSR/WRMSR and for port I/O that exits
 */
void xenode_tcg_init(raise_fn raise, stop_fn stop, start_fn start, cpu_fn cpu_exit, void *cpu_exec, cpu_mask_fn *handler,
                     cpu_mask_fn reset, hardirq_fn hardirq, void **helpers, reg_fn read, reg_fn write,
                     int vector, int io_vector)
{
    real_cpu_exec = (exec_fn)cpu_exec;
    for (int i = 0; i < 3; i++) {
        real_out[i] = (out_fn)helpers[i];
        real_in[i] = (in_fn)helpers[3 + i];
    }
    xenode_code_pages_init(helpers + 6);
    reg_read = read;
    reg_write = write;
    xenode_io_vector = io_vector;
    xenode_raise = raise;
    xenode_stop = stop;
    xenode_start = start;
    real_cpu_exit = cpu_exit;
    interrupt_handler = handler;
    reset_interrupt = reset;
    real_hardirq = hardirq;
    xenode_vector = vector;
}

/* While on, MSR accesses go to QEMU (the hypervisor asking QEMU for one of its own MSRs). */
void xenode_tcg_passthrough(int on)
{
    xenode_pass = on;
}

/* A pCPU's stop flag: the run in progress (one engine at a time) and what was asked of it. */
struct xenode_stop {
    int bits;   /* STOP_* */
    int users;  /* other threads about to kick `cpu` */
    void *cpu;  /* QEMU's CPUState of the engine inside cpu_exec */
};
#define STOP_ASKED 1
#define STOP_RUNNING 2 /* inside QEMU's cpu_exec */

/* The run on this thread: its flag and engine, its window, a stop it asked of itself, the ports that exit (a bitmap, one bit a port). */
static __thread struct xenode_stop *cur_run;
__thread void *xenode_cur_uc, *xenode_cur_cpu;
#define cur_uc xenode_cur_uc
#define cur_cpu xenode_cur_cpu
static __thread int window_armed, window_hit, self_stop;
/* Stop before the first block outside CPL 0 (a vCPU whose CPL 3 code runs in KVM), and whether that stopped it. */
static __thread int user_armed, user_hit;
static __thread const uint8_t *exit_ports;
/* The next access to an exiting port is done instead (a string instruction's element). */
static __thread int io_pass;

void xenode_io_pass(void)
{
    io_pass = 1;
}

/* The pseudo-exception's error code: port, size in bytes << 16, IN << 20 */
static inline int io_exits(uint32_t port)
{
    if (!exit_ports || !((exit_ports[(port & 0xffff) >> 3] >> (port & 7)) & 1))
        return 0;
    if (io_pass) {
        io_pass = 0;
        return 0;
    }
    return 1;
}

#define GETPC() ((uintptr_t)__builtin_return_address(0))
#define OUT_HELPER(name, i, size)                                                   \
    __attribute__((noinline)) void name(void *env, uint32_t port, uint32_t data)    \
    {                                                                               \
        if (io_exits(port))                                                         \
            xenode_raise(env, xenode_io_vector, (int)((port & 0xffff) | (size << 16)), GETPC()); \
        real_out[i](env, port, data);                                               \
    }
#define IN_HELPER(name, i, size)                                                    \
    __attribute__((noinline)) uint32_t name(void *env, uint32_t port)               \
    {                                                                               \
        if (io_exits(port))                                                         \
            xenode_raise(env, xenode_io_vector, (int)((port & 0xffff) | (size << 16) | (1 << 20)), GETPC()); \
        return real_in[i](env, port);                                               \
    }
OUT_HELPER(helper_outb_x86_64, 0, 1)
OUT_HELPER(helper_outw_x86_64, 1, 2)
OUT_HELPER(helper_outl_x86_64, 2, 4)
IN_HELPER(helper_inb_x86_64, 0, 1)
IN_HELPER(helper_inw_x86_64, 1, 2)
IN_HELPER(helper_inl_x86_64, 2, 4)

/* uc_x86_reg (unicorn/x86.h) */
#define UC_X86_REG_RAX 35
#define UC_X86_REG_RCX 38
#define UC_X86_REG_RDX 40
#define UC_X86_REG_MSR 248
#define IA32_TSC_AUX 0xc0000103u

/* A vCPU's TSC: (CLOCK_MONOTONIC ns - base_ns) * khz / 10^6 + offset, mod 2^64 */
struct xenode_tsc {
    int64_t base_ns;
    int64_t khz;
    int64_t offset;
};

struct xenode_tsc *xenode_tsc_new(void)
{
    return calloc(1, sizeof(struct xenode_tsc));
}

static uint64_t tsc_now(const struct xenode_tsc *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    __int128 ns = (__int128)ts.tv_sec * 1000000000 + ts.tv_nsec - t->base_ns;
    return (uint64_t)(ns * t->khz / 1000000) + (uint64_t)t->offset;
}

static void set_edx_eax(void *uc, uint64_t v)
{
    uint64_t lo = v & 0xffffffffu, hi = v >> 32;
    reg_write(uc, UC_X86_REG_RAX, &lo);
    reg_write(uc, UC_X86_REG_RDX, &hi);
}

/* UC_HOOK_INSN for RDTSC: 1, the instruction is done */
int xenode_rdtsc_hook(void *uc, struct xenode_tsc *t)
{
    set_edx_eax(uc, tsc_now(t));
    return 1;
}

/* UC_HOOK_INSN for RDTSCP: also ECX = IA32_TSC_AUX (QEMU's) */
int xenode_rdtscp_hook(void *uc, struct xenode_tsc *t)
{
    set_edx_eax(uc, tsc_now(t));
    struct { uint32_t index; uint32_t pad; uint64_t value; } msr = { IA32_TSC_AUX, 0, 0 };
    xenode_pass = 1;
    reg_read(uc, UC_X86_REG_MSR, &msr);
    xenode_pass = 0;
    uint64_t ecx = msr.value & 0xffffffffu;
    reg_write(uc, UC_X86_REG_RCX, &ecx);
    return 1;
}

void cpu_svm_check_intercept_param_x86_64(void *env, uint32_t type, uint64_t param, uintptr_t retaddr)
{
    if (type == SVM_EXIT_MSR && !xenode_pass && xenode_raise)
        xenode_raise(env, xenode_vector, (int)param, retaddr);
    else if (type == SVM_EXIT_INTR) {
        /* QEMU found the window open; it clears the request and delivers next (see below). */
        window_hit = 1;
        if (window_armed && cur_run) {
            window_armed = 0;
            xenode_stop(cur_uc);
        }
    }
}

/* The hardware interrupt QEMU delivers after the intercept check: xenode delivers its own. */
void do_interrupt_x86_hardirq_x86_64(void *env, int intno, int is_hw)
{
    if (window_hit) {
        window_hit = 0;
        return;
    }
    real_hardirq(env, intno, is_hw);
}

/* No stop check after a load or store (see 2): a stop takes effect where a block starts. */
void check_exit_request_x86_64(void *tcg_ctx)
{
    (void)tcg_ctx;
}

#define EXCP_INTERRUPT 0x10000

static int stop_wanted(void)
{
    return self_stop || (__atomic_load_n(&cur_run->bits, __ATOMIC_SEQ_CST) & STOP_ASKED);
}

/*
 * QEMU's execution loop (Unicorn calls it until a stop, HLT or an error):
 * the engine's CPU is known here, a stop asked for reaches it (cpu_exit),
 * and one that came before or during it ends the run (Unicorn's own stop,
 * set here, where no block is being executed).
 */
int cpu_exec_x86_64(void *uc, void *cpu)
{
    struct xenode_stop *f = cur_run;
    if (!f || uc != cur_uc)
        return real_cpu_exec(uc, cpu);
    cur_cpu = cpu;
    xenode_code_pages_cpu(uc, cpu);
    __atomic_store_n(&f->cpu, cpu, __ATOMIC_SEQ_CST);
    int old = __atomic_fetch_or(&f->bits, STOP_RUNNING, __ATOMIC_SEQ_CST);
    int r = EXCP_INTERRUPT;
    if (!(old & STOP_ASKED) && !self_stop) {
        if (window_armed)
            (*interrupt_handler)(cpu, CPU_INTERRUPT_HARD);
        r = xenode_atomics_exec(real_cpu_exec, uc, cpu);
        if (window_armed)
            reset_interrupt(cpu, CPU_INTERRUPT_HARD);
    }
    __atomic_fetch_and(&f->bits, ~STOP_RUNNING, __ATOMIC_SEQ_CST);
    /* A helper thread that saw it running is kicking its CPU: let it finish (a few stores). */
    while (__atomic_load_n(&f->users, __ATOMIC_SEQ_CST))
        sched_yield();
    if (stop_wanted())
        xenode_stop(uc);
    return r;
}

struct xenode_stop *xenode_stop_flag_new(void)
{
    return calloc(1, sizeof(struct xenode_stop));
}

#define RUN_KICKED 0x100
#define RUN_WINDOW 0x200

/*
 * One run of `uc` from `begin` until a stop, with `ports` (a bitmap, or NULL)
 * the ports whose I/O exits: the uc_err, with RUN_KICKED when a stop was
 * asked for (before it too: then nothing ran) and RUN_WINDOW when it stopped
 * because the guest can take an interrupt (`window`: it waits for one);
 * `count` instructions at most (0: no limit).
 */
int xenode_run(struct xenode_stop *f, void *uc, uint64_t begin, uint64_t until, int window, const uint8_t *ports, size_t count)
{
    xenode_code_pages_begin(uc);
    cur_run = f;
    cur_uc = uc;
    exit_ports = ports;
    window_armed = window;
    window_hit = 0;
    self_stop = 0;
    int err = xenode_start(uc, begin, until, 0, count);
    int hit = window && !window_armed;
    cur_run = NULL;
    cur_uc = cur_cpu = NULL;
    exit_ports = NULL;
    io_pass = 0;
    window_armed = window_hit = self_stop = 0;
    int old = __atomic_fetch_and(&f->bits, ~STOP_ASKED, __ATOMIC_SEQ_CST);
    return err | (old & STOP_ASKED ? RUN_KICKED : 0) | (hit ? RUN_WINDOW : 0);
}

/*
 * Asks the run in progress (or, between runs, the next: it then does not
 * start) to stop at the next block boundary; from any thread.
 */
void xenode_stop_request(struct xenode_stop *f)
{
    __atomic_fetch_or(&f->bits, STOP_ASKED, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&f->users, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&f->bits, __ATOMIC_SEQ_CST) & STOP_RUNNING)
        real_cpu_exit(__atomic_load_n(&f->cpu, __ATOMIC_SEQ_CST));
    __atomic_fetch_sub(&f->users, 1, __ATOMIC_SEQ_CST);
}

/* From inside the run (a hook's exit): stop at the next block boundary, not as a kick. */
void xenode_stop_here(void)
{
    if (!cur_cpu)
        return;
    self_stop = 1;
    real_cpu_exit(cur_cpu);
}

/* uc_x86_reg UC_X86_REG_CS (unicorn/x86.h) */
#define UC_X86_REG_CS 11

/*
 * The next run on this thread also stops before its first instruction outside
 * CPL 0 (on = 1), or after its first translated block (on = 2: one instruction
 * at least, the rest of its block at most). `flag`: the pCPU's, unused.
 */
void xenode_stop_at_user(struct xenode_stop *flag, int on)
{
    (void)flag;
    user_armed = on;
    if (on)
        user_hit = 0;
}

/* After a run: whether it stopped because the guest left CPL 0 (and forgets that it did). */
int xenode_stop_user_taken(struct xenode_stop *flag)
{
    (void)flag;
    int r = user_hit;
    user_hit = 0;
    return r;
}

/*
 * The block hook (UC_HOOK_BLOCK), at the start of every translated block: the
 * privilege level changes only at an instruction that ends a block (IRET,
 * SYSRET, a far jump...), so the first block outside CPL 0 is where the guest
 * left it. Unicorn calls it before the block's exit check, so a stop asked
 * here (cpu_exit) ends the run before the block's first instruction.
 */
void xenode_block_hook(void *uc, uint64_t address, uint32_t size, void *unused)
{
    (void)address;
    (void)size;
    (void)unused;
    if (!user_armed)
        return;
    if (user_armed == 2) {
        user_armed = 3; /* the run's first block runs; the next one stops */
        return;
    }
    uint64_t cs = 0;
    if (user_armed == 1 && (reg_read(uc, UC_X86_REG_CS, &cs) || !(cs & 3)))
        return;
    user_armed = 0;
    user_hit = 1;
    xenode_stop_here();
}
