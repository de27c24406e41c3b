/*
 * hypercalls: self-checking test of the hypercall ABI a PVH domU relies on.
 *
 * Every check prints `PASS <name>` or `FAIL <name>: got X want Y`; the run
 * ends with `RESULT: N passed, M failed` and powers off (all passed) or
 * crash-shuts-down (any failed).  Expected values come from the Xen public
 * headers and from how Xen implements them for an unprivileged PVH domU
 * (dummy XSM), never from what one implementation happens to return.
 *
 * The domain must have been built as a domU with the PVH contract: the
 * console and xenstore rings and ports pre-allocated (HVM params), grant refs
 * 0 and 1 seeded for them, an e820 with a hole after RAM below 4 GiB.
 */
#include "lib.h"

/* Canonical, never mapped by our page tables (PML4 slot 32 is empty). */
#define BAD_PTR     ((void *)0x100000000000UL)
#define NO_DOMAIN   0x7000          /* < DOMID_FIRST_RESERVED, never created */
#define E820_RAM    1

struct e820entry { uint64_t addr, size; uint32_t type; } __attribute__((packed));

static struct e820entry e820[64];
static unsigned int e820_nr;
static uint8_t scratch_page[4096] __attribute__((aligned(4096), section(".bss.page_aligned")));
static uint8_t vcpu_info_page[4096] __attribute__((aligned(4096), section(".bss.page_aligned")));
static uint64_t store_pfn, store_port, console_pfn, console_port;
static uint64_t hole_gpa;           /* three free pages in an e820 hole */
static int console_io_allowed = 1;

#define SECTION(s) printf("--- %s\n", s)

static int in_e820_ram(uint64_t gpa)
{
    for (unsigned i = 0; i < e820_nr; i++)
        if (e820[i].type == E820_RAM && gpa >= e820[i].addr && gpa - e820[i].addr < e820[i].size)
            return 1;
    return 0;
}

static int overlaps_e820(uint64_t start, uint64_t len)
{
    for (unsigned i = 0; i < e820_nr; i++)
        if (start < e820[i].addr + e820[i].size && e820[i].addr < start + len)
            return 1;
    return 0;
}

/* ------------------------------------------------------------------ cpuid */
static void test_cpuid(void)
{
    uint32_t a, b, c, d, max, ver;
    SECTION("cpuid");
    cpuid(xen_cpuid_base, 0, &max, &b, &c, &d);
    check_eq("cpuid-base-0x40000000", xen_cpuid_base, 0x40000000);
    check_true("cpuid-max-leaf", max >= xen_cpuid_base + 2, "max leaf 0x%x < base+2", max);
    cpuid(xen_cpuid_base + 1, 0, &ver, &b, &c, &d);
    long v = HYPERVISOR_xen_version(XENVER_version, NULL);
    check_eq("cpuid-version-matches-xen_version", ver, v);
    cpuid(xen_cpuid_base + 2, 0, &a, &b, &c, &d);
    check_true("cpuid-hypercall-pages", a >= 1, "eax %u", a);
    check_eq("cpuid-hypercall-msr", b, 0x40000000);
    check_true("hypercall-page-filled", hypercall_page[0] != 0xc3, "first byte still 0xc3");
    if (max >= xen_cpuid_base + 4) {
        cpuid(xen_cpuid_base + 4, 0, &a, &b, &c, &d);
        check_true("cpuid-vcpu-id-present", a & XEN_HVM_CPUID_VCPU_ID_PRESENT, "flags 0x%x", a);
        check_true("cpuid-domid-present", a & XEN_HVM_CPUID_DOMID_PRESENT, "flags 0x%x", a);
        if (a & XEN_HVM_CPUID_VCPU_ID_PRESENT)
            check_eq("cpuid-vcpu-id-0", b, 0);
        printf("INFO domid %d vcpu %d\n", xen_domid, xen_vcpu_id);
    } else {
        check_true("cpuid-leaf4", 0, "max leaf 0x%x has no base+4 (domid/vcpu id)", max);
    }
}

/* ------------------------------------------------------------ xen_version */
static int has_nul(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i])
            return 1;
    return 0;
}

