// copy_from_guest / copy_to_guest for an HVM/PVH vCPU: hypercall arguments are
// guest *virtual* addresses, translated through the guest's own page tables
// (no paging, 32-bit, PAE or 4-level long mode), then through the physmap.
// Any fault (not present, read-only for a write, a hole in the physmap)
// throws GuestFault, which hypercall dispatch turns into -EFAULT.

import type { Physmap } from './physmap.js';
import { FIELD_WIDTH, type Struct, type Fields, type Values } from './abi/layout.js';

export class GuestFault extends Error {
  constructor(readonly va: bigint, why: string) {
    super(`guest fault at 0x${va.toString(16)}: ${why}`);
  }
}

const CR0_PG = 1 << 31;
const CR0_WP = 1 << 16;
const CR4_PSE = 1 << 4;
const CR4_PAE = 1 << 5;
const EFER_LMA = 1 << 10;
const PTE_P = 1;
const PTE_RW = 2;
const PTE_PS = 0x80;
const TWO32 = 0x1_0000_0000;

/** Largest single copy a hypercall may ask for (bounds hostile lengths). */
export const MAX_COPY = 1 << 22;

export interface PagingContext {
  cr0: number;
  cr3: bigint;
  cr4: number;
  efer: number;
}

export class GuestAccess {
  readonly dv: DataView;
  private ctx: PagingContext = { cr0: 0, cr3: 0n, cr4: 0, efer: 0 };
  // one-entry TLB, valid until the paging context changes
  private tlbVa = -1;
  private tlbGpa = 0;
  private tlbWritable = false;

  constructor(readonly mem: Uint8Array, readonly physmap: Physmap) {
    this.dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  }

  setContext(c: PagingContext): void {
    const o = this.ctx;
    if (o.cr0 !== c.cr0 || o.cr3 !== c.cr3 || o.cr4 !== c.cr4 || o.efer !== c.efer) {
      this.ctx = { ...c };
      this.tlbVa = -1;
    }
  }

  /** Forget cached translations (the guest may have changed its page tables). */
  flush(): void {
    this.tlbVa = -1;
  }

  /** Byte offset in the memfd of a guest-physical address, or throws. */
  physOffset(gpa: number, va: bigint = BigInt(gpa)): number {
    const off = this.physmap.hostOffsetOf(gpa);
    if (off < 0) throw new GuestFault(va, `gpa 0x${gpa.toString(16)} is not mapped`);
    return off;
  }

  private pte(tableGpa: number, index: number, va: bigint): { lo: number; hi: number } {
    const off = this.physOffset(tableGpa + index * 8, va);
    return { lo: this.dv.getUint32(off, true), hi: this.dv.getUint32(off + 4, true) };
  }

  /** Translates a guest virtual address to a guest-physical one. */
  translate(va: bigint, write: boolean): number {
    const { cr0, cr4, efer } = this.ctx;
    if (!(cr0 & CR0_PG)) return Number(va & 0xffffffffn);
    const fail = (why: string): never => { throw new GuestFault(va, why); };
    // Before the TLB: the cache is keyed on bits 47:12, which a non-canonical alias shares.
    if (efer & EFER_LMA) {
      const top = va >> 47n;
      if (top !== 0n && top !== 0x1ffffn) fail('non-canonical address');
    }
    const page = Number((va >> 12n) & 0xfffffffffn);
    if (page === this.tlbVa && (!write || this.tlbWritable)) return this.tlbGpa + Number(va & 0xfffn);
    let gpa: number;
    let writable = true;
    const cr3 = Number(this.ctx.cr3 & 0xffffffffff000n);
    const wp = (cr0 & CR0_WP) !== 0;
    if (efer & EFER_LMA) {
      let table = cr3;
      let shift = 39n;
      for (let level = 4; ; level--, shift -= 9n) {
        const e = this.pte(table, Number((va >> shift) & 511n), va);
        if (!(e.lo & PTE_P)) fail(`not present at level ${level}`);
        if (!(e.lo & PTE_RW)) writable = false;
        const base = (e.hi & 0xfffff) * TWO32 + ((e.lo & 0xfffff000) >>> 0); // bits 51:12
        if (level === 1 || ((level === 2 || level === 3) && e.lo & PTE_PS)) {
          const size = 2 ** Number(shift);
          const frameBase = base - (base % size);
          gpa = frameBase + Number(va & BigInt(size - 1));
          break;
        }
        table = base;
      }
    } else if (cr4 & CR4_PAE) {
      const v = Number(va & 0xffffffffn);
      const pdpte = this.pte(Number(this.ctx.cr3 & 0xffffffe0n), (v >>> 30) & 3, va);
      if (!(pdpte.lo & PTE_P)) fail('PDPTE not present');
      const pd = (pdpte.hi & 0xfffff) * TWO32 + ((pdpte.lo & 0xfffff000) >>> 0);
      const pde = this.pte(pd, (v >>> 21) & 511, va);
      if (!(pde.lo & PTE_P)) fail('PDE not present');
      if (!(pde.lo & PTE_RW)) writable = false;
      if (pde.lo & PTE_PS) {
        gpa = (pde.hi & 0xfffff) * TWO32 + ((pde.lo & 0xffe00000) >>> 0) + (v & 0x1fffff);
      } else {
        const pt = (pde.hi & 0xfffff) * TWO32 + ((pde.lo & 0xfffff000) >>> 0);
        const p = this.pte(pt, (v >>> 12) & 511, va);
        if (!(p.lo & PTE_P)) fail('PTE not present');
        if (!(p.lo & PTE_RW)) writable = false;
        gpa = (p.hi & 0xfffff) * TWO32 + ((p.lo & 0xfffff000) >>> 0) + (v & 0xfff);
      }
    } else {
      // 2-level 32-bit paging, 4-byte entries
      const v = Number(va & 0xffffffffn);
      const pdOff = this.physOffset(cr3 + ((v >>> 22) * 4), va);
      const pde = this.dv.getUint32(pdOff, true);
      if (!(pde & PTE_P)) fail('PDE not present');
      if (!(pde & PTE_RW)) writable = false;
      if (pde & PTE_PS && cr4 & CR4_PSE) {
        gpa = ((pde & 0xffc00000) >>> 0) + (v & 0x3fffff);
      } else {
        const ptOff = this.physOffset((pde & 0xfffff000) >>> 0, va) + ((v >>> 12) & 1023) * 4;
        const pte = this.dv.getUint32(ptOff, true);
        if (!(pte & PTE_P)) fail('PTE not present');
        if (!(pte & PTE_RW)) writable = false;
        gpa = ((pte & 0xfffff000) >>> 0) + (v & 0xfff);
      }
    }
    // Xen's hypervisor writes honour the guest's R/W bits only when CR0.WP is set.
    if (!wp) writable = true;
    if (write && !writable) fail('page is read-only');
    this.tlbVa = page;
    this.tlbGpa = gpa - (gpa % 4096);
    this.tlbWritable = writable;
    return gpa;
  }

