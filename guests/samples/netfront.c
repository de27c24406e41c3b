/*
 * netfront: a Xen network frontend (the netif protocol, public/io/netif.h)
 * that answers ARP requests for its address and ICMP echo requests to it.
 *
 * The handshake is Linux's xen-netfront's (drivers/net/xen-netfront.c,
 * talk_to_netback and xennet_connect): read device/vif/0/{backend,backend-id,
 * mac}; wait for the backend's InitWait; grant a TX and an RX ring page and
 * allocate an event channel for the backend domain; write tx-ring-ref,
 * rx-ring-ref, event-channel, request-rx-copy=1, feature-rx-notify=1,
 * feature-sg=0 in one transaction; post the RX buffers (granted pages);
 * Connected; wait for the backend's Connected.
 *
 * Serving: one event channel for both rings, masked and waited on with
 * SCHEDOP_poll (the backend's notify marks it pending, which wakes a poller
 * even while masked).  Requests are pushed with
 * RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, responses consumed until
 * RING_FINAL_CHECK_FOR_RESPONSES finds none: netback notifies only when the
 * frontend asked (req_event / rsp_event).
 *
 * Command line: ip=A.B.C.D (default 10.0.0.2), pings=N (default 3; 0 = serve
 * until idle), idle_ms=T (default 60000: the longest wait for the next ping),
 * look_ms=T (default 100: how often control/shutdown and the backend's state
 * are read; in between only the event channel wakes the guest, so a notify
 * netback failed to send shows as a reply that late).
 * After N echo replies, or on control/shutdown, or when the backend closes:
 * Closing, Closed (the backend follows and unmaps the rings), the grants
 * revoked, RESULT, power off.  A timeout anywhere is a FAIL line and a crash.
 *
 * Prints: netfront: mac M backend B (dD), netfront: connected ...,
 * netfront: echo reply ..., netfront: answered N pings ..., PASS/FAIL lines,
 * RESULT: N passed, M failed.
 */
#include "events.h"
#include "xenstore.h"
#include <xen/io/xenbus.h>

/* io/ring.h leaves the barriers to the guest (interface version >= 0x00030208).
 * x86 orders loads with loads and stores with stores: only a store followed by
 * a load (the producer index, then the event index) needs a fence. */
#define xen_mb()  asm volatile ("mfence" ::: "memory")
#define xen_rmb() barrier()
#define xen_wmb() barrier()
#include <xen/io/netif.h>

#define GRANT_TABLE_GFN 0xf0000UL   /* below the MMIO hole, outside RAM: where grant frame 0 is mapped */
/* Grant refs: 0..7 are reserved (GNTTAB_NR_RESERVED_ENTRIES, grant_table.h; the toolstack seeds 0 and 1). */
#define REF_TX_RING     8
#define REF_RX_RING     9
#define REF_RX_BUF0     16
#define REF_TX_BUF0     (REF_RX_BUF0 + NRX)

/* Buffers: fewer than the rings hold (NET_RX_RING_SIZE, NET_TX_RING_SIZE: 256 with 4 KiB pages). */
#define NRX 32
#define NTX 16

#define ETH_HLEN      14
#define ETH_P_ARP     0x0806
#define ETH_P_IP      0x0800
#define ARP_LEN       28            /* Ethernet/IPv4 ARP (RFC 826) */
#define IPPROTO_ICMP  1
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO     8

#define MS 1000000ULL

static uint8_t tx_ring_page[4096] __attribute__((aligned(4096)));
static uint8_t rx_ring_page[4096] __attribute__((aligned(4096)));
static uint8_t rx_bufs[NRX][4096] __attribute__((aligned(4096)));
static uint8_t tx_bufs[NTX][4096] __attribute__((aligned(4096)));

static volatile grant_entry_v1_t *gnttab;
static netif_tx_front_ring_t txf;
static netif_rx_front_ring_t rxf;
static evtchn_port_t port;
static domid_t backend_id;
static char fe[64], be[128];

static uint8_t my_mac[6];
static uint8_t my_ip[4];

/* TX ids not on the ring: a stack of free ids */
static uint16_t tx_free[NTX];
static unsigned int tx_nfree;

static struct {
    uint64_t rx_frames, rx_errors, tx_frames, tx_errors, tx_dropped;
    uint64_t arp_answered, pings, ignored, bad_csum, notifies;
} st;

