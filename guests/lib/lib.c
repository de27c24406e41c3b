/*
 * Guest library: start-up after the boot stub, Xen detection, hypercall page,
 * console (console_io, port 0xE9, PV console ring), printf, shutdown, time,
 * PASS/FAIL checks, exception reporting.
 *
 * Everything here runs at CPL0, which PVM hosts emulate at ~1 us per
 * instruction: no big loops, no memsets of large areas.
 */
#include "lib.h"

struct hvm_start_info *start_info;
const char *cmdline = "";
int xen_present;
uint32_t xen_cpuid_base;
int xen_domid = -1;
int xen_vcpu_id = -1;
unsigned int console_sinks = SINK_IO;
struct xencons_interface *pvcons_ring;
evtchn_port_t pvcons_port;
struct shared_info *shared_info;
volatile struct vcpu_time_info *xen_time_info;
unsigned int checks_passed, checks_failed;
int (*trap_hook)(struct trap_frame *f);

/* A page of the image that shared_info is mapped over (displacing its RAM). */
static uint8_t shared_info_page[4096] __attribute__((aligned(4096), section(".bss.page_aligned")));

#define QEMU_DEBUG_EXIT_PORT 0xf4

/* ------------------------------------------------------------- strings */
void *memset(void *d, int c, size_t n)
{
    void *r = d;
    asm volatile ("rep stosb" : "+D" (d), "+c" (n) : "a" (c) : "memory");
    return r;
}

void *memcpy(void *d, const void *s, size_t n)
{
    void *r = d;
    asm volatile ("rep movsb" : "+D" (d), "+S" (s), "+c" (n) :: "memory");
    return r;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] - y[i];
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i])
            return (uint8_t)a[i] - (uint8_t)b[i];
        if (!a[i])
            return 0;
    }
    return 0;
}

const char *strstr(const char *h, const char *n)
{
    size_t l = strlen(n);
    for (; *h; h++)
        if (!strncmp(h, n, l))
            return h;
    return l ? NULL : h;
}

/* ------------------------------------------------------------- printf */
struct outbuf { char *p; size_t left; int n; };

static void put(struct outbuf *o, char c)
{
    if (o->left > 1) {
        *o->p++ = c;
        o->left--;
    }
    o->n++;
}

static void put_num(struct outbuf *o, uint64_t v, unsigned base, int neg,
                    int width, char pad, int left)
{
    char tmp[24];
    int i = 0;
    do {
        unsigned d = v % base;
        tmp[i++] = d < 10 ? '0' + d : 'a' + d - 10;
        v /= base;
    } while (v);
    int len = i + neg;
    if (neg && pad == '0')
        put(o, '-');
    if (!left)
        for (; len < width; len++)
            put(o, pad);
    if (neg && pad != '0')
        put(o, '-');
    while (i)
        put(o, tmp[--i]);
    if (left)
        for (; len < width; len++)
            put(o, ' ');
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct outbuf o = { buf, size, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        fmt++;
        int left = 0, width = 0, lng = 0;
        char pad = ' ';
        if (*fmt == '-') { left = 1; fmt++; }
        if (*fmt == '0') { pad = '0'; fmt++; }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') { lng = 1; fmt++; }
        switch (*fmt) {
        case 'd': case 'i': {
            int64_t v = lng ? va_arg(ap, long) : va_arg(ap, int);
            put_num(&o, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, v < 0, width, pad, left);
            break;
        }
        case 'u':
            put_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int),
                    10, 0, width, pad, left);
            break;
        case 'x':
            put_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int),
                    16, 0, width, pad, left);
            break;
        case 'p':
            put(&o, '0'); put(&o, 'x');
            put_num(&o, (uintptr_t)va_arg(ap, void *), 16, 0, width, pad, left);
            break;
        case 'c':
            put(&o, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int len = strlen(s);
            if (!left)
                for (; len < width; len++)
                    put(&o, ' ');
            while (*s)
                put(&o, *s++);
            if (left)
                for (; len < width; len++)
                    put(&o, ' ');
            break;
        }
        case '%':
            put(&o, '%');
            break;
        default:
            put(&o, '%');
            put(&o, *fmt);
            break;
        }
        if (!*fmt)
            break;
    }
    if (size)
        *o.p = 0;
    return o.n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int printf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 1)
        n = sizeof(buf) - 1;
    console_write(buf, n);
    return n;
}

/* ------------------------------------------------------------- cmdline */
const char *cmdline_get(const char *key, char *buf, size_t size)
{
    size_t kl = strlen(key);
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            p += kl + 1;
            size_t i = 0;
            while (p[i] && p[i] != ' ' && i + 1 < size) {
                buf[i] = p[i];
                i++;
            }
            buf[i] = 0;
            return buf;
        }
        while (*p && *p != ' ')
            p++;
    }
    return NULL;
}