static void test_xen_version(void)
{
    static union {
        xen_extraversion_t extra;
        xen_compile_info_t compile;
        xen_capabilities_info_t caps;
        xen_changeset_info_t chg;
        xen_platform_parameters_t plat;
        xen_feature_info_t feat;
        xen_domain_handle_t handle;
        xen_commandline_t cmd;
    } u;
    long rc;
    SECTION("xen_version");

    rc = HYPERVISOR_xen_version(XENVER_version, NULL);
    check_true("xen_version-version", rc > 0 && (rc >> 16) >= 3,
               "got 0x%lx, want major<<16|minor with major >= 3", rc);
    printf("INFO Xen version %ld.%ld\n", rc >> 16, rc & 0xffff);

    memset(&u, 0xff, sizeof(u.extra));
    rc = HYPERVISOR_xen_version(XENVER_extraversion, &u);
    check_eq("xen_version-extraversion", rc, 0);
    check_true("xen_version-extraversion-nul", has_nul(u.extra, sizeof(u.extra)), "no NUL in 16 bytes");

    memset(&u, 0xff, sizeof(u.compile));
    rc = HYPERVISOR_xen_version(XENVER_compile_info, &u);
    check_eq("xen_version-compile_info", rc, 0);
    check_true("xen_version-compile_info-nul",
               has_nul(u.compile.compiler, 64) && has_nul(u.compile.compile_by, 16) &&
               has_nul(u.compile.compile_domain, 32) && has_nul(u.compile.compile_date, 32),
               "unterminated field");

    memset(&u, 0, sizeof(u.caps));
    rc = HYPERVISOR_xen_version(XENVER_capabilities, &u);
    check_eq("xen_version-capabilities", rc, 0);
    u.caps[sizeof(u.caps) - 1] = 0;
    printf("INFO capabilities \"%s\"\n", u.caps);
    check_true("xen_version-capabilities-hvm-x86_64", strstr(u.caps, "hvm-3.0-x86_64") != NULL,
               "\"%s\" lacks hvm-3.0-x86_64 (we are a 64-bit HVM guest)", u.caps);

    rc = HYPERVISOR_xen_version(XENVER_changeset, &u);
    check_eq("xen_version-changeset", rc, 0);
    check_true("xen_version-changeset-nul", has_nul(u.chg, sizeof(u.chg)), "no NUL in 64 bytes");

    rc = HYPERVISOR_xen_version(XENVER_platform_parameters, &u);
    check_eq("xen_version-platform_parameters", rc, 0);

    u.feat.submap_idx = 0;
    u.feat.submap = 0;
    rc = HYPERVISOR_xen_version(XENVER_get_features, &u);
    check_eq("xen_version-get_features", rc, 0);
    uint32_t f = u.feat.submap;
    printf("INFO features submap[0] 0x%08x\n", f);
    /* A PVH domain is paging_mode_translate: Xen always reports these two. */
    check_true("features-writable_page_tables", f & (1u << XENFEAT_writable_page_tables), "0x%x", f);
    check_true("features-auto_translated_physmap", f & (1u << XENFEAT_auto_translated_physmap), "0x%x", f);
    /* HVM domains always get the safe pvclock bit (the pvclock is required). */
    check_true("features-hvm_safe_pvclock", f & (1u << XENFEAT_hvm_safe_pvclock), "0x%x", f);
    /* PV-only features must not be reported to an HVM domain. */
    check_true("features-no-pv-only-bits",
               !(f & ((1u << XENFEAT_mmu_pt_update_preserve_ad) | (1u << XENFEAT_highmem_assist) |
                      (1u << XENFEAT_gnttab_map_avail_bits) | (1u << XENFEAT_supervisor_mode_kernel))),
               "0x%x has PV-only bits 3/5/6/7", f);
    check_true("features-not-dom0", !(f & (1u << XENFEAT_dom0)), "0x%x has XENFEAT_dom0", f);

    u.feat.submap_idx = 1;
    check_eq("xen_version-get_features-idx1", HYPERVISOR_xen_version(XENVER_get_features, &u), -EINVAL);

    check_eq("xen_version-pagesize", HYPERVISOR_xen_version(XENVER_pagesize, NULL), 4096);
    check_eq("xen_version-pagesize-nonnull", HYPERVISOR_xen_version(XENVER_pagesize, &u), -EINVAL);
    check_eq("xen_version-guest_handle", HYPERVISOR_xen_version(XENVER_guest_handle, &u), 0);

    memset(&u, 0xff, sizeof(u.cmd));
    rc = HYPERVISOR_xen_version(XENVER_commandline, &u);
    check_eq("xen_version-commandline", rc, 0);
    check_true("xen_version-commandline-nul", has_nul(u.cmd, sizeof(u.cmd)), "unterminated");
    /* build_id is XSM_PRIV: refused to a domU. */
    check_eq("xen_version-build_id-domU", HYPERVISOR_xen_version(XENVER_build_id, NULL), -EPERM);

    check_eq("xen_version-unknown-cmd", HYPERVISOR_xen_version(0x3fff, &u), -ENOSYS);
    check_eq("xen_version-extraversion-badptr", HYPERVISOR_xen_version(XENVER_extraversion, BAD_PTR), -EFAULT);
    check_eq("xen_version-get_features-badptr", HYPERVISOR_xen_version(XENVER_get_features, BAD_PTR), -EFAULT);
}

/* ------------------------------------------------------------- console_io */
static void test_console_io(void)
{
    static const char msg[] = "console_io: direct write check\n";
    static char buf[32];
    SECTION("console_io");
    long rc = HYPERVISOR_console_io(CONSOLEIO_write, sizeof(msg) - 1, msg);
    if (rc == -EPERM) {
        /* Xen allows console_io to domUs only if they are console domains. */
        console_io_allowed = 0;
        printf("INFO console_io refused (-EPERM): not a console domain; expecting -EPERM throughout\n");
        check_eq("console_io-read-eperm", HYPERVISOR_console_io(CONSOLEIO_read, sizeof(buf), buf), -EPERM);
        check_eq("console_io-unknown-eperm", HYPERVISOR_console_io(7, 0, buf), -EPERM);
        return;
    }
    check_eq("console_io-write", rc, 0);
    check_eq("console_io-write-empty", HYPERVISOR_console_io(CONSOLEIO_write, 0, msg), 0);
    rc = HYPERVISOR_console_io(CONSOLEIO_read, sizeof(buf), buf);
    check_true("console_io-read", rc >= 0 && rc <= (long)sizeof(buf), "got %ld want 0..%zu", rc, sizeof(buf));
    check_eq("console_io-unknown-cmd", HYPERVISOR_console_io(7, 0, buf), -ENOSYS);
    check_eq("console_io-write-badptr", HYPERVISOR_console_io(CONSOLEIO_write, 8, BAD_PTR), -EFAULT);
}

/* ----------------------------------------------------------------- hvm_op */
static long hvm_param_op(int op, domid_t dom, uint32_t index, uint64_t *value)
{
    struct xen_hvm_param p = { .domid = dom, .index = index, .value = value ? *value : 0 };
    long rc = HYPERVISOR_hvm_op(op, &p);
    if (rc == 0 && value && op == HVMOP_get_param)
        *value = p.value;
    return rc;
}

