// A domain's core file, as libxenctrl's xc_core.c writes it for xl dump-core
// and on_crash="coredump-*": an ELF64 ET_CORE whose sections are xc_core's
// (.note.Xen with the DUMPCORE notes, .xen_prstatus with one
// vcpu_guest_context per vCPU, .xen_shared_info, .xen_pfn naming the frame of
// each page, .xen_pages with their contents). Program headers are added so
// that gdb opens it as it opens a Linux core: a PT_NOTE of NT_PRSTATUS notes
// (one thread per vCPU, `info registers`) and PT_LOADs over .xen_pages at
// each run's guest-physical address (`x/s ADDR` reads guest memory; the
// addresses are physical, which for a guest mapping memory 1:1, as the
// samples and early boot do, are its virtual ones too).

import fs from 'node:fs';
import { KVM_REGS_SIZE, KVM_SREGS_SIZE, REG, SREGS, SEG } from '../kvm/abi.js';

const PAGE = 4096;

/** public/elfnote.h */
export const XEN_ELFNOTE_DUMPCORE = { NONE: 0x2000000, HEADER: 0x2000001, XEN_VERSION: 0x2000002, FORMAT_VERSION: 0x2000003 } as const;
/** xenctrl.h: the header's magic for an auto-translated (HVM/PVH) guest. */
export const XC_CORE_MAGIC_HVM = 0xf00febee;
/** XEN_DUMPCORE_FORMAT_VERSION_CURRENT (xc_core.h). */
const FORMAT_VERSION = 1n;
/** sizeof(vcpu_guest_context_any_t) on x86 (public/arch-x86/xen.h: the 64-bit context is the larger). */
export const VCPU_GUEST_CONTEXT_SIZE = 5168;
/** Offsets in struct vcpu_guest_context (x86_64; checked against the header by core_dump.test.ts). */
export const VGC = { flags: 512, user_regs: 520, ctrlreg: 4984, fs_base: 5144, gs_base_kernel: 5152, gs_base_user: 5160 } as const;
/** struct cpu_user_regs (public/arch-x86/xen-x86_64.h) member offsets. */
export const CPU_USER_REGS = {
  r15: 0, r14: 8, r13: 16, r12: 24, rbp: 32, rbx: 40, r11: 48, r10: 56, r9: 64, r8: 72, rax: 80, rcx: 88, rdx: 96,
  rsi: 104, rdi: 112, rip: 128, cs: 136, rflags: 144, rsp: 152, ss: 160, es: 168, ds: 176, fs: 184, gs: 192,
} as const;
const VGCF_online = 1 << 5;
/** struct elf_prstatus (x86-64 Linux, sys/procfs.h): 336 bytes, pr_pid at 32, pr_reg (user_regs_struct, 27 u64) at 112. */
export const PRSTATUS = { size: 336, pid: 32, reg: 112 } as const;
/** user_regs_struct (sys/user.h), in order. */
const USER_REGS = ['r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs'] as const;
const NT_PRSTATUS = 1;

/** One vCPU as KVM holds it: kvm_regs and kvm_sregs (asm/kvm.h), and whether it is up. */
export interface CoreVcpu {
  regs: Uint8Array;
  sregs: Uint8Array;
  up: boolean;
}

/** A run of guest frames and where their contents are. */
export interface CoreRun {
  gfn: number;
  count: number;
  /** the contents, count pages */
  bytes: Uint8Array;
}

export interface CoreImage {
  vcpus: CoreVcpu[];
  /** in gfn order, not overlapping */
  runs: CoreRun[];
  sharedInfo: Uint8Array;
  xen: { major: number; minor: number; extra: string; compileInfo: { compiler: string; by: string; domain: string; date: string }; capabilities: string; changeset: string };
}

