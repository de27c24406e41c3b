// The initial state of a secondary vCPU of an HVM/PVH guest
// (VCPUOP_initialise's struct vcpu_hvm_context, public/hvm/hvm_vcpu.h),
// checked and turned into the register state KVM takes, as Xen's
// arch_set_info_hvm_guest does: 32-bit mode takes every segment from the
// caller; 64-bit mode starts directly in long mode with flat segments.

import { struct } from '../abi/layout.js';
import { EINVAL, XenError } from '../errno.js';
import type { PvhEntryState, SegmentState } from './pvh.js';

export const VCPU_HVM_MODE_32B = 0;
export const VCPU_HVM_MODE_64B = 1;

/** struct vcpu_hvm_context: mode u32, pad u32, then the cpu_regs union at 8 (public/hvm/hvm_vcpu.h). */
export const VcpuHvmContextHeader = struct('vcpu_hvm_context', 128, { mode: [0, 'u32'] });
export const CPU_REGS_OFFSET = 8;

/** struct vcpu_hvm_x86_32 (public/hvm/hvm_vcpu.h), 120 bytes. */
export const VcpuHvmX86_32 = struct('vcpu_hvm_x86_32', 120, {
  eax: [0, 'u32'], ecx: [4, 'u32'], edx: [8, 'u32'], ebx: [12, 'u32'], esp: [16, 'u32'], ebp: [20, 'u32'], esi: [24, 'u32'], edi: [28, 'u32'],
  eip: [32, 'u32'], eflags: [36, 'u32'], cr0: [40, 'u32'], cr3: [44, 'u32'], cr4: [48, 'u32'], efer: [56, 'u64'],
  cs_base: [64, 'u32'], ds_base: [68, 'u32'], ss_base: [72, 'u32'], es_base: [76, 'u32'], tr_base: [80, 'u32'],
  cs_limit: [84, 'u32'], ds_limit: [88, 'u32'], ss_limit: [92, 'u32'], es_limit: [96, 'u32'], tr_limit: [100, 'u32'],
  cs_ar: [104, 'u16'], ds_ar: [106, 'u16'], ss_ar: [108, 'u16'], es_ar: [110, 'u16'], tr_ar: [112, 'u16'],
});

/** struct vcpu_hvm_x86_64 (public/hvm/hvm_vcpu.h), 112 bytes. */
export const VcpuHvmX86_64 = struct('vcpu_hvm_x86_64', 112, {
  rax: [0, 'u64'], rcx: [8, 'u64'], rdx: [16, 'u64'], rbx: [24, 'u64'], rsp: [32, 'u64'], rbp: [40, 'u64'], rsi: [48, 'u64'], rdi: [56, 'u64'],
  rip: [64, 'u64'], rflags: [72, 'u64'], cr0: [80, 'u64'], cr3: [88, 'u64'], cr4: [96, 'u64'], efer: [104, 'u64'],
});

const CR0_PE = 1n << 0n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const EFLAGS_FIXED = 2n;
/** CR4 bits a guest may set here (VME..PCIDE, OSXSAVE, SMEP/SMAP): anything else is refused. */
const CR4_VALID = 0x7ffffn | (1n << 20n) | (1n << 21n) | (1n << 22n);
const EFER_VALID = (1n << 0n) | EFER_LME | EFER_LMA | (1n << 11n) /* NXE */;

/** Segment access rights as Xen packs them (segment_register.attr): type, s, dpl, p, avl, l, db, g. */
export function segmentFromAr(base: number, limit: number, ar: number): SegmentState {
  const g = (ar >> 11) & 1;
  const present = (ar >> 7) & 1;
  return {
    base, limit: g ? ((limit << 12) | 0xfff) >>> 0 : limit >>> 0, selector: 0,
    type: ar & 0xf, s: (ar >> 4) & 1, dpl: (ar >> 5) & 3, present, avl: (ar >> 8) & 1, l: (ar >> 9) & 1, db: (ar >> 10) & 1, g,
    unusable: present ? 0 : 1,
  };
}

const NULL_SEG: SegmentState = { base: 0, limit: 0, selector: 0, type: 0, present: 0, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 1 };
const LDT_NONE: SegmentState = { ...NULL_SEG, type: 0x2 };

function bad(why: string): never {
  throw new XenError(EINVAL, `vcpu_hvm_context: ${why}`);
}

function checkControl(cr0: bigint, cr4: bigint, efer: bigint): bigint {
  if ((cr0 & CR0_PG) && !(cr0 & CR0_PE)) bad('CR0.PG without CR0.PE');
  if (cr4 & ~CR4_VALID) bad(`CR4 0x${cr4.toString(16)} has reserved bits`);
  if (efer & ~EFER_VALID) bad(`EFER 0x${efer.toString(16)} has reserved bits`);
  // LMA follows LME with paging on, as the hardware would set it.
  let e = efer & ~EFER_LMA;
  if ((efer & EFER_LME) && (cr0 & CR0_PG)) {
    if (!(cr4 & CR4_PAE)) bad('long mode without CR4.PAE');
    e |= EFER_LMA;
  }
  return e;
}

/**
 * Decodes a vcpu_hvm_context (128 bytes) into the entry state for KVM, or
 * throws XenError(EINVAL) for an unknown mode or an impossible state.
 */
