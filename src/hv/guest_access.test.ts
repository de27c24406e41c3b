// copy_from_guest / copy_to_guest over hand-built guest page tables in a
// plain buffer: every paging mode a PVH guest can be in when it makes a
// hypercall, faults at each level, write protection, and copies that cross
// pages (a faulting write leaves guest memory untouched).

import { strict as assert } from 'node:assert';
import { beforeEach, describe, test } from 'node:test';

import { GuestAccess, GuestFault, MAX_COPY, type PagingContext } from './guest_access.js';
import { Physmap } from './physmap.js';
import { struct } from './abi/layout.js';

const P = 1n;
const RW = 2n;
const PS = 0x80n;
const NX = 1n << 63n;

const CR0_PE = 1;
const CR0_WP = 1 << 16;
const CR0_PG = 1 << 31;
const CR4_PSE = 1 << 4;
const CR4_PAE = 1 << 5;
const EFER_LME = 1 << 8;
const EFER_LMA = 1 << 10;

const NOPAGING: PagingContext = { cr0: CR0_PE, cr3: 0n, cr4: 0, efer: 0 };

/** 8 MiB of RAM at GPA 0 (host offset == GPA for low RAM). */
function mkGuest(): { g: GuestAccess; mem: Uint8Array; dv: DataView; pm: Physmap } {
  const pm = new Physmap({ ramPages: 2048, maxGrantFrames: 1, poolPages: 0 });
  const mem = new Uint8Array(pm.bytes);
  const g = new GuestAccess(mem, pm);
  return { g, mem, dv: g.dv, pm };
}

function isFault(re?: RegExp) {
  return (e: unknown) => e instanceof GuestFault && (!re || re.test(e.message));
}

function fill(mem: Uint8Array, gpa: number, len: number, seed: number): void {
  for (let i = 0; i < len; i++) mem[gpa + i] = (seed + i * 7) & 0xff;
}

describe('guest_access: no paging', () => {
  test('virtual == physical (low 32 bits)', () => {
    const { g, mem } = mkGuest();
    g.setContext(NOPAGING);
    fill(mem, 0x5000, 16, 3);
    assert.deepEqual(g.read(0x5000n, 16), mem.slice(0x5000, 0x5010));
    assert.equal(g.translate(0x1_0000_5000n, false), 0x5000);
    g.write(0x6000n, Uint8Array.of(1, 2, 3));
    assert.deepEqual([...mem.subarray(0x6000, 0x6003)], [1, 2, 3]);
  });

  test('a physmap hole faults', () => {
    const { g } = mkGuest();
    g.setContext(NOPAGING);
    assert.throws(() => g.read(0x800000n, 1), isFault(/not mapped/));
    assert.throws(() => g.read(0x7fffffn, 2), isFault(/not mapped/), 'the second byte is in the hole');
    assert.throws(() => g.write(0xfee00000n, Uint8Array.of(1)), isFault());
  });
});

