/*
 * minimal: the smallest PVH guest, for boot-latency comparisons.
 *
 * 32-bit PVH entry, paging never enabled.  Writes the line "M\n" to port
 * 0xE9: a whole line, so that a host that passes 0xE9 on a line at a time
 * (xenode) and one that passes each byte at once (QEMU's -debugcon) show the
 * same event, the guest's first line, at the same point of the guest.  If CPUID
 * leaf 0x40000000 says "XenVMMXenVMM" it installs the hypercall page (MSR from
 * leaf 0x40000002) and calls SCHEDOP_shutdown(SHUTDOWN_poweroff) with the
 * 32-bit hypercall ABI (EBX ECX).  Otherwise (e.g. QEMU microvm) it writes 0
 * to port 0xf4 (isa-debug-exit: QEMU exits with status 1).
 */
#include <xen/elfnote.h>

#define HYPERVISOR_sched_op 29
#define SCHEDOP_shutdown    2
#define SHUTDOWN_poweroff   0

        .section .note.Xen, "a"
        .balign 4
        .long   4, 4, XEN_ELFNOTE_PHYS32_ENTRY
        .asciz  "Xen"
        .balign 4
        .long   _start
        .balign 4

        .text
        .code32
        .globl  _start
_start:
        movb    $'M', %al
        outb    %al, $0xe9
        movb    $'\n', %al
        outb    %al, $0xe9
        movl    $stack_top, %esp
        movl    $0x40000000, %eax
        cpuid
        cmpl    $0x566e6558, %ebx           /* "XenV" */
        jne     no_xen
        cmpl    $0x65584d4d, %ecx           /* "MMXe" */
        jne     no_xen
        cmpl    $0x4d4d566e, %edx           /* "nVMM" */
        jne     no_xen
        movl    $0x40000002, %eax
        cpuid
        movl    %ebx, %ecx                  /* hypercall page MSR */
        movl    $hypercall_page, %eax
        xorl    %edx, %edx
        wrmsr
        movl    $SCHEDOP_shutdown, %ebx
        movl    $shutdown_arg, %ecx
        call    hypercall_page + HYPERVISOR_sched_op * 32
no_xen:
        xorl    %eax, %eax
        outl    %eax, $0xf4
1:      hlt
        jmp     1b

        .data
        .balign 4
shutdown_arg:
        .long   SHUTDOWN_poweroff           /* struct sched_shutdown */

        /* RET-filled until the hypervisor writes the stubs: a missing page
         * returns straight to the isa-debug-exit path. */
        .balign 4096
hypercall_page:
        .fill   4096, 1, 0xc3

        .bss
        .balign 16
        .skip   256
stack_top:

        .section .note.GNU-stack, "", @progbits
