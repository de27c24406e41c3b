/*
 * The software CPU's one native piece: it makes RDMSR and WRMSR precise exits.
 *
 * Unicorn 2.1.4 offers no hook on RDMSR/WRMSR: QEMU's helpers handle the MSRs
 * QEMU knows, ignore writes to the others and read them as 0, with no #GP. Both
 * helpers first call QEMU's SVM intercept check through the PLT; this library,
 * loaded RTLD_GLOBAL before libunicorn, provides that symbol and raises a
 * pseudo-exception from there instead (QEMU's own raise path, from the
 * helper's return address), so the engine stops exactly at the instruction and
 * the hypervisor decides: its own MSRs, QEMU's (done with passthrough on), or
 * #GP. xenode never runs guests in SVM guest mode (SVM is hidden from them),
 * where the original check would do anything else.
 */
#include <stdint.h>

#define SVM_EXIT_MSR 0x7c

typedef void (*raise_fn)(void *env, int exception_index, int error_code, uintptr_t retaddr);

static raise_fn xenode_raise;
static int xenode_vector;
static __thread int xenode_pass;

/* raise: libunicorn's raise_exception_err_ra; vector: the pseudo-exception number the intr hook sees */
void xenode_tcg_init(raise_fn raise, int vector)
{
    xenode_raise = raise;
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
