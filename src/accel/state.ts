// A vCPU's whole architectural state in a form neither CPU owns, so a vCPU
// can move between KVM and the software CPU without loss: general registers,
// segments with their hidden parts, descriptor tables, control and debug
// registers, EFER and the MSRs a kernel programs, the x87/SSE/AVX state, the
// guest's TSC and the events in flight. The FPU state is an XSAVE image in
// the architecture's standard (non-compacted) format (SDM vol. 1, 10.5.1 and
// 13.4), which is also what KVM_GET_XSAVE returns (struct kvm_xsave, asm/kvm.h).

import type { Segment, SegName } from './vcpu.js';

/** Offsets in the FXSAVE legacy area and the XSAVE header (SDM vol. 1, table 10-2 and 13.4.2). */
export const XSAVE = {
  fcw: 0, // u16
  fsw: 2, // u16
  /** abridged tag word: bit i set when physical register R<i> is not empty */
  ftw: 4, // u8
  fop: 6, // u16
  fip: 8, // u64 (64-bit FXSAVE form)
  fdp: 16, // u64
  mxcsr: 24, // u32
  mxcsrMask: 28, // u32
  /** ST(0)..ST(7): 10 bytes of each 16-byte slot, in stack order (relative to TOP) */
  st: 32,
  /** XMM0..XMM15, 16 bytes each */
  xmm: 160,
  /** XSAVE header: XSTATE_BV u64, XCOMP_BV u64 */
  xstateBv: 512,
  xcompBv: 520,
  /** YMM_Hi128: bits 255:128 of YMM0..YMM15 (standard format offset, CPUID 0xD.2 EBX) */
  ymmHi: 576,
  /** the image this format covers: legacy area, header, AVX */
  size: 576 + 256,
} as const;

/** XCR0 / XSTATE_BV components (SDM vol. 1, 13.1). */
export const XFEATURE = { x87: 1n, sse: 2n, avx: 4n } as const;

/** The x87/SSE/AVX state. */
export interface FpuState {
  /** XSAVE image, XSAVE.size bytes (components beyond AVX are not carried) */
  xsave: Uint8Array;
  /** XCR0: the state components the guest enabled */
  xcr0: bigint;
}

export function emptyFpu(): FpuState {
  const xsave = new Uint8Array(XSAVE.size);
  const dv = new DataView(xsave.buffer);
  dv.setUint16(XSAVE.fcw, 0x37f, true); // FNINIT's control word
  dv.setUint32(XSAVE.mxcsr, 0x1f80, true); // MXCSR after reset
  return { xsave, xcr0: XFEATURE.x87 };
}

/** A segment with every bit of its hidden part (struct kvm_segment's fields). */
export interface SegmentState extends Segment {
  avl: number;
  unusable: number;
}

/**
 * MSRs that are CPU state (a kernel programs them and expects them kept):
 * the SYSCALL/SYSENTER entry points, the swapped GS base, TSC_AUX and PAT.
 * FS/GS bases travel in the segments, EFER and the TSC separately; the local
 * APIC's MSRs and Xen's are the hypervisor's, not the CPU's.
 */
export const CPU_MSRS = {
  SYSENTER_CS: 0x174, SYSENTER_ESP: 0x175, SYSENTER_EIP: 0x176, PAT: 0x277,
  STAR: 0xc0000081, LSTAR: 0xc0000082, CSTAR: 0xc0000083, SFMASK: 0xc0000084,
  KERNEL_GS_BASE: 0xc0000102, TSC_AUX: 0xc0000103,
} as const;
export const CPU_MSR_LIST: readonly number[] = Object.values(CPU_MSRS);

/** Events in flight that belong to the CPU, not yet delivered. */
export interface EventState {
  /** an external interrupt queued for delivery (KVM_INTERRUPT), -1 when none */
  pendingInterrupt: number;
  /** interrupts are inhibited for one instruction (after STI or MOV SS) */
  interruptShadow: boolean;
  /** NMIs are blocked (an NMI handler runs and has not IRETed) */
  nmiMasked: boolean;
  /** an NMI queued and not yet delivered */
  nmiPending: boolean;
}

export const SEG_NAMES: readonly SegName[] = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'];