export function hvmContextToEntryState(bytes: Uint8Array): PvhEntryState {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const mode = VcpuHvmContextHeader.get(dv, 0, 'mode') as number;
  const regsAt = CPU_REGS_OFFSET;
  if (mode === VCPU_HVM_MODE_32B) {
    const r = VcpuHvmX86_32.read(dv, regsAt);
    const efer = checkControl(BigInt(r.cr0!), BigInt(r.cr4!), BigInt(r.efer!));
    const cs = segmentFromAr(r.cs_base!, r.cs_limit!, r.cs_ar!);
    const ss = segmentFromAr(r.ss_base!, r.ss_limit!, r.ss_ar!);
    const ds = segmentFromAr(r.ds_base!, r.ds_limit!, r.ds_ar!);
    const es = segmentFromAr(r.es_base!, r.es_limit!, r.es_ar!);
    const tr = segmentFromAr(r.tr_base!, r.tr_limit!, r.tr_ar!);
    // Xen's sanity checks: a usable code segment holding EIP, SS at CS's privilege, a present busy TSS.
    if (!cs.present || !cs.s || !(cs.type & 0x8)) bad('CS is not a present code segment');
    if (r.eip! > cs.limit) bad(`EIP 0x${r.eip!.toString(16)} beyond the CS limit`);
    if (ss.present && (ss.dpl !== cs.dpl || !ss.s || (ss.type & 0xa) !== 0x2)) bad('SS is not a writable data segment at CS\'s privilege');
    for (const [n, s] of [['DS', ds], ['ES', es]] as const) if (s.present && !s.s) bad(`${n} is a system segment`);
    if (!tr.present || tr.s || (tr.type !== 0xb && tr.type !== 0x3)) bad('TR is not a present busy TSS');
    if (efer & EFER_LMA) cs.l = 0; // compatibility mode: the 32-bit structure never starts 64-bit code
    return {
      regs: {
        rax: BigInt(r.eax!), rbx: BigInt(r.ebx!), rcx: BigInt(r.ecx!), rdx: BigInt(r.edx!), rsi: BigInt(r.esi!), rdi: BigInt(r.edi!),
        rsp: BigInt(r.esp!), rbp: BigInt(r.ebp!), rip: BigInt(r.eip!), rflags: BigInt(r.eflags!) | EFLAGS_FIXED,
      },
      segs: { cs, ds, es, ss, fs: NULL_SEG, gs: NULL_SEG, tr, ldt: LDT_NONE },
      gdt: { base: 0, limit: 0 },
      idt: { base: 0, limit: 0 },
      cr0: r.cr0!, cr3: r.cr3!, cr4: r.cr4!, efer: Number(efer),
      msrs: [],
    };
  }
  if (mode === VCPU_HVM_MODE_64B) {
    const r = VcpuHvmX86_64.read(dv, regsAt);
    const cr0 = r.cr0!, cr3 = r.cr3!, cr4 = r.cr4!;
    if (!(cr0 & CR0_PG) || !(cr4 & CR4_PAE) || !(r.efer! & EFER_LME)) bad('64-bit mode needs CR0.PG, CR4.PAE and EFER.LME');
    if (cr3 >> 52n) bad('CR3 beyond the physical address width');
    // 48-bit virtual addresses: bits 63..47 all equal.
    const top = r.rip! >> 47n;
    if (top !== 0n && top !== 0x1ffffn) bad(`RIP 0x${r.rip!.toString(16)} is not canonical`);
    const efer = checkControl(cr0, cr4, r.efer!);
    // Xen's SEG(~0u, 0xa9b) etc.: flat 64-bit code, flat data, a busy 64-bit TSS.
    const code = segmentFromAr(0, 0xffffffff, 0xa9b);
    const data = segmentFromAr(0, 0xffffffff, 0xc93);
    return {
      regs: {
        rax: r.rax!, rbx: r.rbx!, rcx: r.rcx!, rdx: r.rdx!, rsi: r.rsi!, rdi: r.rdi!, rsp: r.rsp!, rbp: r.rbp!, rip: r.rip!,
        rflags: r.rflags! | EFLAGS_FIXED,
      },
      segs: { cs: code, ds: data, es: data, ss: data, fs: NULL_SEG, gs: NULL_SEG, tr: segmentFromAr(0, 0x67, 0x8b), ldt: LDT_NONE },
      gdt: { base: 0, limit: 0 },
      idt: { base: 0, limit: 0 },
      cr0: Number(cr0 & 0xffffffffn), cr3: Number(cr3), cr4: Number(cr4), efer: Number(efer),
      msrs: [],
    };
  }
  return bad(`unknown mode ${mode}`);
}

/**
 * The state a STARTUP IPI with `vector` starts a vCPU in (Xen's
 * hvm_vcpu_reset_state(v, vector << 8, 0)): real mode, CS = vector << 8 with
 * base vector << 12, IP 0, 64 KiB data segments at 0, CR0 = ET, EFLAGS = 2.
 */
export function sipiState(vector: number): PvhEntryState {
  if (!Number.isInteger(vector) || vector < 0 || vector > 0xff) throw new RangeError(`STARTUP vector ${vector}`);
  const seg = (selector: number, ar: number): SegmentState => ({ ...segmentFromAr(selector << 4, 0xffff, ar), selector });
  const data = seg(0, 0x93);
  return {
    regs: { rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n, rip: 0n, rflags: EFLAGS_FIXED },
    segs: { cs: seg(vector << 8, 0x9b), ds: data, es: data, ss: data, fs: data, gs: data, tr: segmentFromAr(0, 0xffff, 0x8b), ldt: segmentFromAr(0, 0xffff, 0x82) },
    gdt: { base: 0, limit: 0xffff },
    idt: { base: 0, limit: 0xffff },
    cr0: 0x10, cr3: 0, cr4: 0, efer: 0,
    msrs: [],
  };
}
