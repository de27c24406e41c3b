/*
 * rate: one timed loop at CPL0, for the instruction-rate benchmark
 * (bench/accel.ts).  loop=int runs `add; dec; jnz`, loop=sse runs
 * `paddd; dec; jnz` (SSE at CPL0: built with SSE enabled, like cpl0.c);
 * iters=N iterations of 3 instructions, timed with RDTSC, and the TSC rate
 * from Xen's CPUID time leaf so the bench can turn ticks into seconds.
 */
#include "lib.h"

int main(void)
{
    char kind[8];
    if (!cmdline_get("loop", kind, sizeof(kind)))
        memcpy(kind, "int", 4);
    uint64_t iters = cmdline_u64("iters", 1000000);
    uint64_t cr0, cr4;
    asm volatile ("mov %%cr0, %0; mov %%cr4, %1" : "=r" (cr0), "=r" (cr4));
    asm volatile ("mov %0, %%cr0; mov %1, %%cr4" :: "r" ((cr0 & ~4UL) | 2UL), "r" (cr4 | 0x600UL));
    uint32_t a, b, khz, d;
    cpuid(xen_cpuid_base + 3, 0, &a, &b, &khz, &d);
    int sse = kind[0] == 's';
    uint64_t n = iters, t0 = rdtsc();
    if (sse)
        asm volatile ("pxor %%xmm0, %%xmm0\n 1: paddd %%xmm1, %%xmm0\n dec %0\n jnz 1b" : "+c" (n) :: "xmm0", "xmm1");
    else
        asm volatile ("1: add %%rbx, %%rax\n dec %0\n jnz 1b" : "+c" (n) :: "rax", "rbx");
    uint64_t t1 = rdtsc();
    printf("rate: loop=%s iters=%lu insns=%lu ticks=%lu tsc_khz=%u\n", sse ? "sse" : "int", iters, 3 * iters, t1 - t0, khz);
    return 0;
}
