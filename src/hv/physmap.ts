// A domain's guest-physical memory map (Xen's p2m for an HVM/PVH domain).
//
// One memfd backs everything the guest can see, laid out in host pages:
//   [0, ramPages)                   RAM, first low RAM then RAM above 4 GiB
//   [ramPages, +XEN_PAGES)          Xen-owned frames: shared_info, grant-table frames
//   [.., +SPECIAL_PAGES)            special pages (console and xenstore rings...)
//   [.., +acpiPages)                the ACPI tables the builder writes, at GFN 0xFC000
//   [.., +poolPages)                pages for populate_physmap beyond the initial RAM
// Xen-owned frames keep one host location whatever GFN the guest maps them
// at, so any thread can find shared_info without asking the vCPU's thread.
// The GFN -> host page mapping is mirrored into KVM memory slots; mapping a
// frame over RAM splits the RAM slot (the RAM page is displaced, as in Xen).

import type { GuestMemorySlots } from '../accel/vcpu.js';
import { PAGE_SIZE } from './abi/xen.js';
import { ACPI_TABLES_START, FOUR_GIB, LAPIC_BASE, MMIO_HOLE_START, NR_SPECIAL_PAGES, SPECIAL_PAGES_START_PFN } from './x86/e820.js';
import { ENOMEM, XenError } from './errno.js';


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

/** A run of guest frames mapped linearly onto host pages of the memfd. */
export interface Segment {
  gfn: number;
  count: number;
  hostPage: number;
  slot: number;
}

/** What a guest frame holds, beyond plain RAM. */
export type FrameKind = 'ram' | 'shared_info' | 'grant' | 'special' | 'acpi' | 'pool';

export class Physmap {
  readonly lowRamPages: number;
  readonly highRamPages: number;
  /** host page index of shared_info, grant frame i = grantBase + i, special page i = specialBase + i */
  readonly sharedInfoPage: number;
  readonly grantBase: number;
  readonly specialBase: number;
  readonly acpiBase: number;
  readonly poolBase: number;
  readonly totalPages: number;
  /** Sorted, non-overlapping segments: the truth for both translation and KVM slots. */
  private segs: Segment[] = [];
  private freeSlots: number[] = [];
  private nextSlot = 0;
  private poolFree: number[];
  private vm: GuestMemorySlots | null = null;
  private maxSlots = Infinity;
  private hostAddress = 0n;
  /** Last lookup, for runs of accesses to the same segment. */
  private last: Segment | null = null;
  /** Bumped by every change of the map (so copies on other threads know to follow). */
  version = 0;

  constructor(readonly layout: PhysmapLayout) {
    const lowMax = MMIO_HOLE_START / PAGE_SIZE;
    this.lowRamPages = Math.min(layout.ramPages, lowMax);
    this.highRamPages = layout.ramPages - this.lowRamPages;
    this.sharedInfoPage = layout.ramPages;
    this.grantBase = this.sharedInfoPage + 1;
    this.specialBase = this.grantBase + layout.maxGrantFrames;
    this.acpiBase = this.specialBase + NR_SPECIAL_PAGES;
    const acpiPages = layout.acpiPages ?? 0;
    if (!Number.isInteger(acpiPages) || acpiPages < 0 || ACPI_TABLES_START + acpiPages * PAGE_SIZE > LAPIC_BASE) throw new RangeError(`bad ACPI page count ${acpiPages}`);
    this.poolBase = this.acpiBase + acpiPages;
    this.totalPages = this.poolBase + layout.poolPages;
    this.poolFree = [];
    for (let i = layout.poolPages - 1; i >= 0; i--) this.poolFree.push(this.poolBase + i);
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
  attach(vm: GuestMemorySlots, hostAddress: bigint, maxSlots = Infinity): void {
    this.vm = vm;
    this.maxSlots = maxSlots;
    this.hostAddress = hostAddress;
    for (const s of this.segs) this.installSlot(s);
  }

  /** Host page backing `gfn`, or -1 for a hole. */
  hostPageOf(gfn: number): number {
    const l = this.last;
    if (l && gfn >= l.gfn && gfn < l.gfn + l.count) return l.hostPage + (gfn - l.gfn);
    const s = this.find(gfn);
    if (!s) return -1;
    this.last = s;
    return s.hostPage + (gfn - s.gfn);
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
    return 'pool';
  }

  /** The GFN a host page is currently mapped at (first match), or -1. */
  gfnOfHostPage(hp: number): number {
    for (const s of this.segs) if (hp >= s.hostPage && hp < s.hostPage + s.count) return s.gfn + (hp - s.hostPage);
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
    // Two splits and the new page add at most three slots: refuse before changing anything
    // (a guest fragmenting its physmap runs out of KVM slots, not the hypervisor).
    if (this.segs.length + 3 > this.maxSlots) throw new XenError(ENOMEM, 'no KVM memory slot left for this mapping');
    if (prevGfn >= 0) this.unmap(prevGfn);
    const displaced = this.unmap(gfn);
    this.insert({ gfn, count: 1, hostPage: hp, slot: -1 }, true);
    return displaced;
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

  /** Takes a page from the populate pool (-1 when exhausted). */
  allocPoolPage(): number {
    return this.poolFree.pop() ?? -1;
  }

  /** Returns a pool page (after its content was discarded). */
  freePoolPage(hp: number): void {
    if (hp >= this.poolBase && hp < this.totalPages) this.poolFree.push(hp);
  }

  /**
   * A RAM frame the guest gave back (decrease_reservation, or displaced by
   * a mapping) becomes free for populate_physmap like a pool page, as Xen's
   * freed frames go back to its heap: a domain that balloons down can
   * balloon up again within max_pages.
   */
  freeRamPage(hp: number): void {
    if (hp >= 0 && hp < this.layout.ramPages) this.poolFree.push(hp);
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
    this.vm.setUserMemoryRegion(s.slot, s.gfn * PAGE_SIZE, s.count * PAGE_SIZE, this.hostAddress + BigInt(s.hostPage * PAGE_SIZE));
  }

  private removeSlot(s: Segment): void {
    if (!this.vm || s.slot < 0) return;
    this.vm.deleteMemoryRegion(s.slot);
    this.freeSlots.push(s.slot);
    s.slot = -1;
  }
}
