/*
 * cpl0: a kernel that uses the FPU and SSE at CPL0, as gcc -O2 builds real
 * unikernels (this file is compiled with SSE enabled, unlike the others):
 * vectorised memset/memcpy loops and struct copies, LDMXCSR/STMXCSR, FXSAVE,
 * XSAVE (when CPUID offers it), FNOP and other x87 code, INT3 at CPL0 with a
 * handler, and a page fault whose error code and CR2 are checked.  Then it
 * drops to ring 3 and makes system calls (UD2 with rax = number, as spin.c
 * does) and INT3s whose ring-0 side uses x87 and SSE again: on a host whose
 * KVM emulates CPL0 code and runs CPL3 natively, that handler is the first
 * kernel code after CPL3 and it meets the emulator's limits there unless the
 * hypervisor moved the vCPU at the entry point.
 */
#include "lib.h"

#define USER_CS 0x2b
#define USER_DS 0x23
#define SYS_WORK 1
#define SYS_EXIT 2

static uint8_t user_stack[16384] __attribute__((aligned(16)));
static uint8_t kernel_stack[16384] __attribute__((aligned(16)));

/* Left as loops on purpose: gcc -O2 vectorises them (SSE stores and loads). */
static void __attribute__((noinline)) vec_memset(uint8_t *d, uint8_t c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = c;
}

static void __attribute__((noinline)) vec_memcpy(uint8_t *d, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = s[i];
}

static uint32_t __attribute__((noinline)) vec_sum(const uint32_t *v, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i] * 3u;
    return s;
}

struct blob { uint64_t a[8]; double d[4]; };

static uint8_t buf_a[4096] __attribute__((aligned(16)));
static uint8_t buf_b[4096] __attribute__((aligned(16)));
static uint32_t words[1024] __attribute__((aligned(16)));
static uint8_t fx[512] __attribute__((aligned(16)));
static uint8_t xs[4096] __attribute__((aligned(64)));
static volatile struct blob blob_src, blob_dst;
/* RAM that PD entry 1536 (3 GiB) maps once present: the faulting store lands here */
static uint8_t pf_frame[2 << 20] __attribute__((aligned(2 << 20)));

static volatile uint64_t int3_count, int3_rip, pf_count, pf_error, pf_cr2, pf_rip;
extern char cpl0_int3_at[], cpl0_pf_at[];
extern uint64_t pd[];

static int hook(struct trap_frame *f);

static uint32_t mxcsr_get(void)
{
    uint32_t v;
    asm volatile ("stmxcsr %0" : "=m" (v));
    return v;
}

static void mxcsr_set(uint32_t v)
{
    asm volatile ("ldmxcsr %0" :: "m" (v));
}

/* SSE integer and x87 work a kernel routine might do: returns 0 when every result is right. */
static int __attribute__((noinline)) fpu_work(uint32_t seed)
{
    int bad = 0;
    uint32_t old = mxcsr_get();
    mxcsr_set(0x1f80 | (1u << 13));       /* round down */
    bad |= mxcsr_get() != (0x1f80u | (1u << 13));
    mxcsr_set(old);
    uint32_t out[4] __attribute__((aligned(16)));
    asm volatile ("pxor %%xmm1, %%xmm1\n"
                  "movd %1, %%xmm0\n"
                  "pshufd $0, %%xmm0, %%xmm0\n"
                  "paddd %%xmm0, %%xmm1\n"
                  "paddd %%xmm0, %%xmm1\n"
                  "punpcklbw %%xmm2, %%xmm2\n"
                  "movdqa %%xmm1, %0\n"
                  : "=m" (out) : "r" (seed) : "xmm0", "xmm1", "xmm2");
    for (int i = 0; i < 4; i++)
        bad |= out[i] != 2 * seed;
    double x = 1.5;
    asm volatile ("fnop\n fldl %1\n fld1\n faddp\n fstpl %0" : "=m" (x) : "m" (x));
    bad |= x != 2.5;
    return bad;
}

