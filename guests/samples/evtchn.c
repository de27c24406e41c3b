/*
 * evtchn: self-checking test of the 2-level event-channel ABI and of upcall
 * delivery through HVM_PARAM_CALLBACK_IRQ's vector.
 *
 * Every op of public/event_channel.h with its error cases, as Xen answers an
 * unprivileged PVH domU under the dummy XSM: PASS/FAIL lines, then
 * `RESULT: N passed, M failed`; powers off if all passed, crashes otherwise.
 * Boot it with `--vcpus 2` (or more) to also check the per-vCPU rules with a
 * second, existing (down) vCPU; with one vCPU those checks are skipped.
 *
 * EVTCHNOP_reset closes every port, the console and xenstore ports included,
 * so it runs last; output uses console_io, which needs no port.
 */
#include "events.h"

#define BAD_PTR     ((void *)0x100000000000UL)
#define NO_DOMAIN   0x7000          /* < DOMID_FIRST_RESERVED, never created */
#define BAD_PORT    100000
#define MAX_EVTCHN_PORT_DEFAULT 1023  /* libxl's max_event_channels default */

#define SECTION(s) printf("--- %s\n", s)

static domid_t self;
static unsigned int nr_vcpus;
static uint64_t store_port, console_port;

/* Upcall bookkeeping: handler calls per port and the last port/arg seen. */
static volatile uint32_t hits[EVTCHN_NR_PORTS];
static volatile evtchn_port_t last_port;
static void *volatile last_arg;

static void count_handler(evtchn_port_t port, void *arg)
{
    hits[port]++;
    last_port = port;
    last_arg = arg;
}

static long op(int cmd, void *arg)
{
    return HYPERVISOR_event_channel_op(cmd, arg);
}

static void check_status(const char *name, evtchn_port_t port, uint32_t status, uint32_t vcpu,
                         uint32_t u0, uint32_t u1)
{
    struct evtchn_status st;
    char n[96];
    long rc = evtchn_status(DOMID_SELF, port, &st);
    snprintf(n, sizeof(n), "%s-rc", name);
    if (!check_eq(n, rc, 0))
        return;
    snprintf(n, sizeof(n), "%s-status", name);
    check_eq(n, st.status, status);
    snprintf(n, sizeof(n), "%s-vcpu", name);
    check_eq(n, st.vcpu, vcpu);
    switch (status) {
    case EVTCHNSTAT_unbound:
        snprintf(n, sizeof(n), "%s-remote-dom", name);
        check_eq(n, st.u.unbound.dom, u0);
        break;
    case EVTCHNSTAT_interdomain:
        snprintf(n, sizeof(n), "%s-peer-dom", name);
        check_eq(n, st.u.interdomain.dom, u0);
        snprintf(n, sizeof(n), "%s-peer-port", name);
        check_eq(n, st.u.interdomain.port, u1);
        break;
    case EVTCHNSTAT_virq:
        snprintf(n, sizeof(n), "%s-virq", name);
        check_eq(n, st.u.virq, u0);
        break;
    }
}

static uint32_t status_of(evtchn_port_t port)
{
    struct evtchn_status st;
    return evtchn_status(DOMID_SELF, port, &st) == 0 ? st.status : 0xffffffff;
}

static uint8_t upcall_pending(void)
{
    return *(volatile uint8_t *)&this_cpu()->vcpu_info->evtchn_upcall_pending;
}

static xen_ulong_t pending_sel(void)
{
    return *(volatile xen_ulong_t *)&this_cpu()->vcpu_info->evtchn_pending_sel;
}

