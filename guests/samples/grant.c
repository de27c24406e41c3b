/*
 * grant: two domains share a page through a grant, as a frontend and a
 * backend do.
 *
 *   role=granter     waits for its peer's domid in ~/data/peer (the toolstack
 *                    writes it), maps grant frame 0 with XENMEM_add_to_physmap,
 *                    grants a page read-write (ref 8) and another read-only
 *                    (ref 9) to the peer, publishes "8" in ~/data/gref for it,
 *                    then watches the shared page: the backend's copy and its
 *                    write through a mapping appear; while the page is mapped
 *                    the entry shows GTF_reading|GTF_writing and cannot be
 *                    revoked; once unmapped it can.
 *   role=backend peer=D
 *                    reads /local/domain/D/data/gref, copies from and into the
 *                    grant (GNTTABOP_copy), maps it at a GFN of its own
 *                    (GNTTABOP_map_grant_ref, GNTMAP_host_map), reads and
 *                    writes through the mapping, checks Xen's errors for bad
 *                    requests, waits for the granter's ack and unmaps.
 *                    With bench=N it then times N 4 KiB copies from the
 *                    read-only grant (64 per hypercall) and N read-only
 *                    map+unmap pairs, and prints
 *                    `grant: bench copy_4k_ns=… map_unmap_ns=… n=N`.
 *
 * Prints PASS/FAIL lines and `RESULT: n passed, m failed`; powers off when all
 * passed.
 */
#include "events.h"
#include <xen/grant_table.h>
#include <xen/memory.h>

#define GRANT_TABLE_GFN 0xf0000UL   /* below the MMIO hole, outside RAM: where frame 0 is mapped */
#define MAP_GFN         0xf0100UL   /* where the backend maps the grant */
#define REF_RW          8
#define REF_RO          9
#define REF_DONE        10  /* the backend says it is done (the granter stays until then) */

/* Offsets in the shared page: what each side writes. */
#define OFF_PATTERN 0       /* the granter's pattern, 64 bytes */
#define OFF_COPIED  64      /* the backend, through GNTTABOP_copy */
#define OFF_MAPPED  128     /* the backend, through its mapping */
#define OFF_ACK     192     /* the granter: "seen, you may unmap" */

static uint8_t shared_page[4096] __attribute__((aligned(4096)));
static uint8_t ro_page[4096] __attribute__((aligned(4096)));
static uint8_t local_page[4096] __attribute__((aligned(4096)));
static uint8_t done_page[4096] __attribute__((aligned(4096)));

static uint64_t deadline(uint64_t ms)
{
    return xen_system_time() + ms * 1000000ULL;
}

static int wait_for(volatile uint8_t *p, uint8_t value, uint64_t ms)
{
    uint64_t until = deadline(ms);
    while (*p != value) {
        if (xen_system_time() > until)
            return -1;
        sched_yield();
    }
    return 0;
}

static int granter(void)
{
    uint64_t peer;
    long rc = xs_read_u64_wait("data/peer", &peer, 20000);
    if (rc) {
        printf("grant: no data/peer: %ld\n", rc);
        return 1;
    }
    struct xen_add_to_physmap atp = { .domid = DOMID_SELF, .space = XENMAPSPACE_grant_table, .idx = 0, .gpfn = GRANT_TABLE_GFN };
    check_eq("granter-add_to_physmap-grant-frame-0", HYPERVISOR_memory_op(XENMEM_add_to_physmap, &atp), 0);
    volatile grant_entry_v1_t *gt = (volatile grant_entry_v1_t *)(GRANT_TABLE_GFN << 12);
    for (int i = 0; i < 64; i++)
        shared_page[OFF_PATTERN + i] = (uint8_t)(0xa0 + i);
    memset(ro_page, 0x5c, sizeof(ro_page));
    /* domid and frame first, then (after a barrier) the flags: the order a granter must keep */
    gt[REF_RW].domid = peer;
    gt[REF_RW].frame = (uintptr_t)shared_page >> 12;
    gt[REF_RO].domid = peer;
    gt[REF_RO].frame = (uintptr_t)ro_page >> 12;
    gt[REF_DONE].domid = peer;
    gt[REF_DONE].frame = (uintptr_t)done_page >> 12;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    gt[REF_RW].flags = GTF_permit_access;
    gt[REF_RO].flags = GTF_permit_access | GTF_readonly;
    gt[REF_DONE].flags = GTF_permit_access;
    char val[12];
    snprintf(val, sizeof(val), "%u", REF_RW);
    char owner[12], reader[12];
    snprintf(owner, sizeof(owner), "n%d", xen_domid);
    snprintf(reader, sizeof(reader), "r%lu", (unsigned long)peer);
    const char *perms[] = { owner, reader };
    if ((rc = xs_write("data/gref", val)) != 0 || (rc = xs_set_perms("data/gref", perms, 2)) != 0) {
        printf("grant: cannot publish data/gref: %ld\n", rc);
        return 1;
    }
    printf("grant: granter d%d granted ref %u (gfn 0x%lx) to d%lu\n", xen_domid, REF_RW, (unsigned long)((uintptr_t)shared_page >> 12), (unsigned long)peer);

    check_eq("granter-sees-the-copy", wait_for(&shared_page[OFF_COPIED], 'C', 30000), 0);
    check_eq("granter-sees-the-write-through-the-mapping", wait_for(&shared_page[OFF_MAPPED], 'M', 30000), 0);
    uint16_t flags = __atomic_load_n(&gt[REF_RW].flags, __ATOMIC_SEQ_CST);
    check_eq("granter-entry-in-use-while-mapped", flags & (GTF_reading | GTF_writing), GTF_reading | GTF_writing);
    /* Linux's revocation: flags -> 0 only if the hypervisor has no access in progress */
    uint16_t expect = GTF_permit_access;
    check_eq("granter-cannot-revoke-while-mapped",
             __atomic_compare_exchange_n(&gt[REF_RW].flags, &expect, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST), 0);
    shared_page[OFF_ACK] = 'A';
    uint64_t until = deadline(30000);
    while ((__atomic_load_n(&gt[REF_RW].flags, __ATOMIC_SEQ_CST) & (GTF_reading | GTF_writing)) && xen_system_time() < until)
        sched_yield();
    check_eq("granter-entry-free-after-unmap", gt[REF_RW].flags, GTF_permit_access);
    expect = GTF_permit_access;
    check_eq("granter-revokes-after-unmap",
             __atomic_compare_exchange_n(&gt[REF_RW].flags, &expect, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST), 1);
    check_eq("granter-backend-done", wait_for(&done_page[0], 'D', 600000), 0);
    return check_summary() != 0;
}