static void test_hvm_op(void)
{
    uint64_t v;
    long rc;
    SECTION("hvm_op");

    check_eq("hvm-get-CALLBACK_IRQ", hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &v), 0);
    check_eq("hvm-get-STORE_PFN", hvm_get_param(HVM_PARAM_STORE_PFN, &store_pfn), 0);
    check_eq("hvm-get-STORE_EVTCHN", hvm_get_param(HVM_PARAM_STORE_EVTCHN, &store_port), 0);
    check_eq("hvm-get-CONSOLE_PFN", hvm_get_param(HVM_PARAM_CONSOLE_PFN, &console_pfn), 0);
    check_eq("hvm-get-CONSOLE_EVTCHN", hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &console_port), 0);
    printf("INFO store pfn 0x%lx port %lu, console pfn 0x%lx port %lu\n",
           store_pfn, store_port, console_pfn, console_port);
    check_true("hvm-store-ring-set", store_pfn && store_port, "pfn 0x%lx port %lu", store_pfn, store_port);
    check_true("hvm-console-ring-set", console_pfn && console_port, "pfn 0x%lx port %lu",
               console_pfn, console_port);
    check_true("hvm-store-pfn-not-ram", store_pfn && !in_e820_ram(store_pfn << 12),
               "0x%lx lies in e820 RAM", store_pfn);
    check_true("hvm-console-pfn-not-ram", console_pfn && !in_e820_ram(console_pfn << 12),
               "0x%lx lies in e820 RAM", console_pfn);
    check_true("hvm-ports-distinct", store_port != console_port, "both %lu", store_port);

    /* Guest-writable: CALLBACK_IRQ (type 2 = vector), STORE/CONSOLE_EVTCHN. */
    uint64_t cb = (2ULL << 56) | 0xf3;
    check_eq("hvm-set-CALLBACK_IRQ-vector", hvm_set_param(HVM_PARAM_CALLBACK_IRQ, cb), 0);
    v = 0;
    rc = hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &v);
    check_true("hvm-get-CALLBACK_IRQ-readback", rc == 0 && v == cb, "rc %ld value 0x%lx want 0x%lx", rc, v, cb);
    check_eq("hvm-set-CALLBACK_IRQ-0", hvm_set_param(HVM_PARAM_CALLBACK_IRQ, 0), 0);
    check_eq("hvm-set-STORE_EVTCHN-same", hvm_set_param(HVM_PARAM_STORE_EVTCHN, store_port), 0);
    check_eq("hvm-set-CONSOLE_EVTCHN-same", hvm_set_param(HVM_PARAM_CONSOLE_EVTCHN, console_port), 0);

    /* Toolstack-only indices. */
    check_eq("hvm-set-STORE_PFN-eperm", hvm_set_param(HVM_PARAM_STORE_PFN, store_pfn), -EPERM);
    check_eq("hvm-set-CONSOLE_PFN-eperm", hvm_set_param(HVM_PARAM_CONSOLE_PFN, console_pfn), -EPERM);
    check_eq("hvm-set-IDENT_PT-eperm", hvm_set_param(HVM_PARAM_IDENT_PT, 0x1000), -EPERM);
    check_eq("hvm-get-IOREQ_PFN-eperm", hvm_get_param(HVM_PARAM_IOREQ_PFN, &v), -EPERM);
    check_eq("hvm-get-IDENT_PT-eperm", hvm_get_param(HVM_PARAM_IDENT_PT, &v), -EPERM);
    v = store_pfn;
    rc = hvm_get_param(HVM_PARAM_STORE_PFN, &v);
    check_true("hvm-STORE_PFN-unchanged", rc == 0 && v == store_pfn, "rc %ld 0x%lx", rc, v);

    check_eq("hvm-get-index-out-of-range", hvm_get_param(HVM_NR_PARAMS + 1000, &v), -EINVAL);
    check_eq("hvm-set-index-out-of-range", hvm_set_param(HVM_NR_PARAMS + 1000, 0), -EINVAL);
    check_eq("hvm-get-no-such-domain", hvm_param_op(HVMOP_get_param, NO_DOMAIN, HVM_PARAM_STORE_PFN, &v), -ESRCH);
    rc = hvm_param_op(HVMOP_get_param, 0, HVM_PARAM_STORE_PFN, &v);
    check_true("hvm-get-other-domain-refused", rc == -EPERM || rc == -ESRCH,
               "got %ld want -EPERM (or -ESRCH if domain 0 does not exist)", rc);
    check_eq("hvm-get-own-domid", hvm_param_op(HVMOP_get_param, xen_domid, HVM_PARAM_STORE_EVTCHN, &v), 0);
    check_eq("hvm_op-unknown-op", HYPERVISOR_hvm_op(0x7777, &v), -ENOSYS);
    check_eq("hvm_op-get_param-badptr", HYPERVISOR_hvm_op(HVMOP_get_param, BAD_PTR), -EFAULT);
    check_eq("hvm_op-set_param-badptr", HYPERVISOR_hvm_op(HVMOP_set_param, BAD_PTR), -EFAULT);
}

/* -------------------------------------------------------------- memory_op */
static long reservation_op(unsigned int cmd, xen_pfn_t *gpfn, unsigned int order, domid_t dom)
{
    struct xen_memory_reservation r = {
        .nr_extents = 1, .extent_order = order, .mem_flags = 0, .domid = dom,
    };
    set_xen_guest_handle(r.extent_start, gpfn);
    return HYPERVISOR_memory_op(cmd, &r);
}

static long add_to_physmap(unsigned int space, unsigned long idx, uint64_t gpfn, domid_t dom)
{
    struct xen_add_to_physmap x = { .domid = dom, .space = space, .idx = idx, .gpfn = gpfn };
    return HYPERVISOR_memory_op(XENMEM_add_to_physmap, &x);
}

