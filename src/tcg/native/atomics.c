/*
 * Guest atomics and fences as x86 guarantees them between threads.
 *
 * QEMU generates a locked instruction (LOCK-prefixed RMW, XCHG with memory,
 * LOCK CMPXCHG) as a host atomic and MFENCE (or a locked instruction's
 * ordering) as a host fence only when the translation block is built for
 * parallel CPUs (CF_PARALLEL in tcg_ctx->tb_cflags); otherwise it emits a
 * plain load, operation and store, and no fence at all. Unicorn never builds
 * for parallel CPUs (one engine, one thread), so a guest's `lock inc` on a
 * word another thread also updates loses increments, and the store-then-load
 * of an event-index handshake (io/ring.h's full barrier) can be reordered by
 * the host: a backend on another thread then misses a request, or the guest
 * misses a response.
 *
 * This library provides QEMU's atomic and fence code generators, which
 * libunicorn reaches through its PLT, and calls the real ones with
 * CF_PARALLEL set for the duration of the call only: the block's own cflags
 * (and so its lookup hash) stay as Unicorn made them, while the code
 * generated for these instructions is the parallel one (host atomics through
 * QEMU's helper_atomic_* on the guest's RAM, and a host fence for MFENCE and
 * SMP barriers). xenode_atomics_init checks that the flag sits where this
 * library expects it (the first instruction of tcg_gen_mb tests it), and
 * refuses a libunicorn where it does not.
 *
 * A locked access QEMU cannot do as one host atomic (misaligned, or not RAM)
 * makes QEMU ask for an exclusive step (EXCP_ATOMIC), which Unicorn does not
 * implement (it would run the same block again, for ever): the run loop
 * (xenode_atomics_exec) executes that one instruction as QEMU's
 * cpu_exec_step_atomic does, in a block of its own built with the
 * non-parallel code. Every vCPU of a software-CPU domain runs on one thread,
 * so between them it is still atomic; against other threads a misaligned
 * locked access is not (a split lock, which x86 itself makes slow and Linux
 * warns of).
 */
#include "shim.h"
#include <stdint.h>
#include <string.h>

/* CF_COUNT_MASK and CF_PARALLEL in TranslationBlock/TCGContext cflags (QEMU 5.0 include/exec/exec-all.h) */
#define CF_COUNT_MASK 0x00007fffu
#define CF_PARALLEL 0x00080000u
/* EXCP_ATOMIC (QEMU 5.0 include/exec/cpu-all.h) */
#define EXCP_ATOMIC 0x10005

/* The generators, in the order xenode_atomics_init receives the real ones. */
#define ATOMIC_RMW(X)                                                                                          \
    X(fetch_add) X(fetch_and) X(fetch_or) X(fetch_xor) X(fetch_smin) X(fetch_umin) X(fetch_smax) X(fetch_umax) \
    X(add_fetch) X(and_fetch) X(or_fetch) X(xor_fetch) X(smin_fetch) X(umin_fetch) X(smax_fetch)               \
    X(umax_fetch) X(xchg)

typedef void (*mb_fn)(void *s, int bar);
typedef void *(*gen_code_fn)(void *cpu, uint64_t pc, uint64_t cs_base, uint32_t flags, int cflags);
typedef int (*exec_fn)(void *uc, void *cpu);
typedef void (*rmw_fn)(void *s, void *ret, void *addr, void *val, uintptr_t idx, int memop);
typedef void (*cmpxchg_fn)(void *s, void *ret, void *addr, void *cmp, void *val, uintptr_t idx, int memop);

static unsigned cflags_offset;      /* of TCGContext.tb_cflags */
static unsigned next_tb_offset;     /* of CPUState.cflags_next_tb */
static gen_code_fn real_gen_code;
static mb_fn real_mb;
static cmpxchg_fn real_cmpxchg_i32, real_cmpxchg_i64;
#define DECLARE(op) static rmw_fn real_##op##_i32, real_##op##_i64;
ATOMIC_RMW(DECLARE)

/* While set, the generators build non-parallel code: the exclusive step of an EXCP_ATOMIC. */
static __thread int serial;
/* An exclusive step was asked for: the next one-instruction block is built non-parallel. */
static __thread int serial_step;

static inline uint32_t *cflags_of(void *s)
{
    return (uint32_t *)((char *)s + cflags_offset);
}

#define PARALLEL(s, call)                               \
    do {                                                \
        if (serial) {                                   \
            call;                                       \
            break;                                      \
        }                                               \
        uint32_t *cf_ = cflags_of(s), saved_ = *cf_;    \
        *cf_ = saved_ | CF_PARALLEL;                    \
        call;                                           \
        *cf_ = saved_;                                  \
    } while (0)

