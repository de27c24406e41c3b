/*
 * paging32: a 32-bit guest in one of the three 32-bit paging modes, chosen
 * when it is built (MODE): none (paging off), PSE (two-level tables with
 * 4 MiB pages, CR4.PSE) or PAE (three-level, 2 MiB pages, CR4.PAE, outside
 * long mode).  It identity-maps its first 32 MiB (its image ends below that), maps an alias window at
 * 1 GiB onto a buffer, and checks that a write through the alias is the
 * buffer's (so the CPU really translates); then a page fault on an unmapped
 * address, with its error code and CR2, through a 32-bit interrupt gate.
 * Output and shutdown go through the hypercall page with the 32-bit ABI
 * (EBX ECX ...), so the hypervisor sees a 32-bit Xen guest.
 */
#include <stdint.h>
#include <stddef.h>
#include <xen/xen.h>
#include <xen/sched.h>

#define MODE_NONE 0
#define MODE_PSE  1
#define MODE_PAE  2
#ifndef MODE
#error MODE must be defined
#endif

static const char *const mode_name[] = { "none", "pse", "pae" };

extern char hypercall_page[];
static unsigned passed, failed;

static long hypercall2(unsigned nr, unsigned long a1, unsigned long a2)
{
    long rc;
    unsigned long b = a1, c = a2;
    asm volatile ("call *%[stub]" : "=a" (rc), "+b" (b), "+c" (c)
                  : [stub] "r" (hypercall_page + nr * 32) : "memory", "edx");
    return rc;
}

static long hypercall3(unsigned nr, unsigned long a1, unsigned long a2, unsigned long a3)
{
    long rc;
    unsigned long b = a1, c = a2, d = a3;
    asm volatile ("call *%[stub]" : "=a" (rc), "+b" (b), "+c" (c), "+d" (d)
                  : [stub] "r" (hypercall_page + nr * 32) : "memory");
    return rc;
}

static size_t len(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

static void puts_(const char *s)
{
    /* console_io(CONSOLEIO_write, len, buf) */
    hypercall3(__HYPERVISOR_console_io, 0, len(s), (unsigned long)s);
}

static void check(const char *name, int ok)
{
    puts_(ok ? "PASS " : "FAIL ");
    puts_(name);
    puts_("\n");
    if (ok) passed++; else failed++;
}

static void put_uint(unsigned v)
{
    char b[12];
    int i = 11;
    b[i] = 0;
    do { b[--i] = '0' + v % 10; v /= 10; } while (v);
    puts_(b + i);
}

static void shutdown_(unsigned reason)
{
    struct sched_shutdown s = { .reason = reason };
    hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (unsigned long)&s);
}

/* ------------------------------------------------------------- tables */
#define ALIAS   0x40000000u      /* 1 GiB: the alias window */
#define UNMAPPED 0x80000000u     /* 2 GiB: nothing there */
#define PTE_P   1u
#define PTE_W   2u
#define PTE_PS  0x80u

static uint8_t target[4 << 20] __attribute__((aligned(4 << 20)));
static uint32_t pd32[1024] __attribute__((aligned(4096), unused));
static uint64_t pdpt[4] __attribute__((aligned(32), unused));
static uint64_t pd64[4][512] __attribute__((aligned(4096), unused));

static void paging_on(void)
{
#if MODE == MODE_PSE
    for (unsigned i = 0; i < 8; i++)                        /* 32 MiB in 4 MiB pages */
        pd32[i] = (i << 22) | PTE_P | PTE_W | PTE_PS;
    pd32[ALIAS >> 22] = (uint32_t)(uintptr_t)target | PTE_P | PTE_W | PTE_PS;
    asm volatile ("mov %%cr4, %%eax; or $0x10, %%eax; mov %%eax, %%cr4" ::: "eax");  /* PSE */
    asm volatile ("mov %0, %%cr3" :: "r" (pd32) : "memory");
#elif MODE == MODE_PAE
    for (unsigned i = 0; i < 16; i++)                       /* 32 MiB in 2 MiB pages */
        pd64[0][i] = ((uint64_t)i << 21) | PTE_P | PTE_W | PTE_PS;
    pd64[1][0] = (uint32_t)(uintptr_t)target | PTE_P | PTE_W | PTE_PS;   /* 1 GiB -> target */
    pd64[1][1] = ((uint32_t)(uintptr_t)target + (2 << 20)) | PTE_P | PTE_W | PTE_PS;
    for (unsigned i = 0; i < 4; i++)
        pdpt[i] = (uint32_t)(uintptr_t)pd64[i] | PTE_P;   /* PDPTEs: P only (no RW in PAE's PDPTE) */
    asm volatile ("mov %%cr4, %%eax; or $0x20, %%eax; mov %%eax, %%cr4" ::: "eax");  /* PAE */
    asm volatile ("mov %0, %%cr3" :: "r" (pdpt) : "memory");
#endif
#if MODE != MODE_NONE
    asm volatile ("mov %%cr0, %%eax; or $0x80000000, %%eax; mov %%eax, %%cr0" ::: "eax", "memory");
#endif
}