static long remove_from_physmap(uint64_t gpfn, domid_t dom)
{
    struct xen_remove_from_physmap x = { .domid = dom, .gpfn = gpfn };
    return HYPERVISOR_memory_op(XENMEM_remove_from_physmap, &x);
}

static void find_hole(void)
{
    uint64_t top = 0;
    for (unsigned i = 0; i < e820_nr; i++)
        if (e820[i].type == E820_RAM && e820[i].addr + e820[i].size <= 0xfc000000UL &&
            e820[i].addr + e820[i].size > top)
            top = e820[i].addr + e820[i].size;
    top = (top + 0xfff) & ~0xfffUL;
    while (top + 4 * PAGE_SIZE <= 0xfc000000UL && overlaps_e820(top, 4 * PAGE_SIZE))
        top += 0x200000;
    if (top && top + 4 * PAGE_SIZE <= 0xfc000000UL)
        hole_gpa = top;
}

static void check_time_info(const char *prefix, volatile struct vcpu_time_info *t)
{
    char name[64];
    uint32_t ver = t->version;
    snprintf(name, sizeof(name), "%s-version-even", prefix);
    check_true(name, !(ver & 1), "version %u is odd (update in progress)", ver);
    snprintf(name, sizeof(name), "%s-tsc_to_system_mul", prefix);
    check_true(name, t->tsc_to_system_mul != 0, "multiplier is 0: time would stand still");
    snprintf(name, sizeof(name), "%s-system_time", prefix);
    check_true(name, t->system_time != 0 || t->tsc_timestamp != 0, "system_time and tsc_timestamp are 0");
}