/* ------------------------------------------------------------ alloc_unbound */
static void test_alloc_unbound(void)
{
    SECTION("alloc_unbound");
    evtchn_port_t p = 0, q = 0;
    check_eq("alloc_unbound-self-self", evtchn_alloc_unbound(DOMID_SELF, &p), 0);
    check_true("alloc_unbound-port-nonzero", p > 0, "port %u", p);
    check_status("alloc_unbound-domid_self-reads-own-domid", p, EVTCHNSTAT_unbound, 0, self, 0);

    struct evtchn_alloc_unbound a = { .dom = self, .remote_dom = 0 };
    check_eq("alloc_unbound-own-domid-explicit", op(EVTCHNOP_alloc_unbound, &a), 0);
    q = a.port;
    /* Xen's get_free_port hands out the lowest free port: every port below q
     * but the reserved port 0 is in use (p among them). */
    unsigned int busy_below = 0;
    for (evtchn_port_t k = 1; k < q; k++)
        busy_below += status_of(k) != EVTCHNSTAT_closed;
    check_true("alloc_unbound-lowest-free", q > p && busy_below == q - 1,
               "ports %u then %u; %u of the %u ports below it in use", p, q, busy_below, q - 1);
    check_status("alloc_unbound-remote-0", q, EVTCHNSTAT_unbound, 0, 0, 0);
    check_eq("alloc_unbound-remote-0-close", evtchn_close(q), 0);

    /* Xen does not check that remote_dom exists. */
    a = (struct evtchn_alloc_unbound){ .dom = DOMID_SELF, .remote_dom = NO_DOMAIN };
    check_eq("alloc_unbound-remote-nonexistent-ok", op(EVTCHNOP_alloc_unbound, &a), 0);
    check_status("alloc_unbound-remote-nonexistent", a.port, EVTCHNSTAT_unbound, 0, NO_DOMAIN, 0);
    evtchn_close(a.port);

    a = (struct evtchn_alloc_unbound){ .dom = NO_DOMAIN, .remote_dom = DOMID_SELF };
    check_eq("alloc_unbound-no-such-dom-ESRCH", op(EVTCHNOP_alloc_unbound, &a), -ESRCH);
    a = (struct evtchn_alloc_unbound){ .dom = 0, .remote_dom = DOMID_SELF };
    check_eq("alloc_unbound-for-dom0-EPERM", op(EVTCHNOP_alloc_unbound, &a), -EPERM);
    check_eq("alloc_unbound-badptr-EFAULT", op(EVTCHNOP_alloc_unbound, BAD_PTR), -EFAULT);

    /* Lowest free port is reused after close. */
    check_eq("close-unbound", evtchn_close(p), 0);
    check_eq("closed-port-status", status_of(p), EVTCHNSTAT_closed);
    evtchn_port_t r = 0;
    evtchn_alloc_unbound(DOMID_SELF, &r);
    check_eq("alloc_unbound-reuses-lowest-free", r, p);
    evtchn_close(r);
}

