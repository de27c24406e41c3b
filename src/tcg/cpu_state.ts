// The software CPU's register state as QEMU keeps it (CPUX86State in
// target/i386/cpu.h of the QEMU 5.0 that Unicorn 2.1 carries), reached
// through a uc_context: uc_context_save copies it out, uc_context_restore back.
// Unicorn's register API cannot set a segment's hidden part (in 64-bit mode it
// writes CS/DS/ES/SS selectors only) nor read an exception's error code; the
// state itself can. The offsets are QEMU's; calibrate() proves them on the
// loaded library (known values written through the API must appear there)
// and finds the ones that depend on the build, so a different layout is refused
// instead of misread.

import koffi from 'koffi';
import { UC_X86_REG, UnicornError, type UnicornLib } from './unicorn.js';

/** SegmentCache: selector u32, base u64, limit u32, flags u32 (the descriptor's high dword). */
export const SEG_SIZE = 24;
/** QEMU's segment order in env->segs. */
export const SEGS = { es: 0, cs: 1, ss: 2, ds: 3, fs: 4, gs: 5 } as const;

/** Offsets inside the saved CPUX86State. */
export interface StateLayout {
  /** where the CPU state starts inside struct uc_context */
  data: number;
  size: number;
  regs: number; eip: number; eflags: number; hflags: number; hflags2: number;
  segs: number; ldt: number; tr: number; gdt: number; idt: number; cr: number;
  efer: number;
  /** env->error_code, exception_is_int, exception_next_eip (the three fields before env->dr) */
  errorCode: number; exceptionIsInt: number; exceptionNextEip: number;
  dr: number;
  /** env->old_exception, after dr[8] and the four breakpoint/watchpoint pointers */
  oldException: number;
  /** env->xcr0 (found by running XSETBV: its place depends on the build's feature fields) */
  xcr0: number;
}

// QEMU's general-register order (R_EAX, R_ECX, R_EDX, R_EBX, R_ESP, R_EBP, R_ESI, R_EDI, R8..R15)
// for the accelerator's REG order (rax rbx rcx rdx rsi rdi rsp rbp r8..r15).
export const QEMU_REG_OF = [0, 3, 1, 2, 6, 7, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15];

// hflags bits (target/i386/cpu.h HF_*_MASK)
export const HF_CPL = 3;
export const HF_INHIBIT_IRQ = 1 << 3;
export const HF_CS32 = 1 << 4;
export const HF_SS32 = 1 << 5;
export const HF_ADDSEG = 1 << 6;
export const HF_LMA = 1 << 14;
export const HF_CS64 = 1 << 15;
/** hflags2: NMIs blocked until the next IRET (HF2_NMI_MASK) */
export const HF2_NMI = 1 << 2;

// SegmentCache.flags bits (target/i386/cpu.h DESC_*)
export const DESC_TYPE_SHIFT = 8;
export const DESC_S = 1 << 12;
export const DESC_DPL_SHIFT = 13;
export const DESC_P = 1 << 15;
export const DESC_AVL = 1 << 20;
export const DESC_L = 1 << 21;
export const DESC_B = 1 << 22;
export const DESC_G = 1 << 23;

const EFER_LMA = 1 << 10;
const EFER_SCE = 1;
const CR0_PE = 1;
const EFLAGS_VM = 1 << 17;

const FIXED = {
  regs: 0, eip: 128, eflags: 136, hflags: 176, hflags2: 180,
  segs: 184, ldt: 328, tr: 352, gdt: 376, idt: 400, cr: 424,
};

let cached: StateLayout | null = null;

/**
 * Proves the layout on a fresh engine `uc` (its state is scribbled on: call
 * it before setting the vCPU up) and returns it.
 */