static int16_t copy_one(domid_t sdom, uint64_t src, uint16_t soff, domid_t ddom, uint64_t dst, uint16_t doff, uint16_t len, uint16_t flags)
{
    struct gnttab_copy op = { .len = len, .flags = flags, .status = 99 };
    op.source.domid = sdom;
    op.source.offset = soff;
    op.dest.domid = ddom;
    op.dest.offset = doff;
    if (flags & GNTCOPY_source_gref) op.source.u.ref = src; else op.source.u.gmfn = src;
    if (flags & GNTCOPY_dest_gref) op.dest.u.ref = dst; else op.dest.u.gmfn = dst;
    long rc = HYPERVISOR_grant_table_op(GNTTABOP_copy, &op, 1);
    return rc ? -1000 : op.status;
}

static struct gnttab_copy batch[64];

static void bench(domid_t peer, uint64_t gref, unsigned int n)
{
    for (unsigned int i = 0; i < ARRAY_SIZE(batch); i++) {
        batch[i] = (struct gnttab_copy){ .len = 4096, .flags = GNTCOPY_source_gref };
        batch[i].source.domid = peer;
        batch[i].source.u.ref = gref;
        batch[i].dest.domid = DOMID_SELF;
        batch[i].dest.u.gmfn = (uintptr_t)local_page >> 12;
    }
    unsigned int done = 0, bad = 0;
    uint64_t t0 = rdtsc();
    while (done < n) {
        unsigned int k = n - done < ARRAY_SIZE(batch) ? n - done : ARRAY_SIZE(batch);
        if (HYPERVISOR_grant_table_op(GNTTABOP_copy, batch, k) != 0)
            bad++;
        for (unsigned int i = 0; i < k; i++)
            bad += batch[i].status != GNTST_okay;
        done += k;
    }
    uint64_t t1 = rdtsc();
    for (unsigned int i = 0; i < n; i++) {
        struct gnttab_map_grant_ref map = { .host_addr = MAP_GFN << 12, .flags = GNTMAP_host_map | GNTMAP_readonly, .ref = gref, .dom = peer };
        HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &map, 1);
        struct gnttab_unmap_grant_ref unmap = { .host_addr = MAP_GFN << 12, .handle = map.handle };
        HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &unmap, 1);
        bad += map.status != GNTST_okay || unmap.status != GNTST_okay;
    }
    uint64_t t2 = rdtsc();
    check_eq("backend-bench-every-op-okay", bad, 0);
    printf("grant: bench copy_4k_ns=%lu map_unmap_ns=%lu n=%u\n", (unsigned long)(tsc_to_ns(t1 - t0) / n),
           (unsigned long)(tsc_to_ns(t2 - t1) / n), n);
}