/* --------------------------------------------------------- page fault */
struct idt_gate { uint16_t lo, sel; uint8_t zero, type; uint16_t hi; };
static struct idt_gate idt[32] __attribute__((aligned(8)));
static uint64_t gdt[3] __attribute__((aligned(8))) = {
    0, 0x00cf9b000000ffffull /* 0x08 code */, 0x00cf93000000ffffull /* 0x10 data */,
};
volatile uint32_t pf_error, pf_cr2, pf_count;
extern void pf_entry(void);

/* #PF: record the error code and CR2, then step over the faulting 6-byte store */
asm (".text\n"
     "pf_entry:\n"
     "  pushl %eax\n"
     "  movl 4(%esp), %eax\n"         /* error code */
     "  movl %eax, pf_error\n"
     "  movl %cr2, %eax\n"
     "  movl %eax, pf_cr2\n"
     "  incl pf_count\n"
     "  addl $10, 8(%esp)\n"          /* EIP: past movl $imm32, abs32 (10 bytes) */
     "  popl %eax\n"
     "  addl $4, %esp\n"              /* drop the error code */
     "  iret\n");

static void idt_on(void)
{
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) g = { sizeof(gdt) - 1, (uint32_t)(uintptr_t)gdt },
        i = { sizeof(idt) - 1, (uint32_t)(uintptr_t)idt };
    asm volatile ("lgdt %0; ljmp $0x08, $1f; 1: mov $0x10, %%ax; mov %%ax, %%ds; mov %%ax, %%es; mov %%ax, %%ss"
                  :: "m" (g) : "eax", "memory");
    uint32_t a = (uint32_t)(uintptr_t)pf_entry;
    idt[14] = (struct idt_gate){ (uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16) };
    asm volatile ("lidt %0" :: "m" (i));
}

void paging32_main(void *start_info)
{
    (void)start_info;
    /* the hypercall page, at the MSR CPUID leaf 0x40000002 names */
    uint32_t a, b, c, d;
    asm volatile ("cpuid" : "=a" (a), "=b" (b), "=c" (c), "=d" (d) : "0" (0x40000002), "2" (0));
    asm volatile ("wrmsr" :: "c" (b), "a" ((uint32_t)(uintptr_t)hypercall_page), "d" (0));
    puts_("paging32: mode ");
    puts_(mode_name[MODE]);
    puts_("\n");

    idt_on();
    paging_on();
    uint32_t cr0, cr4;
    asm volatile ("mov %%cr0, %0; mov %%cr4, %1" : "=r" (cr0), "=r" (cr4));
    check("paging-mode", MODE == MODE_NONE ? !(cr0 >> 31) : (cr0 >> 31) && ((cr4 >> (MODE == MODE_PSE ? 4 : 5)) & 1));

#if MODE != MODE_NONE
    volatile uint32_t *alias = (volatile uint32_t *)(uintptr_t)(ALIAS + 0x1230);
    *alias = 0xfeedf00d;
    check("alias-write-reaches-its-frame", *(volatile uint32_t *)(target + 0x1230) == 0xfeedf00d);
    ((volatile uint8_t *)target)[0x2000] = 0x5a;
    check("frame-write-seen-through-alias", *(volatile uint8_t *)(uintptr_t)(ALIAS + 0x2000) == 0x5a);
    /* a store to an unmapped page: #PF, error code 2 (write, not present, CPL 0), CR2 the address */
    asm volatile ("movl $0x12345678, 0x80000010" ::: "memory");
    check("page-fault-delivered", pf_count == 1);
    check("page-fault-error-code", pf_error == 2);
    check("page-fault-cr2", pf_cr2 == UNMAPPED + 0x10);
    if (pf_cr2 != UNMAPPED + 0x10) {
        puts_("  cr2 was ");
        put_uint(pf_cr2);
        puts_("\n");
    }
#else
    target[0x10] = 0xa5;
    check("flat-memory", *(volatile uint8_t *)(target + 0x10) == 0xa5);
#endif
    puts_("RESULT: ");
    put_uint(passed);
    puts_(" passed, ");
    put_uint(failed);
    puts_(" failed\n");
    shutdown_(failed ? SHUTDOWN_crash : SHUTDOWN_poweroff);
}
