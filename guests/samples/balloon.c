/*
 * balloon: the guest side of Xen's balloon protocol, as Linux's xen-balloon
 * driver does it. The toolstack writes the wanted size to memory/target
 * (KiB; `xl mem-set`); the guest gives frames back with
 * XENMEM_decrease_reservation until XENMEM_current_reservation is at the
 * target, and takes them back with XENMEM_populate_physmap when the target
 * rises, which the hypervisor refuses past the domain's max_pages
 * (`xl mem-max`, and the limit mem-set sets). Frames are taken from the top
 * of the highest e820 RAM range, which this small image never touches, and at most half of that range.
 *
 * Prints one line per change:
 *   balloon: target T KiB: reservation A -> B pages (gave back N | took back N of M)
 * and reads memory/target every 20 ms, sleeping in between on a one-shot
 * VIRQ_TIMER. Runs until the toolstack destroys it.
 */
#include "lib.h"
#include "events.h"

/* XENMEM_memory_map's entries: the e820 layout (not in Xen's public headers). */
#define E820_RAM 1
struct e820entry { uint64_t addr, size; uint32_t type; } __attribute__((packed));

#define MAX_BALLOON 65536           /* frames this guest can hold given back */
#define BATCH 64

static xen_pfn_t given[MAX_BALLOON];  /* frames given back, in the order given */
static unsigned long nr_given;
static uint64_t ram_top_pfn;         /* one past the highest RAM frame */

static long reservation(unsigned int cmd, xen_pfn_t *pfns, unsigned long n)
{
    struct xen_memory_reservation r = { .nr_extents = n, .extent_order = 0, .mem_flags = 0, .domid = DOMID_SELF };
    set_xen_guest_handle(r.extent_start, pfns);
    return HYPERVISOR_memory_op(cmd, &r);
}

static long current_pages(void)
{
    domid_t self = DOMID_SELF;
    return HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
}

static void find_ram_top(void)
{
    static struct e820entry map[64];
    struct xen_memory_map m = { .nr_entries = 64 };
    set_xen_guest_handle(m.buffer, (void *)map);
    if (HYPERVISOR_memory_op(XENMEM_memory_map, &m) != 0)
        return;
    for (unsigned int i = 0; i < m.nr_entries; i++) {
        uint64_t end = (map[i].addr + map[i].size) >> 12;
        if (map[i].type == E820_RAM && end <= (0xfc000000UL >> 12) && end > ram_top_pfn)
            ram_top_pfn = end;
    }
}

/* Gives back up to n frames, the highest ones still held first. */
static unsigned long give_back(unsigned long n)
{
    unsigned long done = 0;
    while (done < n && nr_given < MAX_BALLOON && nr_given < ram_top_pfn / 2) {
        xen_pfn_t batch[BATCH];
        unsigned long k = 0;
        while (k < BATCH && done + k < n && nr_given + k < MAX_BALLOON)
            batch[k] = ram_top_pfn - 1 - (nr_given + k), k++;
        long rc = reservation(XENMEM_decrease_reservation, batch, k);
        if (rc <= 0)
            break;
        for (long i = 0; i < rc; i++)
            given[nr_given++] = batch[i];
        done += rc;
        if ((unsigned long)rc < k)
            break;
    }
    return done;
}

/* Takes back up to n of the frames given back, the last given first. */
static unsigned long take_back(unsigned long n)
{
    unsigned long done = 0;
    while (done < n && nr_given > 0) {
        xen_pfn_t batch[BATCH];
        unsigned long k = 0;
        while (k < BATCH && done + k < n && k < nr_given)
            batch[k] = given[nr_given - 1 - k], k++;
        long rc = reservation(XENMEM_populate_physmap, batch, k);
        if (rc <= 0)
            break;
        nr_given -= rc;
        done += rc;
        if ((unsigned long)rc < k)
            break;
    }
    return done;
}

static long read_target_kib(const char *path)
{
    char buf[32];
    long n = xs_read(path, buf, sizeof(buf) - 1);
    if (n < 0)
        return n;
    buf[n] = 0;
    long v = 0;
    for (char *p = buf; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (*p - '0');
    return v;
}

static volatile int timer_fired;

static void on_timer(evtchn_port_t port, void *arg)
{
    timer_fired = 1;
}

/* A one-shot VIRQ_TIMER 20 ms ahead, waited for in sti; hlt. */
static void sleep_20ms(void)
{
    timer_fired = 0;
    HYPERVISOR_set_timer_op(xen_system_time() + 20000000ULL);
    while (!timer_fired)
        wait_for_event();
}

int main(void)
{
    char dom[64], path[96];
    long last = -1;

    evtchn_port_t timer_port;
    if (evtchn_init() < 0 || xs_init() < 0 || xs_domain_path(dom, sizeof(dom)) < 0 ||
        evtchn_bind_virq(VIRQ_TIMER, 0, &timer_port) < 0) {
        printf("balloon: no xenstore or no timer\n");
        return 1;
    }
    evtchn_bind_handler(timer_port, on_timer, NULL);
    evtchn_unmask(timer_port);
    snprintf(path, sizeof(path), "%s/memory/target", dom);
    find_ram_top();
    printf("balloon: ready, reservation %ld pages, RAM up to pfn 0x%lx\n", current_pages(), (unsigned long)ram_top_pfn);
    for (;;) {
        /* with interrupts on, the xenstore client sleeps until the reply's event */
        local_irq_enable();
        long target = read_target_kib(path);
        local_irq_disable();
        if (target >= 0 && target != last) {
            long before = current_pages(), want = target / 4;
            if (before > want) {
                unsigned long n = give_back(before - want);
                printf("balloon: target %ld KiB: reservation %ld -> %ld pages (gave back %lu)\n", target, before, current_pages(), n);
            } else if (before < want) {
                unsigned long n = take_back(want - before);
                printf("balloon: target %ld KiB: reservation %ld -> %ld pages (took back %lu of %ld)\n", target, before, current_pages(), n, want - before);
            } else {
                printf("balloon: target %ld KiB: reservation %ld pages\n", target, before);
            }
            last = target;
        }
        sleep_20ms();
    }
}
