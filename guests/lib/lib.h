/*
 * Tiny library shared by the xenode sample guests (64-bit PVH, freestanding).
 */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <xen/xen.h>
#include <xen/sched.h>
#include <xen/version.h>
#include <xen/memory.h>
#include <xen/vcpu.h>
#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/arch-x86/hvm/start_info.h>
#include <xen/arch-x86/cpuid.h>
#include <xen/io/console.h>

#include "hypercall.h"

/* Xen errno values (EPERM, ENOSYS...) straight from the public header. */
enum xen_errno_values {
#define XEN_ERRNO(name, value) name = value,
#include <xen/errno.h>
};

#define barrier()   asm volatile ("" ::: "memory")
#define NORETURN    __attribute__((noreturn))
#define PAGE_SIZE   4096UL
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------ boot state */
extern struct hvm_start_info *start_info;
extern const char *cmdline;
extern int xen_present;             /* Xen CPUID signature found */
extern uint32_t xen_cpuid_base;     /* 0x40000000 normally */
extern int xen_domid;               /* from CPUID base+4 ECX, -1 if absent */
extern int xen_vcpu_id;             /* from CPUID base+4 EBX, -1 if absent */

/* The sample's entry point, called in long mode at CPL0 with the console up.
 * Returning 0 powers off, anything else shuts down with SHUTDOWN_crash. */
int main(void);

/* ------------------------------------------------------------------ cpu */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    asm volatile ("rdtsc" : "=a" (lo), "=d" (hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b,
                         uint32_t *c, uint32_t *d)
{
    asm volatile ("cpuid" : "=a" (*a), "=b" (*b), "=c" (*c), "=d" (*d)
                  : "0" (leaf), "2" (sub));
}

static inline void wrmsr(uint32_t msr, uint64_t val)
{
    asm volatile ("wrmsr" :: "c" (msr), "a" ((uint32_t)val),
                  "d" ((uint32_t)(val >> 32)) : "memory");
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    asm volatile ("rdmsr" : "=a" (lo), "=d" (hi) : "c" (msr));
    return ((uint64_t)hi << 32) | lo;
}

static inline void outb(uint16_t port, uint8_t v)
{
    asm volatile ("outb %0, %1" :: "a" (v), "Nd" (port));
}

static inline void outl(uint16_t port, uint32_t v)
{
    asm volatile ("outl %0, %1" :: "a" (v), "Nd" (port));
}

/* ------------------------------------------------------------- strings */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
const char *strstr(const char *h, const char *n);

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Value of "key=value" on the command line (copied, NUL-terminated), or NULL. */
const char *cmdline_get(const char *key, char *buf, size_t size);
uint64_t cmdline_u64(const char *key, uint64_t dflt);

/* -------------------------------------------------------------- console */
/* Where printf goes: console_io (default), port 0xE9, the PV console ring, or
 * all three.  Chosen with console=io|e9|pv|all on the command line; falls back
 * to the PV ring and then 0xE9 if console_io is refused. */
enum console_sink { SINK_IO = 1, SINK_E9 = 2, SINK_PV = 4 };
extern unsigned int console_sinks;

int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void console_write(const char *s, size_t n);
long console_io_write(const char *s, size_t n);   /* returns the hypercall's rc */
void e9_write(const char *s, size_t n);
int pvcons_write(const char *s, size_t n);         /* -1 if there is no PV console */
void pvcons_flush(void);                           /* wait (yield) until consumed */
extern struct xencons_interface *pvcons_ring;
extern evtchn_port_t pvcons_port;

/* ------------------------------------------------------------------ xen */
long hvm_get_param(unsigned int index, uint64_t *value);
long hvm_set_param(unsigned int index, uint64_t value);
long evtchn_send(evtchn_port_t port);
long sched_yield(void);
NORETURN void shutdown(unsigned int reason);
const char *shutdown_reason_name(unsigned int reason);

/* Maps shared_info at a page of the image (as Mini-OS does) unless it is
 * already mapped; returns it or NULL. */
struct shared_info *shared_info_map(void);
extern struct shared_info *shared_info;
/* The vcpu_time_info the library reads time from (shared_info's vcpu_info[0]
 * or a registered vcpu_info). */
extern volatile struct vcpu_time_info *xen_time_info;
/* Xen system time in ns from the pvclock, or 0 if unknown. */
uint64_t xen_system_time(void);
/* TSC ticks -> ns with the pvclock scale, or 0 if unknown. */
uint64_t tsc_to_ns(uint64_t ticks);

/* ---------------------------------------------------------------- checks */
extern unsigned int checks_passed, checks_failed;
/* PASS <name> if got == want, else FAIL <name>: got X want Y. Returns 1 if passed. */
int check_eq(const char *name, long got, long want);
/* PASS <name> if cond, else FAIL <name>: <why>. Returns cond. */
int check_true(const char *name, int cond, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints RESULT: N passed, M failed; returns M. */
unsigned int check_summary(void);

/* ----------------------------------------------------------------- traps */
struct trap_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};
/* Optional per-sample hook: return non-zero if the trap was handled (the
 * frame may be edited, e.g. rip advanced). */
extern int (*trap_hook)(struct trap_frame *f);
void tss_init(uint64_t rsp0);
/* An interrupt gate (DPL0, IST 0) for `vector` to `entry`, which must end in
 * iretq; vectors 0-21 go to the exception stubs.  idt_load() loads the one
 * IDT on the calling vCPU (the boot vCPU's is loaded at start). */
void idt_set_gate(unsigned int vector, void (*entry)(void));
void idt_load(void);

#endif
