// Event delivery as an x86 CPU does it, for the software CPU: Unicorn stops
// at an exception or interrupt and leaves delivery to its user (it never
// vectors through the guest's IDT). This is the protected-mode and IA-32e
// path of the SDM's "interrupt and exception handling" (vol. 3, 6.12 and
// 6.14): gate lookup, privilege change through the TSS (and IST), the frame,
// CS:RIP from the gate, IF cleared for interrupt gates; a fault while
// delivering becomes #DF, and a fault delivering #DF a triple fault.

import {
  X86State, descriptorCache, DESC_B, DESC_DPL_SHIFT, DESC_G, DESC_L, DESC_P, DESC_S, DESC_TYPE_SHIFT, HF_CS64, HF_INHIBIT_IRQ, type SegCache,
} from './cpu_state.js';

export const VEC_DF = 8;
/** Exceptions that push an error code (SDM table 6-1). */
/** Contributory exceptions and #PF (SDM table 6-5). */
const CONTRIBUTORY = new Set([0, 10, 11, 12, 13, 14]);
const HAS_ERROR_CODE = new Set([8, 10, 11, 12, 13, 14, 17, 21]);
const EFLAGS_IF = 1n << 9n;
const EFLAGS_TF = 1n << 8n;
const EFLAGS_NT = 1n << 14n;
const EFLAGS_RF = 1n << 16n;
const EFLAGS_VM = 1n << 17n;
const EFER_LMA = 1n << 10n;
const EFER_SCE = 1n;

/** Guest memory by linear address, as the CPU would reach it at CPL 0. */
export interface LinearMemory {
  read(addr: bigint, len: number): Uint8Array | null;
  write(addr: bigint, data: Uint8Array): boolean;
}

export class DeliveryFault extends Error {
  constructor(readonly vector: number, readonly errorCode: number, why: string) {
    super(why);
  }
}

export interface Event {
  vector: number;
  /** pushed when the vector has one (an exception), never for INT n or external interrupts */
  errorCode: number | null;
  /** INT n / INT3 / INTO: the gate's DPL is checked against CPL */
  software: boolean;
  /** where the handler returns (the faulting instruction for faults, the next one for traps and INT n) */
  returnRip: bigint;
}

function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

function le(v: bigint, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return b;
}

/** Loads a segment descriptor for `selector` from the GDT (or LDT). */
function loadDescriptor(st: X86State, mem: LinearMemory, selector: number, vector: number): SegCache {
  const table = selector & 4 ? st.seg('ldt') : st.seg('gdt');
  const index = selector & ~7;
  const err = selector & 0xfffc;
  if (index + 7 > table.limit) throw new DeliveryFault(13, err, `selector 0x${selector.toString(16)} is outside the descriptor table (vector ${vector})`);
  const d = mem.read(table.base + BigInt(index), 8);
  if (!d) throw new DeliveryFault(14, 0, `descriptor table unreadable at 0x${(table.base + BigInt(index)).toString(16)}`);
  const c = descriptorCache(selector, u32(d, 0), u32(d, 4));
  if (!(c.flags & DESC_P)) throw new DeliveryFault(11, err, `segment 0x${selector.toString(16)} not present (vector ${vector})`);
  return c;
}

/**
 * Delivers `ev` through the guest's IDT, changing `st` (and the guest stack).
 * Throws DeliveryFault when delivery itself faults.
 */