static void __attribute__((noinline)) kernel_tests(void)
{
    vec_memset(buf_a, 0x5c, sizeof(buf_a));
    int ok = 1;
    for (size_t i = 0; i < sizeof(buf_a); i++)
        ok &= buf_a[i] == 0x5c;
    check_true("sse-memset", ok, "a byte differs");

    for (size_t i = 0; i < sizeof(buf_a); i++)
        buf_a[i] = (uint8_t)(i * 7);
    vec_memcpy(buf_b, buf_a, sizeof(buf_b));
    check_true("sse-memcpy", memcmp(buf_a, buf_b, sizeof(buf_a)) == 0, "copy differs");

    for (size_t i = 0; i < ARRAY_SIZE(words); i++)
        words[i] = (uint32_t)i;
    check_eq("sse-vector-sum", vec_sum(words, ARRAY_SIZE(words)), 3 * (1023 * 1024 / 2));

    for (int i = 0; i < 8; i++)
        blob_src.a[i] = 0x1111111111111111ull * (i + 1);
    for (int i = 0; i < 4; i++)
        blob_src.d[i] = 0.25 * i;
    struct blob tmp = *(struct blob *)&blob_src;     /* struct copies: 16-byte moves */
    *(struct blob *)&blob_dst = tmp;
    check_true("struct-copy", blob_dst.a[7] == 0x8888888888888888ull && blob_dst.d[3] == 0.75, "copy differs");

    check_eq("fpu-sse-work", fpu_work(21), 0);

    /* FXSAVE: the image holds MXCSR and XMM0 as they are */
    mxcsr_set(0x1fa0);
    uint32_t v[4] __attribute__((aligned(16))) = { 0xa1a2a3a4, 0xb1b2b3b4, 0xc1c2c3c4, 0xd1d2d3d4 };
    asm volatile ("movdqa %1, %%xmm0\n fxsave %0" : "=m" (fx) : "m" (v) : "xmm0");
    check_eq("fxsave-mxcsr", *(uint32_t *)(fx + 24), 0x1fa0);
    check_true("fxsave-xmm0", memcmp(fx + 160, v, 16) == 0, "XMM0 differs");
    mxcsr_set(0x1f80);
    asm volatile ("fxrstor %0" :: "m" (fx));
    check_eq("fxrstor-mxcsr", mxcsr_get(), 0x1fa0);
    mxcsr_set(0x1f80);

    /* XSAVE of x87 and SSE, where CPUID offers it */
    uint32_t a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    if (c & (1u << 26)) {
        uint64_t cr4;
        asm volatile ("mov %%cr4, %0" : "=r" (cr4));
        asm volatile ("mov %0, %%cr4" :: "r" (cr4 | (1ul << 18)));    /* OSXSAVE */
        asm volatile ("xsetbv" :: "c" (0), "a" (3), "d" (0));
        uint32_t lo, hi;
        asm volatile ("xgetbv" : "=a" (lo), "=d" (hi) : "c" (0));
        check_eq("xcr0", lo, 3);
        asm volatile ("movdqa %1, %%xmm0\n xsave %0" : "=m" (xs) : "m" (v), "a" (3), "d" (0) : "xmm0");
        check_true("xsave-xstate-bv", (*(uint64_t *)(xs + 512) & 2) != 0, "XSTATE_BV 0x%lx lacks SSE", *(uint64_t *)(xs + 512));
        check_true("xsave-xmm0", memcmp(xs + 160, v, 16) == 0, "XMM0 differs");
        asm volatile ("pxor %%xmm0, %%xmm0\n xrstor %0" :: "m" (xs), "a" (3), "d" (0) : "xmm0");
        uint32_t back[4] __attribute__((aligned(16)));
        asm volatile ("movdqa %%xmm0, %0" : "=m" (back));
        check_true("xrstor-xmm0", memcmp(back, v, 16) == 0, "XMM0 not restored");
    } else {
        printf("cpl0: CPUID has no XSAVE: skipping xsave\n");
    }

    /* INT3 at CPL0, to a handler that returns after it */
    asm volatile (".globl cpl0_int3_at\n int3\n cpl0_int3_at: nop" ::: "memory");
    check_eq("int3-handled", int3_count, 1);
    check_true("int3-rip", int3_rip == (uintptr_t)cpl0_int3_at, "rip 0x%lx want %p", int3_rip, cpl0_int3_at);

    /* A write to a page made not present: #PF, error code 2 (write, not present, CPL0), CR2 the address */
    volatile uint64_t *far = (volatile uint64_t *)(3UL << 30);
    pd[1536] = (uintptr_t)pf_frame | 0x86;    /* RW, US, PS: all but present */
    asm volatile ("invlpg (%0)" :: "r" (far) : "memory");
    asm volatile (".globl cpl0_pf_at\n cpl0_pf_at: movq $0x77, (%0)" :: "r" (far) : "memory");
    check_eq("page-fault-count", pf_count, 1);
    check_eq("page-fault-error-code", pf_error, 2);
    check_eq("page-fault-cr2", pf_cr2, 3UL << 30);
    check_true("page-fault-retried", *far == 0x77 && *(volatile uint64_t *)pf_frame == 0x77, "the store did not land after the fix-up");
}

