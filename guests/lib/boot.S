/*
 * PVH boot stub for the 64-bit sample guests.
 *
 * Entered per the Xen PVH contract: 32-bit protected mode, paging off,
 * EBX = GPA of struct hvm_start_info.  Switches straight to long mode with
 * static, pre-initialised identity page tables (first 4 GiB, 2 MiB pages), so
 * no loop runs at CPL0 before C code starts (CPL0 is emulated on PVM hosts).
 */
#include <xen/elfnote.h>

#define KERNEL_CS   0x08
#define KERNEL_DS   0x10

/* ---------------------------------------------------------------- notes */
        .section .note.Xen, "a"
        .balign 4
        .long   4, 4, XEN_ELFNOTE_PHYS32_ENTRY
        .asciz  "Xen"
        .balign 4
        .long   _start32
        .balign 4
        .long   4, 2f - 1f, XEN_ELFNOTE_GUEST_OS
        .asciz  "Xen"
        .balign 4
1:      .asciz  "xenode-sample"
2:      .balign 4

/* ---------------------------------------------------------------- entry */
        .section .text.boot, "ax"
        .code32
        .globl  _start32
_start32:
        cld
        movl    %ebx, %esi                  /* keep hvm_start_info */
        lgdt    gdt_ptr
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $0x20, %eax                 /* CR4.PAE */
        movl    %eax, %cr4
        movl    $0xc0000080, %ecx           /* EFER.LME */
        movl    $0x100, %eax
        xorl    %edx, %edx
        wrmsr
        movl    $0x80000011, %eax           /* CR0.PG | ET | PE */
        movl    %eax, %cr0
        ljmp    $KERNEL_CS, $_start64

        .code64
_start64:
        movl    $KERNEL_DS, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %eax, %fs
        movl    %eax, %gs
        movl    $boot_stack_top, %esp
        movl    %esi, %edi                  /* arg: hvm_start_info GPA */
        call    xen_guest_start
1:      hlt
        jmp     1b

/* ------------------------------------------------------ exception stubs */
        .text
        .macro  TRAP vec, has_err
        .balign 16
        .if     \has_err == 0
        pushq   $0
        .endif
        pushq   $\vec
        jmp     trap_common
        .endm

        .balign 16
        .globl  trap_stubs
trap_stubs:
        TRAP 0,0;  TRAP 1,0;  TRAP 2,0;  TRAP 3,0;  TRAP 4,0;  TRAP 5,0
        TRAP 6,0;  TRAP 7,0;  TRAP 8,1;  TRAP 9,0;  TRAP 10,1; TRAP 11,1
        TRAP 12,1; TRAP 13,1; TRAP 14,1; TRAP 15,0; TRAP 16,0; TRAP 17,1
        TRAP 18,0; TRAP 19,0; TRAP 20,0; TRAP 21,1

trap_common:
        pushq   %rax
        pushq   %rbx
        pushq   %rcx
        pushq   %rdx
        pushq   %rsi
        pushq   %rdi
        pushq   %rbp
        pushq   %r8
        pushq   %r9
        pushq   %r10
        pushq   %r11
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    %rsp, %rdi
        call    trap_handler                /* does not return */
1:      hlt
        jmp     1b

/* ----------------------------------------------------------------- data */
        .section .data, "aw"
        .balign 16
        .globl  gdt
gdt:
        .quad   0                           /* 0x00 null */
        .quad   0x00af9b000000ffff          /* 0x08 64-bit code, DPL0 */
        .quad   0x00cf93000000ffff          /* 0x10 data, DPL0 */
        .quad   0x00cffb000000ffff          /* 0x18 32-bit code, DPL3 */
        .quad   0x00cff3000000ffff          /* 0x20 data, DPL3 */
        .quad   0x00affb000000ffff          /* 0x28 64-bit code, DPL3 */
        .globl  gdt_tss
gdt_tss:
        .quad   0, 0                        /* 0x30 TSS, filled by tss_init() */
gdt_end:
        .balign 8
        .word   0
gdt_ptr:
        .word   gdt_end - gdt - 1
        .quad   gdt

/*
 * Identity map of [0, 4 GiB) with 2 MiB pages, user-accessible so that the
 * CPL3 samples can run from the same image.  Pure data: no CPL0 loop.
 */
        .section .data.pagetables, "aw"
        .balign 4096
        .globl  pml4
pml4:
        .quad   pdpt + 0x007
        .fill   511, 8, 0
pdpt:
        .quad   pd + 0x0000 + 0x007
        .quad   pd + 0x1000 + 0x007
        .quad   pd + 0x2000 + 0x007
        .quad   pd + 0x3000 + 0x007
        .fill   508, 8, 0
        .globl  pd
pd:
        .set    i, 0
        .rept   2048
        .quad   (i << 21) + 0x087           /* P | RW | US | PS */
        .set    i, i + 1
        .endr

/*
 * The hypercall page.  Filled with RET (0xc3) as real guests do, so that the
 * first byte tells whether the hypervisor wrote the stubs.
 */
        .section .hypercall_page, "awx"
        .balign 4096
        .globl  hypercall_page
hypercall_page:
        .fill   4096, 1, 0xc3

/* ---------------------------------------------------------------- stack */
        .section .bss.page_aligned, "aw", @nobits
        .balign 4096
        .globl  boot_stack_top
boot_stack:
        .skip   32768
boot_stack_top:

        .section .note.GNU-stack, "", @progbits
