/*
 * exclusive: xenode's exclusivity extension (xenode_sched.h), from the guest.
 *
 * mode=checks (default): self-checking.  Without the right (granted=0 on the
 * command line, and no exclusive_ms in the config) every command must be
 * -EPERM.  With it: bad arguments -EINVAL, release while not holding
 * -ENOENT; an acquire for hold_ms (default 300) returns with the machine
 * held (query names this domain, a second acquire is -EBUSY), the guest
 * computes for the period and releases it; an acquire for expire_ms (default
 * 100) is not released and must have been ended by the hypervisor when the
 * guest looks again after four times that; then the event trigger: it allocates a
 * port for the control domain, binds it as its trigger, prints
 * `exclusive: trigger port P` and waits; the event (sent by whoever the test
 * is) must arrive with the machine already held by this domain, which holds
 * it for half of hold_ms and releases it.  Each period is announced with
 * `exclusive: window <what> <start ns> <end ns>` (system time).
 * mode=hold: acquires for the whole limit, prints `exclusive: holding` and
 * computes forever (to be destroyed while holding).
 * mode=bench n=N: N times acquire (timeout 5 ms), compute hold_us (default
 * 200), release, compute gap_us (default 2000) with the machine shared;
 * prints `ACQ <ns>` per acquire: system time from before the hypercall to
 * its return (all pCPUs stopped the others by then).
 */
#include "events.h"
#include "xenode_sched.h"

static long excl(uint32_t cmd, uint32_t port, uint64_t timeout, struct sched_xenode_exclusive *out)
{
    struct sched_xenode_exclusive a = { .cmd = cmd, .port = port, .timeout = timeout };
    long rc = HYPERVISOR_sched_op(SCHEDOP_xenode_exclusive, &a);
    if (out)
        *out = a;
    return rc;
}

static volatile uint64_t sink;

/* Computes until system time `until` (ns). */
static void compute_until(uint64_t until)
{
    uint64_t x = sink;
    while (xen_system_time() < until) {
        for (int i = 0; i < 1000; i++)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
        sink = x;
    }
}

static volatile int triggered;
static volatile uint64_t trigger_time;
static volatile uint16_t holder_at_event;

static void trigger_handler(evtchn_port_t port, void *arg)
{
    struct sched_xenode_exclusive q;
    trigger_time = xen_system_time();
    holder_at_event = excl(XENODE_EXCLUSIVE_query, 0, 0, &q) == 0 ? q.holder : 0xffff;
    triggered = 1;
}

static void not_granted(void)
{
    struct sched_xenode_exclusive q;
    check_eq("acquire-not-granted-EPERM", excl(XENODE_EXCLUSIVE_acquire, 0, 0, NULL), -EPERM);
    check_eq("release-not-granted-EPERM", excl(XENODE_EXCLUSIVE_release, 0, 0, NULL), -EPERM);
    check_eq("bind-not-granted-EPERM", excl(XENODE_EXCLUSIVE_bind, 0, 0, NULL), -EPERM);
    check_eq("query-not-granted-EPERM", excl(XENODE_EXCLUSIVE_query, 0, 0, &q), -EPERM);
    /* EPERM comes first: a caller without the right learns nothing from bad arguments */
    check_eq("bad-cmd-not-granted-EPERM", excl(99, 0, 0, NULL), -EPERM);
}

