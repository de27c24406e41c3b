/*
 * watchdog: SCHEDOP_watchdog as Xen implements it (xen/common/sched/core.c
 * domain_watchdog): id 0 creates a timer and returns its id (1 or 2, then
 * -ENOSPC), a known id with a timeout re-arms it, with timeout 0 deletes it,
 * an unknown id is -EINVAL.  Expiry shuts the domain down with
 * SHUTDOWN_watchdog.
 *
 * Checks the calls (PASS/FAIL lines, RESULT), then arms a 1 s watchdog, pets
 * it past its first expiry to show re-arming works, and stops petting: the
 * domain must end with SHUTDOWN_watchdog (`xenode run` exits 13).  If a check
 * failed it crashes instead; if the watchdog never fires it prints FAIL and
 * crashes after 10 s.
 */
#include "lib.h"

#define BAD_PTR ((void *)0x100000000000UL)
#define MS      1000000ULL

static long watchdog(uint32_t id, uint32_t timeout)
{
    struct sched_watchdog w = { .id = id, .timeout = timeout };
    return HYPERVISOR_sched_op(SCHEDOP_watchdog, &w);
}

static void sleep_ms(uint64_t ms)
{
    struct sched_poll p = { .nr_ports = 0, .timeout = xen_system_time() + ms * MS };
    uint64_t end = p.timeout;
    while (xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_poll, &p);
}

int main(void)
{
    if (!shared_info_map()) {
        check_true("shared_info-map", 0, "cannot map shared_info (no pvclock)");
        return check_summary();
    }
    printf("--- SCHEDOP_watchdog calls\n");
    long a = watchdog(0, 30);
    check_true("create-returns-id", a == 1 || a == 2, "got %ld, want 1 or 2", a);
    long b = watchdog(0, 30);
    check_true("create-second-id", (b == 1 || b == 2) && b != a, "got %ld (first %ld)", b, a);
    check_eq("create-third-enospc", watchdog(0, 30), -ENOSPC);
    check_eq("pet-first", watchdog(a, 30), 0);
    check_eq("pet-second", watchdog(b, 30), 0);
    check_eq("delete-second", watchdog(b, 0), 0);
    check_eq("delete-deleted-einval", watchdog(b, 0), -EINVAL);
    check_eq("pet-deleted-einval", watchdog(b, 30), -EINVAL);
    check_eq("id-3-einval", watchdog(3, 30), -EINVAL);
    check_eq("id-max-einval", watchdog(0xffffffffu, 30), -EINVAL);
    check_eq("badptr-efault", HYPERVISOR_sched_op(SCHEDOP_watchdog, BAD_PTR), -EFAULT);
    long c = watchdog(0, 30);
    check_eq("create-reuses-freed-id", c, b);
    check_eq("delete-reused", watchdog(c, 0), 0);
    check_eq("delete-first", watchdog(a, 0), 0);
    for (int i = 0; i < 3; i++) {
        long id = watchdog(0, 30);
        char n[40];
        snprintf(n, sizeof(n), "create-delete-cycle-%d", i);
        check_true(n, (id == 1 || id == 2) && watchdog(id, 0) == 0, "create gave %ld", id);
    }

    printf("--- expiry\n");
    long w = watchdog(0, 1);
    check_true("create-1s", w == 1 || w == 2, "got %ld", w);
    /* Pet every 300 ms for 1.5 s: past the first expiry, so re-arming works. */
    for (int i = 0; i < 5; i++) {
        sleep_ms(300);
        char n[40];
        snprintf(n, sizeof(n), "pet-%d", i + 1);
        check_eq(n, watchdog(w, 1), 0);
    }
    printf("INFO still running 1.5 s after arming a 1 s watchdog\n");
    if (check_summary())
        return 1;
    printf("watchdog: stopped petting, expect SHUTDOWN_watchdog within 1 s\n");
    uint64_t t0 = xen_system_time();
    while (xen_system_time() - t0 < 10000 * MS)
        sleep_ms(100);
    printf("FAIL watchdog-fired: still running 10 s after the last pet\n");
    return 1;
}