static void test_memory_op(void)
{
    static struct e820entry buf[64];
    struct xen_memory_map map;
    long rc;
    SECTION("memory_op");

    /* memory_map: the same e820 as hvm_start_info's memmap. */
    map.nr_entries = ARRAY_SIZE(buf);
    set_xen_guest_handle(map.buffer, (void *)buf);
    rc = HYPERVISOR_memory_op(XENMEM_memory_map, &map);
    check_eq("memory_map", rc, 0);
    e820_nr = rc == 0 && map.nr_entries <= ARRAY_SIZE(e820) ? map.nr_entries : 0;
    memcpy(e820, buf, sizeof(e820));
    for (unsigned i = 0; i < e820_nr; i++)
        printf("INFO e820 %016lx-%016lx type %u\n", e820[i].addr, e820[i].addr + e820[i].size, e820[i].type);
    check_true("memory_map-has-ram", in_e820_ram(0x100000), "our image at 1 MiB is not in e820 RAM");
    int same = start_info->memmap_entries == e820_nr;
    struct hvm_memmap_table_entry *mm = (void *)(uintptr_t)start_info->memmap_paddr;
    for (unsigned i = 0; same && i < e820_nr; i++)
        same = mm[i].addr == e820[i].addr && mm[i].size == e820[i].size && mm[i].type == e820[i].type;
    check_true("memory_map-matches-start_info", same, "%u entries vs start_info's %u (or contents differ)",
               e820_nr, start_info->memmap_entries);

    map.nr_entries = 1;
    memset(buf, 0, sizeof(buf));
    rc = HYPERVISOR_memory_op(XENMEM_memory_map, &map);
    check_true("memory_map-truncated", rc == 0 && map.nr_entries == 1 && buf[0].addr == e820[0].addr &&
               buf[0].size == e820[0].size, "rc %ld nr %u", rc, map.nr_entries);
    check_eq("memory_map-badptr", HYPERVISOR_memory_op(XENMEM_memory_map, BAD_PTR), -EFAULT);
    map.nr_entries = 4;
    set_xen_guest_handle(map.buffer, BAD_PTR);
    check_eq("memory_map-bad-buffer", HYPERVISOR_memory_op(XENMEM_memory_map, &map), -EFAULT);

    /* Reservations. */
    domid_t self = DOMID_SELF, none = NO_DOMAIN;
    long cur = HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
    long max = HYPERVISOR_memory_op(XENMEM_maximum_reservation, &self);
    printf("INFO reservation current %ld max %ld pages\n", cur, max);
    check_true("current_reservation", cur > 0, "got %ld", cur);
    check_true("maximum_reservation", max >= cur, "max %ld < current %ld", max, cur);
    check_eq("current_reservation-no-such-domain", HYPERVISOR_memory_op(XENMEM_current_reservation, &none), -ESRCH);
    check_eq("current_reservation-badptr", HYPERVISOR_memory_op(XENMEM_current_reservation, BAD_PTR), -EFAULT);

    /* add_to_physmap: shared_info and a grant frame into an e820 hole. */
    find_hole();
    if (!check_true("e820-hole-below-4G", hole_gpa != 0, "no free hole found below 0xfc000000"))
        return;
    printf("INFO hole at 0x%lx\n", hole_gpa);
    uint64_t hole_pfn = hole_gpa >> 12;
    rc = add_to_physmap(XENMAPSPACE_shared_info, 0, hole_pfn, DOMID_SELF);
    if (check_eq("add_to_physmap-shared_info-hole", rc, 0)) {
        volatile struct shared_info *s = (void *)hole_gpa;
        check_time_info("shared_info-hole-vcpu0-time", &s->vcpu_info[0].time);
        uint32_t wc = s->wc_sec;
        check_true("shared_info-wc_sec-after-2020", wc > 1577836800u, "wc_sec %u", wc);
        check_true("shared_info-wc_version-even", !(s->wc_version & 1), "wc_version %u", s->wc_version);
    }
    check_eq("add_to_physmap-shared_info-idx1", add_to_physmap(XENMAPSPACE_shared_info, 1, hole_pfn + 2, DOMID_SELF), -EINVAL);
    rc = add_to_physmap(XENMAPSPACE_grant_table, 0, hole_pfn + 1, DOMID_SELF);
    if (check_eq("add_to_physmap-grant_table-hole", rc, 0)) {
        volatile grant_entry_v1_t *g = (void *)(hole_gpa + PAGE_SIZE);
        check_true("grant-ref0-console-seeded",
                   (g[0].flags & GTF_type_mask) == GTF_permit_access && g[0].frame == console_pfn,
                   "flags 0x%x frame 0x%x want permit_access, frame 0x%lx", g[0].flags, g[0].frame, console_pfn);
        check_true("grant-ref1-xenstore-seeded",
                   (g[1].flags & GTF_type_mask) == GTF_permit_access && g[1].frame == store_pfn,
                   "flags 0x%x frame 0x%x want permit_access, frame 0x%lx", g[1].flags, g[1].frame, store_pfn);
    }
    check_eq("add_to_physmap-grant_table-idx-too-big",
             add_to_physmap(XENMAPSPACE_grant_table, 0x100000, hole_pfn + 2, DOMID_SELF), -EINVAL);
    check_eq("add_to_physmap-no-such-domain", add_to_physmap(XENMAPSPACE_shared_info, 0, hole_pfn + 2, NO_DOMAIN), -ESRCH);
    check_eq("add_to_physmap-badptr", HYPERVISOR_memory_op(XENMEM_add_to_physmap, BAD_PTR), -EFAULT);

    /* shared_info moved onto a RAM page of our image (what Mini-OS does). */
    struct shared_info *si = shared_info_map();
    if (check_true("add_to_physmap-shared_info-ram", si != NULL, "mapping over a RAM gpfn failed")) {
        check_time_info("shared_info-ram-vcpu0-time", &si->vcpu_info[0].time);
        check_true("shared_info-ram-wc_sec-after-2020", si->wc_sec > 1577836800u, "wc_sec %u", si->wc_sec);
    }

    /* decrease_reservation / populate_physmap of one page of our image. */
    xen_pfn_t pfn = (uintptr_t)scratch_page >> 12;
    long before = HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
    check_eq("decrease_reservation", reservation_op(XENMEM_decrease_reservation, &pfn, 0, DOMID_SELF), 1);
    check_eq("decrease_reservation-accounted", HYPERVISOR_memory_op(XENMEM_current_reservation, &self), before - 1);
    pfn = (uintptr_t)scratch_page >> 12;
    check_eq("populate_physmap", reservation_op(XENMEM_populate_physmap, &pfn, 0, DOMID_SELF), 1);
    check_eq("populate_physmap-accounted", HYPERVISOR_memory_op(XENMEM_current_reservation, &self), before);
    scratch_page[0] = 0x5a;
    scratch_page[4095] = 0xa5;
    barrier();
    check_true("populate_physmap-page-usable", scratch_page[0] == 0x5a && scratch_page[4095] == 0xa5, "readback differs");
    {
        /* Many extents in one call: Xen preempts long memory_ops with continuations,
         * which the guest never sees; every already-populated extent counts as done. */
        static xen_pfn_t many[1500];
        struct xen_memory_reservation r = { .nr_extents = 1500, .extent_order = 0, .domid = DOMID_SELF };
        for (unsigned int i = 0; i < 1500; i++)
            many[i] = pfn;
        set_xen_guest_handle(r.extent_start, many);
        check_eq("populate_physmap-1500-extents-continued", HYPERVISOR_memory_op(XENMEM_populate_physmap, &r), 1500);
        check_eq("populate_physmap-1500-extents-accounted", HYPERVISOR_memory_op(XENMEM_current_reservation, &self), before);
    }
    pfn = hole_pfn + 3;
    check_eq("decrease_reservation-hole-none-done", reservation_op(XENMEM_decrease_reservation, &pfn, 0, DOMID_SELF), 0);
    pfn = hole_pfn + 3;
    check_eq("populate_physmap-order-too-big", reservation_op(XENMEM_populate_physmap, &pfn, 30, DOMID_SELF), 0);
    /* Xen returns the number of extents done (0), not -EFAULT, for a bad struct. */
    check_eq("populate_physmap-badptr-none-done", HYPERVISOR_memory_op(XENMEM_populate_physmap, BAD_PTR), 0);
    pfn = hole_pfn + 3;
    check_eq("populate_physmap-no-such-domain", reservation_op(XENMEM_populate_physmap, &pfn, 0, NO_DOMAIN), -ESRCH);

    /* remove_from_physmap: the grant frame in the hole. */
    check_eq("remove_from_physmap-grant-frame", remove_from_physmap(hole_pfn + 1, DOMID_SELF), 0);
    check_eq("remove_from_physmap-hole-enoent", remove_from_physmap(hole_pfn + 3, DOMID_SELF), -ENOENT);
    check_eq("remove_from_physmap-no-such-domain", remove_from_physmap(hole_pfn + 1, NO_DOMAIN), -ESRCH);
    check_eq("remove_from_physmap-badptr", HYPERVISOR_memory_op(XENMEM_remove_from_physmap, BAD_PTR), -EFAULT);
    /* Map the grant frame again for the grant-table checks. */
    check_eq("add_to_physmap-grant_table-again", add_to_physmap(XENMAPSPACE_grant_table, 0, hole_pfn + 1, DOMID_SELF), 0);

    check_eq("memory_op-unknown-cmd", HYPERVISOR_memory_op(60, &self), -ENOSYS);
}