static void checks(void)
{
    struct sched_xenode_exclusive q;
    uint64_t hold = cmdline_u64("hold_ms", 300) * 1000000UL;
    uint64_t expire = cmdline_u64("expire_ms", 100) * 1000000UL;

    if (!check_eq("query", excl(XENODE_EXCLUSIVE_query, 0, 0, &q), 0))
        return;
    uint64_t limit = q.limit;
    printf("exclusive: granted %lu ms\n", limit / 1000000);
    check_eq("query-nobody-holds", q.holder, DOMID_INVALID);
    check_eq("query-no-expiry", q.expires, 0);
    check_eq("bad-cmd-EINVAL", excl(99, 0, 0, NULL), -EINVAL);
    check_eq("acquire-with-port-EINVAL", excl(XENODE_EXCLUSIVE_acquire, 1, 0, NULL), -EINVAL);
    check_eq("acquire-above-limit-EINVAL", excl(XENODE_EXCLUSIVE_acquire, 0, limit + 1, NULL), -EINVAL);
    check_eq("bind-bad-port-EINVAL", excl(XENODE_EXCLUSIVE_bind, 100000, 0, NULL), -EINVAL);
    check_eq("bind-closed-port-EINVAL", excl(XENODE_EXCLUSIVE_bind, 1000, 0, NULL), -EINVAL);
    check_eq("bind-with-timeout-EINVAL", excl(XENODE_EXCLUSIVE_bind, 0, 1, NULL), -EINVAL);
    check_eq("release-not-held-ENOENT", excl(XENODE_EXCLUSIVE_release, 0, 0, NULL), -ENOENT);

    /* Held, released. */
    if (hold > limit)
        hold = limit;
    uint64_t t0 = xen_system_time();
    long rc = excl(XENODE_EXCLUSIVE_acquire, 0, hold, &q);
    uint64_t t1 = xen_system_time();
    if (check_eq("acquire", rc, 0)) {
        check_eq("acquire-holder", q.holder, xen_domid);
        check_true("acquire-expires", q.expires >= t0 + hold && q.expires <= t1 + hold,
                   "expires %lu, asked at %lu..%lu for %lu", q.expires, t0, t1, hold);
        check_eq("acquire-again-EBUSY", excl(XENODE_EXCLUSIVE_acquire, 0, 0, NULL), -EBUSY);
        check_eq("query-held", excl(XENODE_EXCLUSIVE_query, 0, 0, &q), 0);
        check_eq("query-held-holder", q.holder, xen_domid);
        compute_until(t1 + hold / 2);   /* half: a loaded host may run this vCPU late */
        uint64_t t2 = xen_system_time();
        check_eq("release", excl(XENODE_EXCLUSIVE_release, 0, 0, NULL), 0);
        printf("exclusive: window release %lu %lu\n", t1, t2);
        check_eq("release-again-ENOENT", excl(XENODE_EXCLUSIVE_release, 0, 0, NULL), -ENOENT);
    }

    /* Held, not released: the hypervisor ends it. */
    t0 = xen_system_time();
    rc = excl(XENODE_EXCLUSIVE_acquire, 0, expire, &q);
    if (check_eq("acquire-to-expire", rc, 0)) {
        uint64_t until = q.expires;
        compute_until(t0 + 4 * expire);   /* well past it: a loaded host runs the workers late */
        printf("exclusive: window expire %lu %lu\n", t0, until);
        check_eq("query-after-expiry", excl(XENODE_EXCLUSIVE_query, 0, 0, &q), 0);
        check_eq("query-after-expiry-nobody", q.holder, DOMID_INVALID);
        check_eq("release-after-expiry-ENOENT", excl(XENODE_EXCLUSIVE_release, 0, 0, NULL), -ENOENT);
    }

    /* The event trigger. */
    evtchn_port_t port;
    if (!check_eq("alloc-trigger-port", evtchn_alloc_unbound(0, &port), 0))
        return;
    check_eq("bind-trigger", excl(XENODE_EXCLUSIVE_bind, port, 0, NULL), 0);
    evtchn_bind_handler(port, trigger_handler, NULL);
    evtchn_unmask(port);
    printf("exclusive: trigger port %u\n", port);
    uint64_t wait_from = xen_system_time();
    local_irq_disable();
    while (!triggered && xen_system_time() < wait_from + 60000000000UL)
        wait_for_event();
    local_irq_enable();
    if (check_true("trigger-event", triggered, "no event on port %u within 60 s", port)) {
        check_eq("trigger-holder", holder_at_event, xen_domid);
        uint64_t t = trigger_time;
        compute_until(t + hold / 2);
        uint64_t t2 = xen_system_time();
        check_eq("trigger-release", excl(XENODE_EXCLUSIVE_release, 0, 0, NULL), 0);
        printf("exclusive: window trigger %lu %lu\n", t, t2);
    }
    check_eq("unbind-trigger", excl(XENODE_EXCLUSIVE_bind, 0, 0, NULL), 0);
}

static void bench(void)
{
    uint64_t n = cmdline_u64("n", 200);
    uint64_t hold = cmdline_u64("hold_us", 200) * 1000;
    uint64_t gap = cmdline_u64("gap_us", 2000) * 1000;
    uint64_t failed = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t0 = xen_system_time();
        long rc = excl(XENODE_EXCLUSIVE_acquire, 0, 5000000, NULL);
        uint64_t t1 = xen_system_time();
        if (rc) {
            failed++;
            printf("exclusive: acquire %lu: %ld\n", i, rc);
        } else {
            printf("ACQ %lu\n", t1 - t0);
            compute_until(t1 + hold);
            excl(XENODE_EXCLUSIVE_release, 0, 0, NULL);
        }
        compute_until(xen_system_time() + gap);
    }
    printf("exclusive: bench done, %lu failed\n", failed);
}

int main(void)
{
    char buf[16];
    const char *mode = cmdline_get("mode", buf, sizeof(buf));
    if (!mode)
        mode = "checks";
    long rc = evtchn_init();
    if (rc) {
        printf("exclusive: evtchn_init failed: %ld\n", rc);
        return 1;
    }
    local_irq_enable();
    if (!memcmp(mode, "hold", 5)) {
        struct sched_xenode_exclusive q;
        rc = excl(XENODE_EXCLUSIVE_acquire, 0, 0, &q);
        printf("exclusive: holding (rc %ld) until %lu\n", rc, q.expires);
        compute_until(~0UL);
    }
    if (!memcmp(mode, "bench", 6)) {
        bench();
        return 0;
    }
    if (!cmdline_u64("granted", 1))
        not_granted();
    else
        checks();
    return check_summary() ? 1 : 0;
}
