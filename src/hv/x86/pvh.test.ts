import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';

import {
  HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, SIF_INITDOMAIN, SIF_PRIVILEGED, XEN_HVM_MEMMAP_TYPE_RAM,
  XEN_HVM_MEMMAP_TYPE_RESERVED, XEN_HVM_START_MAGIC_VALUE,
} from '../abi/start_info.js';
import { buildPvhE820, type E820Entry } from './e820.js';
import { XEN_ELFNOTE } from './elf.js';
import { BOOT_DATA_MIN_GPA, PvhLoadError, loadPvh, parsePvhElf, pvhEntryState, type PvhImage } from './pvh.js';
import type { FuzzData, FuzzResult } from './pvh_fuzz_worker.js';
import { havePeer, which } from '../../testing/peers.js';
import { root } from '../../testing/xenode.js';

// ---------------------------------------------------------------------------
// A tiny ELF writer: enough to produce the shapes real PVH kernels have.

interface TSeg {
  type?: number; // PT_LOAD by default
  paddr: number | bigint;
  vaddr?: number | bigint;
  data?: Uint8Array;
  memsz?: number | bigint; // default data.length
  filesz?: number | bigint; // default data.length
  align?: number | bigint;
  flags?: number;
  /** Force the file offset of the data (else the next 16-byte boundary). */
  fileOffset?: number | bigint;
}
interface TNote {
  name?: string; // "Xen"
  type: number;
  desc: Uint8Array;
}
interface TElf {
  bits: 32 | 64;
  machine?: number;
  etype?: number;
  entry?: number | bigint;
  segs: TSeg[];
  notes?: TNote[];
  /** Where notes go: a PT_NOTE segment (default), an SHT_NOTE section, or both. */
  noteWhere?: 'segment' | 'section' | 'both';
  noteAlign?: 4 | 8;
  /** Extra notes in a second, section-only container (for the fallback rule). */
  sectionNotes?: TNote[];
}

const PT_LOAD = 1;
const PT_NOTE = 4;
const PT_GNU_STACK = 0x6474e551;

const u32 = (v: number): Uint8Array => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v, true); return b; };
const u64 = (v: bigint | number): Uint8Array => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(v), true); return b; };
const str = (s: string): Uint8Array => new TextEncoder().encode(s + '\0');
const bytesOf = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + 1) & 0xff);
const cat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

/** Notes as binutils lays them out: padding aligns the position of desc and of the next note. */
function encodeNotes(notes: TNote[], align: number): Uint8Array {
  const parts: Uint8Array[] = [];
  let at = 0;
  const put = (b: Uint8Array) => { parts.push(b); at += b.length; };
  const alignTo = () => put(new Uint8Array((align - (at % align)) % align));
  for (const n of notes) {
    const name = n.name === undefined ? str('Xen') : n.name === '' ? new Uint8Array(0) : str(n.name);
    put(u32(name.length)); put(u32(n.desc.length)); put(u32(n.type)); put(name); alignTo(); put(n.desc); alignTo();
  }
  return cat(...parts);
}

function buildElf(spec: TElf): Uint8Array {
  const is64 = spec.bits === 64;
  const ehsize = is64 ? 64 : 52;
  const phentsize = is64 ? 56 : 32;
  const shentsize = is64 ? 64 : 40;
  const noteAlign = spec.noteAlign ?? 4;
  const noteWhere = spec.noteWhere ?? 'segment';
  const noteBlob = spec.notes ? encodeNotes(spec.notes, noteAlign) : null;
  const secBlob = spec.sectionNotes ? encodeNotes(spec.sectionNotes, 4) : null;
  const phdrs: TSeg[] = [...spec.segs];
  const notePh = noteBlob && noteWhere !== 'section' ? phdrs.push({ type: PT_NOTE, paddr: 0, align: noteAlign }) - 1 : -1;
  const phoff = ehsize;
  let at = phoff + phdrs.length * phentsize;
  const chunks: [number, Uint8Array][] = [];
  const place = (b: Uint8Array, off?: number | bigint): number => {
    const o = off === undefined ? Math.ceil(at / 16) * 16 : Number(off);
    chunks.push([o, b]);
    at = Math.max(at, o + b.length);
    return o;
  };
  const offsets = phdrs.map((s, i) => {
    if (i === notePh) return 0;
    if (s.fileOffset !== undefined && !s.data) return Number(s.fileOffset);
    return s.data ? place(s.data, s.fileOffset) : 0;
  });
  let noteOff = 0;
  if (noteBlob) noteOff = place(noteBlob);
  if (notePh >= 0) offsets[notePh] = noteOff;
  let secOff = 0;
  if (secBlob) secOff = place(secBlob);
  const sections: { off: number; size: number }[] = [];
  if (noteBlob && noteWhere !== 'segment') sections.push({ off: noteOff, size: noteBlob.length });
  if (secBlob) sections.push({ off: secOff, size: secBlob.length });
  const shoff = sections.length ? Math.ceil(at / 8) * 8 : 0;
  const total = shoff ? shoff + (sections.length + 1) * shentsize : at;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, 1, 1]);
  dv.setUint16(16, spec.etype ?? 2, true);
  dv.setUint16(18, spec.machine ?? (is64 ? 62 : 3), true);
  dv.setUint32(20, 1, true);
  const w = (off: number, v: number | bigint, wide: boolean) => {
    if (wide) dv.setBigUint64(off, BigInt(v), true);
    else dv.setUint32(off, Number(v), true);
  };
  w(24, spec.entry ?? 0, is64);
  w(is64 ? 32 : 28, phoff, is64);
  w(is64 ? 40 : 32, shoff, is64);
  dv.setUint16(is64 ? 52 : 40, ehsize, true);
  dv.setUint16(is64 ? 54 : 42, phentsize, true);
  dv.setUint16(is64 ? 56 : 44, phdrs.length, true);
  dv.setUint16(is64 ? 58 : 46, shentsize, true);
  dv.setUint16(is64 ? 60 : 48, sections.length ? sections.length + 1 : 0, true);
  phdrs.forEach((s, i) => {
    const b = phoff + i * phentsize;
    const isNote = i === notePh;
    const filesz = isNote ? noteBlob!.length : (s.filesz ?? s.data?.length ?? 0);
    const memsz = isNote ? 0 : (s.memsz ?? s.data?.length ?? 0);
    dv.setUint32(b, s.type ?? PT_LOAD, true);
    if (is64) {
      dv.setUint32(b + 4, s.flags ?? 7, true);
      w(b + 8, offsets[i]!, true); w(b + 16, s.vaddr ?? s.paddr, true); w(b + 24, s.paddr, true);
      w(b + 32, filesz, true); w(b + 40, memsz, true); w(b + 48, s.align ?? 0x1000, true);
    } else {
      w(b + 4, offsets[i]!, false); w(b + 8, s.vaddr ?? s.paddr, false); w(b + 12, s.paddr, false);
      w(b + 16, filesz, false); w(b + 20, memsz, false); dv.setUint32(b + 24, s.flags ?? 7, true); w(b + 28, s.align ?? 0x1000, false);
    }
  });
  for (const [o, b] of chunks) out.set(b, o);
  sections.forEach((s, i) => {
    const b = shoff + (i + 1) * shentsize;
    dv.setUint32(b + 4, 7, true); // SHT_NOTE
    if (is64) { w(b + 24, s.off, true); w(b + 32, s.size, true); w(b + 48, 4, true); }
    else { w(b + 16, s.off, false); w(b + 20, s.size, false); w(b + 32, 4, false); }
  });
  return out;
}

