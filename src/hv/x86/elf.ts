// ELF32/ELF64 reader for guest kernels: file header, program headers, section
// headers and notes, plus decoding of the "Xen" notes (public/elfnote.h).
//
// Every offset and count in the file is untrusted. Nothing here allocates or
// loops in proportion to a header field without first checking that the bytes
// it describes lie inside the file, and every failure is an ElfFormatError.
// Wide fields are kept as bigint until checked so a 64-bit value can never be
// silently rounded.
//
// Structure layouts: the System V gABI, as in glibc's <elf.h>
// (Elf32_Ehdr/Elf64_Ehdr, Elf32_Phdr/Elf64_Phdr, Elf32_Shdr/Elf64_Shdr, Elf_Nhdr).

import { struct } from '../abi/layout.js';

export class ElfFormatError extends Error {
  override name = 'ElfFormatError';
}

// <elf.h> constants
export const ELFCLASS32 = 1;
export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const EV_CURRENT = 1;
export const ET_EXEC = 2;
export const ET_DYN = 3;
export const EM_386 = 3;
export const EM_X86_64 = 62;
export const PT_LOAD = 1;
export const PT_NOTE = 4;
export const SHT_NOTE = 7;

const EI_NIDENT = 16;
const EI_CLASS = 4;
const EI_DATA = 5;
const EI_VERSION = 6;

const Elf32Ehdr = struct('Elf32_Ehdr', 52, {
  e_type: [16, 'u16'], e_machine: [18, 'u16'], e_version: [20, 'u32'], e_entry: [24, 'u32'],
  e_phoff: [28, 'u32'], e_shoff: [32, 'u32'], e_flags: [36, 'u32'], e_ehsize: [40, 'u16'],
  e_phentsize: [42, 'u16'], e_phnum: [44, 'u16'], e_shentsize: [46, 'u16'], e_shnum: [48, 'u16'],
  e_shstrndx: [50, 'u16'],
});
const Elf64Ehdr = struct('Elf64_Ehdr', 64, {
  e_type: [16, 'u16'], e_machine: [18, 'u16'], e_version: [20, 'u32'], e_entry: [24, 'u64'],
  e_phoff: [32, 'u64'], e_shoff: [40, 'u64'], e_flags: [48, 'u32'], e_ehsize: [52, 'u16'],
  e_phentsize: [54, 'u16'], e_phnum: [56, 'u16'], e_shentsize: [58, 'u16'], e_shnum: [60, 'u16'],
  e_shstrndx: [62, 'u16'],
});
const Elf32Phdr = struct('Elf32_Phdr', 32, {
  p_type: [0, 'u32'], p_offset: [4, 'u32'], p_vaddr: [8, 'u32'], p_paddr: [12, 'u32'],
  p_filesz: [16, 'u32'], p_memsz: [20, 'u32'], p_flags: [24, 'u32'], p_align: [28, 'u32'],
});
const Elf64Phdr = struct('Elf64_Phdr', 56, {
  p_type: [0, 'u32'], p_flags: [4, 'u32'], p_offset: [8, 'u64'], p_vaddr: [16, 'u64'],
  p_paddr: [24, 'u64'], p_filesz: [32, 'u64'], p_memsz: [40, 'u64'], p_align: [48, 'u64'],
});
const Elf32Shdr = struct('Elf32_Shdr', 40, {
  sh_name: [0, 'u32'], sh_type: [4, 'u32'], sh_flags: [8, 'u32'], sh_addr: [12, 'u32'],
  sh_offset: [16, 'u32'], sh_size: [20, 'u32'], sh_link: [24, 'u32'], sh_info: [28, 'u32'],
  sh_addralign: [32, 'u32'], sh_entsize: [36, 'u32'],
});
const Elf64Shdr = struct('Elf64_Shdr', 64, {
  sh_name: [0, 'u32'], sh_type: [4, 'u32'], sh_flags: [8, 'u64'], sh_addr: [16, 'u64'],
  sh_offset: [24, 'u64'], sh_size: [32, 'u64'], sh_link: [40, 'u32'], sh_info: [44, 'u32'],
  sh_addralign: [48, 'u64'], sh_entsize: [56, 'u64'],
});
/** Elf32_Nhdr and Elf64_Nhdr are the same three 32-bit words. */
const ElfNhdr = struct('Elf_Nhdr', 12, { n_namesz: [0, 'u32'], n_descsz: [4, 'u32'], n_type: [8, 'u32'] });