describe('guest_access: 4-level long mode', () => {
  // PML4 @0x1000, PDPT @0x2000, PD @0x3000, PT @0x4000
  const PML4 = 0x1000;
  const PDPT = 0x2000;
  const PD = 0x3000;
  const PT = 0x4000;
  const va = (l4: number, l3: number, l2: number, l1: number, off = 0) =>
    (BigInt(l4) << 39n) | (BigInt(l3) << 30n) | (BigInt(l2) << 21n) | (BigInt(l1) << 12n) | BigInt(off);
  const ctx = (wp = true): PagingContext => ({ cr0: CR0_PE | CR0_PG | (wp ? CR0_WP : 0), cr3: BigInt(PML4), cr4: CR4_PAE, efer: EFER_LME | EFER_LMA });
  let t: ReturnType<typeof mkGuest>;
  const pte = (table: number, i: number, v: bigint) => t.dv.setBigUint64(table + i * 8, v, true);

  beforeEach(() => {
    t = mkGuest();
    pte(PML4, 1, BigInt(PDPT) | P | RW);
    pte(PML4, 256, BigInt(PDPT) | P | RW); // 0xffff8000_00000000 shares the PDPT
    pte(PML4, 511, BigInt(PDPT) | P | RW);
    pte(PDPT, 2, BigInt(PD) | P | RW);
    pte(PDPT, 3, 0n | P | RW | PS); // 1 GiB page at GPA 0
    pte(PDPT, 5, BigInt(PD) | P); // read-only at level 3
    pte(PD, 3, BigInt(PT) | P | RW);
    pte(PD, 5, 0x200000n | P | RW | PS); // 2 MiB page at GPA 0x200000
    pte(PD, 7, 0x600000n | P | PS); // read-only 2 MiB page
    pte(PT, 4, 0x10000n | P | RW);
    pte(PT, 5, 0x13000n | P | RW); // not contiguous with the previous page
    pte(PT, 6, 0x11000n | P); // read-only
    pte(PT, 7, 0x12000n | P | RW | NX);
    pte(PT, 8, 0x900000n | P | RW); // beyond RAM: a physmap hole
    t.g.setContext(ctx());
  });

  test('4 KiB pages', () => {
    assert.equal(t.g.translate(va(1, 2, 3, 4, 0x123), false), 0x10123);
    assert.equal(t.g.translate(va(1, 2, 3, 5), true), 0x13000);
    assert.equal(t.g.translate(va(1, 2, 3, 7, 8), true), 0x12008, 'NX does not leak into the address');
    assert.equal(t.g.translate(0xffff800000000000n | va(0, 2, 3, 4, 1), false), 0x10001);
    assert.equal(t.g.translate(0xffffff8000000000n | va(0, 2, 3, 4, 2), false), 0x10002);
  });

  test('2 MiB and 1 GiB pages', () => {
    assert.equal(t.g.translate(va(1, 2, 5, 0, 0), false), 0x200000);
    assert.equal(t.g.translate(va(1, 2, 5, 0x1ab, 0xcde), true), 0x200000 + 0x1abcde);
    assert.equal(t.g.translate(va(1, 3, 0, 0, 0x42), false), 0x42);
    assert.equal(t.g.translate(va(1, 3, 2, 0x10, 0x8), true), 0x410008);
  });

  test('not present at each level', () => {
    assert.throws(() => t.g.translate(va(2, 0, 0, 0), false), isFault(/level 4/));
    assert.throws(() => t.g.translate(va(1, 4, 0, 0), false), isFault(/level 3/));
    assert.throws(() => t.g.translate(va(1, 2, 6, 0), false), isFault(/level 2/));
    assert.throws(() => t.g.translate(va(1, 2, 3, 9), false), isFault(/level 1/));
  });

  test('a page-table page in a physmap hole faults', () => {
    pte(PT, 10, 0x10000n | P | RW);
    pte(PD, 8, 0x900000n | P | RW); // PT in the hole
    assert.throws(() => t.g.translate(va(1, 2, 8, 0), false), isFault(/not mapped/));
    t.g.setContext({ ...ctx(), cr3: 0xa00000n });
    assert.throws(() => t.g.translate(va(1, 2, 3, 4), false), isFault(/not mapped/));
  });

  test('data page in a physmap hole: translation succeeds, the copy faults', () => {
    assert.equal(t.g.translate(va(1, 2, 3, 8), false), 0x900000);
    assert.throws(() => t.g.read(va(1, 2, 3, 8), 4), isFault(/not mapped/));
  });

  test('non-canonical addresses fault', () => {
    for (const a of [0x0000800000000000n, 0x7fff800000000000n, 0xffff000000000000n, 0x8000000000000000n]) {
      assert.throws(() => t.g.translate(a, false), isFault(/non-canonical/), a.toString(16));
    }
  });

  test('non-canonical addresses fault even right after their canonical alias was used', () => {
    const canon = 0xffff800000000000n | va(0, 2, 3, 4);
    const alias = va(256, 2, 3, 4); // 0x0000_8000_... : same bits 47:12
    assert.equal(t.g.translate(canon, false), 0x10000);
    assert.throws(() => t.g.translate(alias, false), isFault(/non-canonical/));
    assert.throws(() => t.g.read(alias, 4), isFault());
  });

  test('read-only pages: writes fault with CR0.WP, succeed without', () => {
    const ro = [va(1, 2, 3, 6), va(1, 5, 3, 4), va(1, 2, 7, 0)];
    for (const a of ro) {
      t.g.read(a, 4);
      assert.throws(() => t.g.write(a, Uint8Array.of(1)), isFault(/read-only/), a.toString(16));
    }
    t.g.setContext(ctx(false));
    t.g.write(ro[0]!, Uint8Array.of(0xaa));
    assert.equal(t.mem[0x11000], 0xaa);
    t.g.write(ro[2]!, Uint8Array.of(0xbb));
    assert.equal(t.mem[0x600000], 0xbb);
  });

  test('a read that warmed the cache does not let a later write through a read-only page', () => {
    const a = va(1, 2, 3, 6);
    t.g.read(a, 1);
    assert.throws(() => t.g.writeU32(a, 1), isFault(/read-only/));
    assert.equal(t.mem[0x11000], 0);
  });

  test('changing the paging context or flushing drops cached translations', () => {
    const a = va(1, 2, 3, 4);
    assert.equal(t.g.translate(a, false), 0x10000);
    pte(PT, 4, 0x14000n | P | RW);
    t.g.flush();
    assert.equal(t.g.translate(a, false), 0x14000);
    // a second set of tables: PML4 at 0x5000 mapping the same VA elsewhere
    pte(0x5000, 1, 0x6000n | P | RW);
    pte(0x6000, 2, 0x7000n | P | RW);
    pte(0x7000, 3, 0x8000n | P | RW);
    pte(0x8000, 4, 0x15000n | P | RW);
    t.g.setContext({ ...ctx(), cr3: 0x5000n });
    assert.equal(t.g.translate(a, false), 0x15000);
    t.g.setContext(NOPAGING);
    assert.equal(t.g.translate(0x15000n, false), 0x15000);
  });

  test('copies cross pages into non-contiguous frames', () => {
    const a = va(1, 2, 3, 4, 4090);
    fill(t.mem, 0x10000 + 4090, 6, 1);
    fill(t.mem, 0x13000, 10, 50);
    const got = t.g.read(a, 16);
    assert.deepEqual([...got], [...t.mem.subarray(0x10000 + 4090, 0x10000 + 4096), ...t.mem.subarray(0x13000, 0x1300a)]);
    const data = Uint8Array.from({ length: 20 }, (_, i) => 200 + i);
    t.g.write(a, data);
    assert.deepEqual([...t.mem.subarray(0x10000 + 4090, 0x10000 + 4096)], [...data.subarray(0, 6)]);
    assert.deepEqual([...t.mem.subarray(0x13000, 0x1300e)], [...data.subarray(6)]);
    // scalar accessors across the boundary
    t.g.writeU32(va(1, 2, 3, 4, 4094), 0x11223344);
    assert.deepEqual([t.mem[0x10ffe], t.mem[0x10fff], t.mem[0x13000], t.mem[0x13001]], [0x44, 0x33, 0x22, 0x11]);
    assert.equal(t.g.readU32(va(1, 2, 3, 4, 4094)), 0x11223344);
    t.g.writeU64(va(1, 2, 3, 4, 4092), 0x0102030405060708n);
    assert.equal(t.g.readU64(va(1, 2, 3, 4, 4092)), 0x0102030405060708n);
    assert.equal(t.mem[0x13003], 0x01);
  });

  test('a faulting write leaves guest memory untouched (not present or read-only second page)', () => {
    pte(PT, 11, 0x16000n | P | RW); // followed by a not-present page 12
    pte(PT, 13, 0x17000n | P | RW); // followed by read-only page 14
    pte(PT, 14, 0x18000n | P);
    const before = t.mem.slice();
    assert.throws(() => t.g.write(va(1, 2, 3, 11, 4000), new Uint8Array(200).fill(9)), isFault(/level 1/));
    assert.throws(() => t.g.write(va(1, 2, 3, 13, 4000), new Uint8Array(200).fill(9)), isFault(/read-only/));
    assert.throws(() => t.g.writeU64(va(1, 2, 3, 13, 4092), -1n), isFault(/read-only/));
    assert.throws(() => t.g.writeU32(va(1, 2, 3, 13, 4094), 0xffffffff), isFault(/read-only/));
    assert.ok(t.mem.every((b, i) => b === before[i]), 'no byte changed');
  });

  test('oversize and negative copies are refused', () => {
    const a = va(1, 3, 0, 0);
    assert.throws(() => t.g.read(a, MAX_COPY + 1), isFault(/refused/));
    assert.throws(() => t.g.read(a, -1), isFault(/refused/));
    assert.throws(() => t.g.write(a, new Uint8Array(MAX_COPY + 1)), isFault(/refused/));
    assert.equal(t.g.read(a, 0).length, 0);
  });

  test('structures and C strings', () => {
    const S = struct('t', 16, { a: [0, 'u16'], b: [4, 'u32'], c: [8, 'u64'] });
    const a = va(1, 2, 3, 4, 4088); // straddles into the next page
    t.g.write(a, new Uint8Array(16).fill(0xee));
    t.g.writeFields(S, a, { b: 0x01020304 });
    assert.deepEqual([...t.g.read(a, 16)], [0xee, 0xee, 0xee, 0xee, 4, 3, 2, 1, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee]);
    t.g.writeFields(S, a, { c: 0x1122334455667788n, a: 0xbeef });
    assert.deepEqual(t.g.readStruct(S, a), { a: 0xbeef, b: 0x01020304, c: 0x1122334455667788n });
    t.g.write(va(1, 2, 3, 4, 4093), new TextEncoder().encode('hello\0'));
    assert.equal(t.g.readCString(va(1, 2, 3, 4, 4093), 32), 'hello');
    assert.equal(t.g.readCString(va(1, 2, 3, 4, 4093), 3), 'hel');
  });
});