/* -------------------------------------------------------- bind_interdomain */
static void test_interdomain(void)
{
    SECTION("bind_interdomain (loopback)");
    evtchn_port_t a = 0, b = 0;
    evtchn_alloc_unbound(DOMID_SELF, &a);
    check_eq("bind_interdomain-loopback", evtchn_bind_interdomain(DOMID_SELF, a, &b), 0);
    check_true("bind_interdomain-new-port", b != a && b > 0, "local %u remote %u", b, a);
    check_true("bind_interdomain-new-local-port-pending", evtchn_is_pending(b), "port %u not pending", b);
    check_true("bind_interdomain-remote-port-not-pending", !evtchn_is_pending(a), "port %u pending", a);
    check_status("interdomain-status-a", a, EVTCHNSTAT_interdomain, 0, self, b);
    check_status("interdomain-status-b", b, EVTCHNSTAT_interdomain, 0, self, a);
    evtchn_clear_pending(b);

    evtchn_port_t x;
    check_eq("bind_interdomain-already-bound-EINVAL", evtchn_bind_interdomain(DOMID_SELF, a, &x), -EINVAL);
    check_eq("bind_interdomain-port0-EINVAL", evtchn_bind_interdomain(DOMID_SELF, 0, &x), -EINVAL);
    check_eq("bind_interdomain-bad-port-EINVAL", evtchn_bind_interdomain(DOMID_SELF, BAD_PORT, &x), -EINVAL);
    check_eq("bind_interdomain-no-such-dom-ESRCH", evtchn_bind_interdomain(NO_DOMAIN, a, &x), -ESRCH);
    evtchn_port_t other = 0;
    struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = 0 };
    op(EVTCHNOP_alloc_unbound, &au);
    other = au.port;
    check_eq("bind_interdomain-port-for-other-dom-EINVAL", evtchn_bind_interdomain(DOMID_SELF, other, &x), -EINVAL);
    evtchn_close(other);
    check_eq("bind_interdomain-badptr-EFAULT", op(EVTCHNOP_bind_interdomain, BAD_PTR), -EFAULT);

    SECTION("send (interdomain)");
    check_eq("send-interdomain-a", evtchn_send(a), 0);
    check_true("send-a-marks-peer-b-pending", evtchn_is_pending(b) && !evtchn_is_pending(a),
               "pending a=%d b=%d", evtchn_is_pending(a), evtchn_is_pending(b));
    evtchn_clear_pending(b);
    check_eq("send-interdomain-b", evtchn_send(b), 0);
    check_true("send-b-marks-peer-a-pending", evtchn_is_pending(a) && !evtchn_is_pending(b),
               "pending a=%d b=%d", evtchn_is_pending(a), evtchn_is_pending(b));

    SECTION("close (interdomain)");
    check_eq("close-interdomain-a", evtchn_close(a), 0);
    check_eq("close-clears-pending", evtchn_is_pending(a), 0);
    check_eq("closed-a-status", status_of(a), EVTCHNSTAT_closed);
    check_status("peer-reverts-to-unbound", b, EVTCHNSTAT_unbound, 0, self, 0);
    check_eq("send-on-reverted-unbound-ok", evtchn_send(b), 0);
    check_eq("close-again-EINVAL", evtchn_close(a), -EINVAL);
    /* The reverted port accepts a new binding from the closer. */
    check_eq("rebind-reverted-port", evtchn_bind_interdomain(DOMID_SELF, b, &a), 0);
    check_status("rebound-status", a, EVTCHNSTAT_interdomain, 0, self, b);
    evtchn_close(a);
    evtchn_close(b);
    check_eq("close-port0-EINVAL", evtchn_close(0), -EINVAL);
    check_eq("close-bad-port-EINVAL", evtchn_close(BAD_PORT), -EINVAL);
}

/* ---------------------------------------------------------------- bind_virq */
static evtchn_port_t timer_port[2];

