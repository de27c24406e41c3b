// A domain's guest-physical memory map (Xen's p2m for an HVM/PVH domain).
//
// One memfd backs everything the guest can see, laid out in host pages:
//   [0, ramPages)                   RAM, first low RAM then RAM above 4 GiB
//   [ramPages, +XEN_PAGES)          Xen-owned frames: shared_info, grant-table frames
//   [.., +SPECIAL_PAGES)            special pages (console and xenstore rings...)
//   [.., +acpiPages)                the ACPI tables the builder writes, at GFN 0xFC000
//   [.., +poolPages)                pages for populate_physmap beyond the initial RAM
//   [.., +statusPages)              Xen-owned grant status frames (grant table v2)
//   [.., +GRANT_PRIVATE_PAGES...)   the hypervisor's own grant state (never in the physmap)
//   [.., +P2M_MIRROR_PAGES)         a copy of this map for other threads (never in the physmap)
// Xen-owned frames keep one host location whatever GFN the guest maps them
// at, so any thread can find shared_info without asking the vCPU's thread.
// The GFN -> host page mapping is mirrored into KVM memory slots; mapping a
// frame over RAM splits the RAM slot (the RAM page is displaced, as in Xen).
// A GFN may also hold another domain's page (a grant mapping): a foreign
// segment, installed in KVM from that domain's memory, never translated here.
// The map that owns the KVM slots publishes itself into the memfd's mirror
// pages under a sequence count, so a thread that runs another domain can
// translate this domain's GFNs (a grant's frame) without asking this one.

import type { GuestMemorySlots } from '../accel/vcpu.js';
import { PAGE_SIZE } from './abi/xen.js';
import { ACPI_TABLES_START, FOUR_GIB, LAPIC_BASE, MMIO_HOLE_START, NR_SPECIAL_PAGES, SPECIAL_PAGES_START_PFN } from './x86/e820.js';
import { EINVAL, ENOMEM, XenError } from './errno.js';

/** KVM_MEM_READONLY (linux/kvm.h): guest writes to the slot exit as MMIO. */
export const KVM_MEM_READONLY = 1 << 1;
/** Pages of the memfd holding the map's mirror: a header and 4 words per segment (32767 segments, above KVM's 32764 slots). */
export const P2M_MIRROR_PAGES = 128;
const MIRROR_HDR_WORDS = 4;
const MIRROR_SEG_WORDS = 4;
const MIRROR_MAX_SEGS = (P2M_MIRROR_PAGES * PAGE_SIZE / 4 - MIRROR_HDR_WORDS) / MIRROR_SEG_WORDS;
/** Segment flag in the mirror: the GFN holds another domain's page. */
const MIRROR_FOREIGN = 1;


export interface PhysmapLayout {
  /** total initial RAM in pages */
  ramPages: number;
  /** grant-table frames the domain may have (max_grant_frames) */
  maxGrantFrames: number;
  /** extra pages available to populate_physmap (maxmem - memory) */
  poolPages: number;
  /** pages of ACPI tables at ACPI_TABLES_START (0: none) */
  acpiPages?: number;
}

/** Another domain's page at a GFN (a grant mapping): where it is mapped in this process, and how. */
export interface ForeignFrame {
  domid: number;
  /** the page in the granting domain's memfd */
  hostPage: number;
  /** its address in this process (the whole process shares one address space) */
  address: bigint;
  readonly: boolean;
}

/** A run of guest frames mapped linearly onto host pages of the memfd (or one foreign page). */
export interface Segment {
  gfn: number;
  count: number;
  hostPage: number;
  slot: number;
  foreign?: ForeignFrame;
}

/** What a guest frame holds, beyond plain RAM. */
export type FrameKind = 'ram' | 'shared_info' | 'grant' | 'special' | 'acpi' | 'pool' | 'grant_status' | 'xen';

/** Grant status frames for a table of `frames` grant frames at most (Xen's grant_to_status_frames: 2048 status words a page, 256 v2 entries a frame). */
export function statusFramesFor(frames: number): number {
  return Math.ceil(frames / 8);
}

