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
 * 2. Stopping between instructions. uc_emu_stop from another thread, or from
 *    inside an MMIO access, aborts the instruction in progress, which then runs
 *    again (a device would see the access twice). Instead a stop is asked for
 *    by setting a flag; the code hook, called before every instruction, sees
 *    it and stops there. The same hook stops when the guest opens interrupts
 *    while one waits for it (the interrupt window KVM would report).
 */
#include <stdint.h>
#include <stdlib.h>

#define SVM_EXIT_MSR 0x7c

typedef void (*raise_fn)(void *env, int exception_index, int error_code, uintptr_t retaddr);
typedef int (*stop_fn)(void *uc);
typedef int (*reg_read_fn)(void *uc, int regid, void *value);

/* uc_x86_reg UC_X86_REG_EFLAGS (unicorn/x86.h) */
#define UC_X86_REG_EFLAGS 25
#define EFLAGS_IF (1u << 9)

/* stop flag bits */
#define STOP_ASKED 1
#define STOP_TAKEN 2
#define STOP_AT_WINDOW 4

static raise_fn xenode_raise;
static stop_fn xenode_stop;
static reg_read_fn xenode_reg_read;
static int xenode_vector;
static __thread int xenode_pass;

/* raise: libunicorn's raise_exception_err_ra; stop: uc_emu_stop; reg_read: uc_reg_read; vector: the pseudo-exception the intr hook sees */
void xenode_tcg_init(raise_fn raise, stop_fn stop, reg_read_fn reg_read, int vector)
{
    xenode_raise = raise;
    xenode_stop = stop;
    xenode_reg_read = reg_read;
    xenode_vector = vector;
}

/* While on, MSR accesses go to QEMU (the hypervisor asking QEMU for one of its own MSRs). */
void xenode_tcg_passthrough(int on)
{
    xenode_pass = on;
}

void cpu_svm_check_intercept_param_x86_64(void *env, uint32_t type, uint64_t param, uintptr_t retaddr)
{
    if (type == SVM_EXIT_MSR && !xenode_pass && xenode_raise)
        xenode_raise(env, xenode_vector, (int)param, retaddr);
}

/* A stop flag: STOP_* bits. */
int *xenode_stop_flag_new(void)
{
    return calloc(1, sizeof(int));
}

/* Asks for a stop before the next instruction (any thread). */
void xenode_stop_request(int *flag)
{
    __atomic_fetch_or(flag, STOP_ASKED, __ATOMIC_SEQ_CST);
}

/* Also stop when the guest's IF becomes 1 (or not): the engine's own thread, between runs. */
void xenode_stop_at_window(int *flag, int on)
{
    if (on)
        __atomic_fetch_or(flag, STOP_AT_WINDOW, __ATOMIC_SEQ_CST);
    else
        __atomic_fetch_and(flag, ~STOP_AT_WINDOW, __ATOMIC_SEQ_CST);
}

/* After a run: whether it stopped for a request or the window (and forgets that it did). */
int xenode_stop_taken(int *flag)
{
    return (__atomic_fetch_and(flag, ~STOP_TAKEN, __ATOMIC_SEQ_CST) & STOP_TAKEN) != 0;
}

/* The code hook: every instruction is a point where an asked-for stop happens. */
void xenode_code_hook(void *uc, uint64_t address, uint32_t size, int *flag)
{
    (void)address;
    (void)size;
    int v = __atomic_load_n(flag, __ATOMIC_RELAXED);
    if (!v)
        return;
    if (v & STOP_ASKED) {
        __atomic_fetch_and(flag, ~STOP_ASKED, __ATOMIC_SEQ_CST);
    } else if (v & STOP_AT_WINDOW) {
        uint32_t eflags = 0;
        if (xenode_reg_read(uc, UC_X86_REG_EFLAGS, &eflags) || !(eflags & EFLAGS_IF))
            return;
        __atomic_fetch_and(flag, ~STOP_AT_WINDOW, __ATOMIC_SEQ_CST);
    } else {
        return;
    }
    __atomic_fetch_or(flag, STOP_TAKEN, __ATOMIC_SEQ_CST);
    xenode_stop(uc);
}
