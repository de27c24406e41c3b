/*
 * Typed hypercall wrappers, called the way real Xen HVM/PVH guests call them:
 * `call hypercall_page + 32 * nr` with the 64-bit ABI
 * (RDI RSI RDX R10 R8 -> RAX).  The hypervisor may clobber every argument
 * register, so all of them are outputs of the asm statement.
 */
#ifndef GUEST_HYPERCALL_H
#define GUEST_HYPERCALL_H

#include <stdint.h>
#include <xen/xen.h>

extern uint8_t hypercall_page[4096];

#define HC_STR(x) #x

#define _hypercall0(nr) ({                                                    \
    long __res;                                                               \
    asm volatile ("call hypercall_page + %c[off]"                             \
                  : "=a" (__res)                                              \
                  : [off] "i" ((nr) * 32)                                     \
                  : "memory");                                                \
    __res; })

#define _hypercall1(nr, a1) ({                                                \
    long __res, __i1;                                                         \
    asm volatile ("call hypercall_page + %c[off]"                             \
                  : "=a" (__res), "=D" (__i1)                                 \
                  : [off] "i" ((nr) * 32), "1" ((long)(a1))                   \
                  : "memory");                                                \
    __res; })

#define _hypercall2(nr, a1, a2) ({                                            \
    long __res, __i1, __i2;                                                   \
    asm volatile ("call hypercall_page + %c[off]"                             \
                  : "=a" (__res), "=D" (__i1), "=S" (__i2)                    \
                  : [off] "i" ((nr) * 32), "1" ((long)(a1)), "2" ((long)(a2)) \
                  : "memory");                                                \
    __res; })

#define _hypercall3(nr, a1, a2, a3) ({                                        \
    long __res, __i1, __i2, __i3;                                             \
    asm volatile ("call hypercall_page + %c[off]"                             \
                  : "=a" (__res), "=D" (__i1), "=S" (__i2), "=d" (__i3)       \
                  : [off] "i" ((nr) * 32), "1" ((long)(a1)),                  \
                    "2" ((long)(a2)), "3" ((long)(a3))                        \
                  : "memory");                                                \
    __res; })

/* Any hypercall number at run time, up to five arguments (for -ENOSYS tests). */
long hypercall_raw(unsigned int nr, long a1, long a2, long a3, long a4, long a5);

static inline long HYPERVISOR_xen_version(int cmd, void *arg)
{
    return _hypercall2(__HYPERVISOR_xen_version, cmd, arg);
}

static inline long HYPERVISOR_console_io(int cmd, int count, const char *buf)
{
    return _hypercall3(__HYPERVISOR_console_io, cmd, count, buf);
}

static inline long HYPERVISOR_hvm_op(int op, void *arg)
{
    return _hypercall2(__HYPERVISOR_hvm_op, op, arg);
}

static inline long HYPERVISOR_memory_op(unsigned int cmd, void *arg)
{
    return _hypercall2(__HYPERVISOR_memory_op, cmd, arg);
}

static inline long HYPERVISOR_sched_op(int cmd, void *arg)
{
    return _hypercall2(__HYPERVISOR_sched_op, cmd, arg);
}

static inline long HYPERVISOR_vcpu_op(int cmd, unsigned int vcpu, void *arg)
{
    return _hypercall3(__HYPERVISOR_vcpu_op, cmd, vcpu, arg);
}

static inline long HYPERVISOR_set_timer_op(uint64_t timeout_abs_ns)
{
    return _hypercall1(__HYPERVISOR_set_timer_op, timeout_abs_ns);
}

static inline long HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count)
{
    return _hypercall3(__HYPERVISOR_grant_table_op, cmd, uop, count);
}

static inline long HYPERVISOR_event_channel_op(int cmd, void *arg)
{
    return _hypercall2(__HYPERVISOR_event_channel_op, cmd, arg);
}

#endif