static void test_virq(void)
{
    SECTION("bind_virq");
    evtchn_port_t p = 0, x;
    check_eq("bind_virq-timer-vcpu0", evtchn_bind_virq(VIRQ_TIMER, 0, &p), 0);
    timer_port[0] = p;
    check_status("virq-timer-status", p, EVTCHNSTAT_virq, 0, VIRQ_TIMER, 0);
    check_eq("bind_virq-timer-twice-EEXIST", evtchn_bind_virq(VIRQ_TIMER, 0, &x), -EEXIST);
    evtchn_port_t dbg = 0;
    check_eq("bind_virq-debug-vcpu0", evtchn_bind_virq(VIRQ_DEBUG, 0, &dbg), 0);
    check_status("virq-debug-status", dbg, EVTCHNSTAT_virq, 0, VIRQ_DEBUG, 0);
    evtchn_port_t con = 0;
    check_eq("bind_virq-global-console-vcpu0", evtchn_bind_virq(VIRQ_CONSOLE, 0, &con), 0);
    check_eq("bind_virq-global-console-twice-EEXIST", evtchn_bind_virq(VIRQ_CONSOLE, 0, &x), -EEXIST);
    /* The global-VIRQ rule comes before the vCPU lookup: EINVAL even for a vCPU that does not exist. */
    check_eq("bind_virq-global-on-vcpu1-EINVAL", evtchn_bind_virq(VIRQ_CONSOLE, 1, &x), -EINVAL);
    check_eq("bind_virq-global-on-vcpu1000-EINVAL", evtchn_bind_virq(VIRQ_CONSOLE, 1000, &x), -EINVAL);
    check_eq("bind_virq-timer-no-such-vcpu-ENOENT", evtchn_bind_virq(VIRQ_TIMER, nr_vcpus, &x), -ENOENT);
    check_eq("bind_virq-nr_virqs-EINVAL", evtchn_bind_virq(NR_VIRQS, 0, &x), -EINVAL);
    check_eq("bind_virq-huge-EINVAL", evtchn_bind_virq(0xffffffffu, 0, &x), -EINVAL);
    check_eq("bind_virq-badptr-EFAULT", op(EVTCHNOP_bind_virq, BAD_PTR), -EFAULT);
    if (nr_vcpus > 1) {
        check_eq("bind_virq-timer-vcpu1", evtchn_bind_virq(VIRQ_TIMER, 1, &timer_port[1]), 0);
        check_true("bind_virq-timer-per-vcpu-ports-differ", timer_port[1] != timer_port[0], "same port %u", p);
        check_status("virq-timer-vcpu1-status", timer_port[1], EVTCHNSTAT_virq, 1, VIRQ_TIMER, 0);
        check_eq("bind_virq-timer-vcpu1-twice-EEXIST", evtchn_bind_virq(VIRQ_TIMER, 1, &x), -EEXIST);
        check_eq("bind_virq-debug-vcpu1", evtchn_bind_virq(VIRQ_DEBUG, 1, &x), 0);
        evtchn_close(x);
    } else {
        printf("INFO one vCPU: per-vCPU VIRQs on vCPU 1 not checked (boot with --vcpus 2)\n");
    }
    check_eq("send-on-virq-EINVAL", evtchn_send(p), -EINVAL);
    check_eq("send-on-global-virq-EINVAL", evtchn_send(con), -EINVAL);

    SECTION("bind_vcpu");
    check_eq("bind_vcpu-global-virq-vcpu0", evtchn_bind_vcpu(con, 0), 0);
    check_eq("bind_vcpu-per-vcpu-virq-EINVAL", evtchn_bind_vcpu(p, 0), -EINVAL);
    check_eq("bind_vcpu-no-such-vcpu-ENOENT", evtchn_bind_vcpu(con, nr_vcpus), -ENOENT);
    /* Xen looks the vCPU up before the port. */
    check_eq("bind_vcpu-bad-port-and-vcpu-ENOENT", evtchn_bind_vcpu(BAD_PORT, 1000), -ENOENT);
    check_eq("bind_vcpu-bad-port-EINVAL", evtchn_bind_vcpu(BAD_PORT, 0), -EINVAL);
    check_eq("bind_vcpu-port0-EINVAL", evtchn_bind_vcpu(0, 0), -EINVAL);
    evtchn_port_t u = 0, i = 0, a = 0, b = 0;
    evtchn_alloc_unbound(DOMID_SELF, &u);
    check_eq("bind_vcpu-unbound", evtchn_bind_vcpu(u, 0), 0);
    evtchn_bind_ipi(0, &i);
    check_eq("bind_vcpu-ipi-EINVAL", evtchn_bind_vcpu(i, 0), -EINVAL);
    evtchn_alloc_unbound(DOMID_SELF, &a);
    evtchn_bind_interdomain(DOMID_SELF, a, &b);
    evtchn_clear_pending(b);
    check_eq("bind_vcpu-interdomain", evtchn_bind_vcpu(b, 0), 0);
    if (nr_vcpus > 1) {
        check_eq("bind_vcpu-unbound-to-vcpu1", evtchn_bind_vcpu(u, 1), 0);
        check_status("bind_vcpu-unbound-vcpu1-status", u, EVTCHNSTAT_unbound, 1, self, 0);
        check_eq("bind_vcpu-global-virq-to-vcpu1", evtchn_bind_vcpu(con, 1), 0);
        check_status("bind_vcpu-global-virq-vcpu1-status", con, EVTCHNSTAT_virq, 1, VIRQ_CONSOLE, 0);
        check_eq("bind_vcpu-interdomain-to-vcpu1", evtchn_bind_vcpu(b, 1), 0);
        check_status("bind_vcpu-interdomain-vcpu1-status", b, EVTCHNSTAT_interdomain, 1, self, a);
        /* A freed and reused port is back on vCPU 0. */
        evtchn_close(u);
        evtchn_port_t u2 = 0;
        evtchn_alloc_unbound(DOMID_SELF, &u2);
        check_status("bind_vcpu-reused-port-back-on-vcpu0", u2, EVTCHNSTAT_unbound, 0, self, 0);
        u = u2;
    }
    check_eq("bind_vcpu-closed-port-EINVAL", evtchn_bind_vcpu(b + 100, 0), -EINVAL);
    evtchn_close(u);
    evtchn_close(i);
    evtchn_close(a);
    evtchn_close(b);

    SECTION("close (virq)");
    check_eq("close-virq-debug", evtchn_close(dbg), 0);
    check_eq("rebind-virq-debug-after-close", evtchn_bind_virq(VIRQ_DEBUG, 0, &dbg), 0);
    evtchn_close(dbg);
    evtchn_close(con);
}