uint64_t cmdline_u64(const char *key, uint64_t dflt)
{
    char buf[24];
    const char *v = cmdline_get(key, buf, sizeof(buf));
    if (!v || !*v)
        return dflt;
    uint64_t r = 0;
    unsigned base = 10;
    if (v[0] == '0' && v[1] == 'x') {
        base = 16;
        v += 2;
    }
    for (; *v; v++) {
        unsigned d;
        if (*v >= '0' && *v <= '9') d = *v - '0';
        else if (base == 16 && *v >= 'a' && *v <= 'f') d = *v - 'a' + 10;
        else return dflt;
        r = r * base + d;
    }
    return r;
}

/* -------------------------------------------------------------- console */
void e9_write(const char *s, size_t n)
{
    asm volatile ("rep outsb" : "+S" (s), "+c" (n) : "d" (0xe9) : "memory");
}

long console_io_write(const char *s, size_t n)
{
    return HYPERVISOR_console_io(CONSOLEIO_write, n, s);
}

int pvcons_write(const char *s, size_t n)
{
    volatile struct xencons_interface *c = pvcons_ring;
    if (!c)
        return -1;
    XENCONS_RING_IDX prod = c->out_prod;
    size_t i = 0;
    while (i < n) {
        /* Never overrun the consumer: yield while the ring is full. */
        while (prod - c->out_cons >= sizeof(c->out)) {
            c->out_prod = prod;
            evtchn_send(pvcons_port);
            sched_yield();
        }
        c->out[MASK_XENCONS_IDX(prod, c->out)] = s[i++];
        prod++;
    }
    barrier();                 /* data before the index (x86: stores ordered) */
    c->out_prod = prod;
    evtchn_send(pvcons_port);
    return 0;
}

void pvcons_flush(void)
{
    volatile struct xencons_interface *c = pvcons_ring;
    if (!c)
        return;
    for (unsigned long i = 0; c->out_cons != c->out_prod; i++) {
        if (i == 200000) {
            static const char m[] = "pvcons: ring not consumed, giving up\n";
            e9_write(m, sizeof(m) - 1);
            return;
        }
        sched_yield();
    }
}

void console_write(const char *s, size_t n)
{
    unsigned int sinks = console_sinks;
    if (sinks & SINK_IO) {
        if (console_io_write(s, n) < 0) {
            /* Not a console domain: fall back for good. */
            unsigned int fallback = pvcons_ring ? SINK_PV : SINK_E9;
            sinks = (sinks & ~SINK_IO) | fallback;
            console_sinks = (console_sinks & ~SINK_IO) | fallback;
        }
    }
    if (sinks & SINK_PV)
        if (pvcons_write(s, n) < 0)
            sinks |= SINK_E9;
    if (sinks & SINK_E9)
        e9_write(s, n);
}

static void console_init(void)
{
    uint64_t pfn = 0, port = 0;
    if (hvm_get_param(HVM_PARAM_CONSOLE_PFN, &pfn) == 0 &&
        hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &port) == 0 &&
        pfn && pfn < (1UL << 20)) {      /* the identity map covers 4 GiB */
        pvcons_ring = (struct xencons_interface *)(uintptr_t)(pfn << 12);
        pvcons_port = port;
    }
    char buf[8];
    const char *v = cmdline_get("console", buf, sizeof(buf));
    if (v) {
        if (!strncmp(v, "io", 3)) console_sinks = SINK_IO;
        else if (!strncmp(v, "e9", 3)) console_sinks = SINK_E9;
        else if (!strncmp(v, "pv", 3)) console_sinks = SINK_PV;
        else if (!strncmp(v, "all", 4)) console_sinks = SINK_IO | SINK_E9 | SINK_PV;
    }
}

/* ------------------------------------------------------------------ xen */
long hvm_get_param(unsigned int index, uint64_t *value)
{
    struct xen_hvm_param p = { .domid = DOMID_SELF, .index = index };
    long rc = HYPERVISOR_hvm_op(HVMOP_get_param, &p);
    if (rc == 0)
        *value = p.value;
    return rc;
}

long hvm_set_param(unsigned int index, uint64_t value)
{
    struct xen_hvm_param p = { .domid = DOMID_SELF, .index = index, .value = value };
    return HYPERVISOR_hvm_op(HVMOP_set_param, &p);
}

long evtchn_send(evtchn_port_t port)
{
    struct evtchn_send s = { .port = port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_send, &s);
}

long sched_yield(void)
{
    return HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
}