/**
 * The hypervisor's own grant pages for a table of `frames` grant frames: a
 * header page and the active entries (16 bytes each, 512 entries a frame).
 * The per-page pin bitmap follows (see pinBitmapPages).
 */
export function grantPrivatePages(frames: number): number {
  return 1 + frames * 2;
}

/** Where each part of a domain's memfd starts (host pages), for a layout: what every thread computes alike. */
export function layoutBases(layout: PhysmapLayout): { sharedInfoPage: number; grantBase: number; specialBase: number; acpiBase: number; poolBase: number; statusBase: number; grantPrivateBase: number; pinBitmapBase: number; mirrorBase: number; totalPages: number } {
  const sharedInfoPage = layout.ramPages;
  const grantBase = sharedInfoPage + 1;
  const specialBase = grantBase + layout.maxGrantFrames;
  const acpiBase = specialBase + NR_SPECIAL_PAGES;
  const acpiPages = layout.acpiPages ?? 0;
  if (!Number.isInteger(acpiPages) || acpiPages < 0 || ACPI_TABLES_START + acpiPages * PAGE_SIZE > LAPIC_BASE) throw new RangeError(`bad ACPI page count ${acpiPages}`);
  const poolBase = acpiBase + acpiPages;
  const statusBase = poolBase + layout.poolPages;
  const grantPrivateBase = statusBase + statusFramesFor(layout.maxGrantFrames);
  // one bit per page that a grant can pin (everything before the status frames)
  const pinBitmapBase = grantPrivateBase + grantPrivatePages(layout.maxGrantFrames);
  const mirrorBase = pinBitmapBase + Math.ceil(statusBase / (PAGE_SIZE * 8));
  return { sharedInfoPage, grantBase, specialBase, acpiBase, poolBase, statusBase, grantPrivateBase, pinBitmapBase, mirrorBase, totalPages: mirrorBase + P2M_MIRROR_PAGES };
}

export class Physmap {
  readonly lowRamPages: number;
  readonly highRamPages: number;
  /** host page index of shared_info, grant frame i = grantBase + i, special page i = specialBase + i */
  readonly sharedInfoPage: number;
  readonly grantBase: number;
  readonly specialBase: number;
  readonly acpiBase: number;
  readonly poolBase: number;
  /** host page of status frame i = statusBase + i; the grant table's own pages; the mirror */
  readonly statusBase: number;
  readonly grantPrivateBase: number;
  readonly pinBitmapBase: number;
  readonly mirrorBase: number;
  readonly totalPages: number;
  /** Sorted, non-overlapping segments: the truth for both translation and KVM slots. */
  private segs: Segment[] = [];
  private freeSlots: number[] = [];
  private nextSlot = 0;
  /** Free host pages for populate_physmap: a stack, and the set that says which of its entries are still free. */
  private poolFree: number[];
  private readonly poolFreeSet = new Set<number>();
  private vm: GuestMemorySlots | null = null;
  private maxSlots = Infinity;
  private coalesce = false;
  private hostAddress = 0n;
  /** Last lookup, for runs of accesses to the same segment. */
  private last: Segment | null = null;
  /** Bumped by every change of the map (so copies on other threads know to follow). */
  version = 0;
  /** The memfd's mirror pages, written by the map that owns the KVM slots (null: not published). */
  private mirror: Int32Array | null = null;
  private mirrored = -1;
  /** Frames the guest gave back, held until the grant table says no grant pins them (see GrantTable.settleFreedPages). */
  readonly quarantine: number[] = [];

