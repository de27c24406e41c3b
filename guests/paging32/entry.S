/*
 * Entry of the 32-bit paging guests (paging32.c): the PVH note and a stack.
 * Entered in 32-bit protected mode with paging off, EBX = hvm_start_info.
 */
#include <xen/elfnote.h>

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
        cld
        movl    $stack_top, %esp
        pushl   %ebx
        call    paging32_main
1:      hlt
        jmp     1b

        /* RET-filled until the hypervisor writes the stubs */
        .section .hypercall_page, "awx"
        .balign 4096
        .globl  hypercall_page
hypercall_page:
        .fill   4096, 1, 0xc3

        .bss
        .balign 16
        .skip   8192
stack_top:

        .section .note.GNU-stack, "", @progbits