/* ------------------------------------------------------- shared_info time */
static void test_time(void)
{
    SECTION("pvclock");
    if (!xen_time_info) {
        check_true("pvclock-available", 0, "shared_info is not mapped");
        return;
    }
    uint64_t t1 = xen_system_time();
    sched_yield();
    uint64_t t2 = xen_system_time();
    for (int i = 0; i < 100; i++)
        (void)rdtsc();
    uint64_t t3 = xen_system_time();
    printf("INFO system time %lu ns\n", t1);
    check_true("pvclock-system-time-nonzero", t1 > 0, "0 ns");
    check_true("pvclock-monotonic", t2 > t1 && t3 > t2, "t1 %lu t2 %lu t3 %lu", t1, t2, t3);
    check_true("pvclock-plausible-rate", t3 - t1 < 10000000000UL, "%lu ns for a yield", t3 - t1);
}

/* ---------------------------------------------------------------- sched_op */
static void test_sched_op(void)
{
    SECTION("sched_op");
    check_eq("sched_op-yield", HYPERVISOR_sched_op(SCHEDOP_yield, NULL), 0);
    check_eq("sched_op-unknown-cmd", HYPERVISOR_sched_op(99, NULL), -ENOSYS);
    check_eq("sched_op-shutdown-badptr", HYPERVISOR_sched_op(SCHEDOP_shutdown, BAD_PTR), -EFAULT);
    check_eq("sched_op-shutdown_code-badptr", HYPERVISOR_sched_op(SCHEDOP_shutdown_code, BAD_PTR), -EFAULT);
    struct sched_remote_shutdown r = { .domain_id = NO_DOMAIN, .reason = SHUTDOWN_crash };
    check_eq("sched_op-remote_shutdown-no-such-domain", HYPERVISOR_sched_op(SCHEDOP_remote_shutdown, &r), -ESRCH);
    /* Device-model privilege is needed, even towards oneself. */
    r.domain_id = xen_domid;
    check_eq("sched_op-remote_shutdown-domU-eperm", HYPERVISOR_sched_op(SCHEDOP_remote_shutdown, &r), -EPERM);
    r.domain_id = 0;
    long rc = HYPERVISOR_sched_op(SCHEDOP_remote_shutdown, &r);
    check_true("sched_op-remote_shutdown-dom0-refused", rc == -EPERM || rc == -ESRCH,
               "got %ld want -EPERM (or -ESRCH)", rc);
    check_eq("sched_op-remote_shutdown-badptr", HYPERVISOR_sched_op(SCHEDOP_remote_shutdown, BAD_PTR), -EFAULT);
}

/* ----------------------------------------------------------------- vcpu_op */
static void test_vcpu_op(void)
{
    struct vcpu_runstate_info rs;
    struct vcpu_register_vcpu_info vi;
    long rc;
    SECTION("vcpu_op");

    memset(&rs, 0xff, sizeof(rs));
    rc = HYPERVISOR_vcpu_op(VCPUOP_get_runstate_info, 0, &rs);
    check_eq("vcpu_op-get_runstate_info", rc, 0);
    check_eq("runstate-running", rs.state, RUNSTATE_running);
    check_true("runstate-time-running", rs.time[RUNSTATE_running] > 0 && rs.time[RUNSTATE_running] < (1UL << 62),
               "time[running] %lu", rs.time[RUNSTATE_running]);
    check_true("runstate-entry-time", rs.state_entry_time > 0 && rs.state_entry_time < (1UL << 62),
               "state_entry_time %lu", rs.state_entry_time);
    check_eq("vcpu_op-get_runstate_info-bad-vcpu", HYPERVISOR_vcpu_op(VCPUOP_get_runstate_info, 1000, &rs), -ENOENT);
    check_eq("vcpu_op-get_runstate_info-badptr", HYPERVISOR_vcpu_op(VCPUOP_get_runstate_info, 0, BAD_PTR), -EFAULT);

    vi = (struct vcpu_register_vcpu_info){ .mfn = (uintptr_t)vcpu_info_page >> 12, .offset = 4090 };
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vi);
    check_true("register_vcpu_info-crossing-page-refused", rc < 0, "got %ld, want an error", rc);
    vi.offset = 64;
    check_eq("register_vcpu_info-bad-vcpu", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 1000, &vi), -ENOENT);
    check_eq("register_vcpu_info-badptr", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, BAD_PTR), -EFAULT);
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vi);
    if (check_eq("register_vcpu_info", rc, 0)) {
        struct vcpu_info *v = (void *)(vcpu_info_page + 64);
        check_time_info("vcpu_info-registered-time", &v->time);
        xen_time_info = &v->time;       /* the shared_info slot is stale now */
        uint64_t t1 = xen_system_time();
        sched_yield();
        uint64_t t2 = xen_system_time();
        check_true("vcpu_info-registered-time-advances", t2 > t1, "t1 %lu t2 %lu", t1, t2);
    }
    check_eq("register_vcpu_info-twice-ebusy", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vi), -EBUSY);
    check_eq("vcpu_op-unknown-cmd", HYPERVISOR_vcpu_op(99, 0, NULL), -ENOSYS);
}

/* ------------------------------------------------------------ set_timer_op */
static void test_set_timer_op(void)
{
    SECTION("set_timer_op");
    uint64_t now = xen_system_time();
    check_eq("set_timer_op-future", HYPERVISOR_set_timer_op(now + 1000000000UL), 0);
    check_eq("set_timer_op-cancel", HYPERVISOR_set_timer_op(0), 0);
    /* Xen accepts any deadline (past ones fire at once, far ones in 100 ms). */
    check_eq("set_timer_op-far-future", HYPERVISOR_set_timer_op(now + (1UL << 60)), 0);
    check_eq("set_timer_op-cancel-again", HYPERVISOR_set_timer_op(0), 0);
}