describe('guest_access: PAE (3-level)', () => {
  const PDPT = 0x20020; // 32-byte aligned, not page aligned
  const PD = 0x21000;
  const PT = 0x22000;
  const va = (l3: number, l2: number, l1: number, off = 0) => BigInt(l3 * 2 ** 30 + l2 * 2 ** 21 + l1 * 2 ** 12 + off);
  let t: ReturnType<typeof mkGuest>;
  const pte = (table: number, i: number, v: bigint) => t.dv.setBigUint64(table + i * 8, v, true);
  const ctx = (wp = true): PagingContext => ({ cr0: CR0_PE | CR0_PG | (wp ? CR0_WP : 0), cr3: BigInt(PDPT), cr4: CR4_PAE, efer: 0 });

  beforeEach(() => {
    t = mkGuest();
    pte(PDPT, 1, BigInt(PD) | P);
    pte(PD, 2, BigInt(PT) | P | RW);
    pte(PD, 4, 0x400000n | P | RW | PS);
    pte(PD, 6, 0x600000n | P | PS); // read-only 2 MiB
    pte(PT, 3, 0x30000n | P | RW);
    pte(PT, 4, 0x31000n | P); // read-only
    pte(PT, 5, 0x32000n | P | RW | NX);
    t.g.setContext(ctx());
  });

  test('4 KiB and 2 MiB pages', () => {
    assert.equal(t.g.translate(va(1, 2, 3, 0x10), true), 0x30010);
    assert.equal(t.g.translate(va(1, 2, 5, 1), true), 0x32001, 'NX bit ignored in the address');
    assert.equal(t.g.translate(va(1, 4, 0x55, 0x66), true), 0x400000 + 0x55066);
    assert.equal(t.g.translate(va(1, 2, 3) | 0xffffffff00000000n, false), 0x30000, 'upper VA bits ignored outside long mode');
  });

  test('not present at each level', () => {
    assert.throws(() => t.g.translate(va(0, 0, 0), false), isFault(/PDPTE/));
    assert.throws(() => t.g.translate(va(1, 5, 0), false), isFault(/PDE/));
    assert.throws(() => t.g.translate(va(1, 2, 6), false), isFault(/PTE/));
  });

  test('read-only with and without CR0.WP', () => {
    assert.throws(() => t.g.write(va(1, 2, 4), Uint8Array.of(1)), isFault(/read-only/));
    assert.throws(() => t.g.write(va(1, 6, 0), Uint8Array.of(1)), isFault(/read-only/));
    t.g.setContext(ctx(false));
    t.g.write(va(1, 2, 4), Uint8Array.of(7));
    assert.equal(t.mem[0x31000], 7);
  });
});