export function calibrate(u: UnicornLib, uc: unknown): StateLayout {
  if (cached) return cached;
  const ctxOut: unknown[] = [null];
  if (u.contextAlloc(uc, ctxOut) !== 0) throw new UnicornError('uc_context_alloc failed');
  const ctx = ctxOut[0];
  try {
    const size = Number(u.contextSize(uc));
    const raw = new DataView(koffi.view(ctx, size + 256));
    const w64 = (id: number, v: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, v, true); u.regWrite(uc, id, b); };
    const mmr = (id: number, sel: number, base: bigint, limit: number, flags: number) => {
      const b = new Uint8Array(24);
      const dv = new DataView(b.buffer);
      dv.setUint16(0, sel, true); dv.setBigUint64(8, base, true); dv.setUint32(16, limit, true); dv.setUint32(20, flags, true);
      u.regWrite(uc, id, b);
    };
    const msr = (index: number, value: bigint) => {
      const b = new Uint8Array(16);
      const dv = new DataView(b.buffer);
      dv.setUint32(0, index, true); dv.setBigUint64(8, value, true);
      u.passthrough(1); // through QEMU's helper, not the shim's exit (msr_exit.c)
      try { u.regWrite(uc, UC_X86_REG.MSR, b); } finally { u.passthrough(0); }
    };
    const RAX = 0x1122334455667788n;
    w64(UC_X86_REG.RAX, RAX);
    w64(UC_X86_REG.RIP, 0x0123456789abcdefn);
    mmr(UC_X86_REG.GDTR, 0, 0x7654321000n, 0x3ff, 0);
    mmr(UC_X86_REG.IDTR, 0, 0x6543210000n, 0xfff, 0);
    mmr(UC_X86_REG.TR, 0x28, 0x5432100000n, 0x67, 0x8b00);
    mmr(UC_X86_REG.LDTR, 0x30, 0x4321000000n, 0x77, 0x8200);
    w64(UC_X86_REG.DR0, 0x0d0d0d0d0d0d0d0dn);
    w64(UC_X86_REG.DR1, 0x1d1d1d1d1d1d1d1dn);
    msr(0xc0000080, BigInt(EFER_LMA | (1 << 8)));
    u.contextSave(uc, ctx);
    const before = new Uint8Array(raw.buffer.slice(0, raw.byteLength));
    msr(0xc0000080, BigInt(EFER_LMA | (1 << 8) | EFER_SCE)); // only EFER.SCE changes
    u.contextSave(uc, ctx);
    const find = (v: bigint) => {
      for (let i = 0; i + 8 <= size + 40; i += 8) if (raw.getBigUint64(i, true) === v) return i;
      return -1;
    };
    const data = find(RAX);
    const bad = (what: string) => new UnicornError(`${u.path} (Unicorn ${u.version}) keeps its CPU state in a layout xenode does not know (${what}); use Unicorn 2.1.x`);
    if (data < 0) throw bad('general registers not found');
    const at = (off: number) => raw.getBigUint64(data + off, true);
    const expect = (off: number, v: bigint, what: string) => { if (at(off) !== v) throw bad(what); };
    expect(FIXED.eip, 0x0123456789abcdefn, 'eip');
    expect(FIXED.gdt + 8, 0x7654321000n, 'gdt');
    expect(FIXED.idt + 8, 0x6543210000n, 'idt');
    expect(FIXED.tr + 8, 0x5432100000n, 'tr');
    expect(FIXED.ldt + 8, 0x4321000000n, 'ldt');
    if (raw.getUint32(data + FIXED.tr, true) !== 0x28 || raw.getUint32(data + FIXED.tr + 20, true) !== 0x8b00) throw bad('tr selector/flags');
    const dr = find(0x0d0d0d0d0d0d0d0dn) - data;
    if (dr < 0 || at(dr + 8) !== 0x1d1d1d1d1d1d1d1dn) throw bad('debug registers');
    let efer = -1;
    for (let i = 0; i + 8 <= size; i += 8) {
      const o = data + i;
      const was = new DataView(before.buffer).getBigUint64(o, true);
      if (was !== raw.getBigUint64(o, true) && raw.getBigUint64(o, true) === (was | BigInt(EFER_SCE)) && (was & BigInt(EFER_LMA)) !== 0n) { efer = i; break; }
    }
    if (efer < 0) throw bad('efer');
    if (raw.getInt32(data + dr + 96, true) !== -1) throw bad('old_exception (expected -1 after reset)');
    const xcr0 = findXcr0(u, uc, ctx, raw, data, size);
    if (xcr0 < 0) throw bad('xcr0');
    cached = {
      data, size, ...FIXED, efer,
      errorCode: dr - 16, exceptionIsInt: dr - 12, exceptionNextEip: dr - 8, dr, oldException: dr + 96, xcr0,
    };
    return cached;
  } finally {
    u.contextFree(ctx);
  }
}

/**
 * XCR0's offset: XSETBV (ECX = 0) with 3, then 7, run from a scratch page,
 * and the one u64 of the state that follows. Needs a CPU model with XSAVE.
 */