export function deliverOnce(st: X86State, mem: LinearMemory, ev: Event): void {
  const long = (st.efer & EFER_LMA) !== 0n;
  const idt = st.seg('idt');
  const size = long ? 16 : 8;
  const idtErr = ev.vector * 8 + 2 + (ev.software ? 0 : 1);
  if (ev.vector * size + size - 1 > idt.limit) throw new DeliveryFault(13, idtErr, `vector ${ev.vector} is beyond the IDT limit 0x${idt.limit.toString(16)}`);
  const g = mem.read(idt.base + BigInt(ev.vector * size), size);
  if (!g) throw new DeliveryFault(14, 0, `IDT entry ${ev.vector} unreadable at 0x${(idt.base + BigInt(ev.vector * size)).toString(16)}`);
  const lo = u32(g, 0);
  const hi = u32(g, 4);
  const type = (hi >>> 8) & 0xf;
  const gateDpl = (hi >>> 13) & 3;
  const cpl = st.hflags & 3;
  if (!(hi & (1 << 15))) throw new DeliveryFault(11, idtErr, `IDT entry ${ev.vector} not present`);
  if (ev.software && gateDpl < cpl) throw new DeliveryFault(13, idtErr, `INT ${ev.vector} from CPL ${cpl} through a DPL ${gateDpl} gate`);
  const interruptGate = type === 0xe || type === 0x6;
  if (long ? type !== 0xe && type !== 0xf : type !== 0xe && type !== 0xf) {
    throw new DeliveryFault(13, idtErr, `IDT entry ${ev.vector} has gate type ${type} (only 32/64-bit interrupt and trap gates are delivered)`);
  }
  const selector = lo >>> 16;
  let offset = BigInt((lo & 0xffff) | (hi & 0xffff0000)) & 0xffffffffn;
  if (long) offset |= BigInt(u32(g, 8)) << 32n;
  if ((selector & ~3) === 0) throw new DeliveryFault(13, 0, `IDT entry ${ev.vector} has a null code selector`);
  const cs = loadDescriptor(st, mem, selector, ev.vector);
  const newCpl = (cs.flags >>> DESC_DPL_SHIFT) & 3;
  if (newCpl > cpl) throw new DeliveryFault(13, selector & 0xfffc, `IDT entry ${ev.vector}: handler segment DPL ${newCpl} above CPL ${cpl}`);
  if (long && !(cs.flags & DESC_L)) throw new DeliveryFault(13, selector & 0xfffc, `IDT entry ${ev.vector}: handler segment is not 64-bit code`);
  const tr = st.seg('tr');
  const oldSs = st.seg('ss');
  const oldRsp = st.reg(4);
  const oldFlags = st.eflags;
  const oldCs = st.seg('cs');
  const err = HAS_ERROR_CODE.has(ev.vector) && !ev.software && ev.errorCode !== null ? ev.errorCode : null;
  let rsp: bigint;
  let ss = oldSs;
  const frame: bigint[] = [];
  if (long) {
    const ist = g[4]! & 7;
    if (ist || newCpl < cpl) {
      const at = ist ? 0x24 + 8 * (ist - 1) : 4 + 8 * newCpl;
      const b = mem.read(tr.base + BigInt(at), 8);
      if (!b) throw new DeliveryFault(10, tr.selector & 0xfffc, 'TSS unreadable');
      rsp = BigInt(u32(b, 0)) | (BigInt(u32(b, 4)) << 32n);
    } else rsp = oldRsp;
    rsp &= ~0xfn;
    if (newCpl < cpl) ss = { selector: newCpl, base: 0n, limit: 0, flags: newCpl << DESC_DPL_SHIFT };
    frame.push(BigInt(oldSs.selector), oldRsp, oldFlags, BigInt(oldCs.selector), ev.returnRip);
    if (err !== null) frame.push(BigInt(err));
    for (const v of frame) {
      rsp -= 8n;
      if (!mem.write(rsp, le(v, 8))) throw new DeliveryFault(14, 2, `stack unwritable at 0x${rsp.toString(16)} delivering vector ${ev.vector}`);
    }
  } else {
    if (newCpl < cpl) {
      const b = mem.read(tr.base + BigInt(4 + 8 * newCpl), 8);
      if (!b) throw new DeliveryFault(10, tr.selector & 0xfffc, 'TSS unreadable');
      rsp = BigInt(u32(b, 0));
      ss = loadDescriptor(st, mem, u32(b, 4) & 0xffff, ev.vector);
      frame.push(BigInt(oldSs.selector), oldRsp & 0xffffffffn);
    } else rsp = oldRsp & 0xffffffffn;
    frame.push(oldFlags & 0xffffffffn, BigInt(oldCs.selector), ev.returnRip & 0xffffffffn);
    if (err !== null) frame.push(BigInt(err));
    for (const v of frame) {
      rsp = (rsp - 4n) & 0xffffffffn;
      if (!mem.write((ss.base + rsp) & 0xffffffffn, le(v, 4))) throw new DeliveryFault(14, 2, `stack unwritable at 0x${rsp.toString(16)} delivering vector ${ev.vector}`);
    }
  }
  // Commit: nothing above changed the state.
  st.setSeg('cs', { ...cs, selector: (selector & ~3) | newCpl });
  st.setSeg('ss', ss);
  st.setReg(4, rsp);
  st.eip = offset;
  let flags = oldFlags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM);
  if (interruptGate) flags &= ~EFLAGS_IF;
  st.eflags = flags;
  st.hflags &= ~HF_INHIBIT_IRQ;
  st.recomputeSegmentFlags();
}

/**
 * Delivers an event as the CPU would, escalating a fault during delivery to
 * #DF; returns false when that too faults (a triple fault: the vCPU shuts down).
 */