/* ----------------------------------------------------------------- bind_ipi */
static evtchn_port_t ipi_port;

static void test_ipi(void)
{
    SECTION("bind_ipi");
    evtchn_port_t x;
    check_eq("bind_ipi-vcpu0", evtchn_bind_ipi(0, &ipi_port), 0);
    check_status("ipi-status", ipi_port, EVTCHNSTAT_ipi, 0, 0, 0);
    check_eq("bind_ipi-no-such-vcpu-ENOENT", evtchn_bind_ipi(nr_vcpus, &x), -ENOENT);
    check_eq("bind_ipi-vcpu1000-ENOENT", evtchn_bind_ipi(1000, &x), -ENOENT);
    check_eq("bind_ipi-badptr-EFAULT", op(EVTCHNOP_bind_ipi, BAD_PTR), -EFAULT);
    if (nr_vcpus > 1) {
        check_eq("bind_ipi-vcpu1", evtchn_bind_ipi(1, &x), 0);
        check_status("ipi-vcpu1-status", x, EVTCHNSTAT_ipi, 1, 0, 0);
        evtchn_close(x);
    }
    /* Interrupts are off: the send only marks the port and the vCPU. */
    check_eq("send-ipi", evtchn_send(ipi_port), 0);
    check_true("send-ipi-marks-own-port-pending", evtchn_is_pending(ipi_port), "not pending");
    check_eq("send-ipi-sets-upcall-pending", upcall_pending(), 1);
    check_true("send-ipi-sets-selector-bit", (pending_sel() >> (ipi_port / 64)) & 1,
               "sel 0x%lx", (unsigned long)pending_sel());
    evtchn_clear_pending(ipi_port);
    this_cpu()->vcpu_info->evtchn_upcall_pending = 0;
    __atomic_exchange_n(&this_cpu()->vcpu_info->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------------------- misc */
static void test_send_status_errors(void)
{
    SECTION("send / status / unmask errors");
    evtchn_port_t u = 0;
    evtchn_alloc_unbound(DOMID_SELF, &u);
    check_eq("send-unbound-ok", evtchn_send(u), 0);
    check_eq("send-unbound-not-pending", evtchn_is_pending(u), 0);
    evtchn_close(u);
    check_eq("send-closed-EINVAL", evtchn_send(u), -EINVAL);
    check_eq("send-port0-EINVAL", evtchn_send(0), -EINVAL);
    check_eq("send-bad-port-EINVAL", evtchn_send(BAD_PORT), -EINVAL);
    check_eq("send-badptr-EFAULT", op(EVTCHNOP_send, BAD_PTR), -EFAULT);

    struct evtchn_status st;
    check_eq("status-closed-port", status_of(u), EVTCHNSTAT_closed);
    check_eq("status-port0-closed", status_of(0), EVTCHNSTAT_closed);
    check_eq("status-bad-port-EINVAL", evtchn_status(DOMID_SELF, BAD_PORT, &st), -EINVAL);
    check_eq("status-own-domid", evtchn_status(self, ipi_port, &st), 0);
    check_eq("status-no-such-dom-ESRCH", evtchn_status(NO_DOMAIN, 1, &st), -ESRCH);
    check_eq("status-dom0-EPERM", evtchn_status(0, 1, &st), -EPERM);
    check_eq("status-badptr-EFAULT", op(EVTCHNOP_status, BAD_PTR), -EFAULT);
    if (store_port)
        check_true("status-store-port", status_of(store_port) == EVTCHNSTAT_interdomain ||
                   status_of(store_port) == EVTCHNSTAT_unbound, "status %u", status_of(store_port));

    check_eq("unmask-bad-port-EINVAL", evtchn_unmask(BAD_PORT), -EINVAL);
    check_eq("unmask-unmasked-port-ok", evtchn_unmask(ipi_port), 0);
    check_eq("unmask-badptr-EFAULT", op(EVTCHNOP_unmask, BAD_PTR), -EFAULT);

    SECTION("FIFO and unknown ops");
    /* Only what Xen refuses without switching this guest to FIFO (the fifo sample tests FIFO itself). */
    struct evtchn_expand_array ea = { .array_gfn = 0 };
    check_eq("expand_array-2level-EOPNOTSUPP", op(EVTCHNOP_expand_array, &ea), -EOPNOTSUPP);
    struct evtchn_set_priority sp = { .port = ipi_port, .priority = 7 };
    check_eq("set_priority-2level-ENOSYS", op(EVTCHNOP_set_priority, &sp), -ENOSYS);
    struct evtchn_init_control ic = { .control_gfn = 0xfffffffffULL, .offset = 0, .vcpu = 0 };
    check_eq("init_control-bad-gfn-EINVAL", op(EVTCHNOP_init_control, &ic), -EINVAL);
    check_eq("unknown-op-ENOSYS", op(100, &sp), -ENOSYS);
}

/* ------------------------------------------------------------------ upcalls */
static void test_upcalls(void)
{
    SECTION("upcall through the callback vector");
    struct evtchn_cpu *c = this_cpu();
    evtchn_bind_handler(ipi_port, count_handler, (void *)0x1234);
    uint64_t up0 = c->upcalls;
    uint32_t h0 = hits[ipi_port];

    /* Interrupts off: the event waits. */
    evtchn_send(ipi_port);
    check_eq("upcall-held-while-interrupts-off", c->upcalls - up0, 0);
    check_eq("upcall-pending-flag-set", upcall_pending(), 1);
    local_irq_enable();
    check_eq("upcall-delivered-on-sti", c->upcalls - up0, 1);
    check_eq("upcall-handler-called-once", hits[ipi_port] - h0, 1);
    check_eq("upcall-handler-port", last_port, ipi_port);
    check_eq("upcall-handler-arg", (long)last_arg, 0x1234);
    check_eq("upcall-clears-pending-bit", evtchn_is_pending(ipi_port), 0);
    check_eq("upcall-clears-upcall-pending", upcall_pending(), 0);
    check_eq("upcall-clears-selector", pending_sel(), 0);

    /* Interrupts on: delivered on return from the send hypercall. */
    evtchn_send(ipi_port);
    check_eq("upcall-delivered-at-once-interrupts-on", hits[ipi_port] - h0, 2);

    /* Loopback interdomain: the handler of the other end runs. */
    evtchn_port_t a = 0, b = 0;
    evtchn_alloc_unbound(DOMID_SELF, &a);
    evtchn_bind_handler(a, count_handler, NULL);
    local_irq_disable();
    evtchn_bind_interdomain(DOMID_SELF, a, &b);
    evtchn_bind_handler(b, count_handler, NULL);
    local_irq_enable();
    check_eq("upcall-for-bind-interdomain-pending-port", hits[b], 1);
    evtchn_send(a);
    check_eq("upcall-loopback-peer-handler", hits[b], 2);
    check_eq("upcall-loopback-sender-not-called", hits[a], 0);

    SECTION("mask and unmask");
    uint64_t up1 = c->upcalls;
    evtchn_mask(ipi_port);
    check_eq("mask-bit-set", evtchn_is_masked(ipi_port), 1);
    evtchn_send(ipi_port);
    check_eq("masked-send-no-upcall", c->upcalls - up1, 0);
    check_eq("masked-send-no-handler", hits[ipi_port] - h0, 2);
    check_eq("masked-send-pending-bit-set", evtchn_is_pending(ipi_port), 1);
    check_eq("masked-send-no-upcall-pending", upcall_pending(), 0);
    check_eq("masked-send-no-selector", pending_sel(), 0);
    evtchn_send(ipi_port);
    check_eq("masked-second-send-still-nothing", c->upcalls - up1, 0);
    check_eq("unmask-rc", evtchn_unmask(ipi_port), 0);
    check_eq("unmask-clears-mask", evtchn_is_masked(ipi_port), 0);
    check_eq("unmask-redelivers-upcall", c->upcalls - up1, 1);
    check_eq("unmask-redelivers-handler-once", hits[ipi_port] - h0, 3);
    check_eq("unmask-not-pending-no-upcall", (evtchn_unmask(ipi_port), c->upcalls - up1), 1);
    /* Masked with interrupts off, then unmasked: the upcall waits for sti. */
    local_irq_disable();
    evtchn_mask(ipi_port);
    evtchn_send(ipi_port);
    evtchn_unmask(ipi_port);
    check_eq("unmask-irqs-off-sets-upcall-pending", upcall_pending(), 1);
    local_irq_enable();
    check_eq("unmask-irqs-off-delivered-on-sti", hits[ipi_port] - h0, 4);

    SECTION("blocking: wait_for_event");
    /* A timer 2 ms ahead wakes a vCPU sleeping in HLT, then in SCHEDOP_block. */
    static const char *const modes[] = { "hlt", "schedop_block" };
    evtchn_bind_handler(timer_port[0], count_handler, NULL);
    for (int m = 0; m < 2; m++) {
        char n[64];
        wait_mode = m ? WAIT_BLOCK : WAIT_HLT;
        uint32_t t0 = hits[timer_port[0]];
        uint64_t start = xen_system_time();
        local_irq_disable();
        HYPERVISOR_set_timer_op(start + 2000000);
        unsigned int sleeps = 0;
        while (hits[timer_port[0]] == t0 && sleeps < 1000) {
            wait_for_event();
            sleeps++;
        }
        local_irq_enable();
        uint64_t took = xen_system_time() - start;
        snprintf(n, sizeof(n), "wait_for_event-%s-timer-wakes", modes[m]);
        check_eq(n, hits[timer_port[0]] - t0, 1);
        snprintf(n, sizeof(n), "wait_for_event-%s-slept-until-deadline", modes[m]);
        check_true(n, took >= 2000000, "woke after %lu ns", (unsigned long)took);
        snprintf(n, sizeof(n), "wait_for_event-%s-no-spurious-wakeups", modes[m]);
        check_true(n, sleeps <= 2, "%u sleeps", sleeps);
    }
    wait_mode = WAIT_HLT;
    evtchn_close(a);
    evtchn_close(b);
    evtchn_unbind_handler(a);
    evtchn_unbind_handler(b);
    local_irq_disable();

    /* Opening interrupts alone (no exit, no hypercall) must be enough: Xen
     * injects at the next entry once IF is set. Spin with IF=1 and no
     * hypercall; the upcall has to arrive meanwhile. The bound is in loop
     * turns, not time, so a host too loaded to run this vCPU cannot use it
     * up: 10^6 turns are seconds of guest execution even at CPL0 on PVM. */
    uint64_t up_sti = c->upcalls;
    evtchn_send(ipi_port);
    asm volatile ("sti" ::: "memory");
    unsigned long turns = 0;
    while (c->upcalls == up_sti && turns < 1000000UL) {
        asm volatile ("pause" ::: "memory");
        turns++;
    }
    local_irq_disable();
    check_eq("upcall-delivered-after-plain-sti", c->upcalls - up_sti, 1);
    printf("INFO upcall after plain sti: %lu spin turns\n", turns);
}

/* -------------------------------------------------------- limit and reset */
static void test_limit_and_reset(void)
{
    SECTION("port limit");
    evtchn_port_t p = 0, last = 0;
    unsigned int n = 0;
    long rc;
    while ((rc = evtchn_alloc_unbound(DOMID_SELF, &p)) == 0 && n < EVTCHN_NR_PORTS) {
        last = p;
        n++;
    }
    check_eq("alloc_until-ENOSPC", rc, -ENOSPC);
    check_eq("max_evtchn_port-default-1023", last, MAX_EVTCHN_PORT_DEFAULT);
    printf("INFO allocated %u ports before -ENOSPC\n", n);
    evtchn_port_t x;
    check_eq("bind_ipi-when-full-ENOSPC", evtchn_bind_ipi(0, &x), -ENOSPC);
    check_eq("bind_virq-when-full-ENOSPC", evtchn_bind_virq(VIRQ_DEBUG, 0, &x), -ENOSPC);
    check_eq("close-last-port", evtchn_close(last), 0);
    check_eq("alloc-after-close-gets-it", (evtchn_alloc_unbound(DOMID_SELF, &x), x), last);

    SECTION("reset");
    struct evtchn_reset r = { .dom = NO_DOMAIN };
    check_eq("reset-no-such-dom-ESRCH", op(EVTCHNOP_reset, &r), -ESRCH);
    r.dom = 0;
    check_eq("reset-dom0-EPERM", op(EVTCHNOP_reset, &r), -EPERM);
    check_eq("reset-badptr-EFAULT", op(EVTCHNOP_reset, BAD_PTR), -EFAULT);
    r.dom = DOMID_SELF;
    check_eq("reset-self", op(EVTCHNOP_reset, &r), 0);
    unsigned int open = 0;
    for (evtchn_port_t q = 1; q <= MAX_EVTCHN_PORT_DEFAULT; q++)
        if (status_of(q) != EVTCHNSTAT_closed)
            open++;
    check_eq("reset-closes-every-port", open, 0);
    if (store_port)
        check_eq("reset-closes-store-port", status_of(store_port), EVTCHNSTAT_closed);
    check_eq("reset-closes-ipi", status_of(ipi_port), EVTCHNSTAT_closed);
    evtchn_port_t t = 0;
    check_eq("reset-forgets-virq-bindings", evtchn_bind_virq(VIRQ_TIMER, 0, &t), 0);
    check_eq("after-reset-lowest-port-is-1", t, 1);
}

int main(void)
{
    self = xen_domid;
    long rc = evtchn_init();
    if (!check_eq("evtchn_init", rc, 0))
        return check_summary();
    for (nr_vcpus = 1; nr_vcpus < EVTCHN_MAX_VCPUS; nr_vcpus++)
        if (HYPERVISOR_vcpu_op(VCPUOP_is_up, nr_vcpus, NULL) == -ENOENT)
            break;
    hvm_get_param(HVM_PARAM_STORE_EVTCHN, &store_port);
    hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &console_port);
    printf("INFO domid %u, %u vCPU(s), store port %lu, console port %lu\n", self, nr_vcpus,
           (unsigned long)store_port, (unsigned long)console_port);

    test_alloc_unbound();
    test_interdomain();
    test_virq();
    test_ipi();
    test_send_status_errors();
    test_upcalls();
    test_limit_and_reset();
    return check_summary();
}