function findXcr0(u: UnicornLib, uc: unknown, ctx: unknown, raw: DataView, data: number, size: number): number {
  const PAGE = 0x7fff0000n;
  const code = new Uint8Array(4096);
  // mov eax,3; xor ecx,ecx; xor edx,edx; xsetbv; mov eax,7; xsetbv
  code.set([0xb8, 3, 0, 0, 0, 0x31, 0xc9, 0x31, 0xd2, 0x0f, 0x01, 0xd1, 0xb8, 7, 0, 0, 0, 0x0f, 0x01, 0xd1]);
  if (u.memMapPtr(uc, PAGE, 4096, 7, koffi.address(code)) !== 0) return -1;
  try {
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    u.regRead(uc, UC_X86_REG.CR4, b);
    dv.setBigUint64(0, dv.getBigUint64(0, true) | (1n << 18n) | (1n << 9n), true); // OSXSAVE, OSFXSR
    u.regWrite(uc, UC_X86_REG.CR4, b);
    if (u.emuStart(uc, PAGE, PAGE + 12n, 0, 0) !== 0) return -1;
    u.contextSave(uc, ctx);
    const at3: number[] = [];
    // past the general registers (EAX holds the same values)
    for (let i = FIXED.eip; i + 8 <= size; i += 8) if (raw.getBigUint64(data + i, true) === 3n) at3.push(i);
    if (u.emuStart(uc, PAGE + 12n, PAGE + 20n, 0, 0) !== 0) return -1;
    u.contextSave(uc, ctx);
    const hits = at3.filter((i) => raw.getBigUint64(data + i, true) === 7n);
    return hits.length === 1 ? hits[0]! : -1;
  } finally {
    u.memUnmap(uc, PAGE, 4096);
  }
}

export interface SegCache {
  selector: number;
  base: bigint;
  limit: number;
  flags: number;
}

/** A vCPU's saved state: typed accessors over the uc_context bytes. */
export class X86State {
  readonly dv: DataView;
  private readonly o: number;

  constructor(readonly L: StateLayout, ctx: unknown) {
    this.dv = new DataView(koffi.view(ctx, L.data + L.size));
    this.o = L.data;
  }

  reg(qemuIndex: number): bigint { return this.dv.getBigUint64(this.o + this.L.regs + 8 * qemuIndex, true); }
  setReg(qemuIndex: number, v: bigint): void { this.dv.setBigUint64(this.o + this.L.regs + 8 * qemuIndex, BigInt.asUintN(64, v), true); }
  get eip(): bigint { return this.dv.getBigUint64(this.o + this.L.eip, true); }
  set eip(v: bigint) { this.dv.setBigUint64(this.o + this.L.eip, BigInt.asUintN(64, v), true); }
  get eflags(): bigint { return this.dv.getBigUint64(this.o + this.L.eflags, true); }
  set eflags(v: bigint) { this.dv.setBigUint64(this.o + this.L.eflags, BigInt.asUintN(64, v), true); }
  get hflags(): number { return this.dv.getUint32(this.o + this.L.hflags, true); }
  set hflags(v: number) { this.dv.setUint32(this.o + this.L.hflags, v >>> 0, true); }
  cr(n: number): bigint { return this.dv.getBigUint64(this.o + this.L.cr + 8 * n, true); }
  setCr(n: number, v: bigint): void { this.dv.setBigUint64(this.o + this.L.cr + 8 * n, v, true); }
  get efer(): bigint { return this.dv.getBigUint64(this.o + this.L.efer, true); }
  set efer(v: bigint) { this.dv.setBigUint64(this.o + this.L.efer, v, true); }
  get errorCode(): number { return this.dv.getInt32(this.o + this.L.errorCode, true); }
  get exceptionIsInt(): boolean { return this.dv.getInt32(this.o + this.L.exceptionIsInt, true) !== 0; }
  get exceptionNextEip(): bigint { return this.dv.getBigUint64(this.o + this.L.exceptionNextEip, true); }
  get oldException(): number { return this.dv.getInt32(this.o + this.L.oldException, true); }
  get hflags2(): number { return this.dv.getUint32(this.o + this.L.hflags2, true); }
  set hflags2(v: number) { this.dv.setUint32(this.o + this.L.hflags2, v >>> 0, true); }
  /** DR0-DR7 (env->dr) */
  dr(n: number): bigint { return this.dv.getBigUint64(this.o + this.L.dr + 8 * n, true); }
  setDr(n: number, v: bigint): void { this.dv.setBigUint64(this.o + this.L.dr + 8 * n, BigInt.asUintN(64, v), true); }
  get xcr0(): bigint { return this.dv.getBigUint64(this.o + this.L.xcr0, true); }
  set xcr0(v: bigint) { this.dv.setBigUint64(this.o + this.L.xcr0, v, true); }
  set oldException(v: number) { this.dv.setInt32(this.o + this.L.oldException, v, true); }

