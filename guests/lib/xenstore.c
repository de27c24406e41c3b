/*
 * The xenstore client (xenstore.h): requests and replies as byte streams on
 * the two rings of the store page (public/io/xs_wire.h,
 * struct xenstore_domain_interface), the peer told by an event on the store
 * port after each index update.
 */
#include "xenstore.h"
#include "events.h"

uint64_t xs_timeout_ms = 20000;
volatile uint64_t xs_events;

static volatile struct xenstore_domain_interface *xs_ring;
static evtchn_port_t xs_port;
static uint32_t xs_req_id;
static int xs_broken;               /* a wait timed out mid-message: the streams are out of step */

static void xs_event(evtchn_port_t port, void *arg)
{
    xs_events++;
}

long xs_init(void)
{
    uint64_t pfn = 0, port = 0;
    long rc = hvm_get_param(HVM_PARAM_STORE_PFN, &pfn);
    if (rc == 0)
        rc = hvm_get_param(HVM_PARAM_STORE_EVTCHN, &port);
    if (rc)
        return rc;
    if (!pfn || pfn >= (1UL << 20))        /* the identity map covers 4 GiB */
        return -EINVAL;
    xs_ring = (volatile struct xenstore_domain_interface *)(uintptr_t)(pfn << 12);
    xs_port = port;
    if (evtchn_is_ready())
        evtchn_bind_handler(xs_port, xs_event, NULL);
    return 0;
}

static int irqs_enabled(void)
{
    unsigned long f;
    asm volatile ("pushf; pop %0" : "=r" (f));
    return (f >> 9) & 1;
}

/*
 * Until ready() or the deadline.  With events: SCHEDOP_poll on the store port
 * with interrupts off (an event that came after the check leaves the port
 * pending, so the poll returns at once: none is lost), then the upcall runs
 * and clears it.  Without: yield.
 */
static long xs_wait(int (*ready)(void))
{
    if (ready())
        return 0;
    uint64_t deadline = xen_system_time() + xs_timeout_ms * 1000000ULL;
    if (!evtchn_is_ready() || !irqs_enabled()) {
        while (!ready()) {
            if (xen_system_time() > deadline)
                return -ETIMEDOUT;
            sched_yield();
        }
        return 0;
    }
    long rc = 0;
    local_irq_disable();
    while (!ready()) {
        if (xen_system_time() > deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        evtchn_port_t port = xs_port;
        struct sched_poll p = { .nr_ports = 1, .timeout = deadline };
        set_xen_guest_handle(p.ports, &port);
        HYPERVISOR_sched_op(SCHEDOP_poll, &p);
        local_irq_enable();
        local_irq_disable();
    }
    local_irq_enable();
    return rc;
}

static int xs_req_space(void) { return xs_ring->req_prod - xs_ring->req_cons < XENSTORE_RING_SIZE; }
static int xs_rsp_avail(void) { return xs_ring->rsp_prod != xs_ring->rsp_cons; }

static long xs_put(const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        long rc = xs_wait(xs_req_space);
        if (rc)
            return rc;
        XENSTORE_RING_IDX prod = xs_ring->req_prod;
        size_t chunk = XENSTORE_RING_SIZE - (prod - xs_ring->req_cons);
        if (chunk > n)
            chunk = n;
        for (size_t i = 0; i < chunk; i++)
            xs_ring->req[MASK_XENSTORE_IDX(prod + i)] = p[i];
        barrier();                  /* data before the index (x86: stores ordered) */
        xs_ring->req_prod = prod + chunk;
        evtchn_send(xs_port);
        p += chunk;
        n -= chunk;
    }
    return 0;
}

/* Copies n bytes of the response stream to data (NULL: discard). */
static long xs_get(void *data, size_t n)
{
    char *p = data;
    while (n) {
        long rc = xs_wait(xs_rsp_avail);
        if (rc)
            return rc;
        XENSTORE_RING_IDX cons = xs_ring->rsp_cons;
        size_t chunk = xs_ring->rsp_prod - cons;
        if (chunk > n)
            chunk = n;
        barrier();
        for (size_t i = 0; i < chunk; i++) {
            char ch = xs_ring->rsp[MASK_XENSTORE_IDX(cons + i)];
            if (p)
                *p++ = ch;
        }
        barrier();
        xs_ring->rsp_cons = cons + chunk;
        evtchn_send(xs_port);
        n -= chunk;
    }
    return 0;
}

static long xs_errno(const char *name)
{
    static const struct { const char *name; long err; } errs[] = {
        { "EINVAL", EINVAL }, { "EACCES", EACCES }, { "EEXIST", EEXIST }, { "EISDIR", EISDIR },
        { "ENOENT", ENOENT }, { "ENOMEM", ENOMEM }, { "ENOSPC", ENOSPC }, { "EIO", EIO },
        { "ENOTEMPTY", ENOTEMPTY }, { "ENOSYS", ENOSYS }, { "EROFS", EROFS }, { "EBUSY", EBUSY },
        { "EAGAIN", EAGAIN }, { "EISCONN", EISCONN }, { "E2BIG", E2BIG }, { "EPERM", EPERM },
    };
    for (unsigned i = 0; i < ARRAY_SIZE(errs); i++)
        if (!strncmp(name, errs[i].name, 12))
            return -errs[i].err;
    return -EIO;
}

/* A wait that timed out leaves part of a message in a ring: nothing after it can be trusted. */
#define XS_TRY(expr) do { long __rc = (expr); if (__rc) { xs_broken = 1; return __rc; } } while (0)