/* ---------------------------------------------------------- grant_table_op */
static void test_grant_table_op(void)
{
    struct gnttab_set_version sv;
    struct gnttab_get_version gv;
    struct gnttab_setup_table st;
    struct gnttab_query_size qs;
    xen_pfn_t frames[4];
    long rc;
    SECTION("grant_table_op");

    sv.version = 1;
    rc = HYPERVISOR_grant_table_op(GNTTABOP_set_version, &sv, 1);
    check_true("gnttab-set_version-1", rc == 0 && sv.version == 1, "rc %ld version %u", rc, sv.version);
    gv = (struct gnttab_get_version){ .dom = DOMID_SELF };
    rc = HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1);
    check_true("gnttab-get_version", rc == 0 && gv.version == 1, "rc %ld version %u", rc, gv.version);
    sv.version = 3;
    check_eq("gnttab-set_version-3-einval", HYPERVISOR_grant_table_op(GNTTABOP_set_version, &sv, 1), -EINVAL);
    sv.version = 2;
    rc = HYPERVISOR_grant_table_op(GNTTABOP_set_version, &sv, 1);
    check_eq("gnttab-set_version-2", rc, 0);
    if (rc == 0) {
        sv.version = 1;
        check_eq("gnttab-set_version-back-to-1", HYPERVISOR_grant_table_op(GNTTABOP_set_version, &sv, 1), 0);
    }
    gv.dom = NO_DOMAIN;
    check_eq("gnttab-get_version-no-such-domain", HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1), -ESRCH);

    st = (struct gnttab_setup_table){ .dom = DOMID_SELF, .nr_frames = 1 };
    set_xen_guest_handle(st.frame_list, frames);
    rc = HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1);
    check_true("gnttab-setup_table", rc == 0 && st.status == GNTST_okay, "rc %ld status %d", rc, st.status);
    if (rc == 0 && st.status == GNTST_okay)
        printf("INFO setup_table frame 0 = 0x%lx\n", (unsigned long)frames[0]);
    st.nr_frames = 100000;
    st.status = 0;
    rc = HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1);
    check_true("gnttab-setup_table-too-many", rc == 0 && st.status == GNTST_general_error,
               "rc %ld status %d want 0/GNTST_general_error", rc, st.status);
    st.nr_frames = 1;
    st.dom = NO_DOMAIN;
    rc = HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1);
    check_true("gnttab-setup_table-bad-domain", rc == 0 && st.status == GNTST_bad_domain,
               "rc %ld status %d want 0/GNTST_bad_domain", rc, st.status);
    st.dom = DOMID_SELF;
    check_eq("gnttab-setup_table-count-2", HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 2), -EINVAL);

    qs = (struct gnttab_query_size){ .dom = DOMID_SELF };
    rc = HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 1);
    check_true("gnttab-query_size", rc == 0 && qs.status == GNTST_okay && qs.nr_frames >= 1 &&
               qs.max_nr_frames >= qs.nr_frames,
               "rc %ld status %d nr %u max %u", rc, qs.status, qs.nr_frames, qs.max_nr_frames);
    printf("INFO grant frames %u of max %u\n", qs.nr_frames, qs.max_nr_frames);
    qs.dom = NO_DOMAIN;
    rc = HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 1);
    check_true("gnttab-query_size-bad-domain", rc == 0 && qs.status == GNTST_bad_domain,
               "rc %ld status %d", rc, qs.status);
    check_eq("gnttab-query_size-count-2", HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 2), -EINVAL);
    check_eq("gnttab-query_size-badptr", HYPERVISOR_grant_table_op(GNTTABOP_query_size, BAD_PTR, 1), -EFAULT);

    /* Not available to HVM/PVH guests. */
    check_eq("gnttab-transfer-enosys", HYPERVISOR_grant_table_op(GNTTABOP_transfer, &qs, 1), -ENOSYS);
    check_eq("gnttab-dump_table-enosys", HYPERVISOR_grant_table_op(GNTTABOP_dump_table, &qs, 1), -ENOSYS);
    check_eq("gnttab-unknown-op", HYPERVISOR_grant_table_op(99, &qs, 1), -ENOSYS);
}

/* -------------------------------------------------------- event_channel_op */
static long evtchn_status(domid_t dom, evtchn_port_t port, struct evtchn_status *st)
{
    *st = (struct evtchn_status){ .dom = dom, .port = port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_status, st);
}

static void check_ring_port(const char *name, evtchn_port_t port)
{
    struct evtchn_status st;
    char n[64];
    long rc = evtchn_status(DOMID_SELF, port, &st);
    snprintf(n, sizeof(n), "evtchn-status-%s", name);
    check_true(n, rc == 0 && (st.status == EVTCHNSTAT_unbound || st.status == EVTCHNSTAT_interdomain),
               "rc %ld status %u want unbound (1) or interdomain (2)", rc, st.status);
    if (rc == 0 && st.status == EVTCHNSTAT_unbound)
        printf("INFO %s port %u: unbound, accepting domain %u\n", name, port, st.u.unbound.dom);
    else if (rc == 0 && st.status == EVTCHNSTAT_interdomain)
        printf("INFO %s port %u: interdomain to domain %u port %u\n", name, port,
               st.u.interdomain.dom, st.u.interdomain.port);
}