export interface VcpuState {
  /** the 18 registers in REG order (kvm_regs): rax..r15, rip, rflags */
  regs: bigint[];
  segs: Record<SegName, SegmentState>;
  gdt: { base: bigint; limit: number };
  idt: { base: bigint; limit: number };
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  /** DR0-DR3, DR6, DR7 */
  dr: bigint[];
  dr6: bigint;
  dr7: bigint;
  /** CPU_MSR_LIST's MSRs: index -> value */
  msrs: Map<number, bigint>;
  /** the guest's TSC when the state was taken */
  tsc: bigint;
  /** the host's monotonic clock (ns, process.hrtime) when `tsc` was read: a move takes time, and the TSC runs meanwhile */
  tscNs: bigint;
  fpu: FpuState;
  events: EventState;
}

/** Field-by-field differences between two states ([] when equal): the test of a lossless move. */
export function diffStates(a: VcpuState, b: VcpuState): string[] {
  const out: string[] = [];
  const cmp = (what: string, x: unknown, y: unknown) => { if (x !== y) out.push(`${what}: ${String(x)} != ${String(y)}`); };
  a.regs.forEach((v, i) => cmp(`reg ${i}`, v, b.regs[i]));
  for (const n of SEG_NAMES) {
    for (const k of Object.keys(a.segs[n]) as (keyof SegmentState)[]) cmp(`${n}.${k}`, a.segs[n][k], b.segs[n][k]);
  }
  for (const t of ['gdt', 'idt'] as const) { cmp(`${t}.base`, a[t].base, b[t].base); cmp(`${t}.limit`, a[t].limit, b[t].limit); }
  for (const k of ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'dr6', 'dr7'] as const) cmp(k, a[k], b[k]);
  a.dr.forEach((v, i) => cmp(`dr${i}`, v, b.dr[i]));
  for (const i of CPU_MSR_LIST) cmp(`msr 0x${i.toString(16)}`, a.msrs.get(i), b.msrs.get(i));
  cmp('xcr0', a.fpu.xcr0, b.fpu.xcr0);
  const fa = new DataView(a.fpu.xsave.buffer, a.fpu.xsave.byteOffset);
  const fb = new DataView(b.fpu.xsave.buffer, b.fpu.xsave.byteOffset);
  cmp('fcw', fa.getUint16(XSAVE.fcw, true), fb.getUint16(XSAVE.fcw, true));
  cmp('fsw', fa.getUint16(XSAVE.fsw, true), fb.getUint16(XSAVE.fsw, true));
  cmp('ftw', fa.getUint8(XSAVE.ftw), fb.getUint8(XSAVE.ftw));
  cmp('fop', fa.getUint16(XSAVE.fop, true), fb.getUint16(XSAVE.fop, true));
  cmp('fip', fa.getBigUint64(XSAVE.fip, true), fb.getBigUint64(XSAVE.fip, true));
  cmp('fdp', fa.getBigUint64(XSAVE.fdp, true), fb.getBigUint64(XSAVE.fdp, true));
  cmp('mxcsr', fa.getUint32(XSAVE.mxcsr, true), fb.getUint32(XSAVE.mxcsr, true));
  const hex = (u: Uint8Array, o: number, n: number) => Array.from(u.subarray(o, o + n), (x) => x.toString(16).padStart(2, '0')).join('');
  for (let i = 0; i < 8; i++) cmp(`st${i}`, hex(a.fpu.xsave, XSAVE.st + 16 * i, 10), hex(b.fpu.xsave, XSAVE.st + 16 * i, 10));
  for (let i = 0; i < 16; i++) cmp(`xmm${i}`, hex(a.fpu.xsave, XSAVE.xmm + 16 * i, 16), hex(b.fpu.xsave, XSAVE.xmm + 16 * i, 16));
  for (let i = 0; i < 16; i++) cmp(`ymm${i}.hi`, hex(a.fpu.xsave, XSAVE.ymmHi + 16 * i, 16), hex(b.fpu.xsave, XSAVE.ymmHi + 16 * i, 16));
  cmp('pendingInterrupt', a.events.pendingInterrupt, b.events.pendingInterrupt);
  cmp('interruptShadow', a.events.interruptShadow, b.events.interruptShadow);
  cmp('nmiMasked', a.events.nmiMasked, b.events.nmiMasked);
  cmp('nmiPending', a.events.nmiPending, b.events.nmiPending);
  return out;
}
