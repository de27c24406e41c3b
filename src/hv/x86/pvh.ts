// PVH domain loader: validates a PVH kernel (an ELF with
// XEN_ELFNOTE_PHYS32_ENTRY), copies it into guest RAM, lays out
// hvm_start_info with its module list, memory map and command lines, and
// describes the register state the guest must be entered with
// (docs/misc/pvh.pandoc).
//
// Placement policy
// - Image: the PT_LOAD segments go to their p_paddr when the whole image span
//   [lowest p_paddr, highest p_paddr + p_memsz) lies in one RAM range of the
//   memory map (and in the RAM buffer). Otherwise, if the kernel carries
//   XEN_ELFNOTE_PHYS32_RELOC, the image is moved as a block, with Xen's rule
//   (xen/arch/x86/hvm/dom0_build.c, find_kernel_memory): the highest address in
//   a RAM range, aligned to the note's alignment (else the largest PT_LOAD
//   p_align if >= 4 KiB, else 2 MiB), between the note's minimum and maximum.
//   Xen applies PHYS32_RELOC only in its dom0 builder and only when the
//   p_paddr placement does not fit; libxenguest, which builds domUs, ignores
//   the note and always loads at p_paddr. We never relocate an image that fits,
//   so for every image libxenguest can load we load it exactly as it does.
// - Boot data (modules, then hvm_start_info, modlist, memmap table and command
//   lines): one block starting at the first page after the image (as
//   libxenguest allocates its segments after the kernel), and never below
//   BOOT_DATA_MIN_GPA: Mini-OS is loaded at GPA 0 and uses low memory past
//   what its program headers describe. If the block does not fit there it goes
//   to the lowest RAM above BOOT_DATA_MIN_GPA that is clear of the image. It
//   always lies below 4 GiB, inside RAM in the memory map and in the buffer.

import type { Segment } from '../../kvm/kvm.js';
import {
  HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, HVM_START_INFO_VERSION, XEN_HVM_START_MAGIC_VALUE,
} from '../abi/start_info.js';
import { FOUR_GIB, PAGE_SIZE, encodeHvmMemmap, ramRanges, type E820Entry } from './e820.js';
import {
  EM_386, EM_X86_64, ET_DYN, ET_EXEC, ElfFormatError, PT_LOAD, XEN_ELFNOTE, elfNotes, fileRange, noteNumber,
  parseElf, xenNotes, type XenNote,
} from './elf.js';

/** Why a kernel was refused, where a caller words it differently (bzimage.ts). */
export type PvhLoadErrorReason = 'not-elf' | 'no-phys32-entry';

export class PvhLoadError extends Error {
  override name = 'PvhLoadError';
  readonly reason: PvhLoadErrorReason | undefined;
  constructor(message: string, options?: ErrorOptions & { reason?: PvhLoadErrorReason }) {
    super(message, options);
    this.reason = options?.reason;
  }
}

/** Lowest GPA for boot data (see the placement policy above). */
export const BOOT_DATA_MIN_GPA = 0x90000;

/** Defaults of XEN_ELFNOTE_PHYS32_RELOC's optional fields (public/elfnote.h). */
export const PHYS32_RELOC_DEFAULT_ALIGN = 0x200000;
export const PHYS32_RELOC_DEFAULT_MIN = 0;
export const PHYS32_RELOC_DEFAULT_MAX = 0xffffffff;

export interface PvhSegment {
  /** Index of the program header. */
  index: number;
  paddr: number;
  vaddr: bigint;
  fileOffset: number;
  filesz: number;
  memsz: number;
  flags: number;
  align: number;
}

export interface PvhReloc {
  /** Alignment from the note, or undefined when the note does not give one. */
  align?: number;
  /** Minimum load address of the image's start. */
  min: number;
  /** Maximum address of the image's last byte (inclusive). */
  max: number;
}

