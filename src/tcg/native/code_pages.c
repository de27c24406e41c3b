/*
 * Guest stores at RAM speed. Unicorn 2.1.4 marks every writable TLB entry of
 * an executable page NOTDIRTY, and never clears it: each guest store to such
 * a page takes the slow path (notdirty_write: a memory-region lookup and a
 * look for translated code there), some 20 times a plain store. Under Linux,
 * whose kernel data stays executable until late in its boot, that is a third
 * of the boot. QEMU clears the flag once a page holds no translated code, from
 * its dirty-memory tracking, which Unicorn leaves out. This library keeps
 * that knowledge itself, per engine: which RAM pages hold translated code
 * (QEMU calls tlb_protect_code when a page gets its first block and
 * tlb_unprotect_code when it loses its last, both through the PLT). A new TLB
 * entry (tlb_set_page_with_attrs, through the PLT) for any other RAM page is
 * made dirty at once (tlb_set_dirty); a page that gets code has its entries
 * made NOTDIRTY again (tlb_reset_dirty, as QEMU's tracking would), so a write
 * to translated code is still seen and the blocks made from it are dropped.
 * Only engines run by xenode_run are tracked; their blocks made before that
 * are flushed at their first run.
 */
#include "shim.h"
#include <stdlib.h>
#include <string.h>

#define PAGE_BITS 12
#define PAGE_SIZE (1u << PAGE_BITS)
/* QEMU's PAGE_WRITE (include/exec/cpu-all.h) */
#define QEMU_PAGE_WRITE 0x2
/* uc_ctl: UC_CTL_WRITE(UC_CTL_TB_FLUSH, 0) (unicorn.h) */
#define UC_CTL_TB_FLUSH_WRITE 0x4000000a
/* MemoryRegionSection: Int128 size, then MemoryRegion *mr (QEMU include/exec/memory.h) */
#define SECTION_MR 16

typedef void (*protect_fn)(void *uc, uint64_t ram_addr);
typedef void (*set_page_fn)(void *cpu, uint64_t vaddr, uint64_t paddr, uint32_t attrs, int prot, int mmu_idx, uint64_t size);
typedef void *(*translate_fn)(void *cpu, int asidx, uint64_t addr, uint64_t *xlat, uint64_t *plen, uint32_t attrs, int *prot);
typedef uint64_t (*ram_addr_fn)(void *mr);
typedef void *(*map_ram_fn)(void *uc, void *block, uint64_t addr);
typedef void (*reset_dirty_fn)(void *cpu, uintptr_t start, uintptr_t length);
typedef void (*set_dirty_fn)(void *cpu, uint64_t vaddr);
typedef int (*ctl_fn)(void *uc, int control, ...);

static protect_fn real_protect, real_unprotect;
static set_page_fn real_set_page;
static translate_fn translate;
static ram_addr_fn ram_addr_of;
static map_ram_fn map_ram;
static reset_dirty_fn reset_dirty;
static set_dirty_fn set_dirty;
static ctl_fn uc_ctl;

/* tlb_protect_code, tlb_unprotect_code, tlb_set_page_with_attrs, address_space_translate_for_iotlb,
 * memory_region_get_ram_addr, qemu_map_ram_ptr, tlb_reset_dirty, tlb_set_dirty, uc_ctl */
void xenode_code_pages_init(void **fns)
{
    real_protect = (protect_fn)fns[0];
    real_unprotect = (protect_fn)fns[1];
    real_set_page = (set_page_fn)fns[2];
    translate = (translate_fn)fns[3];
    ram_addr_of = (ram_addr_fn)fns[4];
    map_ram = (map_ram_fn)fns[5];
    reset_dirty = (reset_dirty_fn)fns[6];
    set_dirty = (set_dirty_fn)fns[7];
    uc_ctl = (ctl_fn)fns[8];
}

/* An engine of this thread: its CPU and a bit per RAM page (by ram_addr) that holds translated code. */
struct engine {
    void *uc, *cpu;
    uint8_t *code;
    size_t pages;
    struct engine *next;
};
static __thread struct engine *engines;