export interface ElfHeader {
  /** 32 or 64 (EI_CLASS). */
  bits: 32 | 64;
  type: number;
  machine: number;
  entry: bigint;
  phoff: bigint;
  phentsize: number;
  phnum: number;
  shoff: bigint;
  shentsize: number;
  shnum: number;
}

export interface ProgramHeader {
  index: number;
  type: number;
  flags: number;
  offset: bigint;
  vaddr: bigint;
  paddr: bigint;
  filesz: bigint;
  memsz: bigint;
  align: bigint;
}

export interface SectionHeader {
  index: number;
  type: number;
  offset: bigint;
  size: bigint;
  addralign: bigint;
}

export interface ElfNote {
  /** Owner name without its terminating NUL(s). */
  name: string;
  type: number;
  desc: Uint8Array;
  /** Where the note came from, for messages. */
  source: string;
}

export interface ElfFile {
  bytes: Uint8Array;
  header: ElfHeader;
  programHeaders: ProgramHeader[];
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** Checks that [offset, offset+size) lies in a file of `length` bytes and returns it as numbers. */
export function fileRange(length: number, offset: bigint, size: bigint, what: string): [number, number] {
  if (offset < 0n || size < 0n || offset + size > BigInt(length)) {
    throw new ElfFormatError(`${what} (offset ${hex(offset)}, size ${hex(size)}) lies outside the ${length}-byte file`);
  }
  return [Number(offset), Number(size)];
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Parses the ELF file header and program header table (nothing is loaded). */
export function parseElf(bytes: Uint8Array): ElfFile {
  if (bytes.length < EI_NIDENT || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) {
    throw new ElfFormatError(bytes.length < 4 ? `not an ELF file: only ${bytes.length} bytes` : 'not an ELF file: bad magic');
  }
  const cls = bytes[EI_CLASS];
  if (cls !== ELFCLASS32 && cls !== ELFCLASS64) throw new ElfFormatError(`unsupported ELF class ${cls}`);
  if (bytes[EI_DATA] !== ELFDATA2LSB) throw new ElfFormatError(`ELF data encoding ${bytes[EI_DATA]} is not little-endian`);
  if (bytes[EI_VERSION] !== EV_CURRENT) throw new ElfFormatError(`unsupported ELF ident version ${bytes[EI_VERSION]}`);
  const bits = cls === ELFCLASS32 ? 32 : 64;
  const E = bits === 32 ? Elf32Ehdr : Elf64Ehdr;
  if (bytes.length < E.size) throw new ElfFormatError(`truncated ELF${bits} header: ${bytes.length} < ${E.size} bytes`);
  const dv = view(bytes);
  const h = E.read(dv, 0);
  const header: ElfHeader = {
    bits,
    type: h.e_type,
    machine: h.e_machine,
    entry: BigInt(h.e_entry),
    phoff: BigInt(h.e_phoff),
    phentsize: h.e_phentsize,
    phnum: h.e_phnum,
    shoff: BigInt(h.e_shoff),
    shentsize: h.e_shentsize,
    shnum: h.e_shnum,
  };
  if (h.e_version !== EV_CURRENT) throw new ElfFormatError(`unsupported ELF version ${h.e_version}`);

  const P = bits === 32 ? Elf32Phdr : Elf64Phdr;
  const programHeaders: ProgramHeader[] = [];
  if (header.phnum > 0) {
    if (header.phentsize < P.size) throw new ElfFormatError(`e_phentsize ${header.phentsize} is smaller than Elf${bits}_Phdr (${P.size})`);
    const [off] = fileRange(bytes.length, header.phoff, BigInt(header.phentsize) * BigInt(header.phnum),
      `program header table (${header.phnum} entries of ${header.phentsize} bytes)`);
    for (let i = 0; i < header.phnum; i++) {
      const p = P.read(dv, off + i * header.phentsize);
      programHeaders.push({
        index: i, type: p.p_type, flags: p.p_flags, offset: BigInt(p.p_offset), vaddr: BigInt(p.p_vaddr),
        paddr: BigInt(p.p_paddr), filesz: BigInt(p.p_filesz), memsz: BigInt(p.p_memsz), align: BigInt(p.p_align),
      });
    }
  }
  return { bytes, header, programHeaders };
}

/** The section header table (empty when the file has none). */
export function sectionHeaders(elf: ElfFile): SectionHeader[] {
  const { header, bytes } = elf;
  if (header.shoff === 0n || header.shnum === 0) return [];
  const S = header.bits === 32 ? Elf32Shdr : Elf64Shdr;
  if (header.shentsize < S.size) throw new ElfFormatError(`e_shentsize ${header.shentsize} is smaller than Elf${header.bits}_Shdr (${S.size})`);
  const [off] = fileRange(bytes.length, header.shoff, BigInt(header.shentsize) * BigInt(header.shnum),
    `section header table (${header.shnum} entries of ${header.shentsize} bytes)`);
  const dv = view(bytes);
  const out: SectionHeader[] = [];
  for (let i = 0; i < header.shnum; i++) {
    const s = S.read(dv, off + i * header.shentsize);
    out.push({ index: i, type: s.sh_type, offset: BigInt(s.sh_offset), size: BigInt(s.sh_size), addralign: BigInt(s.sh_addralign) });
  }
  return out;
}

/**
 * Parses the notes in bytes [offset, offset+size) of the file. Name and
 * descriptor are padded to 4 bytes, or to 8 when the containing segment or
 * section is 8-aligned (as binutils does for 8-byte-aligned note sections).
 */
export function parseNotes(bytes: Uint8Array, offset: bigint, size: bigint, align: bigint, source: string): ElfNote[] {
  const [start, len] = fileRange(bytes.length, offset, size, source);
  const pad = align === 8n ? 8 : 4;
  const roundUp = (n: number) => Math.ceil(n / pad) * pad;
  const dv = view(bytes);
  const end = start + len;
  const notes: ElfNote[] = [];
  let at = start;
  // Each iteration consumes at least the 12-byte header, so this ends.
  while (end - at >= ElfNhdr.size) {
    const n = ElfNhdr.read(dv, at);
    const nameAt = at + ElfNhdr.size;
    // Padding aligns positions (relative to the container), not sizes: with
    // 8-byte alignment the 12-byte header plus a 4-byte name needs none.
    const descAt = start + roundUp(nameAt + n.n_namesz - start);
    const next = start + roundUp(descAt + n.n_descsz - start);
    if (nameAt + n.n_namesz > end || descAt + n.n_descsz > end) {
      throw new ElfFormatError(`${source}: note at file offset ${hex(at)} (namesz ${n.n_namesz}, descsz ${n.n_descsz}) overruns its ${len}-byte container`);
    }
    let nameLen = n.n_namesz;
    while (nameLen > 0 && bytes[nameAt + nameLen - 1] === 0) nameLen--;
    const name = String.fromCharCode(...bytes.subarray(nameAt, nameAt + Math.min(nameLen, 64)));
    notes.push({ name, type: n.n_type, desc: bytes.subarray(descAt, descAt + n.n_descsz), source });
    at = Math.min(next, end);
  }
  return notes;
}

/**
 * The notes of the file as Xen's libelf finds them (elf_xen_parse): those of
 * the PT_NOTE segments (skipping any with p_offset 0, which some binutils
 * versions emit), and, only if those hold no "Xen" note, those of the
 * SHT_NOTE sections.
 */
export function elfNotes(elf: ElfFile): ElfNote[] {
  const out: ElfNote[] = [];
  for (const p of elf.programHeaders) {
    if (p.type !== PT_NOTE || p.offset === 0n) continue;
    out.push(...parseNotes(elf.bytes, p.offset, p.filesz, p.align, `PT_NOTE program header ${p.index}`));
  }
  if (out.some((n) => n.name === 'Xen')) return out;
  for (const s of sectionHeaders(elf)) {
    if (s.type !== SHT_NOTE) continue;
    out.push(...parseNotes(elf.bytes, s.offset, s.size, s.addralign, `SHT_NOTE section ${s.index}`));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Xen notes (public/elfnote.h; PHYS32_RELOC was added in Xen 4.20)

export const XEN_ELFNOTE = {
  INFO: 0,
  ENTRY: 1,
  HYPERCALL_PAGE: 2,
  VIRT_BASE: 3,
  PADDR_OFFSET: 4,
  XEN_VERSION: 5,
  GUEST_OS: 6,
  GUEST_VERSION: 7,
  LOADER: 8,
  PAE_MODE: 9,
  FEATURES: 10,
  BSD_SYMTAB: 11,
  HV_START_LOW: 12,
  L1_MFN_VALID: 13,
  SUSPEND_CANCEL: 14,
  INIT_P2M: 15,
  MOD_START_PFN: 16,
  SUPPORTED_FEATURES: 17,
  PHYS32_ENTRY: 18,
  PHYS32_RELOC: 19,
} as const;

const XEN_NOTE_NAMES = new Map<number, string>(Object.entries(XEN_ELFNOTE).map(([k, v]) => [v, k]));

/** Note types whose descriptor is a NUL-terminated string. */
const STRING_NOTES = new Set<number>([
  XEN_ELFNOTE.XEN_VERSION, XEN_ELFNOTE.GUEST_OS, XEN_ELFNOTE.GUEST_VERSION, XEN_ELFNOTE.LOADER,
  XEN_ELFNOTE.PAE_MODE, XEN_ELFNOTE.FEATURES, XEN_ELFNOTE.BSD_SYMTAB,
]);

export interface XenNote {
  type: number;
  /** XEN_ELFNOTE_ name without the prefix, or "type N" for unknown types. */
  name: string;
  desc: Uint8Array;
  /** For numeric notes with a 1, 2, 4 or 8-byte descriptor: its little-endian value. */
  value?: bigint;
  /** For string notes: the text up to the first NUL. */
  text?: string;
}

/** A 1, 2, 4 or 8-byte little-endian descriptor as a number; undefined for other sizes. */
export function noteNumber(desc: Uint8Array): bigint | undefined {
  if (desc.length !== 1 && desc.length !== 2 && desc.length !== 4 && desc.length !== 8) return undefined;
  let v = 0n;
  for (let i = desc.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(desc[i]!);
  return v;
}

/** The notes owned by "Xen", decoded. */
export function xenNotes(notes: readonly ElfNote[]): XenNote[] {
  const out: XenNote[] = [];
  for (const n of notes) {
    if (n.name !== 'Xen') continue;
    const x: XenNote = { type: n.type, name: XEN_NOTE_NAMES.get(n.type) ?? `type ${n.type}`, desc: n.desc };
    if (STRING_NOTES.has(n.type)) {
      const nul = n.desc.indexOf(0);
      x.text = String.fromCharCode(...n.desc.subarray(0, Math.min(nul < 0 ? n.desc.length : nul, 4096)));
    } else if (n.type !== XEN_ELFNOTE.PHYS32_RELOC && n.type !== XEN_ELFNOTE.L1_MFN_VALID) {
      const v = noteNumber(n.desc);
      if (v !== undefined) x.value = v;
    }
    out.push(x);
  }
  return out;
}