describe('guest_access: 2-level 32-bit paging', () => {
  const PD = 0x40000;
  const PT = 0x41000;
  const va = (l2: number, l1: number, off = 0) => BigInt(l2 * 2 ** 22 + l1 * 2 ** 12 + off);
  let t: ReturnType<typeof mkGuest>;
  const pde = (table: number, i: number, v: number) => t.dv.setUint32(table + i * 4, v >>> 0, true);
  const ctx = (o: { wp?: boolean; pse?: boolean } = {}): PagingContext => ({
    cr0: CR0_PE | CR0_PG | (o.wp === false ? 0 : CR0_WP), cr3: BigInt(PD), cr4: o.pse === false ? 0 : CR4_PSE, efer: 0,
  });

  beforeEach(() => {
    t = mkGuest();
    pde(PD, 1, PT | 3);
    pde(PD, 2, 0x400000 | 3 | 0x80); // 4 MiB page at GPA 4 MiB
    pde(PD, 3, PT | 1); // read-only at the directory level
    pde(PT, 2, 0x50000 | 3);
    pde(PT, 3, 0x51000 | 1); // read-only
    t.g.setContext(ctx());
  });

  test('4 KiB pages and PSE 4 MiB pages', () => {
    assert.equal(t.g.translate(va(1, 2, 0xabc), true), 0x50abc);
    assert.equal(t.g.translate(va(2, 0x123, 0x456), true), 0x400000 + 0x123456);
  });

  test('without CR4.PSE the PS bit is ignored: the entry points to a page table', () => {
    t.g.setContext(ctx({ pse: false }));
    // the "page table" at 0x400000 is empty: not present
    assert.throws(() => t.g.translate(va(2, 5), false), isFault(/PTE/));
    pde(0x400000, 5, 0x52000 | 3);
    assert.equal(t.g.translate(va(2, 5, 9), false), 0x52009);
  });

  test('not present and read-only', () => {
    assert.throws(() => t.g.translate(va(0, 0), false), isFault(/PDE/));
    assert.throws(() => t.g.translate(va(1, 4), false), isFault(/PTE/));
    assert.throws(() => t.g.write(va(1, 3), Uint8Array.of(1)), isFault(/read-only/));
    assert.throws(() => t.g.write(va(3, 2), Uint8Array.of(1)), isFault(/read-only/));
    assert.equal(t.g.translate(va(3, 2), false), 0x50000);
    t.g.setContext(ctx({ wp: false }));
    t.g.write(va(1, 3), Uint8Array.of(5));
    assert.equal(t.mem[0x51000], 5);
  });

  test('copy across a 4 MiB page boundary into a 4 KiB page', () => {
    pde(PD, 3, PT | 3);
    pde(PT, 0, 0x53000 | 3);
    // last bytes of the PSE page at va(2,...) then va(3,0)
    const a = va(3, 0) - 3n;
    t.g.write(a, Uint8Array.of(1, 2, 3, 4, 5));
    assert.deepEqual([...t.mem.subarray(0x7ffffd, 0x800000)], [1, 2, 3]);
    assert.deepEqual([...t.mem.subarray(0x53000, 0x53002)], [4, 5]);
  });
});