long hypercall_raw(unsigned int nr, long a1, long a2, long a3, long a4, long a5)
{
    long res;
    register long r10 asm("r10") = a4;
    register long r8 asm("r8") = a5;
    void *stub = hypercall_page + 32 * (nr & 127);
    asm volatile ("call *%[stub]"
                  : "=a" (res), "+D" (a1), "+S" (a2), "+d" (a3), "+r" (r10), "+r" (r8)
                  : [stub] "r" (stub)
                  : "memory", "rcx", "r9", "r11");
    return res;
}

const char *shutdown_reason_name(unsigned int reason)
{
    static const char *const names[] = {
        "poweroff", "reboot", "suspend", "crash", "watchdog", "soft_reset",
    };
    return reason < ARRAY_SIZE(names) ? names[reason] : "unknown";
}

static NORETURN void halt_forever(void)
{
    for (;;)
        asm volatile ("cli; hlt");
}

NORETURN void shutdown(unsigned int reason)
{
    if (!xen_present) {
        /* QEMU isa-debug-exit: the process exits with (value << 1) | 1. */
        outl(QEMU_DEBUG_EXIT_PORT, reason);
        halt_forever();
    }
    pvcons_flush();
    struct sched_shutdown s = { .reason = reason };
    long rc = HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
    printf("shutdown(%s) returned %ld\n", shutdown_reason_name(reason), rc);
    pvcons_flush();
    halt_forever();
}

struct shared_info *shared_info_map(void)
{
    if (shared_info)
        return shared_info;
    struct xen_add_to_physmap xatp = {
        .domid = DOMID_SELF,
        .space = XENMAPSPACE_shared_info,
        .idx = 0,
        .gpfn = (uintptr_t)shared_info_page >> 12,
    };
    if (HYPERVISOR_memory_op(XENMEM_add_to_physmap, &xatp) != 0)
        return NULL;
    shared_info = (struct shared_info *)shared_info_page;
    if (!xen_time_info)
        xen_time_info = &shared_info->vcpu_info[0].time;
    return shared_info;
}

static uint64_t scale_delta(uint64_t delta, uint32_t mul, int8_t shift)
{
    if (shift < 0)
        delta >>= -shift;
    else
        delta <<= shift;
    return (uint64_t)(((unsigned __int128)delta * mul) >> 32);
}

uint64_t xen_system_time(void)
{
    volatile struct vcpu_time_info *t = xen_time_info;
    if (!t)
        return 0;
    uint32_t ver, mul;
    uint64_t ts, st, now;
    int8_t shift;
    do {
        ver = t->version;
        barrier();
        ts = t->tsc_timestamp;
        st = t->system_time;
        mul = t->tsc_to_system_mul;
        shift = t->tsc_shift;
        now = rdtsc();
        barrier();
    } while ((ver & 1) || ver != t->version);
    return st + scale_delta(now - ts, mul, shift);
}

uint64_t tsc_to_ns(uint64_t ticks)
{
    volatile struct vcpu_time_info *t = xen_time_info;
    if (!t || !t->tsc_to_system_mul)
        return 0;
    return scale_delta(ticks, t->tsc_to_system_mul, t->tsc_shift);
}

/* ---------------------------------------------------------------- checks */
static void print_val(char *buf, size_t n, long v)
{
    if (v > -1000000 && v < 1000000)
        snprintf(buf, n, "%ld", v);
    else
        snprintf(buf, n, "0x%lx", (unsigned long)v);
}

int check_eq(const char *name, long got, long want)
{
    if (got == want) {
        checks_passed++;
        printf("PASS %s\n", name);
        return 1;
    }
    char g[24], w[24];
    print_val(g, sizeof(g), got);
    print_val(w, sizeof(w), want);
    checks_failed++;
    printf("FAIL %s: got %s want %s\n", name, g, w);
    return 0;
}

int check_true(const char *name, int cond, const char *fmt, ...)
{
    if (cond) {
        checks_passed++;
        printf("PASS %s\n", name);
        return 1;
    }
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    checks_failed++;
    printf("FAIL %s: %s\n", name, why);
    return 0;
}

unsigned int check_summary(void)
{
    printf("RESULT: %u passed, %u failed\n", checks_passed, checks_failed);
    return checks_failed;
}

/* ----------------------------------------------------------------- traps */
struct idt_entry {
    uint16_t off_lo, sel;
    uint8_t ist, type;
    uint16_t off_mid;
    uint32_t off_hi, zero;
};
/* All 256 vectors (bss, zeroed: not present) so samples can add interrupt gates. */
static struct idt_entry idt[256] __attribute__((aligned(16)));
#define NR_EXCEPTION_STUBS 22
extern uint8_t trap_stubs[];
extern uint64_t gdt_tss[2];

