/*
 * nullcall: hypercall round-trip benchmark.
 *
 * At CPL0, performs N null hypercalls (xen_version(XENVER_version, NULL)
 * through the hypercall page; N = n=... on the command line, default 10000)
 * and N `outb` to port 0x80 (an unused port the hypervisor ignores: the bare
 * I/O-exit cost), and prints TSC cycles per operation for both, their ratio,
 * and nanoseconds when the pvclock gives the TSC scale.
 */
#include "lib.h"

#define REP10(x) x; x; x; x; x; x; x; x; x; x

static void report(const char *what, uint64_t n, uint64_t ticks)
{
    uint64_t ns = tsc_to_ns(ticks);
    if (ns)
        printf("nullcall: %-34s %lu ops, %lu cycles/op, %lu.%03lu us/op\n", what, n,
               ticks / n, ns / n / 1000, ns / n % 1000);
    else
        printf("nullcall: %-34s %lu ops, %lu cycles/op\n", what, n, ticks / n);
}

int main(void)
{
    uint64_t n = cmdline_u64("n", 10000);
    n = (n + 9) / 10 * 10;
    if (!n)
        n = 10;
    uint64_t hc = 0, io, t0;
    long rc = 0;

    if (xen_present) {
        if (!shared_info_map())
            printf("nullcall: shared_info not mapped, reporting cycles only\n");
        for (int i = 0; i < 10; i++)                       /* warm up */
            rc |= HYPERVISOR_xen_version(XENVER_version, NULL);
        t0 = rdtsc();
        for (uint64_t i = 0; i < n / 10; i++) {
            REP10(rc |= HYPERVISOR_xen_version(XENVER_version, NULL));
        }
        hc = rdtsc() - t0;
        if (rc < 0)
            printf("nullcall: xen_version returned an error (%ld)\n", rc);
    }

    for (int i = 0; i < 10; i++)
        outb(0x80, 0);
    t0 = rdtsc();
    for (uint64_t i = 0; i < n / 10; i++) {
        REP10(outb(0x80, 0));
    }
    io = rdtsc() - t0;

    if (xen_present)
        report("hypercall xen_version(version):", n, hc);
    report("outb port 0x80 (bare exit):", n, io);
    if (xen_present && io) {
        uint64_t r = hc * 1000 / io;
        printf("nullcall: ratio hypercall/bare-exit = %lu.%03lu\n", r / 1000, r % 1000);
    }
    return 0;
}