static struct engine *find(void *uc)
{
    for (struct engine *e = engines; e; e = e->next)
        if (e->uc == uc)
            return e;
    return NULL;
}

static struct engine *find_cpu(void *cpu)
{
    for (struct engine *e = engines; e; e = e->next)
        if (e->cpu == cpu)
            return e;
    return NULL;
}

void xenode_code_pages_begin(void *uc)
{
    if (find(uc))
        return;
    struct engine *e = calloc(1, sizeof(*e));
    if (!e)
        return; /* untracked: every store stays on Unicorn's slow path */
    e->uc = uc;
    e->next = engines;
    engines = e;
    uc_ctl(uc, UC_CTL_TB_FLUSH_WRITE);
}

void xenode_code_pages_cpu(void *uc, void *cpu)
{
    struct engine *e = find(uc);
    if (e)
        e->cpu = cpu;
}

/* The engine is closed (its thread, before uc_close). */
void xenode_engine_forget(void *uc)
{
    for (struct engine **p = &engines; *p; p = &(*p)->next) {
        if ((*p)->uc == uc) {
            struct engine *e = *p;
            *p = e->next;
            free(e->code);
            free(e);
            return;
        }
    }
}

static int has_code(struct engine *e, uint64_t page)
{
    return page < e->pages && (e->code[page >> 3] >> (page & 7)) & 1;
}

static int mark(struct engine *e, uint64_t page, int on)
{
    if (page >= e->pages) {
        if (!on)
            return 1;
        size_t n = e->pages ? e->pages : 65536;
        while (n <= page)
            n *= 2;
        uint8_t *b = realloc(e->code, n / 8);
        if (!b)
            return 0;
        memset(b + e->pages / 8, 0, (n - e->pages) / 8);
        e->code = b;
        e->pages = n;
    }
    if (on)
        e->code[page >> 3] |= 1 << (page & 7);
    else
        e->code[page >> 3] &= ~(1 << (page & 7));
    return 1;
}

void tlb_protect_code_x86_64(void *uc, uint64_t ram_addr)
{
    real_protect(uc, ram_addr);
    struct engine *e = find(uc);
    if (!e)
        return;
    if (!mark(e, ram_addr >> PAGE_BITS, 1)) {
        /* no memory to remember it: forget the engine's tracking rather than miss a write to code */
        uc_ctl(uc, UC_CTL_TB_FLUSH_WRITE);
        return;
    }
    if (e->cpu)
        reset_dirty(e->cpu, (uintptr_t)map_ram(uc, NULL, ram_addr & ~(uint64_t)(PAGE_SIZE - 1)), PAGE_SIZE);
}

void tlb_unprotect_code_x86_64(void *uc, uint64_t ram_addr)
{
    real_unprotect(uc, ram_addr);
    struct engine *e = find(uc);
    if (e)
        mark(e, ram_addr >> PAGE_BITS, 0);
}

void tlb_set_page_with_attrs_x86_64(void *cpu, uint64_t vaddr, uint64_t paddr, uint32_t attrs, int prot, int mmu_idx, uint64_t size)
{
    real_set_page(cpu, vaddr, paddr, attrs, prot, mmu_idx, size);
    if (!(prot & QEMU_PAGE_WRITE))
        return;
    struct engine *e = find_cpu(cpu);
    if (!e)
        return;
    uint64_t page = paddr & ~(uint64_t)(PAGE_SIZE - 1), xlat = 0, plen = PAGE_SIZE;
    int p = prot;
    char *section = translate(cpu, 0, page, &xlat, &plen, attrs, &p);
    if (!section)
        return;
    uint64_t ram = ram_addr_of(*(void **)(section + SECTION_MR));
    if (ram == (uint64_t)-1 || has_code(e, (ram + xlat) >> PAGE_BITS))
        return;
    set_dirty(cpu, vaddr);
}
