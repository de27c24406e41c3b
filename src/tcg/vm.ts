// A domain's guest-physical address space as the software CPU sees it, on
// one thread: the same host memory KVM's slots would name (uc_mem_map_ptr, no
// copy), in every engine of the domain's vCPUs here. Whatever is not RAM is
// MMIO, as it is under KVM: the first access to such a page maps it as an I/O
// page whose accesses go to the vCPU's MMIO handler while they happen (a large
// I/O region cannot be used instead: Unicorn splits regions page by page).

import koffi from 'koffi';
import { check, UC_PROT_ALL, UC_PROT_WRITE, type UnicornLib } from './unicorn.js';

/** linux/kvm.h KVM_MEM_READONLY (the slot flag the hypervisor passes for read-only grant mappings). */
const KVM_MEM_READONLY = 1 << 1;
import type { GuestMemorySlots } from '../accel/vcpu.js';

const PAGE = 4096n;
// uc_hook_type UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED (unicorn.h)
const HOOK_MEM_RW_UNMAPPED = (1 << 4) | (1 << 5);

interface Region { gpa: bigint; size: bigint; host: bigint; prot: number }

export interface TcgEngine {
  readonly u: UnicornLib;
  readonly uc: unknown;
  mmioRead(gpa: bigint, size: number): bigint;
  mmioWrite(gpa: bigint, size: number, value: bigint): void;
}

interface EngineMmio {
  pages: Set<bigint>;
  callbacks: unknown[];
}

/** I/O pages an engine makes on first access (the LAPIC, the hole's devices: a handful in practice). */
export const MAX_IO_PAGES = 4096;

export class TcgVm implements GuestMemorySlots {
  private readonly slots = new Map<number, Region>();
  private readonly engines = new Map<TcgEngine, EngineMmio>();

  /** `tscKhz`: the TSC rate guests see; it counts from `tscBaseNs` (monotonic). */
  constructor(readonly tscKhz: number, readonly tscBaseNs = process.hrtime.bigint()) {}

  /** The TSC at monotonic time `ns` (before any guest offset). */
  tscAt(ns: bigint): bigint {
    return ((ns - this.tscBaseNs) * BigInt(this.tscKhz)) / 1_000_000n;
  }

  addEngine(e: TcgEngine): void {
    const u = e.u;
    const mm: EngineMmio = { pages: new Set(), callbacks: [] };
    const read = koffi.register((_uc: unknown, off: number | bigint, size: number, base: number | bigint) => e.mmioRead(BigInt(base) + BigInt(off), size), koffi.pointer(u.protos.mmioRead));
    const write = koffi.register((_uc: unknown, off: number | bigint, size: number, value: number | bigint, base: number | bigint) => e.mmioWrite(BigInt(base) + BigInt(off), size, BigInt(value)), koffi.pointer(u.protos.mmioWrite));
    // A read or write of guest-physical memory that is not mapped: make its page an I/O page and retry.
    const fault = koffi.register((_uc: unknown, _type: number, addr: number | bigint) => {
      const page = BigInt(addr) & ~(PAGE - 1n);
      // Each I/O page costs the engine memory: a guest touching page after page of its address space
      // stops at the limit (an unmapped access: its vCPU fails) instead of growing the host without end.
      if (mm.pages.size >= MAX_IO_PAGES) return false;
      if (u.mmioMap(e.uc, page, Number(PAGE), read, page, write, page) !== 0) return false;
      mm.pages.add(page);
      return true;
    }, koffi.pointer(u.protos.memFault));
    mm.callbacks.push(read, write, fault);
    const h: bigint[] = [0n];
    check(u, u.hookAddRaw(e.uc, h, HOOK_MEM_RW_UNMAPPED, fault, null, 1n, 0n), 'uc_hook_add(unmapped)');
    this.engines.set(e, mm);
    for (const r of this.slots.values()) check(u, u.memMapPtr(e.uc, r.gpa, Number(r.size), r.prot, r.host), 'uc_mem_map_ptr');
  }

  removeEngine(e: TcgEngine): void {
    for (const cb of this.engines.get(e)?.callbacks ?? []) koffi.unregister(cb as never);
    this.engines.delete(e);
  }

  /** The engines close with their vCPUs; nothing else is held. */
  close(): void {
    this.slots.clear();
  }

  /** `flags` as KVM's: KVM_MEM_READONLY maps the region read and execute only (a guest write stops the engine). */
  setUserMemoryRegion(slot: number, guestPhys: number, size: number, hostAddr: bigint, flags = 0): void {
    if (this.slots.has(slot)) this.deleteMemoryRegion(slot);
    const r = { gpa: BigInt(guestPhys), size: BigInt(size), host: hostAddr, prot: flags & KVM_MEM_READONLY ? UC_PROT_ALL & ~UC_PROT_WRITE : UC_PROT_ALL };
    this.slots.set(slot, r);
    for (const [e, mm] of this.engines) {
      // I/O pages made for accesses before this RAM was there give way to it.
      for (const p of mm.pages) {
        if (p >= r.gpa && p < r.gpa + r.size) {
          check(e.u, e.u.memUnmap(e.uc, p, Number(PAGE)), 'uc_mem_unmap(mmio page)');
          mm.pages.delete(p);
        }
      }
      check(e.u, e.u.memMapPtr(e.uc, r.gpa, size, r.prot, hostAddr), `uc_mem_map_ptr(0x${guestPhys.toString(16)}, 0x${size.toString(16)})`);
    }
  }

  deleteMemoryRegion(slot: number): void {
    const r = this.slots.get(slot);
    if (!r) return;
    this.slots.delete(slot);
    for (const e of this.engines.keys()) check(e.u, e.u.memUnmap(e.uc, r.gpa, Number(r.size)), 'uc_mem_unmap');
  }
}
