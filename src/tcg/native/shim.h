/* What the shim's pieces (msr_exit.c, code_pages.c) share. */
#ifndef XENODE_SHIM_H
#define XENODE_SHIM_H
#include <stdint.h>

/* The run on this thread (xenode_run): its engine, and QEMU's CPUState once inside cpu_exec. */
extern __thread void *xenode_cur_uc, *xenode_cur_cpu;

/* code_pages.c: an engine's first run (before it starts) and its end. */
void xenode_code_pages_begin(void *uc);
void xenode_code_pages_cpu(void *uc, void *cpu);
void xenode_code_pages_init(void **fns);

/* atomics.c: QEMU's cpu_exec with the exclusive steps it asks for (EXCP_ATOMIC) done. */
int xenode_atomics_exec(int (*real)(void *uc, void *cpu), void *uc, void *cpu);
#endif