  private segOff(which: keyof typeof SEGS | 'ldt' | 'tr' | 'gdt' | 'idt'): number {
    if (which === 'ldt' || which === 'tr' || which === 'gdt' || which === 'idt') return this.o + this.L[which];
    return this.o + this.L.segs + SEG_SIZE * SEGS[which];
  }

  seg(which: keyof typeof SEGS | 'ldt' | 'tr' | 'gdt' | 'idt'): SegCache {
    const o = this.segOff(which);
    const dv = this.dv;
    return { selector: dv.getUint32(o, true) & 0xffff, base: dv.getBigUint64(o + 8, true), limit: dv.getUint32(o + 16, true), flags: dv.getUint32(o + 20, true) };
  }

  setSeg(which: keyof typeof SEGS | 'ldt' | 'tr' | 'gdt' | 'idt', s: SegCache): void {
    const o = this.segOff(which);
    const dv = this.dv;
    dv.setUint32(o, s.selector & 0xffff, true);
    dv.setBigUint64(o + 8, BigInt.asUintN(64, s.base), true);
    dv.setUint32(o + 16, s.limit >>> 0, true);
    dv.setUint32(o + 20, s.flags >>> 0, true);
  }

  /**
   * Re-derives the hflags bits that follow from segments, CR0 and EFER, as
   * QEMU's cpu_x86_load_seg_cache does when a segment is loaded: CPL (SS's
   * DPL), CS32/SS32/CS64, LMA and ADDSEG. Call after writing segments here.
   */
  recomputeSegmentFlags(): void {
    let hf = this.hflags & ~(HF_CPL | HF_CS32 | HF_SS32 | HF_CS64 | HF_ADDSEG | HF_LMA);
    const lma = (this.efer & BigInt(EFER_LMA)) !== 0n;
    const cs = this.seg('cs');
    const ss = this.seg('ss');
    if (lma) hf |= HF_LMA;
    hf |= (ss.flags >>> DESC_DPL_SHIFT) & 3;
    if (lma && cs.flags & DESC_L) hf |= HF_CS32 | HF_SS32 | HF_CS64;
    else {
      if (cs.flags & DESC_B) hf |= HF_CS32;
      if (ss.flags & DESC_B) hf |= HF_SS32;
    }
    if (!(hf & HF_CS64)) {
      if (!(Number(this.cr(0)) & CR0_PE) || (this.eflags & BigInt(EFLAGS_VM)) !== 0n || !(hf & HF_CS32)) hf |= HF_ADDSEG;
      else if ((this.seg('ds').base | this.seg('es').base | ss.base) !== 0n) hf |= HF_ADDSEG;
    }
    this.hflags = hf;
  }
}

/** SegmentCache.flags from a kvm_segment-style description. */
export function segFlags(s: { type: number; s: number; dpl: number; present: number; avl?: number; l: number; db: number; g: number }): number {
  return (s.type << DESC_TYPE_SHIFT) | (s.s ? DESC_S : 0) | (s.dpl << DESC_DPL_SHIFT) | (s.present ? DESC_P : 0)
    | (s.avl ? DESC_AVL : 0) | (s.l ? DESC_L : 0) | (s.db ? DESC_B : 0) | (s.g ? DESC_G : 0);
}

/** The base, expanded limit and flags a GDT/LDT descriptor (low, high dwords) loads into a segment. */
export function descriptorCache(selector: number, lo: number, hi: number): SegCache {
  const base = ((lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000)) >>> 0;
  let limit = ((lo & 0xffff) | (hi & 0xf0000)) >>> 0;
  if (hi & DESC_G) limit = ((limit << 12) | 0xfff) >>> 0;
  return { selector, base: BigInt(base), limit, flags: hi >>> 0 };
}