void tcg_gen_mb_x86_64(void *s, int bar)
{
    PARALLEL(s, real_mb(s, bar));
}

void tcg_gen_atomic_cmpxchg_i32_x86_64(void *s, void *ret, void *addr, void *cmp, void *val, uintptr_t idx, int memop)
{
    PARALLEL(s, real_cmpxchg_i32(s, ret, addr, cmp, val, idx, memop));
}

void tcg_gen_atomic_cmpxchg_i64_x86_64(void *s, void *ret, void *addr, void *cmp, void *val, uintptr_t idx, int memop)
{
    PARALLEL(s, real_cmpxchg_i64(s, ret, addr, cmp, val, idx, memop));
}

#define DEFINE(op)                                                                                         \
    void tcg_gen_atomic_##op##_i32_x86_64(void *s, void *ret, void *addr, void *val, uintptr_t idx, int memop) \
    {                                                                                                      \
        PARALLEL(s, real_##op##_i32(s, ret, addr, val, idx, memop));                                       \
    }                                                                                                      \
    void tcg_gen_atomic_##op##_i64_x86_64(void *s, void *ret, void *addr, void *val, uintptr_t idx, int memop) \
    {                                                                                                      \
        PARALLEL(s, real_##op##_i64(s, ret, addr, val, idx, memop));                                       \
    }
ATOMIC_RMW(DEFINE)

/*
 * Blocks are built here: the exclusive step's one-instruction block with the
 * non-parallel code, every other as the generators above make it. A step
 * whose block was already built (cached under its own one-instruction
 * cflags) builds nothing: the next block built is an ordinary one.
 */
void *tb_gen_code_x86_64(void *cpu, uint64_t pc, uint64_t cs_base, uint32_t flags, int cflags)
{
    int step = serial_step && ((uint32_t)cflags & CF_COUNT_MASK) == 1;
    serial_step = 0;
    serial = step;
    void *tb = real_gen_code(cpu, pc, cs_base, flags, cflags);
    serial = 0;
    return tb;
}

/* QEMU's cpu_exec (`real`), with each exclusive step it asks for done as QEMU's cpu_exec_step_atomic would. */
int xenode_atomics_exec(exec_fn real, void *uc, void *cpu)
{
    int r = real(uc, cpu);
    while (r == EXCP_ATOMIC) {
        /* the instruction, alone (cflags 1: one instruction, not parallel) */
        *(int32_t *)((char *)cpu + next_tb_offset) = 1;
        serial_step = 1;
        r = real(uc, cpu);
        serial_step = 0;
    }
    return r;
}

/*
 * fns: tcg_gen_mb, tcg_gen_atomic_cmpxchg_i32/_i64, then each ATOMIC_RMW
 * generator's _i32 and _i64, then tb_gen_code and cpu_exec, all
 * libunicorn's own. 0 when they are as expected; -1 when tcg_gen_mb does not
 * begin by testing CF_PARALLEL in a byte of TCGContext, -2 when cpu_exec does
 * not reset CPUState.cflags_next_tb to -1 early on (another build: its
 * layouts are unknown here).
 */
int xenode_atomics_init(void **fns)
{
    /* testb $imm8, disp8(%rdi) = f6 47 disp imm: the cflags byte holding CF_PARALLEL */
    const uint8_t *code = (const uint8_t *)fns[0];
    if (code[0] != 0xf6 || code[1] != 0x47 || code[3] != (uint8_t)(CF_PARALLEL >> ((code[2] & 3) * 8)))
        return -1;
    cflags_offset = code[2] & ~3u;
    /* cpu_exec: `cpu->cflags_next_tb = -1` once taken, movl $-1, disp8(%rbx) = c7 43 disp ff ff ff ff */
    const uint8_t *exec = (const uint8_t *)fns[3 + 2 * 17 + 1];
    next_tb_offset = 0;
    for (int at = 0; at < 0x400 && !next_tb_offset; at++)
        if (exec[at] == 0xc7 && exec[at + 1] == 0x43 && !memcmp(exec + at + 3, "\xff\xff\xff\xff", 4) && exec[at + 2] < 0x80)
            next_tb_offset = exec[at + 2];
    if (!next_tb_offset)
        return -2;
    int i = 0;
    real_mb = (mb_fn)fns[i++];
    real_cmpxchg_i32 = (cmpxchg_fn)fns[i++];
    real_cmpxchg_i64 = (cmpxchg_fn)fns[i++];
#define ASSIGN(op)                            \
    real_##op##_i32 = (rmw_fn)fns[i++];       \
    real_##op##_i64 = (rmw_fn)fns[i++];
    ATOMIC_RMW(ASSIGN)
    real_gen_code = (gen_code_fn)fns[i++];
    return 0;
}