  constructor(readonly layout: PhysmapLayout) {
    const lowMax = MMIO_HOLE_START / PAGE_SIZE;
    this.lowRamPages = Math.min(layout.ramPages, lowMax);
    this.highRamPages = layout.ramPages - this.lowRamPages;
    const b = layoutBases(layout);
    const acpiPages = layout.acpiPages ?? 0;
    this.sharedInfoPage = b.sharedInfoPage;
    this.grantBase = b.grantBase;
    this.specialBase = b.specialBase;
    this.acpiBase = b.acpiBase;
    this.poolBase = b.poolBase;
    this.statusBase = b.statusBase;
    this.grantPrivateBase = b.grantPrivateBase;
    this.pinBitmapBase = b.pinBitmapBase;
    this.mirrorBase = b.mirrorBase;
    this.totalPages = b.totalPages;
    this.poolFree = [];
    for (let i = layout.poolPages - 1; i >= 0; i--) this.pushFree(this.poolBase + i);
    if (this.lowRamPages) this.insert({ gfn: 0, count: this.lowRamPages, hostPage: 0, slot: -1 });
    if (this.highRamPages) this.insert({ gfn: FOUR_GIB / PAGE_SIZE, count: this.highRamPages, hostPage: this.lowRamPages, slot: -1 });
    if (acpiPages) this.insert({ gfn: ACPI_TABLES_START / PAGE_SIZE, count: acpiPages, hostPage: this.acpiBase, slot: -1 });
    this.insert({ gfn: SPECIAL_PAGES_START_PFN, count: NR_SPECIAL_PAGES, hostPage: this.specialBase, slot: -1 });
  }

  /** Bytes the backing memfd needs. */
  get bytes(): number {
    return this.totalPages * PAGE_SIZE;
  }

  /** Mirrors the map into KVM memory slots from now on (at most `maxSlots` of them). */
  /**
   * `coalesce`: a page mapped beside a run it continues joins it, its slot and the run's replaced by
   * one. Only for a domain whose every vCPU runs on the thread that changes the map (none can be
   * running while it changes): the slots are briefly gone between the delete and the create.
   */
  attach(vm: GuestMemorySlots, hostAddress: bigint, maxSlots = Infinity, coalesce = false): void {
    this.vm = vm;
    this.coalesce = coalesce;
    this.maxSlots = maxSlots;
    this.hostAddress = hostAddress;
    for (const s of this.segs) this.installSlot(s);
  }

  /** Host page backing `gfn`, or -1 for a hole (or another domain's page: see foreignAt). */
  hostPageOf(gfn: number): number {
    const l = this.last;
    if (l && gfn >= l.gfn && gfn < l.gfn + l.count) return l.hostPage + (gfn - l.gfn);
    const s = this.find(gfn);
    if (!s || s.foreign) return -1;
    this.last = s;
    return s.hostPage + (gfn - s.gfn);
  }

  /** The foreign page mapped at `gfn` (a grant mapping), or null. */
  foreignAt(gfn: number): ForeignFrame | null {
    return this.find(gfn)?.foreign ?? null;
  }

  /**
   * Puts another domain's page at `gfn` (a grant host mapping), displacing
   * what was there; returns the host page of this domain displaced (-1 if
   * none). Refused (EINVAL) over a foreign page, and (ENOMEM) without a KVM
   * slot for it.
   */
  mapForeign(gfn: number, f: ForeignFrame): number {
    if (this.foreignAt(gfn)) throw new XenError(EINVAL, `gfn 0x${gfn.toString(16)} already holds a grant mapping`);
    if (this.segs.length + 3 > this.maxSlots) throw new XenError(ENOMEM, 'no KVM memory slot left for this mapping');
    const displaced = this.unmap(gfn);
    this.insert({ gfn, count: 1, hostPage: -1, slot: -1, foreign: { ...f } }, true);
    return displaced;
  }

  /** Takes the foreign page off `gfn` (the GFN becomes a hole); false if none was there. */
  unmapForeign(gfn: number): boolean {
    const i = this.indexOf(gfn);
    if (i < 0 || !this.segs[i]!.foreign) return false;
    this.removeSlot(this.segs[i]!);
    this.segs.splice(i, 1);
    this.last = null;
    this.version++;
    return true;
  }

  /** Byte offset in the memfd of guest-physical address `gpa`, or -1 for a hole. */
  hostOffsetOf(gpa: number): number {
    const hp = this.hostPageOf(Math.floor(gpa / PAGE_SIZE));
    return hp < 0 ? -1 : hp * PAGE_SIZE + (gpa % PAGE_SIZE);
  }