export interface PvhImage {
  /** The ELF file; segments are copied out of it at load time. */
  bytes: Uint8Array;
  bits: 32 | 64;
  machine: number;
  /** e_entry (a virtual address for most kernels; PVH enters at phys32Entry). */
  elfEntry: bigint;
  /** All PT_LOAD segments with p_memsz > 0, in p_paddr order. */
  segments: PvhSegment[];
  /** PT_LOAD segments with p_memsz = 0 (nothing to load; e.g. Solo5's at vaddr 0). */
  emptySegments: number;
  /** Lowest p_paddr and highest p_paddr + p_memsz over `segments`. */
  imageStart: number;
  imageEnd: number;
  /** Largest p_align over the PT_LOAD segments. */
  maxAlign: number;
  /** XEN_ELFNOTE_PHYS32_ENTRY. */
  phys32Entry: number;
  /** XEN_ELFNOTE_PHYS32_RELOC, or null when the image is not relocatable. */
  reloc: PvhReloc | null;
  notes: XenNote[];
  /** XEN_ELFNOTE_GUEST_OS, when present. */
  guestOs?: string;
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;
const pageUp = (n: number): number => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
const isPow2 = (n: number): boolean => n > 0 && Number.isInteger(Math.log2(n));

/** Parses and validates a PVH kernel. Any problem is a PvhLoadError. */
export function parsePvhElf(bytes: Uint8Array): PvhImage {
  try {
    return parseUnchecked(bytes);
  } catch (e) {
    if (e instanceof PvhLoadError) throw e;
    if (e instanceof ElfFormatError) {
      throw new PvhLoadError(`bad ELF: ${e.message}`, { cause: e, reason: e.message.startsWith('not an ELF file') ? 'not-elf' : undefined });
    }
    // A bug of ours on a malformed file must still surface as a load error.
    throw new PvhLoadError(`malformed ELF: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

function parseUnchecked(bytes: Uint8Array): PvhImage {
  const elf = parseElf(bytes);
  const h = elf.header;
  if (h.machine !== EM_386 && h.machine !== EM_X86_64) {
    throw new PvhLoadError(`not an x86 kernel: ELF${h.bits} e_machine ${h.machine} (want EM_386 or EM_X86_64)`);
  }
  if (h.type !== ET_EXEC && h.type !== ET_DYN) throw new PvhLoadError(`not an executable: ELF e_type ${h.type}`);

  const segments: PvhSegment[] = [];
  let emptySegments = 0;
  let maxAlign = 0;
  for (const p of elf.programHeaders) {
    if (p.type !== PT_LOAD) continue;
    const what = `PT_LOAD program header ${p.index}`;
    if (p.align > BigInt(maxAlign) && p.align <= 0xffffffffn) maxAlign = Number(p.align);
    if (p.filesz > p.memsz) throw new PvhLoadError(`${what}: p_filesz ${hex(p.filesz)} exceeds p_memsz ${hex(p.memsz)}`);
    if (p.memsz === 0n) {
      emptySegments++;
      continue;
    }
    // A bss-only segment's p_offset is meaningless; the rest must lie in the file.
    const fileOffset = p.filesz === 0n ? 0 : fileRange(bytes.length, p.offset, p.filesz, `${what} file contents`)[0];
    if (p.paddr + p.memsz > BigInt(FOUR_GIB)) {
      throw new PvhLoadError(`${what}: [${hex(p.paddr)}, ${hex(p.paddr + p.memsz)}) extends beyond 4 GiB; PVH images load below 4 GiB`);
    }
    segments.push({
      index: p.index, paddr: Number(p.paddr), vaddr: p.vaddr, fileOffset, filesz: Number(p.filesz),
      memsz: Number(p.memsz), flags: p.flags, align: Number(p.align > 0xffffffffn ? 0xffffffffn : p.align),
    });
  }
  if (segments.length === 0) throw new PvhLoadError('no loadable segments (no PT_LOAD with p_memsz > 0)');
  segments.sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < segments.length; i++) {
    const a = segments[i - 1]!;
    const b = segments[i]!;
    if (a.paddr + a.memsz > b.paddr) {
      throw new PvhLoadError(`PT_LOAD program headers ${a.index} [${hex(a.paddr)}, ${hex(a.paddr + a.memsz)}) and ${b.index} [${hex(b.paddr)}, ${hex(b.paddr + b.memsz)}) overlap`);
    }
  }
  const imageStart = segments[0]!.paddr;
  const last = segments[segments.length - 1]!;
  const imageEnd = last.paddr + last.memsz;

  const notes = xenNotes(elfNotes(elf));
  // As in Xen's libelf, a later note of the same type overrides an earlier one.
  const entryNote = notes.filter((n) => n.type === XEN_ELFNOTE.PHYS32_ENTRY).pop();
  if (!entryNote) {
    const pv = notes.some((n) => n.type === XEN_ELFNOTE.ENTRY);
    throw new PvhLoadError(`not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY note${pv ? ' (it is a PV-only kernel)' : ''}`, { reason: 'no-phys32-entry' });
  }
  const entry = noteNumber(entryNote.desc);
  if (entry === undefined) throw new PvhLoadError(`XEN_ELFNOTE_PHYS32_ENTRY has a ${entryNote.desc.length}-byte descriptor (want 4 or 8)`);
  if (entry > 0xffffffffn) throw new PvhLoadError(`XEN_ELFNOTE_PHYS32_ENTRY ${hex(entry)} is not a 32-bit address`);

  let reloc: PvhReloc | null = null;
  const relocNote = notes.filter((n) => n.type === XEN_ELFNOTE.PHYS32_RELOC).pop();
  if (relocNote) {
    const d = relocNote.desc;
    const word = (i: number): number | undefined =>
      d.length >= 4 * (i + 1) ? new DataView(d.buffer, d.byteOffset + 4 * i, 4).getUint32(0, true) : undefined;
    const align = word(0);
    reloc = { min: word(1) ?? PHYS32_RELOC_DEFAULT_MIN, max: word(2) ?? PHYS32_RELOC_DEFAULT_MAX };
    if (align !== undefined) {
      if (!isPow2(align)) throw new PvhLoadError(`XEN_ELFNOTE_PHYS32_RELOC alignment ${hex(align)} is not a power of two`);
      reloc.align = align;
    }
    if (reloc.min > reloc.max) throw new PvhLoadError(`XEN_ELFNOTE_PHYS32_RELOC minimum ${hex(reloc.min)} is above its maximum ${hex(reloc.max)}`);
  }

  const image: PvhImage = {
    bytes, bits: h.bits, machine: h.machine, elfEntry: h.entry, segments, emptySegments, imageStart, imageEnd,
    maxAlign, phys32Entry: Number(entry), reloc, notes,
  };
  const guestOs = notes.filter((n) => n.type === XEN_ELFNOTE.GUEST_OS).pop()?.text;
  if (guestOs !== undefined) image.guestOs = guestOs;
  return image;
}

// ---------------------------------------------------------------------------
// Loading

export interface PvhModule {
  data: Uint8Array;
  cmdline?: string;
}

export interface PvhLoadOptions {
  cmdline?: string;
  modules?: PvhModule[];
  /** The guest's memory map: written to the memmap table, and where RAM is. */
  memmap: E820Entry[];
  /** hvm_start_info.flags (SIF_*); 0 by default. */
  startInfoFlags?: number;
  /** hvm_start_info.rsdp_paddr: where the builder put the ACPI RSDP (0, the default: no ACPI tables). */
  rsdpPaddr?: number;
}

export interface PvhLoadedModule {
  paddr: number;
  size: number;
  /** 0 when the module has no command line. */
  cmdlinePaddr: number;
}

export interface PvhLoadResult {
  /** GPA to enter at (EIP), relocation applied. */
  entry: number;
  /** GPA of hvm_start_info (EBX). */
  startInfoGpa: number;
  /** Where the image landed: [imageStart, imageEnd). */
  imageStart: number;
  imageEnd: number;
  relocated: boolean;
  /** Added to every p_paddr and to the entry (0 when not relocated). */
  relocationOffset: number;
  modules: PvhLoadedModule[];
  /** 0 when absent. */
  cmdlinePaddr: number;
  modlistPaddr: number;
  memmapPaddr: number;
  memmapEntries: number;
  /** The page-aligned block holding modules and boot data: [bootDataStart, bootDataEnd). */
  bootDataStart: number;
  bootDataEnd: number;
}

function cString(s: string, what: string): Uint8Array {
  const b = new TextEncoder().encode(s);
  if (b.includes(0)) throw new PvhLoadError(`${what} contains a NUL byte`);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** The highest `align`ed start for `size` bytes in a RAM range within [min, max] (Xen's find_kernel_memory). */
function findRelocBase(ranges: [number, number][], size: number, align: number, min: number, max: number): number | null {
  for (let i = ranges.length - 1; i >= 0; i--) {
    const [start, rangeEnd] = ranges[i]!;
    let end = rangeEnd;
    if (end - start < size || start > max) continue;
    if (end - 1 > max) end = max + 1;
    const k = Math.floor((end - size) / align) * align;
    if (k < min) return null;
    if (k >= start && k + size <= end) return k;
  }
  return null;
}

/**
 * Loads `image` into `ram` (guest RAM from GPA 0) with its modules and
 * hvm_start_info v1. Every byte the guest can rely on is written explicitly
 * (bss and boot data are zeroed), so `ram` may hold stale data.
 */
export function loadPvh(ram: Uint8Array, image: PvhImage, opts: PvhLoadOptions): PvhLoadResult {
  const limit = Math.min(ram.length, FOUR_GIB);
  for (const e of opts.memmap) {
    if (!Number.isSafeInteger(e.addr) || !Number.isSafeInteger(e.size) || e.addr < 0 || e.size < 0 || !Number.isSafeInteger(e.addr + e.size) ||
      !Number.isInteger(e.type) || e.type < 0 || e.type > 0xffffffff) {
      throw new PvhLoadError(`bad memory map entry ${JSON.stringify(e)}`);
    }
  }
  const ranges = ramRanges(opts.memmap, limit);
  if (ranges.length === 0) throw new PvhLoadError(`the memory map has no RAM below 4 GiB within the ${ram.length}-byte guest RAM`);
  const flags = opts.startInfoFlags ?? 0;
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xffffffff) throw new PvhLoadError(`bad start_info flags ${flags}`);
  const rsdp = opts.rsdpPaddr ?? 0;
  if (!Number.isSafeInteger(rsdp) || rsdp < 0) throw new PvhLoadError(`bad RSDP address ${rsdp}`);
  const inRam = (s: number, e: number): boolean => ranges.some(([rs, re]) => rs <= s && e <= re);

  // 1. Where the image goes.
  const size = image.imageEnd - image.imageStart;
  let base = image.imageStart;
  const relocated = !inRam(base, base + size);
  if (relocated) {
    const span = `[${hex(image.imageStart)}, ${hex(image.imageEnd)})`;
    if (!image.reloc) {
      throw new PvhLoadError(`image ${span} does not fit in guest RAM (${rangesText(ranges)}) and is not relocatable (no XEN_ELFNOTE_PHYS32_RELOC)`);
    }
    const align = image.reloc.align ?? (image.maxAlign >= PAGE_SIZE ? image.maxAlign : PHYS32_RELOC_DEFAULT_ALIGN);
    const found = findRelocBase(ranges, size, align, image.reloc.min, image.reloc.max);
    if (found === null) {
      throw new PvhLoadError(`image ${span} does not fit in guest RAM (${rangesText(ranges)}) and no ${hex(align)}-aligned place for its ${hex(size)} bytes exists within [${hex(image.reloc.min)}, ${hex(image.reloc.max)}]`);
    }
    base = found;
  }
  const delta = base - image.imageStart;
  const entry = image.phys32Entry + delta;
  if (entry < 0 || entry > 0xffffffff) throw new PvhLoadError(`relocated entry ${hex(entry)} is not a 32-bit address`);

  // 2. Boot data layout: modules (page-aligned each), then one page-aligned
  //    metadata area: start_info | modlist | memmap table | cmdlines.
  const mods = opts.modules ?? [];
  const modCmdlines = mods.map((m, i) => (m.cmdline === undefined ? undefined : cString(m.cmdline, `module ${i} command line`)));
  const cmdline = opts.cmdline === undefined ? undefined : cString(opts.cmdline, 'command line');
  let modulesSize = 0;
  const modOffsets = mods.map((m) => {
    const at = modulesSize;
    modulesSize += pageUp(m.data.length);
    return at;
  });
  const modlistOff = HvmStartInfo.size;
  const memmapOff = modlistOff + mods.length * HvmModlistEntry.size;
  let strOff = memmapOff + opts.memmap.length * HvmMemmapTableEntry.size;
  const modCmdOffsets = modCmdlines.map((c) => {
    if (!c) return undefined;
    const at = strOff;
    strOff += c.length;
    return at;
  });
  const cmdlineOff = strOff;
  if (cmdline) strOff += cmdline.length;
  const metaSize = pageUp(strOff);
  const blockSize = modulesSize + metaSize;

  // 3. Where the boot data block goes.
  const imgLo = base;
  const imgHi = base + size;
  const clearOfImage = (s: number): boolean => s + blockSize <= imgLo || s >= imgHi;
  let blockStart = -1;
  const afterImage = Math.max(pageUp(imgHi), BOOT_DATA_MIN_GPA);
  if (inRam(afterImage, afterImage + blockSize)) {
    blockStart = afterImage;
  } else {
    for (const [rs, re] of ranges) {
      let s = pageUp(Math.max(rs, BOOT_DATA_MIN_GPA));
      if (!clearOfImage(s)) s = Math.max(s, pageUp(imgHi));
      if (s + blockSize <= re) {
        blockStart = s;
        break;
      }
    }
  }
  if (blockStart < 0) {
    throw new PvhLoadError(`no room in guest RAM (${rangesText(ranges)}) for ${hex(blockSize)} bytes of modules and start_info clear of the image [${hex(imgLo)}, ${hex(imgHi)})`);
  }

  // 4. Copy the image.
  for (const s of image.segments) {
    const dst = s.paddr + delta;
    ram.set(image.bytes.subarray(s.fileOffset, s.fileOffset + s.filesz), dst);
    ram.fill(0, dst + s.filesz, dst + s.memsz);
  }

  // 5. Modules and boot data.
  const blockEnd = blockStart + blockSize;
  ram.fill(0, blockStart, blockEnd);
  const meta = blockStart + modulesSize;
  const loadedMods: PvhLoadedModule[] = mods.map((m, i) => {
    const paddr = blockStart + modOffsets[i]!;
    ram.set(m.data, paddr);
    const c = modCmdOffsets[i];
    return { paddr, size: m.data.length, cmdlinePaddr: c === undefined ? 0 : meta + c };
  });
  const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  loadedMods.forEach((m, i) => {
    HvmModlistEntry.write(dv, meta + modlistOff + i * HvmModlistEntry.size, {
      paddr: BigInt(m.paddr), size: BigInt(m.size), cmdline_paddr: BigInt(m.cmdlinePaddr), reserved: 0n,
    });
    const c = modCmdlines[i];
    if (c) ram.set(c, m.cmdlinePaddr);
  });
  ram.set(encodeHvmMemmap(opts.memmap), meta + memmapOff);
  if (cmdline) ram.set(cmdline, meta + cmdlineOff);
  const result: PvhLoadResult = {
    entry,
    startInfoGpa: meta,
    imageStart: imgLo,
    imageEnd: imgHi,
    relocated,
    relocationOffset: delta,
    modules: loadedMods,
    cmdlinePaddr: cmdline ? meta + cmdlineOff : 0,
    modlistPaddr: mods.length ? meta + modlistOff : 0,
    memmapPaddr: opts.memmap.length ? meta + memmapOff : 0,
    memmapEntries: opts.memmap.length,
    bootDataStart: blockStart,
    bootDataEnd: blockEnd,
  };
  HvmStartInfo.write(dv, meta, {
    magic: XEN_HVM_START_MAGIC_VALUE,
    version: HVM_START_INFO_VERSION,
    flags,
    nr_modules: mods.length,
    modlist_paddr: BigInt(result.modlistPaddr),
    cmdline_paddr: BigInt(result.cmdlinePaddr),
    rsdp_paddr: BigInt(rsdp),
    memmap_paddr: BigInt(result.memmapPaddr),
    memmap_entries: opts.memmap.length,
    reserved: 0,
  });
  return result;
}

function rangesText(ranges: [number, number][]): string {
  return ranges.map(([s, e]) => `[${hex(s)}, ${hex(e)})`).join(' ');
}

// ---------------------------------------------------------------------------
// Entry state

/** A segment register as KVM's kvm_segment describes it (flags 0/1), plus the avl/unusable bits. */
export interface SegmentState extends Segment {
  avl: number;
  unusable: number;
}

export interface PvhEntryState {
  /** General registers (all others zero): rip = entry, rbx = start_info, rflags = 0x2. */
  regs: { rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint; rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint; rip: bigint; rflags: bigint };
  segs: { cs: SegmentState; ds: SegmentState; es: SegmentState; fs: SegmentState; gs: SegmentState; ss: SegmentState; tr: SegmentState; ldt: SegmentState };
  gdt: { base: number; limit: number };
  idt: { base: number; limit: number };
  cr0: number;
  cr3: number;
  cr4: number;
  efer: number;
  /** MSRs to set: IA32_MTRR_DEF_TYPE = enabled, default type WB. */
  msrs: { index: number; value: bigint }[];
}

export const X86_CR0_PE = 1 << 0;
export const X86_CR0_ET = 1 << 4;
/** EFLAGS bit 1 is reserved and always reads as 1. */
export const X86_EFLAGS_FIXED = 1 << 1;
export const MSR_MTRR_DEF_TYPE = 0x2ff;
const MTRR_DEF_TYPE_E = 1 << 11;
const MTRR_TYPE_WB = 6;
/** IA32_MTRR_DEF_TYPE as Xen starts every HVM vCPU: MTRRs enabled, default type write-back. */
export const MTRR_DEF_TYPE_WB = MTRR_DEF_TYPE_E | MTRR_TYPE_WB;

const flat = (type: number): SegmentState => ({
  base: 0, limit: 0xffffffff, selector: 0, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0,
});

/**
 * The register state a PVH guest is entered with (pvh.pandoc): 32-bit
 * protected mode, paging off, EBX = start_info GPA, CR0 = PE|ET, CR4 = 0,
 * flat 32-bit CS (type 0xB, execute/read accessed) and DS/ES/SS (type 0x3,
 * read/write accessed) with base 0 and limit 4 GiB, TR a busy 32-bit TSS
 * (type 0xB) with base 0 and limit 0x67, EFLAGS = 0x2. These are the access
 * rights Xen's builders use (0xC9B, 0xC93, 0x8B). Selectors are 0, as Xen's
 * vcpu_hvm_context carries none. The rest is unspecified by the contract; we
 * give FS/GS the same flat data segment, an unusable LDT, empty GDTR/IDTR and
 * zero in every other register.
 */
export function pvhEntryState(entry: number, startInfoGpa: number): PvhEntryState {
  for (const [what, v] of [['entry', entry], ['start_info GPA', startInfoGpa]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`PVH ${what} ${v} is not a 32-bit address`);
  }
  return {
    regs: {
      rax: 0n, rbx: BigInt(startInfoGpa), rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
      rip: BigInt(entry), rflags: BigInt(X86_EFLAGS_FIXED),
    },
    segs: {
      cs: flat(0xb),
      ds: flat(0x3),
      es: flat(0x3),
      fs: flat(0x3),
      gs: flat(0x3),
      ss: flat(0x3),
      tr: { base: 0, limit: 0x67, selector: 0, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 },
      ldt: { base: 0, limit: 0, selector: 0, type: 0x2, present: 0, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 1 },
    },
    gdt: { base: 0, limit: 0 },
    idt: { base: 0, limit: 0 },
    cr0: X86_CR0_PE | X86_CR0_ET,
    cr3: 0,
    cr4: 0,
    efer: 0,
    msrs: [{ index: MSR_MTRR_DEF_TYPE, value: BigInt(MTRR_DEF_TYPE_E | MTRR_TYPE_WB) }],
  };
}