long xs_request_tx(uint32_t tx, uint32_t type, const char *const *parts, unsigned int nparts,
                   char *reply, size_t size)
{
    if (!xs_ring)
        return -ENODEV;
    if (xs_broken)
        return -EIO;
    struct xsd_sockmsg m = { .type = type, .req_id = ++xs_req_id, .tx_id = tx, .len = 0 };
    size_t lens[8];
    if (nparts > ARRAY_SIZE(lens))
        return -E2BIG;
    for (unsigned i = 0; i < nparts; i++) {
        /* Every part NUL-terminated except a written value (the last part of XS_WRITE). */
        lens[i] = strlen(parts[i]) + !(type == XS_WRITE && i == nparts - 1);
        m.len += lens[i];
    }
    if (m.len > XENSTORE_PAYLOAD_MAX)
        return -E2BIG;
    XS_TRY(xs_put(&m, sizeof(m)));
    for (unsigned i = 0; i < nparts; i++)
        XS_TRY(xs_put(parts[i], lens[i]));
    for (;;) {
        struct xsd_sockmsg r;
        XS_TRY(xs_get(&r, sizeof(r)));
        if (r.type == XS_WATCH_EVENT || r.req_id != m.req_id) {
            XS_TRY(xs_get(NULL, r.len));        /* not ours (no watches are set): skip */
            continue;
        }
        char err[16];
        if (r.type == XS_ERROR) {
            size_t k = r.len < sizeof(err) - 1 ? r.len : sizeof(err) - 1;
            XS_TRY(xs_get(err, k));
            XS_TRY(xs_get(NULL, r.len - k));
            err[k] = 0;
            return xs_errno(err);
        }
        size_t k = r.len < size ? r.len : size;
        XS_TRY(xs_get(reply, k));
        XS_TRY(xs_get(NULL, r.len - k));
        if (reply && k < size)
            reply[k] = 0;
        return r.len;
    }
}

long xs_request(uint32_t type, const char *const *parts, unsigned int nparts,
                char *reply, size_t size)
{
    return xs_request_tx(0, type, parts, nparts, reply, size);
}

long xs_read(const char *path, char *buf, size_t size)
{
    const char *parts[] = { path };
    return xs_request(XS_READ, parts, 1, buf, size);
}

long xs_write_tx(uint32_t tx, const char *path, const char *value)
{
    const char *parts[] = { path, value };
    long rc = xs_request_tx(tx, XS_WRITE, parts, 2, NULL, 0);
    return rc < 0 ? rc : 0;
}

long xs_write(const char *path, const char *value)
{
    return xs_write_tx(0, path, value);
}

long xs_rm(const char *path)
{
    const char *parts[] = { path };
    long rc = xs_request(XS_RM, parts, 1, NULL, 0);
    return rc < 0 ? rc : 0;
}

long xs_set_perms(const char *path, const char *const *perms, unsigned int n)
{
    const char *parts[8] = { path };
    if (n + 1 > ARRAY_SIZE(parts))
        return -E2BIG;
    for (unsigned i = 0; i < n; i++)
        parts[i + 1] = perms[i];
    long rc = xs_request(XS_SET_PERMS, parts, n + 1, NULL, 0);
    return rc < 0 ? rc : 0;
}

long xs_domain_path(char *buf, size_t size)
{
    char id[12];
    snprintf(id, sizeof(id), "%d", xen_domid);
    const char *parts[] = { id };
    long rc = xs_request(XS_GET_DOMAIN_PATH, parts, 1, buf, size);
    return rc < 0 ? rc : 0;
}

static long parse_u64(const char *s, uint64_t *value)
{
    uint64_t v = 0;
    if (!*s)
        return -EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        v = v * 10 + (*s - '0');
    }
    *value = v;
    return 0;
}

long xs_transaction_start(uint32_t *tx)
{
    /* the payload is an empty string; the reply is the id in decimal */
    const char *parts[] = { "" };
    char buf[16];
    long rc = xs_request(XS_TRANSACTION_START, parts, 1, buf, sizeof(buf));
    if (rc < 0)
        return rc;
    uint64_t id;
    if (rc >= (long)sizeof(buf) || parse_u64(buf, &id) || id == 0 || id > 0xffffffffUL)
        return -EIO;
    *tx = id;
    return 0;
}

long xs_transaction_end(uint32_t tx, int commit)
{
    const char *parts[] = { commit ? "T" : "F" };
    long rc = xs_request_tx(tx, XS_TRANSACTION_END, parts, 1, NULL, 0);
    return rc < 0 ? rc : 0;
}

void xs_sleep_ms(uint64_t ms)
{
    struct sched_poll p = { .nr_ports = 0, .timeout = xen_system_time() + ms * 1000000ULL };
    HYPERVISOR_sched_op(SCHEDOP_poll, &p);
}

long xs_read_wait(const char *path, char *buf, size_t size, uint64_t timeout_ms)
{
    uint64_t deadline = xen_system_time() + timeout_ms * 1000000ULL;
    for (;;) {
        long rc = xs_read(path, buf, size);
        if (rc >= 0)
            return rc;
        if (rc != -ENOENT && rc != -EACCES)
            return rc;
        if (xen_system_time() > deadline)
            return -ETIMEDOUT;
        xs_sleep_ms(2);
    }
}

long xs_read_u64(const char *path, uint64_t *value)
{
    char buf[24];
    long rc = xs_read(path, buf, sizeof(buf));
    if (rc < 0)
        return rc;
    if (rc >= (long)sizeof(buf))
        return -EINVAL;
    return parse_u64(buf, value);
}

long xs_read_u64_wait(const char *path, uint64_t *value, uint64_t timeout_ms)
{
    char buf[24];
    long rc = xs_read_wait(path, buf, sizeof(buf), timeout_ms);
    if (rc < 0)
        return rc;
    if (rc >= (long)sizeof(buf))
        return -EINVAL;
    return parse_u64(buf, value);
}
