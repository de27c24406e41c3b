// The CPUID a Xen HVM/PVH guest sees: the host's supported leaves with KVM's
// own hypervisor leaves removed and Xen's put at 0x40000000
// (public/arch-x86/cpuid.h), carrying the domid and vCPU id.

import type { CpuidEntry } from '../../kvm/kvm.js';
import { XEN_MAJOR, XEN_MINOR } from '../abi/xen.js';
import { apicIdOfVcpu } from './vlapic.js';

export const XEN_CPUID_BASE = 0x40000000;
/** The hypercall-page MSR named in leaf base+2 (Solo5 always writes this one). */
export const XEN_HYPERCALL_MSR = 0x40000000;

// public/arch-x86/cpuid.h: leaf 4 EAX flags
export const XEN_HVM_CPUID_APIC_ACCESS_VIRT = 1 << 0;
export const XEN_HVM_CPUID_X2APIC_VIRT = 1 << 1;
export const XEN_HVM_CPUID_IOMMU_MAPPINGS = 1 << 2;
export const XEN_HVM_CPUID_VCPU_ID_PRESENT = 1 << 3;
export const XEN_HVM_CPUID_DOMID_PRESENT = 1 << 4;
export const XEN_HVM_CPUID_UPCALL_VECTOR = 1 << 6;

const sig = (s: string): number => s.charCodeAt(0) | (s.charCodeAt(1) << 8) | (s.charCodeAt(2) << 16) | (s.charCodeAt(3) << 24);

const CPUID1_ECX_HYPERVISOR = 1 << 31;
const CPUID1_ECX_X2APIC = 1 << 21;
const CPUID1_ECX_TSC_DEADLINE = 1 << 24;
const CPUID1_ECX_MONITOR = 1 << 3;
const CPUID1_EDX_APIC = 1 << 9;

export interface XenCpuidOptions {
  domid: number;
  vcpuId: number;
  tscKhz: number;
}

export function xenCpuid(host: CpuidEntry[], o: XenCpuidOptions): CpuidEntry[] {
  const out = host.filter((e) => e.function < 0x40000000 || e.function > 0x400000ff).map((e) => ({ ...e }));
  for (const e of out) {
    if (e.function === 1) {
      e.ecx |= CPUID1_ECX_HYPERVISOR;
      // The local APIC model (vlapic.ts) offers x2APIC and the TSC-deadline timer, whatever the host has.
      e.ecx |= CPUID1_ECX_X2APIC | CPUID1_ECX_TSC_DEADLINE;
      // Xen never offers MONITOR/MWAIT to a guest (the software CPU's model has it): an idle or
      // offlined CPU then halts, which the hypervisor sees, instead of waiting in MWAIT.
      e.ecx &= ~CPUID1_ECX_MONITOR;
      e.edx |= CPUID1_EDX_APIC;
      // initial APIC ID (bits 31:24 of EBX), the local APIC's
      e.ebx = (e.ebx & 0x00ffffff) | ((apicIdOfVcpu(o.vcpuId) & 0xff) << 24);
    }
    if (e.function === 5) { e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0; } // the MONITOR leaf, empty as on Xen
  }
  const leaf = (fn: number, eax: number, ebx = 0, ecx = 0, edx = 0, index = 0, flags = 0): CpuidEntry => ({ function: fn, index, flags, eax, ebx, ecx, edx });
  const B = XEN_CPUID_BASE;
  out.push(
    leaf(B, B + 4, sig('XenV'), sig('MMXe'), sig('nVMM')),
    leaf(B + 1, (XEN_MAJOR << 16) | XEN_MINOR),
    leaf(B + 2, 1, XEN_HYPERCALL_MSR, 0, 0),
    // leaf 3 (time): subleaf 0 flags/mode/guest kHz, 1 offset/mul/shift, 2 host kHz; index-significant
    leaf(B + 3, 0, 0, o.tscKhz, 0, 0, 1),
    leaf(B + 3, 0, 0, 0, 0, 1, 1),
    leaf(B + 3, o.tscKhz, 0, 0, 0, 2, 1),
    leaf(B + 4, XEN_HVM_CPUID_IOMMU_MAPPINGS | XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT | XEN_HVM_CPUID_UPCALL_VECTOR,
      o.vcpuId, o.domid, 0, 0, 1),
  );
  return out;
}

/**
 * The leaves a guest may be shown when its vCPU runs on either of two CPUs
 * (KVM and the software CPU): `a`'s leaves with every feature bit that `b`
 * lacks cleared (leaves 1, 7, 0xd and 0x80000001; the rest describe `a`), so
 * the guest never uses an instruction one of them cannot run. The XSAVE size
 * leaf follows the components left.
 */
export function commonCpuid(a: CpuidEntry[], b: CpuidEntry[]): CpuidEntry[] {
  const find = (fn: number, index: number) => b.find((e) => e.function === fn && e.index === index);
  const out = a.map((e) => ({ ...e }));
  for (const e of out) {
    const o = find(e.function, e.index);
    if (e.function === 1) {
      e.ecx &= o?.ecx ?? 0;
      e.edx &= o?.edx ?? 0;
    } else if (e.function === 7 && e.index === 0) {
      e.ebx &= o?.ebx ?? 0;
      e.ecx &= o?.ecx ?? 0;
      e.edx &= o?.edx ?? 0;
    } else if (e.function === 7) {
      e.eax &= o?.eax ?? 0;
      e.ebx &= o?.ebx ?? 0;
      e.ecx &= o?.ecx ?? 0;
      e.edx &= o?.edx ?? 0;
    } else if (e.function === 0x80000001) {
      e.ecx &= o?.ecx ?? 0;
      e.edx &= o?.edx ?? 0;
    } else if (e.function === 0xd && e.index === 0) {
      e.eax &= o?.eax ?? 0;
      e.edx &= o?.edx ?? 0;
      // legacy area + header, then AVX's 256 bytes at 576 (the standard layout)
      e.ecx = e.eax & 4 ? 832 : 576;
    } else if (e.function === 0xd && e.index === 1) {
      e.eax &= o?.eax ?? 0;
    } else if (e.function === 0xd && e.index >= 2) {
      // a state component neither both have is not offered
      const kept = out.find((x) => x.function === 0xd && x.index === 0);
      if (kept && !((kept.eax >>> e.index) & 1)) { e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0; }
    }
  }
  // AVX needs XSAVE's AVX component on both
  const leaf1 = out.find((e) => e.function === 1);
  const xs = out.find((e) => e.function === 0xd && e.index === 0);
  if (leaf1 && xs && !(xs.eax & 4)) leaf1.ecx &= ~((1 << 28) | (1 << 12)); // AVX, FMA
  if (xs) xs.ebx = Math.min(xs.ebx, xs.ecx);
  for (const e of out) { e.eax >>>= 0; e.ebx >>>= 0; e.ecx >>>= 0; e.edx >>>= 0; }
  return out;
}