export function deliver(st: X86State, mem: LinearMemory, ev: Event): { ok: true } | { ok: false; why: string } {
  try {
    deliverOnce(st, mem, ev);
    return { ok: true };
  } catch (e) {
    if (!(e instanceof DeliveryFault)) throw e;
    if (ev.vector === VEC_DF) return { ok: false, why: `delivering #DF: ${e.message}` };
    // A fault while delivering a contributory exception or #PF is a double fault; after a benign event, it is delivered itself.
    const second: Event = CONTRIBUTORY.has(ev.vector) && (CONTRIBUTORY.has(e.vector) || e.vector === 14)
      ? { vector: VEC_DF, errorCode: 0, software: false, returnRip: ev.returnRip }
      : { vector: e.vector, errorCode: e.errorCode, software: false, returnRip: ev.returnRip };
    return deliver(st, mem, second);
  }
}

/** The MSRs SYSCALL reads (STAR, LSTAR, CSTAR, SFMASK). */
export interface SyscallMsrs {
  star: bigint;
  lstar: bigint;
  cstar: bigint;
  fmask: bigint;
}

// Flat segments SYSCALL and SYSENTER load: accessed, readable code (type 0xb) or writable data (type 0x3), DPL 0.
const SYSCALL_CS = DESC_G | DESC_P | DESC_S | (0xb << DESC_TYPE_SHIFT);
const SYSCALL_SS = DESC_G | DESC_B | DESC_P | DESC_S | (0x3 << DESC_TYPE_SHIFT);

/**
 * SYSCALL as the CPU executes it (SDM vol. 2B, SYSCALL; AMD APM vol. 3 for
 * legacy and compatibility mode): Unicorn's engine only reports the
 * instruction and steps over it, so the kernel entry is done here, with `st`
 * at the instruction after SYSCALL. Returns false when EFER.SCE is clear
 * (the caller raises #UD at `insnRip`).
 */
export function enterSyscall(st: X86State, msrs: SyscallMsrs): boolean {
  if (!(st.efer & EFER_SCE)) return false;
  const selector = Number((msrs.star >> 32n) & 0xffffn) & 0xfffc;
  const next = st.eip;
  const flags = st.eflags;
  if (st.efer & EFER_LMA) {
    const code64 = (st.hflags & HF_CS64) !== 0;
    st.setReg(1, next); // RCX
    st.setReg(11, flags & ~EFLAGS_RF); // R11
    st.eflags = flags & ~(msrs.fmask | EFLAGS_RF);
    st.setSeg('cs', { selector, base: 0n, limit: 0xffffffff, flags: SYSCALL_CS | DESC_L });
    st.eip = code64 ? msrs.lstar : msrs.cstar;
  } else {
    st.setReg(1, next & 0xffffffffn);
    st.eflags = flags & ~(EFLAGS_IF | EFLAGS_RF | EFLAGS_VM);
    st.setSeg('cs', { selector, base: 0n, limit: 0xffffffff, flags: SYSCALL_CS | DESC_B });
    st.eip = msrs.star & 0xffffffffn;
  }
  st.setSeg('ss', { selector: (selector + 8) & 0xfffc, base: 0n, limit: 0xffffffff, flags: SYSCALL_SS });
  st.recomputeSegmentFlags();
  return true;
}

/** The MSRs SYSENTER reads (IA32_SYSENTER_CS, _ESP, _EIP). */
export interface SysenterMsrs {
  cs: bigint;
  esp: bigint;
  eip: bigint;
}

/**
 * SYSENTER as the CPU executes it (SDM vol. 2B, SYSENTER), for the same
 * reason as SYSCALL. Returns false when IA32_SYSENTER_CS is 0 (#GP(0)).
 */
export function enterSysenter(st: X86State, msrs: SysenterMsrs): boolean {
  const selector = Number(msrs.cs & 0xffffn) & 0xfffc;
  if (selector === 0) return false;
  const long = (st.efer & EFER_LMA) !== 0n;
  st.eflags &= ~(EFLAGS_VM | EFLAGS_IF | EFLAGS_RF);
  st.setSeg('cs', { selector, base: 0n, limit: 0xffffffff, flags: SYSCALL_CS | (long ? DESC_L : DESC_B) });
  st.setSeg('ss', { selector: (selector + 8) & 0xfffc, base: 0n, limit: 0xffffffff, flags: SYSCALL_SS });
  st.setReg(4, long ? msrs.esp : msrs.esp & 0xffffffffn);
  st.eip = long ? msrs.eip : msrs.eip & 0xffffffffn;
  st.recomputeSegmentFlags();
  return true;
}