/* ---------------------------------------------------------------- ring 3 */
static volatile uint64_t sys_calls, sys_bad, user_int3;

static long user_syscall(uint64_t nr, uint64_t a1)
{
    long rc;
    asm volatile ("ud2" : "=a" (rc) : "0" (nr), "D" (a1) : "memory");
    return rc;
}

static void __attribute__((noreturn)) user_main(void)
{
    uint64_t x = 1;
    for (uint64_t i = 1; i <= 200; i++) {
        for (int j = 0; j < 100000; j++)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
        if (user_syscall(SYS_WORK, i) != 0)
            break;
    }
    /* INT3 from CPL3 too: a way into the kernel that a hypervisor watching only the usual
       entry points (SYSCALL, #PF, #UD, #GP) does not see coming */
    for (int i = 0; i < 5; i++)
        asm volatile ("int3" ::: "memory");
    user_syscall(SYS_EXIT, x);
    for (;;)
        ;
}

static int hook(struct trap_frame *f)
{
    if (f->vector == 3 && (f->cs & 3) == 0) {
        int3_count++;
        int3_rip = f->rip;
        return 1;
    }
    if (f->vector == 3 && (f->cs & 3) == 3) {
        user_int3++;
        sys_bad |= fpu_work((uint32_t)user_int3);
        return 1;
    }
    if (f->vector == 14 && (f->cs & 3) == 0 && f->rip == (uintptr_t)cpl0_pf_at) {
        uint64_t cr2;
        asm volatile ("mov %%cr2, %0" : "=r" (cr2));
        pf_count++;
        pf_error = f->error;
        pf_cr2 = cr2;
        pd[1536] |= 1;                     /* present again: the store is retried */
        asm volatile ("invlpg (%0)" :: "r" (cr2) : "memory");
        return 1;
    }
    if (f->vector == 6 && (f->cs & 3) == 3 && *(uint16_t *)f->rip == 0x0b0f) {
        f->rip += 2;
        if (f->rax == SYS_WORK) {
            /* kernel work on each call: x87 and SSE, as a real kernel's memcpy or checksum would */
            sys_calls++;
            sys_bad |= fpu_work((uint32_t)f->rdi);
            vec_memset(buf_a, (uint8_t)f->rdi, 256);
            sys_bad |= buf_a[255] != (uint8_t)f->rdi;
            f->rax = 0;
            return 1;
        }
        check_eq("cpl3-system-calls", sys_calls, 200);
        check_eq("cpl3-int3", user_int3, 5);
        check_eq("cpl3-kernel-fpu-work", sys_bad, 0);
        check_summary();
        shutdown(checks_failed ? SHUTDOWN_crash : SHUTDOWN_poweroff);
    }
    return 0;
}

int main(void)
{
    /* SSE at CPL0 needs CR4.OSFXSR (and OSXMMEXCPT); the boot stub leaves only PAE on. */
    uint64_t cr0, cr4;
    asm volatile ("mov %%cr0, %0; mov %%cr4, %1" : "=r" (cr0), "=r" (cr4));
    asm volatile ("mov %0, %%cr0; mov %1, %%cr4" :: "r" ((cr0 & ~4UL) | 2UL), "r" (cr4 | 0x600UL));
    asm volatile ("fninit");
    trap_hook = hook;
    printf("cpl0: SSE and x87 at CPL0\n");
    kernel_tests();
    printf("cpl0: entering ring 3 for 200 system calls\n");
    /* INT3 from ring 3 needs a DPL3 gate (the library's are DPL0) */
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) idtr;
    asm volatile ("sidt %0" : "=m" (idtr));
    ((volatile uint8_t *)idtr.base)[3 * 16 + 5] = 0xee;
    tss_init((uintptr_t)kernel_stack + sizeof(kernel_stack));
    uint64_t ursp = (uintptr_t)user_stack + sizeof(user_stack) - 8;
    asm volatile ("pushq %[ss]; pushq %[rsp]; pushq %[fl]; pushq %[cs]; pushq %[rip]; iretq"
                  :: [ss] "i" (USER_DS), [rsp] "r" (ursp), [fl] "i" (0x0002),
                     [cs] "i" (USER_CS), [rip] "r" (user_main)
                  : "memory");
    __builtin_unreachable();
}