static uint64_t now(void) { return xen_system_time(); }

/* ------------------------------------------------------------- grants */
static void grant(grant_ref_t ref, uint64_t frame, int readonly)
{
    /* domid and frame first, then (after a barrier) the flags: the order a granter must keep */
    gnttab[ref].domid = backend_id;
    gnttab[ref].frame = frame;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    gnttab[ref].flags = GTF_permit_access | (readonly ? GTF_readonly : 0);
}

/* Linux's gnttab_end_foreign_access_ref: flags -> 0 only while no one has it mapped or is copying. */
static int revoke(grant_ref_t ref)
{
    uint16_t flags = gnttab[ref].flags;
    if (flags & (GTF_reading | GTF_writing))
        return 0;
    return __atomic_compare_exchange_n(&gnttab[ref].flags, &flags, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static uint64_t pfn_of(const void *p) { return (uintptr_t)p >> 12; }

/* ----------------------------------------------------------- xenstore */
static long write_node(uint32_t tx, const char *dir, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static long write_node(uint32_t tx, const char *dir, const char *name, const char *fmt, ...)
{
    char path[192], val[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return xs_write_tx(tx, path, val);
}

static long read_state(const char *dir, uint64_t *state)
{
    char path[192];
    snprintf(path, sizeof(path), "%s/state", dir);
    return xs_read_u64(path, state);
}

/* Until the backend's state is `want` (or past it with `or_later`); -ETIMEDOUT, -ENOTCONN when it is
 * closing instead, -ENOENT when waiting for it to close and its directory is gone. */
static long wait_backend_state(uint64_t want, int or_later, uint64_t timeout_ms, uint64_t *seen)
{
    uint64_t deadline = now() + timeout_ms * MS;
    for (;;) {
        long rc = read_state(be, seen);
        if (rc == 0 && (*seen == want || (or_later && *seen > want)))
            return 0;
        if (rc == 0 && !or_later && *seen > want && *seen >= XenbusStateClosing)
            return -ENOTCONN;
        if (rc == -ENOENT && want >= XenbusStateClosing)
            return rc;              /* the toolstack removed the device (xl network-detach) */
        if (rc && rc != -ENOENT)
            return rc;
        if (now() > deadline)
            return -ETIMEDOUT;
        xs_sleep_ms(2);
    }
}

static int parse_mac(const char *s, uint8_t *mac)
{
    for (int i = 0; i < 6; i++) {
        unsigned int v = 0;
        for (int k = 0; k < 2; k++, s++) {
            char c = *s;
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                return -1;
            v = v * 16 + d;
        }
        mac[i] = v;
        if (i < 5 && *s++ != ':')
            return -1;
    }
    return *s ? -1 : 0;
}

static int parse_ip(const char *s, uint8_t *ip)
{
    for (int i = 0; i < 4; i++) {
        unsigned int v = 0, n = 0;
        while (*s >= '0' && *s <= '9' && n < 3) {
            v = v * 10 + (*s++ - '0');
            n++;
        }
        if (!n || v > 255)
            return -1;
        ip[i] = v;
        if (i < 3 && *s++ != '.')
            return -1;
    }
    return *s ? -1 : 0;
}

/* ----------------------------------------------------------- checksum */
/* RFC 1071: the one's complement of the one's complement sum of 16-bit words. */
static uint16_t csum(const uint8_t *p, size_t n)
{
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (p[i] << 8) | p[i + 1];
    if (n & 1)
        sum += p[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return ~sum & 0xffff;
}

static uint16_t be16(const uint8_t *p) { return (p[0] << 8) | p[1]; }
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }

/* ------------------------------------------------------------------ TX */
static void tx_gc(void)
{
    int more;
    do {
        RING_IDX rp = *(volatile RING_IDX *)&txf.sring->rsp_prod;
        xen_rmb();                  /* the responses after the index that says they are there */
        for (RING_IDX i = txf.rsp_cons; i != rp; i++) {
            netif_tx_response_t r = *RING_GET_RESPONSE(&txf, i);
            if (r.status == NETIF_RSP_NULL)
                continue;           /* an extra-info slot's (none are sent) */
            if (r.id >= NTX || tx_nfree >= NTX) {
                st.tx_errors++;     /* not an id on the ring, or answered twice */
                continue;
            }
            if (r.status != NETIF_RSP_OKAY)
                st.tx_errors++;
            tx_free[tx_nfree++] = r.id;
        }
        txf.rsp_cons = rp;
        RING_FINAL_CHECK_FOR_RESPONSES(&txf, more);
    } while (more);
}

static void tx_send(const uint8_t *frame, size_t len)
{
    if (!tx_nfree)
        tx_gc();
    if (!tx_nfree || len > 4096) {
        st.tx_dropped++;
        return;
    }
    uint16_t id = tx_free[--tx_nfree];
    memcpy(tx_bufs[id], frame, len);
    netif_tx_request_t *q = RING_GET_REQUEST(&txf, txf.req_prod_pvt);
    q->gref = REF_TX_BUF0 + id;
    q->offset = 0;
    q->flags = 0;               /* checksums filled in: neither csum_blank nor data_validated */
    q->id = id;
    q->size = len;
    txf.req_prod_pvt++;
    int notify;
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&txf, notify);
    if (notify) {
        st.notifies++;
        evtchn_send(port);
    }
    st.tx_frames++;
}

/* ---------------------------------------------------------- responder */
static int is_mine(const uint8_t *ip) { return !memcmp(ip, my_ip, 4); }

static void arp(const uint8_t *f, size_t len)
{
    const uint8_t *a = f + ETH_HLEN;
    /* htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, op 1 (request), for our address */
    if (len < ETH_HLEN + ARP_LEN || be16(a) != 1 || be16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4 ||
        be16(a + 6) != 1 || !is_mine(a + 24)) {
        st.ignored++;
        return;
    }
    uint8_t r[ETH_HLEN + ARP_LEN];
    memcpy(r, a + 8, 6);                /* to the sender's hardware address */
    memcpy(r + 6, my_mac, 6);
    put16(r + 12, ETH_P_ARP);
    uint8_t *ra = r + ETH_HLEN;
    memcpy(ra, a, 6);                   /* htype, ptype, hlen, plen */
    put16(ra + 6, 2);                   /* reply */
    memcpy(ra + 8, my_mac, 6);          /* sha, spa: us */
    memcpy(ra + 14, my_ip, 4);
    memcpy(ra + 18, a + 8, 10);         /* tha, tpa: the asker's sha, spa */
    tx_send(r, sizeof(r));
    st.arp_answered++;
}

static void ipv4(const uint8_t *f, size_t len, uint16_t rxflags)
{
    const uint8_t *ip = f + ETH_HLEN;
    if (len < ETH_HLEN + 20 || ip[0] >> 4 != 4) {
        st.ignored++;
        return;
    }
    size_t ihl = (ip[0] & 15) * 4, tot = be16(ip + 2);
    /* whole, unfragmented, ICMP, to us; the frame may carry Ethernet padding after tot */
    if (ihl < 20 || tot < ihl + 8 || ETH_HLEN + tot > len || (be16(ip + 6) & 0x3fff) || ip[9] != IPPROTO_ICMP ||
        !is_mine(ip + 16)) {
        st.ignored++;
        return;
    }
    const uint8_t *icmp = ip + ihl;
    size_t ilen = tot - ihl;
    if (icmp[0] != ICMP_ECHO || icmp[1] != 0) {
        st.ignored++;
        return;
    }
    /* a checksum left blank by the sender (NETRXF_csum_blank) cannot be checked: ICMP's never is */
    if (csum(ip, ihl) != 0 || (!(rxflags & NETRXF_csum_blank) && csum(icmp, ilen) != 0)) {
        st.bad_csum++;
        return;
    }
    static uint8_t r[4096];
    memcpy(r, f + 6, 6);                /* MACs swapped */
    memcpy(r + 6, my_mac, 6);
    put16(r + 12, ETH_P_IP);
    uint8_t *rip = r + ETH_HLEN;
    memcpy(rip, ip, tot);
    rip[8] = 64;                        /* TTL */
    memcpy(rip + 12, ip + 16, 4);       /* source: us; destination: the asker */
    memcpy(rip + 16, ip + 12, 4);
    put16(rip + 10, 0);
    put16(rip + 10, csum(rip, ihl));
    uint8_t *ricmp = rip + ihl;         /* id, sequence and data as they came */
    ricmp[0] = ICMP_ECHOREPLY;
    put16(ricmp + 2, 0);
    put16(ricmp + 2, csum(ricmp, ilen));
    tx_send(r, ETH_HLEN + tot);
    st.pings++;
    printf("netfront: echo reply to %u.%u.%u.%u id %u seq %u (%lu bytes) at %lu us\n", ip[12], ip[13], ip[14], ip[15],
           be16(icmp + 4), be16(icmp + 6), (unsigned long)ilen, (unsigned long)(now() / 1000));
}

static void frame_in(const uint8_t *f, size_t len, uint16_t flags)
{
    static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    if (len < ETH_HLEN || (memcmp(f, my_mac, 6) && memcmp(f, bcast, 6))) {
        st.ignored++;                   /* the switch floods unknown unicast */
        return;
    }
    uint16_t type = be16(f + 12);
    if (type == ETH_P_ARP)
        arp(f, len);
    else if (type == ETH_P_IP)
        ipv4(f, len, flags);
    else
        st.ignored++;
}

/* ------------------------------------------------------------------ RX */
static void rx_post(uint16_t id)
{
    netif_rx_request_t *q = RING_GET_REQUEST(&rxf, rxf.req_prod_pvt);
    q->id = id;
    q->gref = REF_RX_BUF0 + id;
    rxf.req_prod_pvt++;
}

static void rx_push(void)
{
    int notify;
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&rxf, notify);
    if (notify) {
        st.notifies++;
        evtchn_send(port);
    }
}

/* Every frame received, each buffer posted again; returns how many responses were consumed. */
static unsigned int rx_poll(void)
{
    unsigned int n = 0;
    int more;
    do {
        RING_IDX rp = *(volatile RING_IDX *)&rxf.sring->rsp_prod;
        xen_rmb();
        for (RING_IDX i = rxf.rsp_cons; i != rp; i++) {
            netif_rx_response_t r = *RING_GET_RESPONSE(&rxf, i);
            n++;
            if (r.id >= NRX) {
                st.rx_errors++;     /* not an id we posted: that buffer is lost */
                continue;
            }
            /* feature-sg 0: a frame is one buffer (no more_data), in its page */
            if (r.status > 0 && !(r.flags & (NETRXF_more_data | NETRXF_extra_info)) && r.offset + r.status <= 4096) {
                st.rx_frames++;
                frame_in(rx_bufs[r.id] + r.offset, r.status, r.flags);
            } else {
                st.rx_errors++;
            }
            /* the reply was copied out: the buffer can go back, unless the backend answered more
             * requests than were posted (a request slot must never be overwritten) */
            if (rxf.req_prod_pvt - (i + 1) < RING_SIZE(&rxf))
                rx_post(r.id);
            else
                st.rx_errors++;
        }
        rxf.rsp_cons = rp;
        RING_FINAL_CHECK_FOR_RESPONSES(&rxf, more);
    } while (more);
    if (n)
        rx_push();
    return n;
}

/* --------------------------------------------------------------- main */
static NORETURN void fail(const char *what, long rc)
{
    check_true(what, 0, "rc %ld", rc);
    check_summary();
    shutdown(SHUTDOWN_crash);
}

static long publish(void)
{
    for (int attempt = 0; attempt < 10; attempt++) {
        uint32_t tx;
        long rc = xs_transaction_start(&tx);
        if (rc)
            return rc;
        if ((rc = write_node(tx, fe, "tx-ring-ref", "%u", REF_TX_RING)) ||
            (rc = write_node(tx, fe, "rx-ring-ref", "%u", REF_RX_RING)) ||
            (rc = write_node(tx, fe, "event-channel", "%u", port)) ||
            (rc = write_node(tx, fe, "request-rx-copy", "1")) ||
            (rc = write_node(tx, fe, "feature-rx-notify", "1")) ||
            (rc = write_node(tx, fe, "feature-sg", "0"))) {
            xs_transaction_end(tx, 0);
            return rc;
        }
        rc = xs_transaction_end(tx, 1);
        if (rc != -EAGAIN)
            return rc;
    }
    return -EAGAIN;
}

/* Closing, then Closed, each followed by the backend; the rings' grants revoked once it let go. */
static void close_device(void)
{
    uint64_t seen = 0;
    check_eq("netfront-state-closing", write_node(0, fe, "state", "%u", XenbusStateClosing), 0);
    long rc = wait_backend_state(XenbusStateClosing, 1, 10000, &seen);
    check_true("netfront-backend-closing", rc == 0 || rc == -ENOENT, "rc %ld, backend state %lu", rc, (unsigned long)seen);
    check_eq("netfront-state-closed", write_node(0, fe, "state", "%u", XenbusStateClosed), 0);
    rc = wait_backend_state(XenbusStateClosed, 0, 10000, &seen);
    check_true("netfront-backend-closed", rc == 0 || rc == -ENOENT, "rc %ld, backend state %lu", rc, (unsigned long)seen);
    /* the backend unmaps the rings when it follows Closing; a toolstack removing the device may remove
     * its directory before the unmap is done: a little time for it */
    uint64_t until = now() + 2000 * MS;
    int tx_ok = 0, rx_ok = 0;
    for (;;) {
        tx_ok = tx_ok || revoke(REF_TX_RING);
        rx_ok = rx_ok || revoke(REF_RX_RING);
        if ((tx_ok && rx_ok) || now() > until)
            break;
        xs_sleep_ms(1);
    }
    int ok = tx_ok && rx_ok;
    check_true("netfront-rings-revoked-after-close", ok, "flags tx 0x%x rx 0x%x", gnttab[REF_TX_RING].flags, gnttab[REF_RX_RING].flags);
    for (unsigned int i = 0; i < NRX; i++)
        revoke(REF_RX_BUF0 + i);
    for (unsigned int i = 0; i < NTX; i++)
        revoke(REF_TX_BUF0 + i);
}

int main(void)
{
    char buf[128];
    uint64_t want = cmdline_u64("pings", 3), idle_ms = cmdline_u64("idle_ms", 60000), look_ms = cmdline_u64("look_ms", 100);
    if (parse_ip(cmdline_get("ip", buf, sizeof(buf)) ? buf : "10.0.0.2", my_ip))
        fail("netfront-cmdline-ip", -EINVAL);
    long rc = evtchn_init();
    if (rc)
        fail("netfront-evtchn-init", rc);
    local_irq_enable();
    if ((rc = xs_init()))
        fail("netfront-xs-init", rc);
    uint64_t t0 = now();

    snprintf(fe, sizeof(fe), "device/vif/0");
    if ((rc = xs_read_wait("device/vif/0/backend", be, sizeof(be), 10000)) <= 0 || rc >= (long)sizeof(be))
        fail("netfront-read-backend", rc);
    uint64_t bid;
    if ((rc = xs_read_u64("device/vif/0/backend-id", &bid)) || bid >= DOMID_FIRST_RESERVED)
        fail("netfront-read-backend-id", rc);
    backend_id = bid;
    char mac[32];
    if ((rc = xs_read("device/vif/0/mac", mac, sizeof(mac))) <= 0 || parse_mac(mac, my_mac))
        fail("netfront-read-mac", rc);
    printf("netfront: mac %s backend %s (d%u) ip %u.%u.%u.%u\n", mac, be, backend_id, my_ip[0], my_ip[1], my_ip[2], my_ip[3]);

    uint64_t seen = 0;
    if ((rc = wait_backend_state(XenbusStateInitWait, 0, 20000, &seen)))
        fail("netfront-backend-initwait", rc);
    char path[192];
    uint64_t v;
    snprintf(path, sizeof(path), "%s/feature-rx-copy", be);
    if (xs_read_u64(path, &v) || v != 1)
        fail("netfront-backend-feature-rx-copy", -ENOSYS);   /* xen-netfront refuses a backend without it too */

    /* the grant table's frame 0, then the rings and buffers granted to the backend */
    struct xen_add_to_physmap atp = { .domid = DOMID_SELF, .space = XENMAPSPACE_grant_table, .idx = 0, .gpfn = GRANT_TABLE_GFN };
    if ((rc = HYPERVISOR_memory_op(XENMEM_add_to_physmap, &atp)))
        fail("netfront-map-grant-table", rc);
    gnttab = (volatile grant_entry_v1_t *)(GRANT_TABLE_GFN << 12);
    netif_tx_sring_t *txs = (netif_tx_sring_t *)tx_ring_page;
    netif_rx_sring_t *rxs = (netif_rx_sring_t *)rx_ring_page;
    SHARED_RING_INIT(txs);
    FRONT_RING_INIT(&txf, txs, PAGE_SIZE);
    SHARED_RING_INIT(rxs);
    FRONT_RING_INIT(&rxf, rxs, PAGE_SIZE);
    grant(REF_TX_RING, pfn_of(tx_ring_page), 0);
    grant(REF_RX_RING, pfn_of(rx_ring_page), 0);
    for (unsigned int i = 0; i < NRX; i++)
        grant(REF_RX_BUF0 + i, pfn_of(rx_bufs[i]), 0);     /* the backend copies into them */
    for (unsigned int i = 0; i < NTX; i++) {
        grant(REF_TX_BUF0 + i, pfn_of(tx_bufs[i]), 1);     /* and only reads these */
        tx_free[tx_nfree++] = NTX - 1 - i;
    }
    if ((rc = evtchn_alloc_unbound(backend_id, &port)))
        fail("netfront-alloc-unbound", rc);
    evtchn_mask(port);              /* waited on with SCHEDOP_poll, never taken as an upcall */
    if ((rc = publish()))
        fail("netfront-publish-rings", rc);
    for (unsigned int i = 0; i < NRX; i++)
        rx_post(i);
    rx_push();
    if ((rc = write_node(0, fe, "state", "%u", XenbusStateConnected)))
        fail("netfront-state-connected", rc);
    if ((rc = wait_backend_state(XenbusStateConnected, 0, 20000, &seen)))
        fail("netfront-backend-connected", rc);
    uint64_t t1 = now();
    printf("netfront: connected (tx-ring-ref %u rx-ring-ref %u event-channel %u, %u rx buffers) in %lu us\n",
           REF_TX_RING, REF_RX_RING, port, NRX, (unsigned long)((t1 - t0) / 1000));
    check_eq("netfront-connected", seen, XenbusStateConnected);

    /* serve until `want` pings are answered, the toolstack or the backend asks to close, or idle_ms passes */
    const char *why = "idle";
    uint64_t last = now(), next_look = last, counted = 0;
    for (;;) {
        evtchn_clear_pending(port);     /* before looking: a notify after this wakes the poll below */
        rx_poll();
        tx_gc();
        if (want && st.pings >= want) {
            why = "count";
            break;
        }
        uint64_t t = now();
        if (st.pings != counted) {      /* the idle clock restarts at each answer */
            counted = st.pings;
            last = t;
        }
        if (t - last > idle_ms * MS)
            break;
        if (t >= next_look) {
            /* xl shutdown's control/shutdown, xl network-detach's backend Closing */
            next_look = t + look_ms * MS;
            char req[32];
            if (xs_read("control/shutdown", req, sizeof(req)) > 0) {
                printf("netfront: control/shutdown %s\n", req);
                why = "shutdown";
                break;
            }
            uint64_t bs;
            if (read_state(be, &bs) == 0 && bs >= XenbusStateClosing) {
                printf("netfront: the backend is closing (%lu)\n", (unsigned long)bs);
                why = "backend";
                break;
            }
        }
        uint64_t until = last + idle_ms * MS;
        if (until > next_look)
            until = next_look;
        struct sched_poll p = { .nr_ports = 1, .timeout = until };
        set_xen_guest_handle(p.ports, &port);
        HYPERVISOR_sched_op(SCHEDOP_poll, &p);
    }
    /* the last replies sent: wait (bounded) until the backend has answered every TX request */
    uint64_t until = now() + 5000 * MS;
    while (tx_nfree < NTX && now() < until) {
        tx_gc();
        if (tx_nfree < NTX)
            xs_sleep_ms(1);
    }
    printf("netfront: answered %lu pings (%s), %lu ARP requests; rx %lu frames (%lu errors, %lu ignored, %lu bad checksums), "
           "tx %lu frames (%lu errors, %lu dropped), %lu notifies\n",
           (unsigned long)st.pings, why, (unsigned long)st.arp_answered, (unsigned long)st.rx_frames, (unsigned long)st.rx_errors,
           (unsigned long)st.ignored, (unsigned long)st.bad_csum, (unsigned long)st.tx_frames, (unsigned long)st.tx_errors,
           (unsigned long)st.tx_dropped, (unsigned long)st.notifies);
    if (want)
        check_true("netfront-answered-pings", st.pings >= want, "%lu of %lu in %lu ms idle", (unsigned long)st.pings,
                   (unsigned long)want, (unsigned long)idle_ms);
    check_eq("netfront-tx-all-answered", tx_nfree, NTX);
    check_eq("netfront-tx-errors", st.tx_errors + st.tx_dropped, 0);
    check_eq("netfront-rx-errors", st.rx_errors, 0);
    close_device();
    return check_summary() != 0;
}
