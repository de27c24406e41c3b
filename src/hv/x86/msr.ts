// MSRs the hypervisor answers for a guest when the CPU leaves them to it
// (Xen's guest_rdmsr/guest_wrmsr, xen/arch/x86/msr.c, and the vendor
// intercepts beside it). The local APIC's and the hypercall page's have their
// own modules; anything not here raises #GP, as Xen does for an MSR it does
// not implement.

/** MSR_AMD64_NB_CFG (AMD BKDG: the northbridge configuration; bit 46 EnableCf8ExtCfg). */
export const MSR_AMD64_NB_CFG = 0xc001001f;
/** AMD's system configuration and top-of-memory MSRs (xen/include/asm-x86/msr-index.h). */
export const MSR_K8_SYSCFG = 0xc0010010;
export const MSR_K8_TOP_MEM1 = 0xc001001a;
export const MSR_K8_TOP_MEM2 = 0xc001001d;
/** AMD's decode configuration; bit 1 makes LFENCE dispatch-serialising. */
export const MSR_AMD64_DE_CFG = 0xc0011029;
export const AMD64_DE_CFG_LFENCE_SERIALISE = 1n << 1n;
/** SYSCFG bit 18, MtrrFixDramEn: set by every AMD firmware; harmless while MtrrFixDramModEn (19) is clear. */
export const K8_MTRRFIXRANGE_DRAM_ENABLE = 1n << 18n;

export type MsrResult = { gp: true } | { gp: false; value: bigint };

/**
 * RDMSR/WRMSR of an MSR this module implements, or null when it does not.
 * NB_CFG: the domain has no northbridge, so the bit that would enable
 * extended PCI configuration access through 0xCF8 has nothing to enable; it
 * reads 0 and writes are dropped (as Xen does for PV guests and KVM for all,
 * so a guest sees the same whichever CPU runs it).
 */
export function guestMsr(_write: boolean, index: number, _value: bigint): MsrResult | null {
  switch (index) {
    case MSR_AMD64_NB_CFG:
      return { gp: false, value: 0n };
    // As Xen's svm_msr_{read,write}_intercept answers a domain that is not the hardware domain: SYSCFG
    // says MtrrFixDramEn only, TOP_MEM1/2 read 0 (no memory above them is described this way), writes are ignored.
    case MSR_K8_SYSCFG:
      return { gp: false, value: K8_MTRRFIXRANGE_DRAM_ENABLE };
    case MSR_K8_TOP_MEM1:
    case MSR_K8_TOP_MEM2:
      return { gp: false, value: 0n };
    // Xen's guest_rdmsr/guest_wrmsr: LFENCE is dispatch-serialising (true of every CPU we run guests on:
    // the software CPU executes in order), and what the OS writes is ignored.
    case MSR_AMD64_DE_CFG:
      return { gp: false, value: AMD64_DE_CFG_LFENCE_SERIALISE };
    default:
      return null;
  }
}
