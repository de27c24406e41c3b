/*
 * pingpong: two domains bounce events over an interdomain event channel.
 *
 *   role=pong [n=N] [peer=D]   waits for its peer's domid in ~/data/peer (the
 *                              toolstack writes it) unless peer= is given,
 *                              allocates an unbound port for it, publishes it
 *                              in ~/data/port readable by the peer (XS_SET_PERMS)
 *                              and answers every event with one back.
 *   role=ping n=N peer=D       reads /local/domain/D/data/port (D may be 0: a
 *                              control-domain or driver-domain backend that
 *                              answers), binds to it and
 *                              sends N events, each after the previous answer,
 *                              timing the round trips with the TSC.
 *   role=upcall n=N            alone: N sends to its own IPI port with the upcall
 *                              delivered, then N with the port masked; the
 *                              difference per event is the cost of the upcall.
 *
 * wait=hlt (default) sleeps in `sti; hlt` and takes the upcall through the
 * callback vector; wait=block uses SCHEDOP_block; wait=poll uses SCHEDOP_poll
 * on the masked port with interrupts off (no upcall: the hypervisor's wake
 * path alone).  Neither side busy-polls.
 *
 * Prints `pingpong: ping rtt_us n=N median=… p10=… p90=… p99=… max=… min=…`,
 * `pingpong: <role> done sent=S received=R`; powers off when every event was
 * accounted for, crashes otherwise.
 */
#include "events.h"

#define MAX_N 100000

enum { WAIT_MODE_HLT, WAIT_MODE_BLOCK, WAIT_MODE_POLL };
static int mode;
static evtchn_port_t port;
static volatile uint64_t received, sent;
static uint32_t rtt[MAX_N];

static void ping_handler(evtchn_port_t p, void *arg)
{
    received++;
}

static void pong_handler(evtchn_port_t p, void *arg)
{
    received++;
    evtchn_send(p);
    sent++;
}

/* Sleeps until the next event on `port` (interrupts off on entry and exit). */
static void wait_event(volatile uint64_t *counter, uint64_t seen)
{
    if (mode == WAIT_MODE_POLL) {
        struct sched_poll poll = { .nr_ports = 1, .timeout = 0 };
        set_xen_guest_handle(poll.ports, &port);
        while (!evtchn_is_pending(port))
            HYPERVISOR_sched_op(SCHEDOP_poll, &poll);
        evtchn_clear_pending(port);
        (*counter)++;
        return;
    }
    while (*counter == seen)
        wait_for_event();
}

static void sort_u32(uint32_t *a, unsigned int n)
{
    /* Shell sort (Ciura's gaps): few instructions, no recursion. */
    static const unsigned int gaps[] = { 701, 301, 132, 57, 23, 10, 4, 1 };
    for (unsigned int g = 0; g < ARRAY_SIZE(gaps); g++) {
        unsigned int gap = gaps[g];
        for (unsigned int i = gap; i < n; i++) {
            uint32_t v = a[i];
            unsigned int j = i;
            for (; j >= gap && a[j - gap] > v; j -= gap)
                a[j] = a[j - gap];
            a[j] = v;
        }
    }
}

/* A TSC delta in µs with two decimals, as "12.34". */
static void us(char *buf, size_t size, uint64_t ticks)
{
    uint64_t ns = tsc_to_ns(ticks);
    snprintf(buf, size, "%lu.%02lu", (unsigned long)(ns / 1000), (unsigned long)(ns % 1000 / 10));
}

static void report(unsigned int n)
{
    sort_u32(rtt, n);
    char med[24], p10[24], p90[24], p99[24], max[24], min[24];
    us(med, sizeof(med), rtt[n / 2]);
    us(p10, sizeof(p10), rtt[n / 10]);
    us(p90, sizeof(p90), rtt[n * 9 / 10]);
    us(p99, sizeof(p99), rtt[n * 99 / 100]);
    us(max, sizeof(max), rtt[n - 1]);
    us(min, sizeof(min), rtt[0]);
    printf("pingpong: ping rtt_us n=%u median=%s p10=%s p90=%s p99=%s max=%s min=%s\n",
           n, med, p10, p90, p99, max, min);
}