  /** Memfd offset for `len` bytes at `va` that do not cross a page. */
  private span(va: bigint, len: number, write: boolean): number {
    const gpa = this.translate(va, write);
    if ((gpa % 4096) + len > 4096) throw new RangeError('span crosses a page');
    return this.physOffset(gpa, va);
  }

  /** copy_from_guest: `len` bytes at guest virtual `va`. */
  read(va: bigint, len: number): Uint8Array {
    if (len < 0 || len > MAX_COPY) throw new GuestFault(va, `copy of ${len} bytes refused`);
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const cur = va + BigInt(done);
      const inPage = 4096 - Number(cur & 0xfffn);
      const n = Math.min(inPage, len - done);
      const off = this.span(cur, n, false);
      out.set(this.mem.subarray(off, off + n), done);
      done += n;
    }
    return out;
  }

  /** copy_to_guest. */
  write(va: bigint, data: Uint8Array): void {
    if (data.length > MAX_COPY) throw new GuestFault(va, `copy of ${data.length} bytes refused`);
    // translate every page first so a fault leaves guest memory untouched
    const offs: [number, number, number][] = [];
    let done = 0;
    while (done < data.length) {
      const cur = va + BigInt(done);
      const n = Math.min(4096 - Number(cur & 0xfffn), data.length - done);
      offs.push([this.span(cur, n, true), done, n]);
      done += n;
    }
    for (const [off, from, n] of offs) this.mem.set(data.subarray(from, from + n), off);
  }

  readU32(va: bigint): number {
    if ((va & 0xfffn) <= 4092n) return this.dv.getUint32(this.span(va, 4, false), true);
    return new DataView(this.read(va, 4).buffer).getUint32(0, true);
  }

  writeU32(va: bigint, v: number): void {
    if ((va & 0xfffn) <= 4092n) { this.dv.setUint32(this.span(va, 4, true), v >>> 0, true); return; }
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    this.write(va, b);
  }

  readU64(va: bigint): bigint {
    if ((va & 0xfffn) <= 4088n) return this.dv.getBigUint64(this.span(va, 8, false), true);
    return new DataView(this.read(va, 8).buffer).getBigUint64(0, true);
  }

  writeU64(va: bigint, v: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
    this.write(va, b);
  }

  readStruct<F extends Fields>(s: Struct<F>, va: bigint): Values<F> {
    return s.decode(this.read(va, s.size));
  }

  /** Writes the given fields of a structure at `va`, and only their bytes (copy_field_to_guest). */
  writeFields<F extends Fields>(s: Struct<F>, va: bigint, v: Parameters<Struct<F>['encode']>[0]): void {
    const b = s.encode(v);
    for (const k of Object.keys(v)) {
      const [off, t] = s.fields[k]!;
      this.write(va + BigInt(off), b.subarray(off, off + FIELD_WIDTH[t]));
    }
  }

  /** Reads a NUL-terminated string of at most `max` bytes. */
  readCString(va: bigint, max: number): string {
    const b = this.read(va, max);
    const z = b.indexOf(0);
    return Buffer.from(b.subarray(0, z < 0 ? max : z)).toString('latin1');
  }
}