  kindOfHostPage(hp: number): FrameKind {
    if (hp < this.layout.ramPages) return 'ram';
    if (hp === this.sharedInfoPage) return 'shared_info';
    if (hp < this.specialBase) return 'grant';
    if (hp < this.acpiBase) return 'special';
    if (hp < this.poolBase) return 'acpi';
    if (hp < this.statusBase) return 'pool';
    if (hp < this.grantPrivateBase) return 'grant_status';
    return 'xen';
  }

  /** The GFN a host page is currently mapped at (first match), or -1. */
  gfnOfHostPage(hp: number): number {
    for (const s of this.segs) if (!s.foreign && hp >= s.hostPage && hp < s.hostPage + s.count) return s.gfn + (hp - s.hostPage);
    return -1;
  }

  /**
   * Maps host page `hp` at `gfn`, displacing whatever was there (a RAM page
   * displaced this way is lost to the guest, as in Xen), and unmapping `hp`
   * from any GFN it was at before (a frame lives at one GFN at a time).
   * Returns the host page that was displaced (or -1).
   */
  map(gfn: number, hp: number): number {
    const prevGfn = this.gfnOfHostPage(hp);
    if (prevGfn === gfn) return -1;
    // Xen's guest_physmap_add_entry refuses to replace a grant mapping (and crashes the domain).
    if (this.foreignAt(gfn)) throw new XenError(EINVAL, `gfn 0x${gfn.toString(16)} holds a grant mapping`);
    // Two splits and the new page add at most three slots: refuse before changing anything
    // (a guest fragmenting its physmap runs out of KVM slots, not the hypervisor).
    if (this.segs.length + 3 > this.maxSlots) throw new XenError(ENOMEM, 'no KVM memory slot left for this mapping');
    if (prevGfn >= 0) this.unmap(prevGfn);
    const displaced = this.unmap(gfn);
    const seg: Segment = { gfn, count: 1, hostPage: hp, slot: -1 };
    this.insert(seg, true);
    if (this.coalesce) this.joinNeighbours(seg);
    return displaced;
  }

  /** Joins `seg` with the runs just below and above it where guest and host pages both continue. */
  private joinNeighbours(seg: Segment): void {
    const joins = (a: Segment | undefined, b: Segment | undefined): boolean =>
      !!a && !!b && !a.foreign && !b.foreign && a.gfn + a.count === b.gfn && a.hostPage + a.count === b.hostPage;
    let i = this.indexOf(seg.gfn);
    if (i > 0 && joins(this.segs[i - 1], this.segs[i])) this.joinAt(--i);
    if (joins(this.segs[i], this.segs[i + 1])) this.joinAt(i);
    this.last = null;
    this.version++;
  }

  /** Segments i and i + 1 become one, in one slot. */
  private joinAt(i: number): void {
    const l = this.segs[i]!, r = this.segs[i + 1]!;
    this.removeSlot(l);
    this.removeSlot(r);
    const merged: Segment = { gfn: l.gfn, count: l.count + r.count, hostPage: l.hostPage, slot: -1 };
    this.segs.splice(i, 2, merged);
    this.installSlot(merged);
  }

  /**
   * Removes `gfn` from the map (becomes a hole). Returns the host page it had, or -1.
   * A hole inside a run splits its slot in two: refused with ENOMEM, nothing changed,
   * when no KVM slot is left (a guest ballooning out every other page runs out of slots).
   */
  unmap(gfn: number): number {
    const i = this.indexOf(gfn);
    if (i < 0) return -1;
    const s = this.segs[i]!;
    if (s.foreign) throw new XenError(EINVAL, `gfn 0x${gfn.toString(16)} holds a grant mapping`);
    if (gfn > s.gfn && gfn < s.gfn + s.count - 1 && this.segs.length + 1 > this.maxSlots) {
      throw new XenError(ENOMEM, 'no KVM memory slot left to split this mapping');
    }
    const hp = s.hostPage + (gfn - s.gfn);
    this.removeSlot(s);
    const pieces: Segment[] = [];
    if (gfn > s.gfn) pieces.push({ gfn: s.gfn, count: gfn - s.gfn, hostPage: s.hostPage, slot: -1 });
    const rightCount = s.gfn + s.count - gfn - 1;
    if (rightCount > 0) pieces.push({ gfn: gfn + 1, count: rightCount, hostPage: hp + 1, slot: -1 });
    this.segs.splice(i, 1, ...pieces);
    for (const p of pieces) this.installSlot(p);
    this.last = null;
    this.version++;
    return hp;
  }