static void test_event_channel_op(void)
{
    struct evtchn_status st;
    struct evtchn_close cl;
    struct evtchn_unmask um;
    long rc;
    SECTION("event_channel_op");
    if (!console_port || !store_port) {
        check_true("evtchn-ring-ports", 0, "console/store ports unknown");
        return;
    }
    check_ring_port("console", console_port);
    check_ring_port("store", store_port);
    rc = evtchn_status(DOMID_SELF, 0, &st);
    check_true("evtchn-status-port0-closed", rc == 0 && st.status == EVTCHNSTAT_closed,
               "rc %ld status %u", rc, st.status);
    check_eq("evtchn-status-bad-port", evtchn_status(DOMID_SELF, 100000, &st), -EINVAL);
    check_eq("evtchn-status-no-such-domain", evtchn_status(NO_DOMAIN, 1, &st), -ESRCH);

    check_eq("evtchn-send-console", evtchn_send(console_port), 0);
    check_eq("evtchn-send-port0", evtchn_send(0), -EINVAL);
    check_eq("evtchn-send-bad-port", evtchn_send(100000), -EINVAL);
    um.port = console_port;
    check_eq("evtchn-unmask-console", HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &um), 0);
    um.port = 100000;
    check_eq("evtchn-unmask-bad-port", HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &um), -EINVAL);
    cl.port = 0;
    check_eq("evtchn-close-port0", HYPERVISOR_event_channel_op(EVTCHNOP_close, &cl), -EINVAL);
    cl.port = 100000;
    check_eq("evtchn-close-bad-port", HYPERVISOR_event_channel_op(EVTCHNOP_close, &cl), -EINVAL);

    /* This guest never uses xenstore: close its port and see it go. */
    cl.port = store_port;
    check_eq("evtchn-close-store", HYPERVISOR_event_channel_op(EVTCHNOP_close, &cl), 0);
    rc = evtchn_status(DOMID_SELF, store_port, &st);
    check_true("evtchn-status-store-closed", rc == 0 && st.status == EVTCHNSTAT_closed,
               "rc %ld status %u", rc, st.status);
    check_eq("evtchn-send-closed", evtchn_send(store_port), -EINVAL);
    check_eq("evtchn-close-twice", HYPERVISOR_event_channel_op(EVTCHNOP_close, &cl), -EINVAL);

    check_eq("evtchn-unknown-cmd", HYPERVISOR_event_channel_op(99, &cl), -ENOSYS);
    check_eq("evtchn-send-badptr", HYPERVISOR_event_channel_op(EVTCHNOP_send, BAD_PTR), -EFAULT);
    check_eq("evtchn-status-badptr", HYPERVISOR_event_channel_op(EVTCHNOP_status, BAD_PTR), -EFAULT);
}

/* ---------------------------------------------------- unknown hypercalls */
static void test_unknown_hypercalls(void)
{
    /* PV-only (an HVM/PVH domain gets -ENOSYS); 23 (iret) is skipped: Xen's
     * stub for it is ud2.  Then numbers with no hypercall at all. */
    static const unsigned pv_only[] = { 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 14, 16, 19, 22, 25, 28, 30, 37 };
    static const unsigned unused[] = { 11, 43, 47, 60, 100, 127 };
    char name[48];
    SECTION("unknown hypercalls");
    for (unsigned i = 0; i < ARRAY_SIZE(pv_only); i++) {
        snprintf(name, sizeof(name), "hypercall-%u-pv-only-enosys", pv_only[i]);
        check_eq(name, hypercall_raw(pv_only[i], 0, 0, 0, 0, 0), -ENOSYS);
    }
    for (unsigned i = 0; i < ARRAY_SIZE(unused); i++) {
        snprintf(name, sizeof(name), "hypercall-%u-unknown-enosys", unused[i]);
        check_eq(name, hypercall_raw(unused[i], 0, 0, 0, 0, 0), -ENOSYS);
    }
}

int main(void)
{
    if (!xen_present) {
        printf("hypercalls: needs Xen\n");
        return 1;
    }
    printf("hypercalls: self-checking hypercall test (domid %d)\n", xen_domid);
    test_cpuid();
    /* Written as an unprivileged guest: its privilege checks expect a domU's
     * answers, so a hypervisor that said domid 0 fails here, visibly. */
    check_true("runs-as-domU", xen_domid > 0, "the hypervisor reported domid %d", xen_domid);
    test_xen_version();
    test_console_io();
    /* The ring pfns are needed before the hvm_op checks (grant seeding). */
    hvm_get_param(HVM_PARAM_STORE_PFN, &store_pfn);
    hvm_get_param(HVM_PARAM_CONSOLE_PFN, &console_pfn);
    test_memory_op();       /* first: gets the e820 the others use */
    test_hvm_op();
    test_time();
    test_sched_op();
    test_vcpu_op();
    test_set_timer_op();
    test_grant_table_op();
    test_event_channel_op();
    test_unknown_hypercalls();

    /* SCHEDOP_shutdown_code latches the reason reported by a later shutdown
     * (first one wins).  When everything passed, latch poweroff, try to
     * change it, then call SCHEDOP_shutdown(crash): the domain must still end
     * with poweroff.  When something failed, latch and use crash. */
    SECTION("shutdown");
    unsigned int failed = checks_failed;
    unsigned int final = failed ? SHUTDOWN_crash : SHUTDOWN_poweroff;
    struct sched_shutdown sc = { .reason = final };
    check_eq("sched_op-shutdown_code", HYPERVISOR_sched_op(SCHEDOP_shutdown_code, &sc), 0);
    sc.reason = SHUTDOWN_crash;
    check_eq("sched_op-shutdown_code-again", HYPERVISOR_sched_op(SCHEDOP_shutdown_code, &sc), 0);
    final = checks_failed ? SHUTDOWN_crash : final;
    check_summary();
    if (checks_failed) {
        printf("hypercalls: shutting down with SHUTDOWN_crash\n");
        shutdown(SHUTDOWN_crash);
    }
    printf("hypercalls: calling SCHEDOP_shutdown(crash); the latched shutdown_code poweroff must win\n");
    shutdown(SHUTDOWN_crash);
}