void idt_set_gate(unsigned int vector, void (*entry)(void))
{
    uint64_t a = (uintptr_t)entry;
    idt[vector & 0xff] = (struct idt_entry){ (uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16),
                                             (uint32_t)(a >> 32), 0 };
}

void idt_load(void)
{
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) p = {
        sizeof(idt) - 1, (uintptr_t)idt };
    asm volatile ("lidt %0" :: "m" (p));
}

static void idt_init(void)
{
    for (unsigned i = 0; i < NR_EXCEPTION_STUBS; i++)
        idt_set_gate(i, (void (*)(void))(trap_stubs + 16 * i));
    idt_load();
}

static struct {
    uint32_t rsvd0;
    uint64_t rsp[3];
    uint64_t rsvd1;
    uint64_t ist[7];
    uint64_t rsvd2;
    uint16_t rsvd3, iomap;
} __attribute__((packed, aligned(16))) tss;

void tss_init(uint64_t rsp0)
{
    uint64_t base = (uintptr_t)&tss;
    uint64_t limit = sizeof(tss) - 1;
    tss.rsp[0] = rsp0;
    tss.iomap = sizeof(tss);
    gdt_tss[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) |
                 (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt_tss[1] = base >> 32;
    asm volatile ("ltr %w0" :: "r" (0x30));
}

void trap_handler(struct trap_frame *f)
{
    if (trap_hook && trap_hook(f))
        asm volatile ("mov %0, %%rsp; pop %%r15; pop %%r14; pop %%r13; pop %%r12;"
                      "pop %%r11; pop %%r10; pop %%r9; pop %%r8; pop %%rbp; pop %%rdi;"
                      "pop %%rsi; pop %%rdx; pop %%rcx; pop %%rbx; pop %%rax;"
                      "add $16, %%rsp; iretq" :: "r" (f) : "memory");
    char buf[160];
    int n = snprintf(buf, sizeof(buf),
                     "FATAL: exception %lu error 0x%lx at rip 0x%lx cs 0x%lx rsp 0x%lx\n",
                     f->vector, f->error, f->rip, f->cs, f->rsp);
    if (xen_present)
        console_write(buf, n);
    else
        e9_write(buf, n);
    shutdown(SHUTDOWN_crash);
}

/* --------------------------------------------------------------- start */
static int xen_detect(void)
{
    uint32_t a, b, c, d;
    for (uint32_t base = 0x40000000; base < 0x40010000; base += 0x100) {
        cpuid(base, 0, &a, &b, &c, &d);
        if (b == XEN_CPUID_SIGNATURE_EBX && c == XEN_CPUID_SIGNATURE_ECX &&
            d == XEN_CPUID_SIGNATURE_EDX && a - base >= 2) {
            xen_cpuid_base = base;
            return 1;
        }
    }
    return 0;
}

static void hypercall_page_init(void)
{
    uint32_t a, msr, c, d;
    cpuid(xen_cpuid_base + 2, 0, &a, &msr, &c, &d);
    wrmsr(msr, (uintptr_t)hypercall_page);
    if (hypercall_page[0] == 0xc3) {
        static const char m[] = "FATAL: hypercall page not filled by the hypervisor\n";
        e9_write(m, sizeof(m) - 1);
        /* Cannot call Xen: fault with no IDT, i.e. triple fault. */
        struct { uint16_t l; uint64_t b; } __attribute__((packed)) z = { 0, 0 };
        asm volatile ("lidt %0; ud2" :: "m" (z));
    }
    if (a - xen_cpuid_base >= 4) {
        cpuid(xen_cpuid_base + 4, 0, &a, &msr, &c, &d);
        if (a & XEN_HVM_CPUID_VCPU_ID_PRESENT)
            xen_vcpu_id = msr;
        if (a & XEN_HVM_CPUID_DOMID_PRESENT)
            xen_domid = c;
    }
}

void xen_guest_start(uint32_t start_info_gpa)
{
    start_info = (struct hvm_start_info *)(uintptr_t)start_info_gpa;
    if (start_info && start_info->magic == XEN_HVM_START_MAGIC_VALUE &&
        start_info->cmdline_paddr)
        cmdline = (const char *)(uintptr_t)start_info->cmdline_paddr;
    idt_init();
    xen_present = xen_detect();
    if (!xen_present) {
        static const char m[] = "no Xen hypervisor\n";
        e9_write(m, sizeof(m) - 1);
        char buf[16];
        if (!cmdline_get("xen", buf, sizeof(buf)) || strncmp(buf, "optional", 9))
            shutdown(SHUTDOWN_poweroff);          /* QEMU: exit status 1 */
        console_sinks = SINK_E9;
    } else {
        hypercall_page_init();
        console_init();
    }
    int rc = main();
    shutdown(rc ? SHUTDOWN_crash : SHUTDOWN_poweroff);
}