  /**
   * Takes a page from the populate pool for `gfn` (-1 when exhausted): the free page that continues
   * a neighbour's run when there is one, so a guest ballooning back up gets its runs back as few
   * segments (each is a KVM slot and a software-CPU memory region, which cost per change as they grow).
   */
  allocPoolPage(gfn = -1): number {
    if (gfn >= 0) {
      const near = this.adjacentHostPage(gfn);
      if (near >= 0 && this.poolFreeSet.delete(near)) return near;
    }
    while (this.poolFree.length) {
      const hp = this.poolFree.pop()!;
      if (this.poolFreeSet.delete(hp)) return hp;
    }
    return -1;
  }

  /** The host page that would extend the run just below `gfn` or just above it (-1: neither is mapped RAM). */
  private adjacentHostPage(gfn: number): number {
    const below = this.indexOf(gfn - 1);
    if (below >= 0 && !this.segs[below]!.foreign) {
      const s = this.segs[below]!;
      return s.hostPage + (gfn - s.gfn);
    }
    const above = this.indexOf(gfn + 1);
    if (above >= 0 && !this.segs[above]!.foreign && this.segs[above]!.gfn === gfn + 1) return this.segs[above]!.hostPage - 1;
    return -1;
  }

  private pushFree(hp: number): void {
    if (this.poolFreeSet.has(hp)) return;
    this.poolFreeSet.add(hp);
    this.poolFree.push(hp);
  }

  /** Returns a pool page (after its content was discarded). */
  freePoolPage(hp: number): void {
    if (hp >= this.poolBase && hp < this.statusBase) this.pushFree(hp);
  }

  /**
   * Starts writing the map into the memfd's mirror pages (`mem` is the
   * domain's memory): the map that owns the KVM slots does, for readers on
   * other threads (mirrorLookup).
   */
  publishTo(mem: Uint8Array): void {
    this.mirror = new Int32Array(mem.buffer, mem.byteOffset + this.mirrorBase * PAGE_SIZE, P2M_MIRROR_PAGES * PAGE_SIZE / 4);
    this.mirrored = -1;
    // a map the mirror cannot hold is refused like one KVM has no slots for
    this.maxSlots = Math.min(this.maxSlots, MIRROR_MAX_SEGS);
    this.publish();
  }

  /**
   * Writes the map into the mirror if it changed since the last time, under
   * the mirror's sequence count (odd while written). Called after each
   * hypercall that may change the map, and before a frame the guest gave back
   * is reused: a reader can never find a GFN there that the map no longer has
   * unless the frame it names is still quarantined.
   */
  publish(): void {
    const m = this.mirror;
    if (!m || this.mirrored === this.version) return;
    const n = Math.min(this.segs.length, MIRROR_MAX_SEGS);
    const seq = Atomics.load(m, 0);
    Atomics.store(m, 0, seq + 1);
    const w = new Int32Array(n * MIRROR_SEG_WORDS);
    for (let i = 0; i < n; i++) {
      const s = this.segs[i]!;
      w[i * 4] = s.gfn;
      w[i * 4 + 1] = s.count;
      w[i * 4 + 2] = s.hostPage;
      w[i * 4 + 3] = s.foreign ? MIRROR_FOREIGN : 0;
    }
    m.set(w, MIRROR_HDR_WORDS);
    Atomics.store(m, 1, n);
    Atomics.store(m, 0, seq + 2);
    this.mirrored = this.version;
  }

  /**
   * A RAM frame the guest gave back (decrease_reservation, or displaced by
   * a mapping) becomes free for populate_physmap like a pool page, as Xen's
   * freed frames go back to its heap: a domain that balloons down can
   * balloon up again within max_pages.
   */
  freeRamPage(hp: number): void {
    if (hp >= 0 && hp < this.layout.ramPages) this.pushFree(hp);
  }

  /** Snapshot of the segments (for tests and for handing the map to another thread). */
  segments(): readonly Segment[] {
    return this.segs;
  }