const entryNote = (addr: number, size: 4 | 8 = 4): TNote => ({ type: XEN_ELFNOTE.PHYS32_ENTRY, desc: size === 4 ? u32(addr) : u64(addr) });
const relocNote = (...words: number[]): TNote => ({ type: XEN_ELFNOTE.PHYS32_RELOC, desc: cat(...words.map(u32)) });

/** A small two-segment kernel at 1 MiB: text + data with bss. */
function simpleKernel(bits: 32 | 64, extra: Partial<TElf> = {}): TElf {
  return {
    bits,
    entry: 0x100000,
    segs: [
      { paddr: 0x100000, data: bytesOf(0x1234, 1), align: 0x1000 },
      { paddr: 0x102000, data: bytesOf(0x300, 2), memsz: 0x2000, align: 0x1000 },
    ],
    notes: [entryNote(0x100010)],
    ...extra,
  };
}

const MiB = 0x100000;
function ramOf(size: number, fill = 0xaa): Uint8Array {
  return new Uint8Array(size).fill(fill);
}
const e820 = (size: number): E820Entry[] => buildPvhE820(size);

function expectLoadError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PvhLoadError, `expected PvhLoadError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

/** Reads and checks hvm_start_info; returns its fields. */
function readStartInfo(ram: Uint8Array, gpa: number) {
  const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  const si = HvmStartInfo.read(dv, gpa);
  assert.equal(si.magic, XEN_HVM_START_MAGIC_VALUE);
  assert.equal(si.version, 1);
  assert.equal(si.reserved, 0);
  assert.equal(si.rsdp_paddr, 0n);
  return si;
}
function cstrAt(ram: Uint8Array, gpa: number): string {
  const end = ram.indexOf(0, gpa);
  assert.ok(end >= gpa, 'string is NUL-terminated');
  return new TextDecoder().decode(ram.subarray(gpa, end));
}
function memmapAt(ram: Uint8Array, gpa: number, n: number): E820Entry[] {
  const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  return Array.from({ length: n }, (_, i) => {
    const v = HvmMemmapTableEntry.read(dv, gpa + i * HvmMemmapTableEntry.size);
    assert.equal(v.reserved, 0);
    return { addr: Number(v.addr), size: Number(v.size), type: v.type };
  });
}
function assertSegmentsLoaded(ram: Uint8Array, img: PvhImage, delta = 0): void {
  for (const s of img.segments) {
    const at = s.paddr + delta;
    assert.deepEqual(ram.subarray(at, at + s.filesz), img.bytes.subarray(s.fileOffset, s.fileOffset + s.filesz), `segment ${s.index} contents`);
    assert.ok(ram.subarray(at + s.filesz, at + s.memsz).every((b) => b === 0), `segment ${s.index} bss is zero`);
  }
}

// ---------------------------------------------------------------------------

describe('parsePvhElf', () => {
  for (const bits of [32, 64] as const) {
    test(`ELF${bits}: segments, entry and extent`, () => {
      const img = parsePvhElf(buildElf(simpleKernel(bits)));
      assert.equal(img.bits, bits);
      assert.equal(img.machine, bits === 32 ? 3 : 62);
      assert.equal(img.phys32Entry, 0x100010);
      assert.equal(img.segments.length, 2);
      assert.equal(img.imageStart, 0x100000);
      assert.equal(img.imageEnd, 0x104000);
      assert.equal(img.segments[1]!.filesz, 0x300);
      assert.equal(img.segments[1]!.memsz, 0x2000);
      assert.equal(img.reloc, null);
      assert.equal(img.maxAlign, 0x1000);
    });
  }

  test('Linux-style ELF64: 8-byte PHYS32_ENTRY, string and PV notes, a foreign note first', () => {
    const img = parsePvhElf(buildElf({
      bits: 64,
      entry: 0xffffffff81000000n,
      segs: [{ paddr: 0x1000000, vaddr: 0xffffffff81000000n, data: bytesOf(0x800, 3), memsz: 0x4000, align: 0x200000 }],
      notes: [
        { name: 'GNU', type: 3, desc: bytesOf(20, 9) },
        { type: XEN_ELFNOTE.GUEST_OS, desc: str('linux') },
        { type: XEN_ELFNOTE.XEN_VERSION, desc: str('xen-3.0') },
        { type: XEN_ELFNOTE.ENTRY, desc: u64(0xffffffff81000100n) },
        { type: XEN_ELFNOTE.FEATURES, desc: str('!writable_page_tables') },
        entryNote(0x1000040, 8),
      ],
    }));
    assert.equal(img.phys32Entry, 0x1000040);
    assert.equal(img.guestOs, 'linux');
    assert.equal(img.elfEntry, 0xffffffff81000000n);
    assert.equal(img.segments[0]!.vaddr, 0xffffffff81000000n);
    assert.equal(img.notes.length, 5, 'only the Xen notes');
    const byName = Object.fromEntries(img.notes.map((n) => [n.name, n]));
    assert.equal(byName.XEN_VERSION!.text, 'xen-3.0');
    assert.equal(byName.ENTRY!.value, 0xffffffff81000100n);
    assert.equal(byName.FEATURES!.text, '!writable_page_tables');
    assert.equal(img.maxAlign, 0x200000);
  });

  test('8-byte-aligned PT_NOTE padding', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64, {
      noteAlign: 8,
      notes: [{ type: XEN_ELFNOTE.GUEST_OS, desc: str('Mini-OS') }, entryNote(0x100020)],
    })));
    assert.equal(img.guestOs, 'Mini-OS');
    assert.equal(img.phys32Entry, 0x100020);
  });

  test('GRUB shape: ELF32, second PT_LOAD unaligned (align 4) right after the first one\'s bss', () => {
    const first = bytesOf(0xbccb, 4);
    const second = bytesOf(0xbf0, 5);
    const img = parsePvhElf(buildElf({
      bits: 32,
      entry: 0x100000,
      segs: [
        { paddr: 0x100000, data: first, memsz: 0x25858, fileOffset: 0x1000 },
        { type: PT_GNU_STACK, paddr: 0, align: 4, fileOffset: 0x1000 + 0xbccb },
        { paddr: 0x125858, data: second, align: 4, fileOffset: 0x1000 + 0xbccb },
      ],
      notes: [entryNote(0x100000)],
    }));
    assert.equal(img.segments.length, 2);
    assert.equal(img.segments[1]!.fileOffset, 0xcccb);
    assert.equal(img.segments[1]!.align, 4);
    assert.equal(img.imageEnd, 0x125858 + 0xbf0);
    const ram = ramOf(4 * MiB);
    const r = loadPvh(ram, img, { memmap: e820(4 * MiB) });
    assertSegmentsLoaded(ram, img);
    assert.equal(r.entry, 0x100000);
    assert.ok(r.startInfoGpa >= 0x125858 + 0xbf0);
  });

  test('Solo5 shape: zero-size PT_LOAD at vaddr 0 and a bss-only PT_LOAD', () => {
    const img = parsePvhElf(buildElf({
      bits: 64,
      entry: 0x100000,
      segs: [
        { paddr: 0, vaddr: 0, align: 0x1000 },
        { paddr: 0x100000, data: bytesOf(0x2000, 6) },
        { paddr: 0x102000, memsz: 0x5000, fileOffset: 0x3000 },
      ],
      notes: [entryNote(0x100000)],
    }));
    assert.equal(img.emptySegments, 1);
    assert.equal(img.segments.length, 2);
    assert.equal(img.imageStart, 0x100000, 'a zero-size segment does not extend the image');
    assert.equal(img.imageEnd, 0x107000);
    const ram = ramOf(8 * MiB);
    loadPvh(ram, img, { memmap: e820(8 * MiB) });
    assert.ok(ram.subarray(0x102000, 0x107000).every((b) => b === 0), 'bss-only segment zeroed');
    assert.equal(ram[0], 0xaa, 'nothing written for the zero-size segment');
  });

  test('notes from SHT_NOTE sections when there is no PT_NOTE', () => {
    const img = parsePvhElf(buildElf(simpleKernel(32, { noteWhere: 'section' })));
    assert.equal(img.phys32Entry, 0x100010);
    const img64 = parsePvhElf(buildElf(simpleKernel(64, { noteWhere: 'section' })));
    assert.equal(img64.phys32Entry, 0x100010);
  });

  test('sections are consulted when PT_NOTE holds no Xen note (libelf rule), and ignored otherwise', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64, {
      notes: [{ name: 'GNU', type: 1, desc: u32(0) }],
      sectionNotes: [entryNote(0x100abc)],
    })));
    assert.equal(img.phys32Entry, 0x100abc);
    const img2 = parsePvhElf(buildElf(simpleKernel(64, { sectionNotes: [entryNote(0x100abc)] })));
    assert.equal(img2.phys32Entry, 0x100010, 'PT_NOTE Xen notes win; sections not read');
  });

  test('a PT_NOTE with p_offset 0 (old binutils) is skipped, as libelf does', () => {
    const b = buildElf(simpleKernel(64, { noteWhere: 'both' }));
    const dv = new DataView(b.buffer);
    const ph = 64 + 2 * 56;
    assert.equal(dv.getUint32(ph, true), PT_NOTE);
    dv.setBigUint64(ph + 8, 0n, true);
    assert.equal(parsePvhElf(b).phys32Entry, 0x100010, 'found through the section instead');
  });

  test('entry at GPA 0 is valid (Mini-OS)', () => {
    const img = parsePvhElf(buildElf({ bits: 64, segs: [{ paddr: 0, data: bytesOf(0x3000, 7), memsz: 0x8000 }], notes: [entryNote(0)] }));
    assert.equal(img.phys32Entry, 0);
    assert.equal(img.imageStart, 0);
  });

  test('a later PHYS32_ENTRY overrides an earlier one', () => {
    const img = parsePvhElf(buildElf(simpleKernel(32, { notes: [entryNote(0x100004), entryNote(0x100008)] })));
    assert.equal(img.phys32Entry, 0x100008);
  });

  test('PHYS32_RELOC with 0 to 3 words and their defaults', () => {
    const parse = (...w: number[]) => parsePvhElf(buildElf(simpleKernel(64, { notes: [entryNote(0x100000), relocNote(...w)] }))).reloc;
    assert.deepEqual(parse(), { min: 0, max: 0xffffffff });
    assert.deepEqual(parse(0x400000), { align: 0x400000, min: 0, max: 0xffffffff });
    assert.deepEqual(parse(0x200000, 0x1000000), { align: 0x200000, min: 0x1000000, max: 0xffffffff });
    assert.deepEqual(parse(0x1000, 0x100000, 0x3fffffff), { align: 0x1000, min: 0x100000, max: 0x3fffffff });
  });
});

describe('parsePvhElf errors', () => {
  const good32 = buildElf(simpleKernel(32));
  const good64 = buildElf(simpleKernel(64));
  const patched = (base: Uint8Array, edit: (dv: DataView, b: Uint8Array) => void): Uint8Array => {
    const b = base.slice();
    edit(new DataView(b.buffer), b);
    return b;
  };

  test('not ELF / truncated header / bad ident', () => {
    expectLoadError(() => parsePvhElf(new Uint8Array(0)), /not an ELF file/);
    expectLoadError(() => parsePvhElf(good32.subarray(0, 3)), /not an ELF file/);
    expectLoadError(() => parsePvhElf(new TextEncoder().encode('#!/bin/sh\necho hi\n')), /not an ELF file: bad magic/);
    expectLoadError(() => parsePvhElf(good64.subarray(0, 40)), /truncated ELF64 header/);
    expectLoadError(() => parsePvhElf(good32.subarray(0, 20)), /truncated ELF32 header/);
    expectLoadError(() => parsePvhElf(patched(good32, (_, b) => { b[4] = 3; })), /unsupported ELF class 3/);
    expectLoadError(() => parsePvhElf(patched(good32, (_, b) => { b[5] = 2; })), /not little-endian/);
    expectLoadError(() => parsePvhElf(patched(good32, (_, b) => { b[6] = 0; })), /ident version/);
    expectLoadError(() => parsePvhElf(patched(good32, (dv) => dv.setUint32(20, 2, true))), /unsupported ELF version/);
  });

  test('not x86, not an executable', () => {
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { machine: 183 }))), /not an x86 kernel: ELF64 e_machine 183/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(32, { machine: 40 }))), /not an x86 kernel/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { etype: 1 }))), /not an executable/);
  });

  test('program header table outside the file or malformed', () => {
    expectLoadError(() => parsePvhElf(patched(good64, (dv) => dv.setUint16(56, 0xffff, true))), /program header table .* outside/);
    expectLoadError(() => parsePvhElf(patched(good64, (dv) => dv.setBigUint64(32, 0xffffffffffff0000n, true))), /program header table .* outside/);
    expectLoadError(() => parsePvhElf(patched(good32, (dv) => dv.setUint32(28, 0xfffffff0, true))), /program header table .* outside/);
    expectLoadError(() => parsePvhElf(patched(good32, (dv) => dv.setUint16(42, 16, true))), /e_phentsize 16 is smaller/);
    expectLoadError(() => parsePvhElf(good64.subarray(0, 64 + 56)), /program header table/);
  });

  test('truncated at every length: always a PvhLoadError, never anything else', () => {
    for (const good of [good32, good64]) {
      for (let n = 0; n < good.length; n++) {
        assert.throws(() => parsePvhElf(good.subarray(0, n)), PvhLoadError, `length ${n}`);
      }
    }
  });

  test('segment contents outside the file', () => {
    const seg = (off: number | bigint, filesz: number) => buildElf(simpleKernel(64, {
      segs: [{ paddr: 0x100000, fileOffset: off, filesz, memsz: 0x200000 }],
    }));
    expectLoadError(() => parsePvhElf(seg(0x100000, 0x100)), /PT_LOAD program header 0 file contents .* outside/);
    expectLoadError(() => parsePvhElf(seg(0x40, 0x100000)), /outside the \d+-byte file/);
    expectLoadError(() => parsePvhElf(seg(0xffffffffffffff00n, 0x200)), /outside/);
  });

  test('bogus sizes: filesz > memsz, beyond 4 GiB, huge memsz (no allocation), overlaps', () => {
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(32, { segs: [{ paddr: 0x100000, data: bytesOf(0x100, 1), memsz: 0x80 }] }))),
      /p_filesz 0x100 exceeds p_memsz 0x80/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { segs: [{ paddr: 0x1_0000_0000, data: bytesOf(0x10, 1) }] }))),
      /extends beyond 4 GiB/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(32, { segs: [{ paddr: 0xfffff000, data: bytesOf(0x10, 1), memsz: 0x2000 }] }))),
      /extends beyond 4 GiB/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { segs: [{ paddr: 0x100000, data: bytesOf(0x10, 1), memsz: 1n << 62n }] }))),
      /extends beyond 4 GiB/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { segs: [{ paddr: 0xffffffffffff0000n, data: bytesOf(0x10, 1), memsz: 0x20000 }] }))),
      /extends beyond 4 GiB/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(32, {
      segs: [{ paddr: 0x100000, data: bytesOf(0x100, 1), memsz: 0x3000 }, { paddr: 0x102000, data: bytesOf(0x100, 2) }],
    }))), /PT_LOAD program headers 0 .* and 1 .* overlap/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(32, {
      segs: [{ paddr: 0x200000, data: bytesOf(0x100, 1) }, { paddr: 0x100000, data: bytesOf(0x100, 2), memsz: 0x100001 }],
    }))), /overlap/);
  });

  test('no loadable segment', () => {
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { segs: [] }))), /no loadable segments/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { segs: [{ paddr: 0 }] }))), /no loadable segments/);
  });

  test('not PVH: no PHYS32_ENTRY', () => {
    const msg = /^not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY note/;
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { notes: [] }))), msg);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { notes: undefined }))), msg);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(32, { notes: [{ name: 'Xen!', type: 18, desc: u32(0x100000) }] }))), msg);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(32, { notes: [{ name: 'GNU', type: 18, desc: u32(0x100000) }] }))), msg);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, {
      notes: [{ type: XEN_ELFNOTE.ENTRY, desc: u64(0xffffffff80000000n) }, { type: XEN_ELFNOTE.GUEST_OS, desc: str('linux') }],
    }))), /no XEN_ELFNOTE_PHYS32_ENTRY note \(it is a PV-only kernel\)/);
  });

  test('bad PHYS32_ENTRY / PHYS32_RELOC descriptors', () => {
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(32, { notes: [{ type: 18, desc: new Uint8Array(3) }] }))), /3-byte descriptor/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { notes: [{ type: 18, desc: u64(0x1_0000_0000n) }] }))), /not a 32-bit address/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { notes: [entryNote(0x100000), relocNote(0x3000)] }))), /alignment 0x3000 is not a power of two/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { notes: [entryNote(0x100000), relocNote(0)] }))), /alignment 0x0 is not a power of two/);
    expectLoadError(() => parsePvhElf(buildElf(simpleKernel(64, { notes: [entryNote(0x100000), relocNote(0x1000, 0x2000000, 0x1000000)] }))), /minimum .* above its maximum/);
  });

  test('notes overrunning their container, containers outside the file', () => {
    // A note whose descsz runs past the PT_NOTE segment.
    const overrun = patched(good32, (dv, b) => {
      const phoff = 52 + 2 * 32; // the PT_NOTE header follows the two PT_LOADs
      const off = dv.getUint32(phoff + 4, true);
      assert.equal(dv.getUint32(phoff, true), PT_NOTE);
      dv.setUint32(off + 4, 0x7fffffff, true);
      void b;
    });
    expectLoadError(() => parsePvhElf(overrun), /note at file offset .* overruns its 20-byte container/);
    const outside = patched(good64, (dv) => {
      const phoff = 64 + 2 * 56;
      dv.setBigUint64(phoff + 8, 0x7fffffffn, true);
    });
    expectLoadError(() => parsePvhElf(outside), /PT_NOTE program header 2 .* outside/);
    const hugeNote = patched(good64, (dv) => dv.setBigUint64(64 + 2 * 56 + 32, 1n << 60n, true));
    expectLoadError(() => parsePvhElf(hugeNote), /PT_NOTE program header 2 .* outside/);
    // Section header table out of range, needed because there is no PT_NOTE.
    const secOnly = buildElf(simpleKernel(64, { noteWhere: 'section' }));
    expectLoadError(() => parsePvhElf(patched(secOnly, (dv) => dv.setUint16(60, 5000, true))), /section header table .* outside/);
    expectLoadError(() => parsePvhElf(patched(secOnly, (dv) => dv.setUint16(58, 8, true))), /e_shentsize 8 is smaller/);
    const shoff = Number(new DataView(secOnly.buffer).getBigUint64(40, true));
    expectLoadError(() => parsePvhElf(patched(secOnly, (dv) => dv.setBigUint64(shoff + 64 + 32, 1n << 40n, true))), /SHT_NOTE section 1 .* outside/);
  });

  test('random corruption never escapes as another error type and never hangs', async () => {
    // In a worker, so that a parse that never returns is seen (no progress for
    // STUCK_MS, far beyond one iteration's cost even on a loaded machine) and named.
    const STUCK_MS = 15_000;
    const iterations = 3000;
    const progress = new SharedArrayBuffer(4);
    const data: FuzzData = { bases: [good32, good64, buildElf(simpleKernel(64, { noteWhere: 'section' }))], iterations, seed: 12345, progress };
    const w = new Worker(new URL('./pvh_fuzz_worker.js', import.meta.url), { workerData: data });
    try {
      const done = new Promise<FuzzResult>((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
      const at = new Int32Array(progress);
      let last = -1;
      for (;;) {
        const r = await Promise.race([done, new Promise<null>((ok) => setTimeout(() => ok(null), STUCK_MS))]);
        if (r) {
          assert.equal(r.escaped, null);
          assert.ok(r.parsed > 0, 'some mutations still parse');
          assert.equal(Atomics.load(at, 0), iterations, 'every iteration ran');
          break;
        }
        const now = Atomics.load(at, 0);
        assert.notEqual(now, last, `iteration ${now} (seed 12345) did not return within ${STUCK_MS} ms: parse or load hangs`);
        last = now;
      }
    } finally {
      await w.terminate();
    }
  });
});

describe('loadPvh', () => {
  test('copies segments, zeroes bss over stale RAM, writes start_info v1 with memmap and cmdline', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64)));
    const ram = ramOf(16 * MiB);
    const memmap = e820(16 * MiB);
    const r = loadPvh(ram, img, { memmap, cmdline: 'console=hvc0 quiet' });
    assertSegmentsLoaded(ram, img);
    assert.equal(ram[0x101234], 0xaa, 'the gap between segments is untouched');
    assert.equal(r.entry, 0x100010);
    assert.equal(r.relocated, false);
    assert.equal(r.relocationOffset, 0);
    assert.equal(r.imageStart, 0x100000);
    assert.equal(r.imageEnd, 0x104000);
    assert.equal(r.startInfoGpa % 0x1000, 0);
    assert.equal(r.startInfoGpa, 0x104000, 'first page after the image');
    const si = readStartInfo(ram, r.startInfoGpa);
    assert.equal(si.flags, 0);
    assert.equal(si.nr_modules, 0);
    assert.equal(si.modlist_paddr, 0n);
    assert.equal(cstrAt(ram, Number(si.cmdline_paddr)), 'console=hvc0 quiet');
    assert.equal(si.memmap_entries, memmap.length);
    assert.deepEqual(memmapAt(ram, Number(si.memmap_paddr), si.memmap_entries), memmap);
    assert.equal(Number(si.memmap_paddr), r.memmapPaddr);
    assert.equal(Number(si.cmdline_paddr), r.cmdlinePaddr);
    assert.ok(r.bootDataEnd <= 16 * MiB && r.bootDataStart >= r.imageEnd);
  });

  test('modules placed page-aligned after the image, with cmdlines; start_info after the modules', () => {
    const img = parsePvhElf(buildElf(simpleKernel(32)));
    const ram = ramOf(32 * MiB);
    const m0 = bytesOf(0x12345, 8);
    const m1 = bytesOf(0x800, 9);
    const r = loadPvh(ram, img, {
      memmap: e820(32 * MiB),
      modules: [{ data: m0, cmdline: 'initrd one' }, { data: m1 }, { data: new Uint8Array(0), cmdline: '' }],
      startInfoFlags: SIF_PRIVILEGED | SIF_INITDOMAIN,
    });
    const si = readStartInfo(ram, r.startInfoGpa);
    assert.equal(si.flags, 3);
    assert.equal(si.nr_modules, 3);
    assert.equal(si.cmdline_paddr, 0n, 'no cmdline: 0');
    const dv = new DataView(ram.buffer);
    const mods = [0, 1, 2].map((i) => HvmModlistEntry.read(dv, Number(si.modlist_paddr) + i * HvmModlistEntry.size));
    assert.equal(Number(mods[0]!.paddr), 0x104000);
    assert.deepEqual(ram.subarray(Number(mods[0]!.paddr), Number(mods[0]!.paddr) + m0.length), m0);
    assert.equal(mods[0]!.size, BigInt(m0.length));
    assert.equal(cstrAt(ram, Number(mods[0]!.cmdline_paddr)), 'initrd one');
    assert.equal(Number(mods[1]!.paddr) % 0x1000, 0);
    assert.ok(Number(mods[1]!.paddr) >= Number(mods[0]!.paddr) + m0.length);
    assert.deepEqual(ram.subarray(Number(mods[1]!.paddr), Number(mods[1]!.paddr) + m1.length), m1);
    assert.equal(mods[1]!.cmdline_paddr, 0n);
    assert.equal(mods[2]!.size, 0n);
    assert.equal(cstrAt(ram, Number(mods[2]!.cmdline_paddr)), '');
    assert.equal(mods[0]!.reserved, 0n);
    assert.ok(r.startInfoGpa >= Number(mods[1]!.paddr) + m1.length, 'start_info clear of the modules');
    assert.equal(r.startInfoGpa % 0x1000, 0);
    // The padding after a module is zeroed, not stale.
    assert.ok(ram.subarray(Number(mods[0]!.paddr) + m0.length, Number(mods[1]!.paddr)).every((b) => b === 0));
    assert.deepEqual(r.modules.map((m) => m.size), [m0.length, m1.length, 0]);
  });

  test('image at GPA 0 with entry 0 (Mini-OS): boot data stays above 0x90000', () => {
    const img = parsePvhElf(buildElf({ bits: 64, segs: [{ paddr: 0, data: bytesOf(0x3000, 7), memsz: 0x8000 }], notes: [entryNote(0)] }));
    const ram = ramOf(8 * MiB);
    const r = loadPvh(ram, img, { memmap: e820(8 * MiB), cmdline: 'x' });
    assert.equal(r.entry, 0);
    assert.equal(r.imageStart, 0);
    assert.ok(r.bootDataStart >= BOOT_DATA_MIN_GPA && BOOT_DATA_MIN_GPA === 0x90000);
    assertSegmentsLoaded(ram, img);
    readStartInfo(ram, r.startInfoGpa);
    const st = pvhEntryState(r.entry, r.startInfoGpa);
    assert.equal(st.regs.rip, 0n);
  });

  test('a large image at 0 puts boot data after its last byte', () => {
    const img = parsePvhElf(buildElf({ bits: 64, segs: [{ paddr: 0, data: bytesOf(0x100, 7), memsz: 0x123456 }], notes: [entryNote(0)] }));
    const r = loadPvh(ramOf(8 * MiB), img, { memmap: e820(8 * MiB) });
    assert.equal(r.startInfoGpa, 0x124000);
  });

  test('image outside RAM and not relocatable: error', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64, { segs: [{ paddr: 0x1000000, data: bytesOf(0x100, 1) }] })));
    expectLoadError(() => loadPvh(ramOf(8 * MiB), img, { memmap: e820(8 * MiB) }), /does not fit in guest RAM .* not relocatable \(no XEN_ELFNOTE_PHYS32_RELOC\)/);
    // The memory map, not just the buffer, decides what is RAM.
    const img2 = parsePvhElf(buildElf(simpleKernel(64)));
    const holey: E820Entry[] = [{ addr: 0, size: 0x9f000, type: XEN_HVM_MEMMAP_TYPE_RAM }, { addr: 0x9f000, size: 0x200000, type: XEN_HVM_MEMMAP_TYPE_RESERVED }, { addr: 0x29f000, size: 0x500000, type: XEN_HVM_MEMMAP_TYPE_RAM }];
    expectLoadError(() => loadPvh(ramOf(8 * MiB), img2, { memmap: holey }), /not relocatable/);
    // An image straddling the end of the buffer.
    const img3 = parsePvhElf(buildElf(simpleKernel(64, { segs: [{ paddr: 0x7ff000, data: bytesOf(0x100, 1), memsz: 0x2000 }] })));
    expectLoadError(() => loadPvh(ramOf(8 * MiB), img3, { memmap: e820(64 * MiB) }), /does not fit/);
  });

  test('relocatable image that fits is loaded at p_paddr', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64, { notes: [entryNote(0x100010), relocNote(0x200000)] })));
    const r = loadPvh(ramOf(8 * MiB), img, { memmap: e820(8 * MiB) });
    assert.equal(r.relocated, false);
    assert.equal(r.entry, 0x100010);
  });

  test('relocation: highest aligned RAM address, entry moved, alignment from note / p_align / 2 MiB default, min and max', () => {
    const mk = (notes: TNote[], align = 0x1000) => parsePvhElf(buildElf({
      bits: 64,
      segs: [{ paddr: 0x1000000, data: bytesOf(0x1800, 3), memsz: 0x3000, align }, { paddr: 0x1004000, data: bytesOf(0x20, 4), memsz: 0x1000, align }],
      notes,
    }));
    const ramSize = 12 * MiB + 0x1234000; // RAM ends at an odd address
    const memmap: E820Entry[] = [{ addr: 0, size: 12 * MiB, type: XEN_HVM_MEMMAP_TYPE_RAM }];
    const size = 0x5000;
    const top = 12 * MiB;
    const cases: [TNote[], number, number][] = [
      [[entryNote(0x1000100), relocNote(0x100000)], 0x1000, Math.floor((top - size) / 0x100000) * 0x100000],
      [[entryNote(0x1000100), relocNote()], 0x10000, Math.floor((top - size) / 0x10000) * 0x10000], // p_align >= 4 KiB
      [[entryNote(0x1000100), relocNote()], 0x100, Math.floor((top - size) / 0x200000) * 0x200000], // default 2 MiB
      [[entryNote(0x1000100), relocNote(0x1000, 0, 0x3fffff)], 0x1000, 0x400000 - size], // max is inclusive
    ];
    for (const [notes, align, want] of cases) {
      const img = mk(notes, align);
      const ram = ramOf(ramSize);
      const r = loadPvh(ram, img, { memmap, cmdline: 'reloc' });
      assert.equal(r.relocated, true);
      assert.equal(r.imageStart, want, `placement for ${JSON.stringify(img.reloc)} / p_align ${align}`);
      assert.equal(r.relocationOffset, want - 0x1000000);
      assert.equal(r.entry, want + 0x100);
      assertSegmentsLoaded(ram, img, r.relocationOffset);
      assert.ok(r.bootDataStart >= r.imageEnd || r.bootDataEnd <= r.imageStart, 'boot data clear of the image');
      assert.ok(r.bootDataStart >= BOOT_DATA_MIN_GPA && r.bootDataEnd <= 12 * MiB);
      assert.equal(Number(readStartInfo(ram, r.startInfoGpa).cmdline_paddr), r.cmdlinePaddr);
      assert.equal(cstrAt(ram, r.cmdlinePaddr), 'reloc');
    }
    // min above every place that fits: error.
    expectLoadError(() => loadPvh(ramOf(ramSize), mk([entryNote(0x1000100), relocNote(0x1000, 0xc00000)]), { memmap }),
      /no 0x1000-aligned place for its 0x5000 bytes exists within \[0xc00000, 0xffffffff\]/);
    // Too big for RAM.
    expectLoadError(() => loadPvh(ramOf(0x4000), mk([entryNote(0x1000100), relocNote(0x1000)]), { memmap: [{ addr: 0, size: 0x4000, type: 1 }] }), /no 0x1000-aligned place/);
  });

  test('boot data falls back below the image when nothing fits after it', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64, { segs: [{ paddr: 0x400000, data: bytesOf(0x100, 1), memsz: 0x3ff000 }], notes: [entryNote(0x400000)] })));
    const ram = ramOf(8 * MiB);
    const r = loadPvh(ram, img, { memmap: e820(8 * MiB), modules: [{ data: bytesOf(0x2000, 2) }] });
    assert.equal(r.bootDataStart, BOOT_DATA_MIN_GPA);
    assert.ok(r.bootDataEnd <= 0x400000);
    readStartInfo(ram, r.startInfoGpa);
  });

  test('no room for boot data: error', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64)));
    expectLoadError(() => loadPvh(ramOf(2 * MiB), img, { memmap: e820(2 * MiB), modules: [{ data: new Uint8Array(2 * MiB) }] }),
      /no room in guest RAM .* for 0x201000 bytes of modules and start_info clear of the image/);
  });

  test('boot data stays inside the RAM buffer and below 4 GiB even if the map claims more', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64)));
    const ram = ramOf(0x105000);
    const r = loadPvh(ram, img, { memmap: e820(64 * MiB) });
    assert.ok(r.bootDataEnd <= ram.length);
    // Not after the image any more: the first free RAM above BOOT_DATA_MIN_GPA.
    const r2 = loadPvh(ramOf(0x104800), img, { memmap: e820(64 * MiB) });
    assert.equal(r2.bootDataStart, BOOT_DATA_MIN_GPA);
  });

  test('bad options', () => {
    const img = parsePvhElf(buildElf(simpleKernel(64)));
    expectLoadError(() => loadPvh(ramOf(8 * MiB), img, { memmap: e820(8 * MiB), cmdline: 'a\0b' }), /command line contains a NUL/);
    expectLoadError(() => loadPvh(ramOf(8 * MiB), img, { memmap: e820(8 * MiB), modules: [{ data: new Uint8Array(1), cmdline: '\0' }] }), /module 0 command line/);
    expectLoadError(() => loadPvh(ramOf(8 * MiB), img, { memmap: [] }), /no RAM below 4 GiB/);
    expectLoadError(() => loadPvh(ramOf(8 * MiB), img, { memmap: [{ addr: -1, size: 5, type: 1 }] }), /bad memory map entry/);
    expectLoadError(() => loadPvh(ramOf(8 * MiB), img, { memmap: e820(8 * MiB), startInfoFlags: -1 }), /bad start_info flags/);
  });

  test('UTF-8 command line', () => {
    const img = parsePvhElf(buildElf(simpleKernel(32)));
    const ram = ramOf(8 * MiB);
    const r = loadPvh(ram, img, { memmap: e820(8 * MiB), cmdline: 'name=café' });
    assert.equal(cstrAt(ram, r.cmdlinePaddr), 'name=café');
  });
});

describe('pvhEntryState', () => {
  test('the PVH entry contract as data', () => {
    const st = pvhEntryState(0x100000, 0x126000);
    assert.equal(st.regs.rip, 0x100000n);
    assert.equal(st.regs.rbx, 0x126000n);
    assert.equal(st.regs.rflags, 0x2n);
    for (const r of ['rax', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp'] as const) assert.equal(st.regs[r], 0n);
    assert.equal(st.cr0, 0x11, 'PE | ET, paging off');
    assert.equal(st.cr4, 0);
    assert.equal(st.cr3, 0);
    assert.equal(st.efer, 0);
    const flatSeg = { base: 0, limit: 0xffffffff, selector: 0, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 };
    assert.deepEqual(st.segs.cs, { ...flatSeg, type: 0xb });
    for (const s of ['ds', 'es', 'ss', 'fs', 'gs'] as const) assert.deepEqual(st.segs[s], { ...flatSeg, type: 0x3 });
    assert.deepEqual(st.segs.tr, { base: 0, limit: 0x67, selector: 0, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 });
    assert.equal(st.segs.ldt.unusable, 1);
    // VMX access-rights encodings Xen's builders use: CS 0xC9B, data 0xC93, TR 0x8B.
    const ar = (s: { type: number; s: number; dpl: number; present: number; avl: number; l: number; db: number; g: number }) =>
      s.type | (s.s << 4) | (s.dpl << 5) | (s.present << 7) | (s.avl << 12) | (s.l << 13) | (s.db << 14) | (s.g << 15);
    assert.equal(ar(st.segs.cs), 0xc09b);
    assert.equal(ar(st.segs.ds), 0xc093);
    assert.equal(ar(st.segs.tr), 0x8b);
    assert.deepEqual(st.msrs, [{ index: 0x2ff, value: 0x806n }]);
    assert.throws(() => pvhEntryState(0x1_0000_0000, 0), RangeError);
    assert.throws(() => pvhEntryState(0, -1), RangeError);
  });
});

// ---------------------------------------------------------------------------
// Real peers: GRUB's PVH image and Xen's own note parser.

function findReadnotes(): string | null {
  const candidates = [process.env.XEN_READNOTES, join(root, '.cache/xen-utils/usr/lib/xen-4.17/bin/readnotes'), '/usr/lib/xen-4.17/bin/readnotes'];
  for (const c of candidates) if (c && existsSync(c)) return c;
  return which('readnotes');
}
const READNOTES_INSTALL = 'run scripts/fetch-test-xenstore.sh, or set XEN_READNOTES';
const GRUB_INSTALL = 'apt-get install grub-xen-bin grub-common';

/** GRUB's minimal xen_pvh image (prints and halts), built into `dir`; null when grub-mkimage cannot build it. */
function grubMinImage(dir: string): string | null {
  const mkimage = which('grub-mkimage');
  if (!mkimage || !existsSync('/usr/lib/grub/i386-xen_pvh')) return null;
  writeFileSync(join(dir, 'early.cfg'), 'echo "hello from grub"\nhalt\n');
  const out = join(dir, 'grub-min.elf');
  execFileSync(mkimage, ['-O', 'i386-xen_pvh', '-o', out, '-p', '', '-c', join(dir, 'early.cfg'), 'echo', 'halt']);
  return out;
}

/** Numeric notes as Xen's readnotes prints them ("NAME: 0x... (n bytes)"), and strings ("NAME: text"). */
function readnotes(tool: string, file: string): Map<string, string> {
  const out = execFileSync(tool, [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const r = /^([A-Z0-9_]+):\s+(.*?)\s*$/.exec(line);
    if (r) m.set(r[1]!, r[2]!);
  }
  return m;
}

describe('cross-check with Xen tools', () => {
  test('notes agree with Xen\'s readnotes', (t) => {
    const tool = findReadnotes();
    if (!havePeer(t, tool !== null, "Xen's readnotes", READNOTES_INSTALL) || !tool) return;
    const dir = mkdtempSync(join(tmpdir(), 'xenode-notes-'));
    try {
      const kernels: [string, TElf][] = [
        ['elf32', simpleKernel(32, { notes: [entryNote(0x100010), { type: XEN_ELFNOTE.GUEST_OS, desc: str('Mini-OS') }, { type: XEN_ELFNOTE.LOADER, desc: str('generic') }] })],
        ['elf64', simpleKernel(64, { notes: [{ type: XEN_ELFNOTE.XEN_VERSION, desc: str('xen-3.0') }, entryNote(0x100040, 8), { type: XEN_ELFNOTE.ENTRY, desc: u64(0xffffffff81000000n) }, { type: XEN_ELFNOTE.HYPERCALL_PAGE, desc: u64(0xffffffff81001000n) }] })],
        ['section', simpleKernel(64, { noteWhere: 'section', notes: [entryNote(0x100abc), { type: XEN_ELFNOTE.GUEST_VERSION, desc: str('2.6') }] })],
      ];
      for (const [name, spec] of kernels) {
        const file = join(dir, `${name}.elf`);
        const bytes = buildElf(spec);
        writeFileSync(file, bytes);
        const theirs = readnotes(tool, file);
        const img = parsePvhElf(bytes);
        assert.ok(theirs.size > 0, `readnotes printed notes for ${name}`);
        let compared = 0;
        for (const n of img.notes) {
          const v = theirs.get(n.name);
          if (v === undefined) continue; // readnotes 4.17 does not know PHYS32_RELOC etc.
          compared++;
          if (n.text !== undefined) assert.equal(v, n.text, `${name} ${n.name}`);
          else if (n.value !== undefined) assert.equal(BigInt(v.split(/\s+/)[0]!), n.value, `${name} ${n.name}`);
        }
        assert.equal(compared, img.notes.length, `${name}: every note was compared (${[...theirs.keys()].join(', ')})`);
        t.diagnostic(`${name}: ${[...theirs].map(([k, v]) => `${k}=${v}`).join('; ')}`);
        assert.equal(BigInt(theirs.get('PHYS32_ENTRY')!.split(/\s+/)[0]!), BigInt(img.phys32Entry));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('GRUB i386-xen_pvh minimal image: parse, load, start_info', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'xenode-grub-'));
    try {
      const out = grubMinImage(dir);
      if (!havePeer(t, out !== null, 'grub-mkimage -O i386-xen_pvh', GRUB_INSTALL) || !out) return;
      const bytes = new Uint8Array(readFileSync(out));
      const img = parsePvhElf(bytes);
      assert.equal(img.bits, 32);
      assert.equal(img.phys32Entry, 0x100000);
      assert.deepEqual(img.notes.map((n) => n.name), ['PHYS32_ENTRY']);
      assert.equal(img.segments.length, 2, 'both PT_LOADs');
      assert.ok(img.segments.some((s) => s.fileOffset % 0x1000 !== 0 && s.align === 4), 'one PT_LOAD is not page aligned');
      const mem = 64 * MiB;
      const ram = ramOf(mem, 0x5a);
      const memmap = buildPvhE820(mem);
      const r = loadPvh(ram, img, { memmap });
      assertSegmentsLoaded(ram, img);
      assert.equal(r.entry, 0x100000);
      assert.ok(r.startInfoGpa >= img.imageEnd && r.startInfoGpa % 0x1000 === 0);
      const si = readStartInfo(ram, r.startInfoGpa);
      assert.deepEqual(memmapAt(ram, Number(si.memmap_paddr), si.memmap_entries), memmap);
      assert.equal(si.nr_modules, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('GRUB i386-xen_pvh minimal image: its entry as Xen\'s readnotes reads it', (t) => {
    const tool = findReadnotes();
    if (!havePeer(t, tool !== null, "Xen's readnotes", READNOTES_INSTALL) || !tool) return;
    const dir = mkdtempSync(join(tmpdir(), 'xenode-grub-'));
    try {
      const out = grubMinImage(dir);
      if (!havePeer(t, out !== null, 'grub-mkimage -O i386-xen_pvh', GRUB_INSTALL) || !out) return;
      const theirs = readnotes(tool, out).get('PHYS32_ENTRY');
      assert.ok(theirs, 'readnotes printed PHYS32_ENTRY');
      assert.equal(BigInt(theirs.split(/\s+/)[0]!), 0x100000n);
      assert.equal(parsePvhElf(new Uint8Array(readFileSync(out))).phys32Entry, 0x100000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