static long setup_channel(int role, domid_t peer)
{
    char path[64], val[16];
    long rc;
    if (role) {                                 /* pong */
        if (!peer) {
            uint64_t p;
            if ((rc = xs_read_u64_wait("data/peer", &p, 20000)) != 0) {
                printf("pingpong: no data/peer: %ld\n", rc);
                return rc;
            }
            peer = p;
        }
        if ((rc = evtchn_alloc_unbound(peer, &port)) != 0)
            return rc;
        local_irq_disable();
        evtchn_bind_handler(port, pong_handler, NULL);
        local_irq_enable();
        snprintf(val, sizeof(val), "%u", port);
        if ((rc = xs_write("data/port", val)) != 0)
            return rc;
        char owner[12], reader[12];
        snprintf(owner, sizeof(owner), "n%d", xen_domid);
        snprintf(reader, sizeof(reader), "r%u", peer);
        const char *perms[] = { owner, reader };
        if ((rc = xs_set_perms("data/port", perms, 2)) != 0)
            return rc;
        printf("pingpong: pong d%d port %u published for d%u\n", xen_domid, port, peer);
        return 0;
    }
    uint64_t remote;
    snprintf(path, sizeof(path), "/local/domain/%u/data/port", peer);
    if ((rc = xs_read_u64_wait(path, &remote, 20000)) != 0) {
        printf("pingpong: cannot read %s: %ld\n", path, rc);
        return rc;
    }
    local_irq_disable();
    rc = evtchn_bind_interdomain(peer, remote, &port);
    if (rc == 0) {
        /* The new local port starts pending (Xen marks it so): not an answer. */
        evtchn_clear_pending(port);
        evtchn_bind_handler(port, ping_handler, NULL);
    }
    local_irq_enable();
    printf("pingpong: ping d%d bound port %u to d%u port %lu: %ld\n", xen_domid, port, peer,
           (unsigned long)remote, rc);
    return rc;
}

static int upcall_cost(unsigned int n)
{
    evtchn_port_t p;
    if (evtchn_bind_ipi(0, &p) != 0)
        return 1;
    evtchn_bind_handler(p, ping_handler, NULL);
    local_irq_enable();
    uint64_t up0 = this_cpu()->upcalls;
    uint64_t t0 = rdtsc();
    for (unsigned int i = 0; i < n; i++)
        evtchn_send(p);                 /* the upcall is injected on the way back */
    uint64_t t1 = rdtsc();
    uint64_t upcalls = this_cpu()->upcalls - up0;
    evtchn_mask(p);
    uint64_t t2 = rdtsc();
    for (unsigned int i = 0; i < n; i++) {
        evtchn_send(p);
        evtchn_clear_pending(p);        /* as the handler does, so each send does the same work */
    }
    uint64_t t3 = rdtsc();
    uint64_t with = tsc_to_ns(t1 - t0) / n, without = tsc_to_ns(t3 - t2) / n;
    printf("pingpong: upcall n=%u upcalls=%lu send+upcall_ns=%lu send_masked_ns=%lu upcall_ns=%ld\n",
           n, (unsigned long)upcalls, (unsigned long)with, (unsigned long)without,
           (long)(with - without));
    received = upcalls;
    return upcalls != n;
}

int main(void)
{
    char role_s[8] = "", wait_s[8] = "hlt";
    cmdline_get("role", role_s, sizeof(role_s));
    cmdline_get("wait", wait_s, sizeof(wait_s));
    unsigned int n = cmdline_u64("n", 1000);
    domid_t peer = cmdline_u64("peer", 0);
    if (n == 0 || n > MAX_N) {
        printf("pingpong: n must be 1..%u\n", MAX_N);
        return 1;
    }
    mode = !strncmp(wait_s, "poll", 5) ? WAIT_MODE_POLL : !strncmp(wait_s, "block", 6) ? WAIT_MODE_BLOCK : WAIT_MODE_HLT;
    wait_mode = mode == WAIT_MODE_BLOCK ? WAIT_BLOCK : WAIT_HLT;

    long rc = evtchn_init();
    if (rc) {
        printf("pingpong: evtchn_init failed: %ld\n", rc);
        return 1;
    }
    if (!strncmp(role_s, "upcall", 7))
        return upcall_cost(n);
    int pong = !strncmp(role_s, "pong", 5);
    if (!pong && strncmp(role_s, "ping", 5)) {
        printf("pingpong: role=ping|pong|upcall\n");
        return 1;
    }
    /* peer=0 is the control domain (a backend of its own answering): only a missing peer= is an error */
    char peer_s[8] = "";
    cmdline_get("peer", peer_s, sizeof(peer_s));
    if (!pong && !peer_s[0]) {
        printf("pingpong: ping needs peer=<domid>\n");
        return 1;
    }
    local_irq_enable();
    if ((rc = xs_init()) != 0 || (rc = setup_channel(pong, peer)) != 0) {
        printf("pingpong: setup failed: %ld\n", rc);
        return 1;
    }
    /* Interrupts off before the port is masked and its handler dropped: an
     * upcall in between would consume the peer's first event with no handler
     * to count it, and both sides would wait for ever. */
    local_irq_disable();
    if (mode == WAIT_MODE_POLL) {
        evtchn_mask(port);
        evtchn_unbind_handler(port);
    }
    if (pong) {
        while (received < n) {
            uint64_t seen = received;
            wait_event(&received, seen);
            if (mode == WAIT_MODE_POLL) {
                evtchn_send(port);
                sent++;
            }
        }
    } else {
        for (unsigned int i = 0; i < n; i++) {
            uint64_t seen = received;
            uint64_t t0 = rdtsc();
            evtchn_send(port);
            sent++;
            wait_event(&received, seen);
            rtt[i] = rdtsc() - t0;
        }
    }
    local_irq_enable();
    printf("pingpong: %s done sent=%lu received=%lu\n", pong ? "pong" : "ping",
           (unsigned long)sent, (unsigned long)received);
    if (!pong)
        report(n);
    return !(sent == n && received == n);
}
