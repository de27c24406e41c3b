// The hypercall page Xen writes when a guest WRMSRs its GPA to the hypercall
// MSR: 128 stubs of 32 bytes. Xen's stubs use VMCALL; ours exit to the
// hypervisor with `mov $nr,%eax; out %eax,$0x88; ret`, so no in-kernel Xen
// support is needed. Stub 23 (iret, PV only) is ud2, as in Xen.

export const HYPERCALL_PORT = 0x88;
export const HYPERCALL_STUBS = 128;
export const HYPERCALL_STUB_SIZE = 32;
const IRET = 23;

export function fillHypercallPage(page: Uint8Array): void {
  page.fill(0xcc, 0, HYPERCALL_STUBS * HYPERCALL_STUB_SIZE); // int3 padding between stubs
  for (let nr = 0; nr < HYPERCALL_STUBS; nr++) {
    const o = nr * HYPERCALL_STUB_SIZE;
    if (nr === IRET) {
      page[o] = 0x0f;
      page[o + 1] = 0x0b;
      continue;
    }
    page[o] = 0xb8; // mov imm32, %eax
    page[o + 1] = nr & 0xff;
    page[o + 2] = (nr >> 8) & 0xff;
    page[o + 3] = 0;
    page[o + 4] = 0;
    page[o + 5] = 0xe7; // out %eax, imm8
    page[o + 6] = HYPERCALL_PORT;
    page[o + 7] = 0xc3; // ret
  }
}