/** The x86-64 registers of a vCPU, read from KVM's structures. */
function registers(v: CoreVcpu): Record<string, bigint> {
  if (v.regs.length !== KVM_REGS_SIZE || v.sregs.length !== KVM_SREGS_SIZE) throw new RangeError('bad kvm_regs / kvm_sregs size');
  const r = new DataView(v.regs.buffer, v.regs.byteOffset, v.regs.byteLength);
  const s = new DataView(v.sregs.buffer, v.sregs.byteOffset, v.sregs.byteLength);
  const out: Record<string, bigint> = {};
  for (const [name, i] of Object.entries(REG)) out[name] = r.getBigUint64(i * 8, true);
  for (const seg of ['cs', 'ds', 'es', 'fs', 'gs', 'ss'] as const) {
    out[seg] = BigInt(s.getUint16(SREGS[seg] + SEG.selector, true));
    out[`${seg}_base`] = s.getBigUint64(SREGS[seg] + SEG.base, true);
  }
  for (const cr of ['cr0', 'cr2', 'cr3', 'cr4'] as const) out[cr] = s.getBigUint64(SREGS[cr], true);
  return out;
}

function cstr(s: string, size: number): Uint8Array {
  const b = new Uint8Array(size);
  b.set(Buffer.from(s, 'latin1').subarray(0, size - 1));
  return b;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

/** An ELF note: namesz, descsz, type, name and desc each padded to 4 bytes. */
function note(name: string, type: number, desc: Uint8Array): Uint8Array {
  const nameBytes = Buffer.from(`${name}\0`, 'latin1');
  const b = new Uint8Array(12 + align(nameBytes.length, 4) + align(desc.length, 4));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, nameBytes.length, true);
  dv.setUint32(4, desc.length, true);
  dv.setUint32(8, type, true);
  b.set(nameBytes, 12);
  b.set(desc, 12 + align(nameBytes.length, 4));
  return b;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** xc_core's .note.Xen: NONE, HEADER, XEN_VERSION, FORMAT_VERSION. */
function xenNotes(img: CoreImage, nrPages: number): Uint8Array {
  const header = new DataView(new ArrayBuffer(32));
  header.setBigUint64(0, BigInt(XC_CORE_MAGIC_HVM), true);
  header.setBigUint64(8, BigInt(img.vcpus.length), true);
  header.setBigUint64(16, BigInt(nrPages), true);
  header.setBigUint64(24, BigInt(PAGE), true);
  // xen_dumpcore_elfnote_xen_version_desc: major, minor, extra[16], compile_info[144], capabilities[1024], changeset[64], platform_parameters, pagesize
  const ver = new Uint8Array(1280);
  const vv = new DataView(ver.buffer);
  vv.setBigUint64(0, BigInt(img.xen.major), true);
  vv.setBigUint64(8, BigInt(img.xen.minor), true);
  ver.set(cstr(img.xen.extra, 16), 16);
  const ci = img.xen.compileInfo;
  ver.set(cstr(ci.compiler, 64), 32);
  ver.set(cstr(ci.by, 16), 96);
  ver.set(cstr(ci.domain, 32), 112);
  ver.set(cstr(ci.date, 32), 144);
  ver.set(cstr(img.xen.capabilities, 1024), 176);
  ver.set(cstr(img.xen.changeset, 64), 1200);
  vv.setBigUint64(1264, 0n, true); // virt_start: 0 for an HVM guest
  vv.setBigUint64(1272, BigInt(PAGE), true);
  const fmt = new DataView(new ArrayBuffer(8));
  fmt.setBigUint64(0, FORMAT_VERSION, true);
  return concat([
    note('Xen', XEN_ELFNOTE_DUMPCORE.NONE, new Uint8Array(0)),
    note('Xen', XEN_ELFNOTE_DUMPCORE.HEADER, new Uint8Array(header.buffer)),
    note('Xen', XEN_ELFNOTE_DUMPCORE.XEN_VERSION, ver),
    note('Xen', XEN_ELFNOTE_DUMPCORE.FORMAT_VERSION, new Uint8Array(fmt.buffer)),
  ]);
}

/** One vcpu_guest_context per vCPU, as Xen's arch_get_info_guest fills it for an HVM vCPU. */
function prstatusSection(img: CoreImage): Uint8Array {
  const b = new Uint8Array(VCPU_GUEST_CONTEXT_SIZE * img.vcpus.length);
  const dv = new DataView(b.buffer);
  img.vcpus.forEach((v, i) => {
    const o = i * VCPU_GUEST_CONTEXT_SIZE;
    const r = registers(v);
    dv.setBigUint64(o + VGC.flags, v.up ? BigInt(VGCF_online) : 0n, true);
    const u = o + VGC.user_regs;
    for (const [name, off] of Object.entries(CPU_USER_REGS)) {
      const val = name === 'rflags' ? r['rflags']! : r[name]!;
      if (['cs', 'ss', 'es', 'ds', 'fs', 'gs'].includes(name)) dv.setUint16(u + off, Number(val), true);
      else dv.setBigUint64(u + off, val, true);
    }
    for (const [k, cr] of [[0, 'cr0'], [2, 'cr2'], [3, 'cr3'], [4, 'cr4']] as const) dv.setBigUint64(o + VGC.ctrlreg + k * 8, r[cr]!, true);
    dv.setBigUint64(o + VGC.fs_base, r['fs_base']!, true);
    dv.setBigUint64(o + VGC.gs_base_kernel, r['gs_base']!, true);
  });
  return b;
}

/** NT_PRSTATUS notes, one per vCPU, for gdb (thread ids are vCPU + 1). */
function coreNotes(img: CoreImage): Uint8Array {
  return concat(img.vcpus.map((v, i) => {
    const r = registers(v);
    const d = new Uint8Array(PRSTATUS.size);
    const dv = new DataView(d.buffer);
    dv.setInt32(PRSTATUS.pid, i + 1, true);
    USER_REGS.forEach((name, k) => {
      const val = name === 'eflags' ? r['rflags']! : name === 'orig_rax' ? 0xffffffffffffffffn : r[name]!;
      dv.setBigUint64(PRSTATUS.reg + k * 8, val, true);
    });
    return note('CORE', NT_PRSTATUS, d);
  }));
}

/**
 * Writes the core file to `path` (created 0600: it holds the guest's memory).
 * Returns the number of pages written.
 */
export function writeCore(path: string, img: CoreImage): number {
  const nrPages = img.runs.reduce((n, r) => n + r.count, 0);
  const noteXen = xenNotes(img, nrPages);
  const noteCore = coreNotes(img);
  const prstatus = prstatusSection(img);
  if (img.sharedInfo.length !== PAGE) throw new RangeError('shared_info must be one page');
  const pfns = new Uint8Array(nrPages * 8);
  const pv = new DataView(pfns.buffer);
  let k = 0;
  for (const r of img.runs) for (let i = 0; i < r.count; i++) pv.setBigUint64(8 * k++, BigInt(r.gfn + i), true);
  const names = ['', '.shstrtab', '.note.Xen', '.xen_prstatus', '.xen_shared_info', '.xen_pfn', '.xen_pages', '.note.CORE'];
  const strtab = Buffer.from(`${names.join('\0')}\0`, 'latin1');
  const nameOff = (n: string) => strtab.indexOf(Buffer.from(`\0${n}\0`, 'latin1')) + 1;

  // file layout: ELF header, program headers, notes, prstatus, shared_info, pfns, pages, strtab, section headers
  const phnum = 1 + img.runs.length;
  let off = 64 + 56 * phnum;
  const place = (size: number, a: number) => { off = align(off, a); const at = off; off += size; return at; };
  const at = {
    noteXen: place(noteXen.length, 4),
    noteCore: place(noteCore.length, 4),
    prstatus: place(prstatus.length, 8),
    shared: place(PAGE, PAGE),
    pfn: place(pfns.length, 8),
    pages: place(nrPages * PAGE, PAGE),
    strtab: place(strtab.length, 1),
    shdr: place(64 * names.length, 8),
  };

  const head = new Uint8Array(at.noteXen);
  const h = new DataView(head.buffer);
  head.set([0x7f, 0x45, 0x4c, 0x46, 2 /* ELFCLASS64 */, 1 /* LSB */, 1 /* EV_CURRENT */, 0 /* SYSV */], 0);
  h.setUint16(16, 4, true); // ET_CORE
  h.setUint16(18, 62, true); // EM_X86_64
  h.setUint32(20, 1, true);
  h.setBigUint64(32, 64n, true); // e_phoff
  h.setBigUint64(40, BigInt(at.shdr), true);
  h.setUint16(52, 64, true);
  h.setUint16(54, 56, true);
  h.setUint16(56, phnum, true);
  h.setUint16(58, 64, true);
  h.setUint16(60, names.length, true);
  h.setUint16(62, 1, true); // .shstrtab
  const phdr = (i: number, type: number, flags: number, offset: number, vaddr: number, size: number, alignment: number) => {
    const o = 64 + 56 * i;
    h.setUint32(o, type, true);
    h.setUint32(o + 4, flags, true);
    h.setBigUint64(o + 8, BigInt(offset), true);
    h.setBigUint64(o + 16, BigInt(vaddr), true);
    h.setBigUint64(o + 24, BigInt(vaddr), true);
    h.setBigUint64(o + 32, BigInt(size), true);
    h.setBigUint64(o + 40, BigInt(size), true);
    h.setBigUint64(o + 48, BigInt(alignment), true);
  };
  phdr(0, 4 /* PT_NOTE */, 4, at.noteCore, 0, noteCore.length, 4);
  let pageOff = at.pages;
  img.runs.forEach((r, i) => {
    phdr(1 + i, 1 /* PT_LOAD */, 7 /* RWX */, pageOff, r.gfn * PAGE, r.count * PAGE, PAGE);
    pageOff += r.count * PAGE;
  });

  const shdrs = new Uint8Array(64 * names.length);
  const s = new DataView(shdrs.buffer);
  const shdr = (i: number, type: number, offset: number, size: number, alignment: number, entsize: number) => {
    const o = 64 * i;
    s.setUint32(o, nameOff(names[i]!), true);
    s.setUint32(o + 4, type, true);
    s.setBigUint64(o + 24, BigInt(offset), true);
    s.setBigUint64(o + 32, BigInt(size), true);
    s.setBigUint64(o + 48, BigInt(alignment), true);
    s.setBigUint64(o + 56, BigInt(entsize), true);
  };
  shdr(1, 3 /* SHT_STRTAB */, at.strtab, strtab.length, 1, 0);
  shdr(2, 7 /* SHT_NOTE */, at.noteXen, noteXen.length, 4, 0);
  shdr(3, 1 /* SHT_PROGBITS */, at.prstatus, prstatus.length, 8, VCPU_GUEST_CONTEXT_SIZE);
  shdr(4, 1, at.shared, PAGE, PAGE, PAGE);
  shdr(5, 1, at.pfn, pfns.length, 8, 8);
  shdr(6, 1, at.pages, nrPages * PAGE, PAGE, PAGE);
  shdr(7, 7, at.noteCore, noteCore.length, 4, 0);

  const fd = fs.openSync(path, 'w', 0o600);
  try {
    const put = (b: Uint8Array, pos: number) => { for (let w = 0; w < b.length;) w += fs.writeSync(fd, b, w, b.length - w, pos + w); };
    put(head, 0);
    put(noteXen, at.noteXen);
    put(noteCore, at.noteCore);
    put(prstatus, at.prstatus);
    put(img.sharedInfo, at.shared);
    put(pfns, at.pfn);
    let p = at.pages;
    for (const r of img.runs) { put(r.bytes.subarray(0, r.count * PAGE), p); p += r.count * PAGE; }
    put(strtab, at.strtab);
    put(shdrs, at.shdr);
  } finally {
    fs.closeSync(fd);
  }
  return nrPages;
}
