// The CPUID leaves the software CPU implements: asked of a scratch engine
// itself (CPUID run with no hook), so a guest is never told of a feature QEMU's
// TCG cannot execute (it filters its CPU model to what it can run).

import { unicorn, check, UC_ARCH_X86, UC_MODE_64, UC_CPU_X86_EPYC, UC_CTL_CPU_MODEL_WRITE, UC_PROT_ALL, UC_X86_REG } from './unicorn.js';
import type { CpuidEntry } from '../accel/vcpu.js';

/** Leaves whose subleaf (ECX) selects the entry (KVM_CPUID_FLAG_SIGNIFCANT_INDEX). */
const INDEXED = new Set([4, 7, 0xb, 0xd, 0xf, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1d, 0x1e, 0x1f, 0x20]);

let cached: CpuidEntry[] | null = null;

export function tcgSupportedCpuid(): CpuidEntry[] {
  if (cached) return cached.map((e) => ({ ...e }));
  const u = unicorn();
  const out: unknown[] = [null];
  check(u, u.open(UC_ARCH_X86, UC_MODE_64, out), 'uc_open');
  const uc = out[0];
  try {
    check(u, u.ctl(uc, UC_CTL_CPU_MODEL_WRITE, 'int', UC_CPU_X86_EPYC), 'uc_ctl(CPU model)');
    const page = Buffer.alloc(8192);
    const aligned = alignedPage(page);
    aligned.set([0x0f, 0xa2, 0xf4], 0); // cpuid; hlt
    check(u, u.memMapPtr(uc, 0n, 4096, UC_PROT_ALL, addressOf(aligned)), 'uc_mem_map_ptr');
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    const w = (id: number, v: number) => { dv.setBigUint64(0, BigInt(v >>> 0), true); u.regWrite(uc, id, b); };
    const r = (id: number) => { u.regRead(uc, id, b); return Number(dv.getBigUint64(0, true) & 0xffffffffn); };
    const ask = (fn: number, index: number): CpuidEntry => {
      w(UC_X86_REG.RAX, fn);
      w(UC_X86_REG.RCX, index);
      check(u, u.emuStart(uc, 0n, 0x8000_0000_0000_0000n, 0, 0), 'uc_emu_start(cpuid)');
      return { function: fn, index, flags: INDEXED.has(fn) ? 1 : 0, eax: r(UC_X86_REG.RAX), ebx: r(UC_X86_REG.RBX), ecx: r(UC_X86_REG.RCX), edx: r(UC_X86_REG.RDX) };
    };
    const entries: CpuidEntry[] = [];
    for (const start of [0, 0x80000000]) {
      const max = ask(start, 0).eax >>> 0;
      for (let fn = start; fn <= Math.min(max, start + 0x40); fn++) {
        if (!INDEXED.has(fn)) { entries.push(ask(fn, 0)); continue; }
        const n = fn === 7 ? ask(7, 0).eax + 1 : fn === 4 ? 8 : fn === 0xd ? 4 : 3;
        for (let i = 0; i < Math.min(n, 64); i++) entries.push(ask(fn, i));
      }
    }
    cached = entries;
    return entries.map((e) => ({ ...e }));
  } finally {
    u.close(uc);
  }
}

import koffi from 'koffi';

/** A page-aligned window of a buffer that stays alive with the module. */
const keep: Uint8Array[] = [];
function alignedPage(buf: Buffer): Uint8Array {
  const addr = koffi.address(buf);
  const off = Number((4096n - (addr % 4096n)) % 4096n);
  const v = buf.subarray(off, off + 4096);
  keep.push(buf);
  return v;
}
function addressOf(b: Uint8Array): bigint {
  return koffi.address(b);
}