static int backend(domid_t peer)
{
    char path[64];
    uint64_t gref;
    snprintf(path, sizeof(path), "/local/domain/%u/data/gref", peer);
    long rc = xs_read_u64_wait(path, &gref, 20000);
    if (rc) {
        printf("grant: cannot read %s: %ld\n", path, rc);
        return 1;
    }
    uint64_t mine = (uintptr_t)local_page >> 12;
    /* copy: the granted page into one of our own, and a marker back into the grant */
    check_eq("backend-copy-from-grant", copy_one(peer, gref, 0, DOMID_SELF, mine, 0, 64, GNTCOPY_source_gref), GNTST_okay);
    int same = 1;
    for (int i = 0; i < 64; i++)
        same &= local_page[i] == (uint8_t)(0xa0 + i);
    check_true("backend-copied-the-pattern", same, "first byte 0x%x", local_page[0]);
    local_page[100] = 'C';
    check_eq("backend-copy-into-grant", copy_one(DOMID_SELF, mine, 100, peer, gref, OFF_COPIED, 1, GNTCOPY_dest_gref), GNTST_okay);
    /* Xen's answers to bad copies */
    check_eq("backend-copy-across-page-end-bad_copy_arg", copy_one(peer, gref, 4000, DOMID_SELF, mine, 0, 200, GNTCOPY_source_gref), GNTST_bad_copy_arg);
    check_eq("backend-copy-bad-ref-bad_gntref", copy_one(peer, 100000, 0, DOMID_SELF, mine, 0, 8, GNTCOPY_source_gref), GNTST_bad_gntref);
    check_eq("backend-copy-into-readonly-grant-general_error", copy_one(DOMID_SELF, mine, 0, peer, REF_RO, 0, 8, GNTCOPY_dest_gref), GNTST_general_error);
    check_eq("backend-copy-foreign-frame-permission_denied", copy_one(peer, mine, 0, DOMID_SELF, mine, 0, 8, 0), GNTST_permission_denied);
    check_eq("backend-copy-from-readonly-grant", copy_one(peer, REF_RO, 0, DOMID_SELF, mine, 0, 8, GNTCOPY_source_gref), GNTST_okay);
    check_eq("backend-read-the-readonly-page", local_page[0], 0x5c);

    /* map: the granted frame appears at MAP_GFN in our physmap */
    struct gnttab_map_grant_ref map = { .host_addr = MAP_GFN << 12, .flags = GNTMAP_host_map, .ref = gref, .dom = peer, .status = 99 };
    check_eq("backend-map_grant_ref-rc", HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &map, 1), 0);
    check_eq("backend-map_grant_ref-okay", map.status, GNTST_okay);
    volatile uint8_t *m = (volatile uint8_t *)(MAP_GFN << 12);
    check_eq("backend-reads-the-pattern-through-the-mapping", m[OFF_PATTERN + 5], 0xa5);
    check_eq("backend-sees-its-copy-through-the-mapping", m[OFF_COPIED], 'C');
    m[OFF_MAPPED] = 'M';
    struct gnttab_map_grant_ref bad[3] = {
        { .host_addr = (MAP_GFN + 1) << 12, .flags = GNTMAP_host_map, .ref = REF_RO, .dom = peer },
        { .host_addr = (MAP_GFN + 1) << 12, .flags = GNTMAP_host_map, .ref = gref, .dom = DOMID_SELF },
        { .host_addr = (MAP_GFN + 1) << 12, .flags = 0, .ref = gref, .dom = peer },
    };
    check_eq("backend-map-batch-rc", HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, bad, 3), 0);
    check_eq("backend-writable-map-of-readonly-grant-general_error", bad[0].status, GNTST_general_error);
    check_eq("backend-map-domid_self-bad_domain", bad[1].status, GNTST_bad_domain);
    check_eq("backend-map-no-host_map-bad_gntref", bad[2].status, GNTST_bad_gntref);
    check_eq("backend-waits-for-the-ack", wait_for(&m[OFF_ACK], 'A', 30000), 0);
    struct gnttab_unmap_grant_ref unmap = { .host_addr = MAP_GFN << 12, .handle = map.handle, .status = 99 };
    check_eq("backend-unmap-rc", HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &unmap, 1), 0);
    check_eq("backend-unmap-okay", unmap.status, GNTST_okay);
    unmap.status = 99;
    HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &unmap, 1);
    check_eq("backend-unmap-again-bad_handle", unmap.status, GNTST_bad_handle);
    unsigned int n = cmdline_u64("bench", 0);
    if (n)
        bench(peer, REF_RO, n);
    local_page[0] = 'D';
    check_eq("backend-says-done", copy_one(DOMID_SELF, mine, 0, peer, REF_DONE, 0, 1, GNTCOPY_dest_gref), GNTST_okay);
    return check_summary() != 0;
}

int main(void)
{
    char role[12] = "";
    cmdline_get("role", role, sizeof(role));
    domid_t peer = cmdline_u64("peer", 0);
    long rc = evtchn_init();
    if (rc || (rc = xs_init()) != 0) {
        printf("grant: set-up failed: %ld\n", rc);
        return 1;
    }
    local_irq_enable();
    if (!strncmp(role, "granter", 8))
        return granter();
    if (!strncmp(role, "backend", 8) && peer)
        return backend(peer);
    printf("grant: role=granter | role=backend peer=<domid>\n");
    return 1;
}