  /**
   * Follows a map changed on another thread (a worker running some of the
   * domain's vCPUs, while the home worker owns the KVM slots). Only for a
   * map that is not attached to KVM.
   */
  load(segs: readonly Segment[]): void {
    if (this.vm) throw new Error('physmap: load() is for copies, not the map that owns the KVM slots');
    this.segs = segs.map((s) => ({ ...s, slot: -1 }));
    this.last = null;
    this.version++;
  }

  private find(gfn: number): Segment | null {
    const i = this.indexOf(gfn);
    return i < 0 ? null : this.segs[i]!;
  }

  private indexOf(gfn: number): number {
    let lo = 0;
    let hi = this.segs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.segs[mid]!;
      if (gfn < s.gfn) hi = mid - 1;
      else if (gfn >= s.gfn + s.count) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  private insert(seg: Segment, install = false): void {
    let i = 0;
    while (i < this.segs.length && this.segs[i]!.gfn < seg.gfn) i++;
    this.segs.splice(i, 0, seg);
    if (install) this.installSlot(seg);
    this.last = null;
    this.version++;
  }

  private installSlot(s: Segment): void {
    if (!this.vm) return;
    s.slot = this.freeSlots.pop() ?? this.nextSlot++;
    if (s.foreign) this.vm.setUserMemoryRegion(s.slot, s.gfn * PAGE_SIZE, PAGE_SIZE, s.foreign.address, s.foreign.readonly ? KVM_MEM_READONLY : 0);
    else this.vm.setUserMemoryRegion(s.slot, s.gfn * PAGE_SIZE, s.count * PAGE_SIZE, this.hostAddress + BigInt(s.hostPage * PAGE_SIZE));
  }

  private removeSlot(s: Segment): void {
    if (!this.vm || s.slot < 0) return;
    this.vm.deleteMemoryRegion(s.slot);
    this.freeSlots.push(s.slot);
    s.slot = -1;
  }
}

/**
 * Reads a domain's published map (its memfd `mem`, the mirror at host page
 * `mirrorBase`) from any thread: `read` gets the mirror and its segment
 * count, and runs again while the owner is writing it (the sequence count).
 */
function readMirror<T>(mem: Uint8Array, mirrorBase: number, read: (m: Int32Array, n: number) => T): T {
  const m = new Int32Array(mem.buffer, mem.byteOffset + mirrorBase * PAGE_SIZE, P2M_MIRROR_PAGES * PAGE_SIZE / 4);
  for (;;) {
    const seq = Atomics.load(m, 0);
    if (seq & 1) continue;
    const v = read(m, Math.min(Atomics.load(m, 1), MIRROR_MAX_SEGS));
    if (Atomics.load(m, 0) === seq) return v;
  }
}

/**
 * The plain segments of a domain's published map (a worker that starts
 * holding a running domain follows its map from there; another domain's
 * pages mapped in it are left out, as a copy never translates them).
 */
export function mirrorSegments(mem: Uint8Array, mirrorBase: number): Segment[] {
  return readMirror(mem, mirrorBase, (m, n) => {
    const out: Segment[] = [];
    for (let i = 0; i < n; i++) {
      const b = MIRROR_HDR_WORDS + i * MIRROR_SEG_WORDS;
      if (!(m[b + 3]! & MIRROR_FOREIGN)) out.push({ gfn: m[b]!, count: m[b + 1]!, hostPage: m[b + 2]!, slot: -1 });
    }
    return out;
  });
}

/** Translates `gfn` through a domain's published map: the host page, or -1 for a hole or a foreign page. */
export function mirrorLookup(mem: Uint8Array, mirrorBase: number, gfn: number): number {
  return readMirror(mem, mirrorBase, (m, n) => {
    let lo = 0;
    let hi = n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const b = MIRROR_HDR_WORDS + mid * MIRROR_SEG_WORDS;
      const g = m[b]!;
      if (gfn < g) hi = mid - 1;
      else if (gfn >= g + m[b + 1]!) lo = mid + 1;
      else return m[b + 3]! & MIRROR_FOREIGN ? -1 : m[b + 2]! + (gfn - g);
    }
    return -1;
  });
}
