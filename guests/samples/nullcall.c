/*
 * nullcall: hypercall round-trip benchmark.
 *
 * At CPL0, performs N null hypercalls (xen_version(XENVER_version, NULL)
 * through the hypercall page; N = n=... on the command line, default 10000)
 * and N `outb` to port 0x80 (an unused port the hypervisor ignores: the bare
 * I/O-exit cost), and prints TSC cycles per operation for both, their ratio,
 * and nanoseconds when the pvclock gives the TSC scale.  Every timed call's
 * result is checked (OR and AND of them all equal the version exactly when
 * each one does: one `or` and one `and` per call); a wrong or failed call
 * ends the guest with SHUTDOWN_crash and no figures.
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

    if (xen_present) {
        if (!shared_info_map())
            printf("nullcall: shared_info not mapped, reporting cycles only\n");
        long version = HYPERVISOR_xen_version(XENVER_version, NULL);
        if (version <= 0) {
            printf("nullcall: FAIL xen_version(XENVER_version) returned %ld\n", version);
            return 1;
        }
        long any = 0, all = -1;
        for (int i = 0; i < 10; i++) {                     /* warm up */
            long r = HYPERVISOR_xen_version(XENVER_version, NULL);
            any |= r;
            all &= r;
        }
        t0 = rdtsc();
        for (uint64_t i = 0; i < n / 10; i++) {
            REP10({ long r = HYPERVISOR_xen_version(XENVER_version, NULL); any |= r; all &= r; });
        }
        hc = rdtsc() - t0;
        if (any != version || all != version) {
            printf("nullcall: FAIL a timed xen_version returned something else than 0x%lx (OR 0x%lx, AND 0x%lx)\n",
                   version, any, all);
            return 1;
        }
        printf("nullcall: all %lu timed xen_version calls (and 10 warm-up ones) returned 0x%lx\n", n, version);
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
