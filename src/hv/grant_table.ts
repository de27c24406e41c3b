// Grant tables (Xen's common/grant_table.c), versions 1 and 2, for HVM/PVH
// domains: the table a domain writes its grants into, the hypervisor's
// active entries (pin counts) beside it, copy between grants, and host
// mappings of a grant into another domain's physmap.
//
// Where the state lives. Every part of a domain's table is a page of the
// domain's memfd (physmap.ts lays them out): the shared frames and v2 status
// frames the guest maps, and pages the guest never sees: a header (lock,
// version, sizes), the active entries and a bitmap of pinned host pages. A
// thread that has the memfd mapped (every pCPU worker maps each domain it
// sends events to, the control domain maps them all) can so pin and release
// a grant of any domain under that table's spinlock, and translate the
// grant's frame through the owner's published physmap (physmap.ts's
// mirror), without waiting for the thread that runs the granter. Copies are
// done by the caller's thread from one mapping of the granter's memory to
// another: no message, no second thread.
//
// What changes the table's size or version (setup_table, add_to_physmap,
// set_version) runs on the granter's home worker, as all of its
// grant_table_op calls do; pins and releases may come from anywhere. A page
// the granter gives back while a grant pins it is not freed until the last
// pin goes (settleFreedPages), as Xen's page references keep it.

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL, DOMID_SELF, PAGE_SIZE } from './abi/xen.js';
import { forAbi } from './abi/layout.js';
import { EBUSY, EINVAL, ENOSYS, EPERM, ERANGE, ESRCH, XenError } from './errno.js';
import { GuestFault } from './guest_access.js';
import { layoutBases, type Physmap, type PhysmapLayout } from './physmap.js';
import { SharedMemory } from '../kvm/memory.js';
import {
  GNTTABOP, GNTTABOP_CMD_MASK, GNTST, GTF_permit_access, GTF_transitive, GTF_type_mask, GTF_readonly, GTF_reading, GTF_writing,
  GTF_sub_page, GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly, GNTMAP_application_map, GNTMAP_contains_pte,
  GNTCOPY_source_gref, GNTCOPY_dest_gref, GNTTAB_NR_RESERVED_ENTRIES, GRANT_ENTRIES_PER_FRAME_V1, GRANT_ENTRIES_PER_FRAME_V2,
  GnttabSetupTable, GnttabQuerySize, GnttabSetVersion, GnttabGetVersion, GnttabCopy, GnttabMapGrantRef,
  GnttabUnmapGrantRef, GnttabSwapGrantRef, grantToStatusFrames, statusToGrantFrames,
} from './abi/grant_table.js';

export * from './abi/grant_table.js';

/** Entries a v1 frame holds (kept under its old name for the builder). */
export const GRANT_ENTRIES_PER_FRAME = GRANT_ENTRIES_PER_FRAME_V1;
/** Xen's INITIAL_NR_GRANT_FRAMES. */
export const INITIAL_NR_GRANT_FRAMES = 1;
/** Xen's default max_maptrack_frames (gnttab_max_maptrack_frames). */
export const DEFAULT_MAX_MAPTRACK_FRAMES = 1024;
/** Handles a maptrack frame holds (Xen's MAPTRACK_PER_PAGE: 16-byte grant_mapping entries). */
export const MAPTRACK_PER_FRAME = PAGE_SIZE / 16;
/** Copy operations done before GNTTABOP_copy continues itself (Xen checks for preemption between any two). */
export const COPY_PREEMPT_EVERY = 512;
/** Map, unmap and swap operations between continuations. */
const OP_PREEMPT_EVERY = 256;

// Active entry pin counts (Xen's GNTPIN_*): writable and read-only host mappings (and copies), device mappings.
const GNTPIN_hstw_inc = 1;
const GNTPIN_hstr_inc = 1 << 8;
const GNTPIN_hstw_mask = 0xff;
const GNTPIN_devw_mask = 0xff << 16;
const GNTPIN_overflow = 0x80808080 | 0;

/** The header page of the hypervisor's own grant state (words). */
const HDR = { lock: 0, version: 1, nrFrames: 2, nrStatusFrames: 3 } as const;
/** An active entry: pin counts, the domain it is pinned for (| sub-page bit), the host page, sub-page start | length << 16. */
const ACT_WORDS = 4;
const ACT = { pin: 0, domid: 1, hp: 2, sub: 3 } as const;
const ACT_SUB_PAGE = 1 << 16;

/** A domain's memory as one thread sees it, enough for its grant table. */
export interface GrantMemory {
  domid: number;
  /** the domain's memfd, as mapped on this thread */
  bytes: Uint8Array;
  layout: PhysmapLayout;
  /** the domain's GFN -> host page now (its own physmap at home, the published mirror elsewhere); -1 for none */
  translate(gfn: number): number;
  /** a mapping of the memfd of its own, kept while a grant of this domain is mapped (outlives the domain) */
  attach(): { address: bigint; bytes: Uint8Array; close(): void };
}

/** An attachment of the memfd from its fd (the memfd outlives the domain while anything maps it). */
export function attachByFd(fd: number, layout: PhysmapLayout): () => { address: bigint; bytes: Uint8Array; close(): void } {
  return () => SharedMemory.attach(fd, layoutBases(layout).totalPages * PAGE_SIZE);
}

/** A grant the caller holds for a copy or a mapping: where its page is, and the part of it granted. */
export interface Pinned {
  hp: number;
  start: number;
  length: number;
}

/** One maptrack entry (Xen's grant_mapping): the mapping a handle names. */
export interface GrantMapping {
  ref: number;
  flags: number;
  domid: number;
  /** the granter's table as this thread reached it (the one the pin was taken in) */
  granter: GrantTable;
  hp: number;
  /** GFN of the mapper's physmap it sits at */
  gfn: number;
  mem: { address: bigint; bytes: Uint8Array; close(): void };
}

/**
 * Xen's maptrack: the mapper's handles. Owned by the mapper's home worker
 * (all its grant_table_op calls run there), released when it dies.
 */
export class Maptrack {
  private readonly entries: (GrantMapping | null)[] = [];
  private readonly free: number[] = [];

  constructor(readonly maxFrames = DEFAULT_MAX_MAPTRACK_FRAMES) {}

  get limit(): number {
    return this.maxFrames * MAPTRACK_PER_FRAME;
  }

  /** A free handle, or -1 when max_maptrack_frames are used up. */
  alloc(): number {
    const h = this.free.pop();
    if (h !== undefined) return h;
    if (this.entries.length >= this.limit) return -1;
    this.entries.push(null);
    return this.entries.length - 1;
  }

  set(h: number, m: GrantMapping): void {
    this.entries[h] = m;
  }

  get(h: number): GrantMapping | null {
    return Number.isInteger(h) && h >= 0 && h < this.entries.length ? this.entries[h] ?? null : null;
  }

  put(h: number): void {
    this.entries[h] = null;
    this.free.push(h);
  }

  /** Handles in use. */
  get inUse(): number {
    return this.entries.length - this.free.length;
  }

  *mappings(): Iterable<[number, GrantMapping]> {
    for (let h = 0; h < this.entries.length; h++) {
      const m = this.entries[h];
      if (m) yield [h, m];
    }
  }
}

export class GrantTable {
  private readonly w: Int32Array;
  private readonly h16: Uint16Array;
  private readonly dv: DataView;
  readonly grantBase: number;
  readonly statusBase: number;
  private readonly hdr: number;
  private readonly act0: number;
  private readonly pins: number;
  /** The handles of the mappings this domain made (on its home worker's table). */
  readonly maptrack: Maptrack;
  private held: { address: bigint; bytes: Uint8Array; close(): void } | null = null;
  private holds = 0;
  /** This thread no longer maps the domain's memory (it died, or was forgotten here): nothing may touch the table. */
  private gone = false;

  constructor(readonly m: GrantMemory, maxMaptrackFrames = DEFAULT_MAX_MAPTRACK_FRAMES) {
    const b = layoutBases(m.layout);
    const bytes = m.bytes;
    this.w = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
    this.h16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 1);
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.grantBase = b.grantBase;
    this.statusBase = b.statusBase;
    this.hdr = (b.grantPrivateBase * PAGE_SIZE) >>> 2;
    this.act0 = this.hdr + PAGE_SIZE / 4;
    this.pins = (b.pinBitmapBase * PAGE_SIZE) >>> 2;
    this.maptrack = new Maptrack(maxMaptrackFrames);
  }

  /** A new domain's table (Xen's grant_table_init): version 1, INITIAL_NR_GRANT_FRAMES frames. */
  static initialise(bytes: Uint8Array, layout: PhysmapLayout): void {
    const w = new Int32Array(bytes.buffer, bytes.byteOffset + layoutBases(layout).grantPrivateBase * PAGE_SIZE, PAGE_SIZE / 4);
    Atomics.store(w, HDR.version, 1);
    Atomics.store(w, HDR.nrFrames, INITIAL_NR_GRANT_FRAMES);
    Atomics.store(w, HDR.nrStatusFrames, 0);
  }

  get domid(): number { return this.m.domid; }

  /**
   * This thread is about to unmap the domain's memory: from now on pins are
   * refused and releases do nothing (Xen: a dead granter's table needs no
   * clean-up). Mappings of its pages stay valid through their own mapping.
   */
  markGone(): void {
    this.gone = true;
    if (this.holds === 0) this.dropHeld();
  }
  get version(): number { return Atomics.load(this.w, this.hdr + HDR.version); }
  get nrFrames(): number { return Atomics.load(this.w, this.hdr + HDR.nrFrames); }
  get nrStatusFrames(): number { return Atomics.load(this.w, this.hdr + HDR.nrStatusFrames); }
  get maxFrames(): number { return this.m.layout.maxGrantFrames; }

  /** Xen's nr_grant_entries. */
  nrEntries(): number {
    return this.nrFrames * (this.version === 1 ? GRANT_ENTRIES_PER_FRAME_V1 : GRANT_ENTRIES_PER_FRAME_V2);
  }

  hostPage(frame: number): number {
    return this.grantBase + frame;
  }

  statusHostPage(frame: number): number {
    return this.statusBase + frame;
  }

  /** Runs `fn` holding the table's lock (a spinlock in the memfd: holders never block, any thread may take it). */
  locked<T>(fn: () => T): T {
    const i = this.hdr + HDR.lock;
    while (Atomics.compareExchange(this.w, i, 0, 1) !== 0) { /* spin: sections are a few loads and CASes */ }
    try {
      return fn();
    } finally {
      Atomics.store(this.w, i, 0);
    }
  }

  // --- the shared entries, as the granter writes them ----------------------

  /** Word index of entry `ref`'s flags | domid << 16 (Xen's grant_combo) in the current version. */
  private comboIndex(ref: number): number {
    return ((this.grantBase * PAGE_SIZE) >>> 2) + ref * (this.version === 1 ? 2 : 4);
  }

  /** Entry `ref` as the granter wrote it (v1 or v2 per the table's version). */
  entry(ref: number): { flags: number; domid: number; frame: number; pageOff: number; length: number; transDomid: number; transGref: number } {
    const c = Atomics.load(this.w, this.comboIndex(ref));
    const flags = c & 0xffff;
    const domid = (c >>> 16) & 0xffff;
    if (this.version === 1) return { flags, domid, frame: this.w[this.comboIndex(ref) + 1]! >>> 0, pageOff: 0, length: PAGE_SIZE, transDomid: 0, transGref: 0 };
    const off = this.grantBase * PAGE_SIZE + ref * 16;
    const frame = Number(this.dv.getBigUint64(off + 8, true));
    return { flags, domid, frame, pageOff: this.dv.getUint16(off + 4, true), length: this.dv.getUint16(off + 6, true), transDomid: this.dv.getUint16(off + 4, true), transGref: this.dv.getUint32(off + 8, true) };
  }

  /** The v2 status word of `ref`. */
  status(ref: number): number {
    return Atomics.load(this.h16, ((this.statusBase * PAGE_SIZE) >>> 1) + ref);
  }

  /** Xen's gnttab_clear_flags on the entry's status (v1: its flags; v2: its status word). */
  private clearFlags(ref: number, flags: number): void {
    if (this.version === 1) Atomics.and(this.w, this.comboIndex(ref), ~flags);
    else Atomics.and(this.h16, ((this.statusBase * PAGE_SIZE) >>> 1) + ref, ~flags & 0xffff);
  }

  /** Xen's _set_status_v1: checks the entry and sets GTF_reading (and GTF_writing) in it with a bounded cmpxchg. */
  private setStatusV1(ref: number, pinned: boolean, readonly: boolean, mask: number, ldom: number): number {
    const i = this.comboIndex(ref);
    let cur = Atomics.load(this.w, i);
    for (let retries = 0; ; retries++) {
      const flags = cur & 0xffff;
      if (!pinned && ((flags & mask) !== GTF_permit_access || ((cur >>> 16) & 0xffff) !== ldom)) return GNTST.general_error;
      let nf = flags | GTF_reading;
      if (!readonly) {
        if (flags & GTF_readonly) return GNTST.general_error;
        nf |= GTF_writing;
      }
      const prev = Atomics.compareExchange(this.w, i, cur, (cur & ~0xffff) | nf);
      if (prev === cur) return GNTST.okay;
      // the guest may race us (to change GTF_readonly, say), but not forever
      if (retries === 4) return GNTST.general_error;
      cur = prev;
    }
  }

  /** Xen's _set_status_v2: the flags go into the status word, then the entry is checked again. */
  private setStatusV2(ref: number, pinned: boolean, readonly: boolean, mask: number, ldom: number): number {
    const i = this.comboIndex(ref);
    const st = ((this.statusBase * PAGE_SIZE) >>> 1) + ref;
    const bad = (c: number): boolean => {
      const t = c & mask;
      return (t !== GTF_permit_access && t !== GTF_transitive) || ((c >>> 16) & 0xffff) !== ldom;
    };
    let c = Atomics.load(this.w, i);
    if (!pinned && bad(c)) return GNTST.general_error;
    if (readonly) Atomics.or(this.h16, st, GTF_reading);
    else {
      if (c & GTF_readonly) return GNTST.general_error;
      Atomics.or(this.h16, st, GTF_reading | GTF_writing);
    }
    c = Atomics.load(this.w, i);
    if (!pinned) {
      if (bad(c) || (!readonly && c & GTF_readonly)) {
        Atomics.and(this.h16, st, ~(GTF_reading | GTF_writing) & 0xffff);
        return GNTST.general_error;
      }
    } else if (c & GTF_readonly) {
      Atomics.and(this.h16, st, ~GTF_writing & 0xffff);
      return GNTST.general_error;
    }
    return GNTST.okay;
  }

  // --- active entries: pins from any thread --------------------------------

  private act(ref: number): number {
    return this.act0 + ref * ACT_WORDS;
  }

  /** The active entry of `ref` (pin counts, who it is pinned for, which page). */
  active(ref: number): { pin: number; domid: number; hp: number } {
    const a = this.act(ref);
    return { pin: Atomics.load(this.w, a + ACT.pin) >>> 0, domid: Atomics.load(this.w, a + ACT.domid) & 0xffff, hp: Atomics.load(this.w, a + ACT.hp) };
  }

  private markPinned(hp: number): void {
    Atomics.or(this.w, this.pins + (hp >>> 5), 1 << (hp & 31));
  }

  /**
   * Pins grant `ref` for domain `ldom` (Xen's acquire_grant_for_copy, and
   * the pinning half of map_grant_ref with `forMap`): the entry must permit
   * access to `ldom` (and writing unless `readonly`); the frame is looked up
   * on the first pin and the active entry remembers it. Returns the page and
   * the granted part of it, or a GNTST_ code.
   */
  acquire(ref: number, ldom: number, readonly: boolean, forMap: boolean): Pinned | number {
    if (this.gone) return GNTST.bad_domain;
    return this.locked(() => {
      if (!Number.isInteger(ref) || ref < 0 || ref >= this.nrEntries()) return GNTST.bad_gntref;
      const a = this.act(ref);
      const w = this.w;
      const pin = Atomics.load(w, a + ACT.pin);
      const sub = (Atomics.load(w, a + ACT.domid) & ACT_SUB_PAGE) !== 0;
      if (pin && ((Atomics.load(w, a + ACT.domid) & 0xffff) !== ldom || pin & GNTPIN_overflow || (forMap && sub))) return GNTST.general_error;
      if (!pin || (!readonly && !(pin & (GNTPIN_hstw_mask | GNTPIN_devw_mask)))) {
        const v = this.version;
        const e = this.entry(ref);
        // Transitive grants (v2) are not followed: neither for maps, as in Xen, nor for copies.
        if (v === 2 && (e.flags & GTF_type_mask) === GTF_transitive) return GNTST.general_error;
        const mask = GTF_type_mask | (forMap ? GTF_sub_page : 0);
        const rc = v === 1 ? this.setStatusV1(ref, pin !== 0, readonly, mask, ldom) : this.setStatusV2(ref, pin !== 0, readonly, mask, ldom);
        if (rc !== GNTST.okay) return rc;
        if (!pin) {
          const hp = this.m.translate(e.frame);
          if (hp < 0) {
            this.clearFlags(ref, readonly ? GTF_reading : GTF_reading | GTF_writing);
            return GNTST.bad_page;
          }
          const isSub = v === 2 && (e.flags & GTF_sub_page) !== 0;
          const start = isSub ? e.pageOff : 0;
          const length = isSub ? e.length : PAGE_SIZE;
          Atomics.store(w, a + ACT.domid, ldom | (isSub ? ACT_SUB_PAGE : 0));
          Atomics.store(w, a + ACT.hp, hp);
          Atomics.store(w, a + ACT.sub, start | (length << 16));
          this.markPinned(hp);
        }
      }
      Atomics.add(w, a + ACT.pin, readonly ? GNTPIN_hstr_inc : GNTPIN_hstw_inc);
      const s = Atomics.load(w, a + ACT.sub);
      return { hp: Atomics.load(w, a + ACT.hp), start: s & 0xffff, length: s >>> 16 };
    });
  }

  /** Drops a pin taken by acquire (Xen's release_grant_for_copy / unmap_common_complete): the flags go when the last pin does. */
  release(ref: number, readonly: boolean): void {
    if (this.gone) return;
    this.locked(() => {
      const a = this.act(ref);
      const pin = Atomics.sub(this.w, a + ACT.pin, readonly ? GNTPIN_hstr_inc : GNTPIN_hstw_inc) - (readonly ? GNTPIN_hstr_inc : GNTPIN_hstw_inc);
      let clear = 0;
      if (!readonly && !(pin & (GNTPIN_hstw_mask | GNTPIN_devw_mask))) clear |= GTF_writing;
      if (!pin) clear |= GTF_reading;
      if (clear) this.clearFlags(ref, clear);
    });
  }

  /** Any active entry pins host page `hp` (caller holds the lock). The bitmap says "maybe"; the entries decide. */
  private pinsPage(hp: number): boolean {
    const i = this.pins + (hp >>> 5);
    const bit = 1 << (hp & 31);
    if (!(Atomics.load(this.w, i) & bit)) return false;
    const n = this.nrFrames * GRANT_ENTRIES_PER_FRAME_V1;
    for (let r = 0; r < n; r++) {
      const a = this.act(r);
      if (Atomics.load(this.w, a + ACT.pin) && Atomics.load(this.w, a + ACT.hp) === hp) return true;
    }
    Atomics.and(this.w, i, ~bit);
    return false;
  }

  /** Active entries with a pin (for set_version's check and the toolstack's view). */
  pinnedRefs(from = 0): number[] {
    const out: number[] = [];
    const n = this.nrFrames * GRANT_ENTRIES_PER_FRAME_V1;
    for (let r = from; r < n; r++) if (Atomics.load(this.w, this.act(r) + ACT.pin)) out.push(r);
    return out;
  }

  // --- the table's own changes (the granter's home worker) -----------------

  /** Xen's gnttab_grow_table: grows to `n` frames (and the v2 status frames with it); EINVAL beyond the maximum. */
  grow(n: number): void {
    if (n > this.maxFrames || n < 1) throw new XenError(EINVAL, `grant table frame ${n - 1} beyond max ${this.maxFrames}`);
    this.locked(() => {
      if (n > this.nrFrames) Atomics.store(this.w, this.hdr + HDR.nrFrames, n);
      if (this.version === 2) this.populateStatus(grantToStatusFrames(this.nrFrames));
    });
  }

  private populateStatus(req: number): void {
    const have = this.nrStatusFrames;
    for (let i = have; i < req; i++) this.m.bytes.fill(0, this.statusHostPage(i) * PAGE_SIZE, (this.statusHostPage(i) + 1) * PAGE_SIZE);
    if (req > have) Atomics.store(this.w, this.hdr + HDR.nrStatusFrames, req);
  }

  /**
   * Makes status frame `idx` exist (Xen's gnttab_get_status_frame_mfn for
   * add_to_physmap's XENMAPIDX_grant_table_status): grows the table as far
   * as that needs, within its maximum; EINVAL otherwise or outside v2.
   */
  statusFrame(idx: number): number {
    if (this.version !== 2) throw new XenError(EINVAL, 'grant status frames need grant table v2');
    if (idx >= this.nrStatusFrames) {
      const nrGrant = statusToGrantFrames(idx + 1);
      if (nrGrant <= this.maxFrames) this.grow(nrGrant);
      if (idx >= this.nrStatusFrames) throw new XenError(EINVAL, `grant status frame ${idx} beyond the table's ${this.nrStatusFrames}`);
    }
    return this.statusHostPage(idx);
  }

  /**
   * Xen's gnttab_set_version for the table's own domain: refused (EBUSY)
   * while an entry beyond the reserved eight is pinned, and from v2 to v1
   * (ERANGE) when a reserved entry could not be written as v1. The frames
   * are cleared except for the reserved entries, which are carried over;
   * going back to v1 takes the status frames out of the physmap.
   */
  setVersion(version: number, physmap: Physmap): void {
    this.locked(() => {
      const old = this.version;
      if (old === version) return;
      if (this.pinnedRefs(GNTTAB_NR_RESERVED_ENTRIES).some((r) => r < this.nrEntries())) throw new XenError(EBUSY, 'grant entries in use');
      const reserved: { flags: number; domid: number; frame: number }[] = [];
      for (let r = 0; r < GNTTAB_NR_RESERVED_ENTRIES; r++) {
        const e = this.entry(r);
        if (old === 1) reserved.push({ flags: e.flags, domid: e.domid, frame: e.frame });
        else {
          const t = e.flags & GTF_type_mask;
          if ((t === GTF_permit_access && e.frame > 0xffffffff) || t === GTF_transitive) {
            throw new XenError(ERANGE, 'a reserved grant entry cannot be written as v1');
          }
          reserved.push(t === GTF_permit_access ? { flags: e.flags | this.status(r), domid: e.domid, frame: e.frame } : { flags: 0, domid: 0, frame: 0 });
        }
      }
      if (old === 1) this.populateStatus(grantToStatusFrames(this.nrFrames));
      else {
        for (let i = 0; i < this.nrStatusFrames; i++) {
          const gfn = physmap.gfnOfHostPage(this.statusHostPage(i));
          if (gfn >= 0) physmap.unmap(gfn);
        }
        Atomics.store(this.w, this.hdr + HDR.nrStatusFrames, 0);
      }
      const bytes = this.m.bytes;
      bytes.fill(0, this.grantBase * PAGE_SIZE, (this.grantBase + this.nrFrames) * PAGE_SIZE);
      Atomics.store(this.w, this.hdr + HDR.version, version);
      const dv = this.dv;
      reserved.forEach((e, r) => {
        if (version === 1) {
          const o = this.grantBase * PAGE_SIZE + r * 8;
          dv.setUint16(o, e.flags, true);
          dv.setUint16(o + 2, e.domid, true);
          dv.setUint32(o + 4, e.frame >>> 0, true);
        } else {
          const o = this.grantBase * PAGE_SIZE + r * 16;
          Atomics.store(this.h16, ((this.statusBase * PAGE_SIZE) >>> 1) + r, e.flags & (GTF_reading | GTF_writing));
          dv.setUint16(o, e.flags & ~(GTF_reading | GTF_writing), true);
          dv.setUint16(o + 2, e.domid, true);
          dv.setBigUint64(o + 8, BigInt(e.frame), true);
        }
      });
    });
  }

  /** Xen's swap_grant_ref (within the domain's own table). */
  swap(a: number, b: number): number {
    return this.locked(() => {
      const n = this.nrEntries();
      if (!Number.isInteger(a) || a < 0 || a >= n || !Number.isInteger(b) || b < 0 || b >= n) return GNTST.bad_gntref;
      if (a === b) return GNTST.okay;
      if (Atomics.load(this.w, this.act(a) + ACT.pin) || Atomics.load(this.w, this.act(b) + ACT.pin)) return GNTST.eagain;
      const size = this.version === 1 ? 8 : 16;
      const oa = this.grantBase * PAGE_SIZE + a * size;
      const ob = this.grantBase * PAGE_SIZE + b * size;
      const bytes = this.m.bytes;
      const t = bytes.slice(oa, oa + size);
      bytes.copyWithin(oa, ob, ob + size);
      bytes.set(t, ob);
      if (this.version === 2) {
        const s = (this.statusBase * PAGE_SIZE) >>> 1;
        const sa = this.h16[s + a]!;
        this.h16[s + a] = this.h16[s + b]!;
        this.h16[s + b] = sa;
      }
      return GNTST.okay;
    });
  }

  /**
   * Frees the frames the granter gave back (physmap.quarantine) that no
   * grant pins any more: the map is published first, so no other thread can
   * find them through it; a pinned one waits for a later call. `discard`
   * hands a page's memory back to the host.
   */
  settleFreedPages(physmap: Physmap, discard: (hp: number) => void): void {
    if (!physmap.quarantine.length) return;
    physmap.publish();
    const free = this.locked(() => {
      const keep: number[] = [];
      const out: number[] = [];
      for (const hp of physmap.quarantine) (this.pinsPage(hp) ? keep : out).push(hp);
      physmap.quarantine.length = 0;
      physmap.quarantine.push(...keep);
      return out;
    });
    for (const hp of free) {
      discard(hp);
      if (physmap.kindOfHostPage(hp) === 'pool') physmap.freePoolPage(hp);
      else physmap.freeRamPage(hp);
    }
  }

  // --- mappings of this domain's grants into other address spaces ----------

  /**
   * A mapping of the memfd of this thread's own, shared by every mapping of
   * this domain's grants here. It stays while this view lives (a backend maps
   * and unmaps the same guest's grants over and over: one mmap, not one per
   * map), and goes with the last mapping once the domain is gone.
   */
  retain(): { address: bigint; bytes: Uint8Array; close(): void } {
    if (this.gone) throw new XenError(ESRCH, `d${this.domid} is gone`);
    this.held ??= this.m.attach();
    this.holds++;
    const held = this.held;
    let closed = false;
    return {
      address: held.address, bytes: held.bytes,
      close: () => {
        if (closed) return;
        closed = true;
        if (--this.holds === 0 && this.gone) this.dropHeld();
      },
    };
  }

  private dropHeld(): void {
    const h = this.held;
    this.held = null;
    h?.close();
  }

  /** Xen's gnttab_release_mappings: the mapper is dying; every grant it maps is unpinned at its granter. */
  releaseMappings(): void {
    for (const [h, m] of [...this.maptrack.mappings()]) {
      m.granter.release(m.ref, (m.flags & GNTMAP_readonly) !== 0);
      m.mem.close();
      this.maptrack.put(h);
    }
  }
}

// --- reaching other domains' tables from this thread --------------------------

/** How a thread finds another domain's grant table (the pCPU worker, the control domain, a test). */
export interface GrantHost {
  lookup(domid: number): GrantTable | null;
}

let grantHost: GrantHost = { lookup: () => null };

export function setGrantHost(h: GrantHost): void {
  grantHost = h;
}

/** The table of domain `dom` as the caller names it (Xen's rcu_lock_domain_by_any_id), or null. */
function tableOf(h: Hcall, dom: number): GrantTable | null {
  if (dom === DOMID_SELF || dom === h.dom.domid) return h.dom.grant;
  return h.dom.host.domainExists(dom) ? grantHost.lookup(dom) : null;
}

/**
 * The table a management op names (setup_table, query_size, get_version):
 * the caller's own, else the GNTST_ status Xen's XSM_TARGET check gives a
 * domU (permission_denied; bad_domain when no such domain).
 */
function target(h: Hcall, dom: number): GrantTable | number {
  if (dom === DOMID_SELF || dom === h.dom.domid) return h.dom.grant;
  return h.dom.host.domainExists(dom) && !h.dom.privileged ? GNTST.permission_denied : GNTST.bad_domain;
}

// --- GNTTABOP_copy --------------------------------------------------------------

interface CopyBuf {
  table: GrantTable;
  bytes: Uint8Array;
  /** the page's byte offset in `bytes` */
  base: number;
  start: number;
  length: number;
  /** the grant held, or -1 for the caller's own frame */
  ref: number;
  readonly: boolean;
}

/** Xen's gnttab_copy_claim_buf: the grant (pinned) or the caller's own frame behind one side of a copy. */
function claim(h: Hcall, table: GrantTable, isGref: boolean, refOrGfn: number, readonly: boolean): CopyBuf | number {
  if (isGref) {
    const p = table.acquire(refOrGfn, h.dom.domid, readonly, false);
    if (typeof p === 'number') return p;
    return { table, bytes: table.m.bytes, base: p.hp * PAGE_SIZE, start: p.start, length: p.length, ref: refOrGfn, readonly };
  }
  // a frame of the caller's own (only DOMID_SELF may be named this way): RAM or a Xen page it has mapped, not a grant mapping
  const hp = Number.isSafeInteger(refOrGfn) ? h.dom.physmap.hostPageOf(refOrGfn) : -1;
  if (hp < 0) return GNTST.bad_page;
  return { table, bytes: h.dom.mem.bytes, base: hp * PAGE_SIZE, start: 0, length: PAGE_SIZE, ref: -1, readonly };
}

function unclaim(b: CopyBuf): void {
  if (b.ref >= 0) b.table.release(b.ref, b.readonly);
}

interface CopyOp {
  source_ref: number; source_gmfn: number | bigint; source_domid: number; source_offset: number;
  dest_ref: number; dest_gmfn: number | bigint; dest_domid: number; dest_offset: number;
  len: number; flags: number;
}

/** Xen's gnttab_copy_one, with the claims made per operation. */
function copyOne(h: Hcall, op: CopyOp): number {
  const srcGref = (op.flags & GNTCOPY_source_gref) !== 0;
  const dstGref = (op.flags & GNTCOPY_dest_gref) !== 0;
  // gnttab_copy_lock_domain: only DOMID_SELF may reference a frame directly
  if (op.source_domid !== DOMID_SELF && !srcGref) return GNTST.permission_denied;
  const st = tableOf(h, op.source_domid);
  if (!st) return GNTST.bad_domain;
  if (op.dest_domid !== DOMID_SELF && !dstGref) return GNTST.permission_denied;
  const dt = tableOf(h, op.dest_domid);
  if (!dt) return GNTST.bad_domain;
  const src = claim(h, st, srcGref, srcGref ? op.source_ref : Number(op.source_gmfn), true);
  if (typeof src === 'number') return src;
  const dst = claim(h, dt, dstGref, dstGref ? op.dest_ref : Number(op.dest_gmfn), false);
  if (typeof dst === 'number') {
    unclaim(src);
    return dst;
  }
  try {
    // gnttab_copy_buf
    if (op.source_offset + op.len > PAGE_SIZE || op.dest_offset + op.len > PAGE_SIZE) return GNTST.bad_copy_arg;
    if (op.source_offset < src.start || op.source_offset + op.len > src.start + src.length) return GNTST.general_error;
    if (op.dest_offset < dst.start || op.dest_offset + op.len > dst.start + dst.length) return GNTST.general_error;
    const from = src.base + op.source_offset;
    dst.bytes.set(src.bytes.subarray(from, from + op.len), dst.base + op.dest_offset);
    return GNTST.okay;
  } finally {
    unclaim(dst);
    unclaim(src);
  }
}

/**
 * GNTTABOP_copy: each operation gets its own status and the batch goes on
 * after a failed one; a fault on the array ends the call with -EFAULT.
 * Every COPY_PREEMPT_EVERY operations the call continues itself with the
 * rest (Xen's continuation: uop advanced, count reduced).
 */
function gnttabCopy(h: Hcall, cmd: number, uop: bigint, count: number): number {
  const C = forAbi(GnttabCopy, h.x32);
  for (let i = 0; i < count; i++) {
    if (i && i % COPY_PREEMPT_EVERY === 0) return continueWith(h, cmd, uop + BigInt(i * C.size), count - i);
    const at = uop + BigInt(i * C.size);
    const op = C.decode(h.g.read(at, C.size)) as unknown as CopyOp;
    h.g.writeFields(C, at, { status: copyOne(h, op) });
  }
  return 0;
}

function continueWith(h: Hcall, cmd: number, uop: bigint, count: number): number {
  return h.preempt({ 0: BigInt(cmd), 1: uop, 2: BigInt(count) });
}

// --- GNTTABOP_map_grant_ref / unmap_grant_ref ---------------------------------

/** Xen's map_grant_ref for an HVM/PVH mapper: the granted frame appears at GFN host_addr >> 12 of the caller's physmap. */
function mapOne(h: Hcall, op: { host_addr: bigint; flags: number; ref: number; dom: number }): { status: number; handle?: number } {
  if (!(op.flags & (GNTMAP_device_map | GNTMAP_host_map))) return { status: GNTST.bad_gntref };
  // paging_mode_external: no device, application or PTE mappings
  if (op.flags & (GNTMAP_device_map | GNTMAP_application_map | GNTMAP_contains_pte)) return { status: GNTST.general_error };
  // rcu_lock_domain_by_id: a real id (the caller's own included), not DOMID_SELF
  const rt = op.dom === h.dom.domid ? h.dom.grant : h.dom.host.domainExists(op.dom) ? grantHost.lookup(op.dom) : null;
  if (!rt) return { status: GNTST.bad_domain };
  const lt = h.dom.grant;
  const handle = lt.maptrack.alloc();
  if (handle < 0) return { status: GNTST.no_device_space };
  const readonly = (op.flags & GNTMAP_readonly) !== 0;
  const p = rt.acquire(op.ref, h.dom.domid, readonly, true);
  if (typeof p === 'number') {
    lt.maptrack.put(handle);
    return { status: p };
  }
  const gfn = Number(op.host_addr >> 12n);
  let mem: ReturnType<GrantTable['retain']> | null = null;
  try {
    if (!Number.isSafeInteger(gfn) || gfn >= 2 ** 27) throw new XenError(EINVAL, 'host_addr beyond the physmap');
    mem = rt.retain();
    const displaced = h.dom.physmap.mapForeign(gfn, { domid: rt.domid, hostPage: p.hp, address: mem.address + BigInt(p.hp * PAGE_SIZE), readonly });
    if (displaced >= 0) releaseDisplaced(h, displaced);
  } catch (e) {
    if (!(e instanceof XenError)) throw e;
    mem?.close();
    rt.release(op.ref, readonly);
    lt.maptrack.put(handle);
    return { status: GNTST.general_error };
  }
  lt.maptrack.set(handle, { ref: op.ref, flags: op.flags & (GNTMAP_host_map | GNTMAP_readonly), domid: rt.domid, granter: rt, hp: p.hp, gfn, mem });
  return { status: GNTST.okay, handle };
}

/** A RAM page a grant mapping displaced goes back as a page the guest gave back would. */
function releaseDisplaced(h: Hcall, hp: number): void {
  const d = h.dom;
  const kind = d.physmap.kindOfHostPage(hp);
  if (kind === 'ram' || kind === 'pool') {
    d.physmap.quarantine.push(hp);
    d.totPages--;
  }
}

/** Xen's unmap_common + unmap_common_complete for a host mapping. */
function unmapOne(h: Hcall, op: { host_addr: bigint; dev_bus_addr: bigint; handle: number }): number {
  const lt = h.dom.grant;
  const m = lt.maptrack.get(op.handle);
  if (!m) return GNTST.bad_handle;
  // no device mappings exist for an HVM mapper: a bus address cannot match one
  if (op.dev_bus_addr) return GNTST.general_error;
  // without a host address nothing is unmapped (Xen leaves the mapping and says okay)
  if (!op.host_addr) return GNTST.okay;
  // Xen's replace_grant_p2m_mapping: the GFN must hold this very grant
  const gfn = Number(op.host_addr >> 12n);
  const f = Number.isSafeInteger(gfn) ? h.dom.physmap.foreignAt(gfn) : null;
  if (!f || f.domid !== m.domid || f.hostPage !== m.hp) return GNTST.general_error;
  h.dom.physmap.unmapForeign(gfn);
  m.granter.release(m.ref, (m.flags & GNTMAP_readonly) !== 0);
  m.mem.close();
  lt.maptrack.put(op.handle);
  return GNTST.okay;
}

// --- the hypercall --------------------------------------------------------------

/** GNTTABOP_setup_table (Xen's gnttab_setup_table). */
function setupTable(h: Hcall, uop: bigint, count: number): number {
  if (count !== 1) throw new XenError(EINVAL);
  const g = h.g;
  const S = forAbi(GnttabSetupTable, h.x32);
  const a = S.decode(g.read(uop, S.size)) as { dom: number; nr_frames: number; frame_list: bigint | number };
  const t = target(h, a.dom);
  if (typeof t === 'number') { g.writeFields(S, uop, { status: t }); return 0; }
  if (a.nr_frames > t.maxFrames) { g.writeFields(S, uop, { status: GNTST.general_error }); return 0; }
  if (a.nr_frames > t.nrFrames || (t.version === 2 && grantToStatusFrames(a.nr_frames) > t.nrStatusFrames)) t.grow(a.nr_frames);
  let status: number = GNTST.okay;
  const ul = h.x32 ? 4 : 8;
  for (let i = 0; i < a.nr_frames; i++) {
    const gfn = h.dom.physmap.gfnOfHostPage(t.hostPage(i));
    const v = gfn < 0 ? (h.x32 ? 0xffffffffn : 0xffffffffffffffffn) : BigInt(gfn);
    const at = BigInt(a.frame_list) + BigInt(i * ul);
    try {
      if (ul === 4) g.writeU32(at, Number(v & 0xffffffffn));
      else g.writeU64(at, v);
    } catch (e) {
      if (!(e instanceof GuestFault)) throw e;
      status = GNTST.bad_virt_addr;
    }
  }
  g.writeFields(S, uop, { status });
  return 0;
}

/**
 * GNTTABOP_get_status_frames (Xen's gnttab_get_status_frames): the GFNs the
 * v2 status frames are mapped at. Xen does not offer it to HVM/PVH guests
 * (they map the frames with XENMAPIDX_grant_table_status); here for the
 * toolstack's view of a domain.
 */
export function statusFrameGfns(t: GrantTable, physmap: Physmap, nr: number): bigint[] | number {
  if (nr > t.nrStatusFrames) return GNTST.general_error;
  return Array.from({ length: nr }, (_, i) => {
    const gfn = physmap.gfnOfHostPage(t.statusHostPage(i));
    return gfn < 0 ? 0xffffffffffffffffn : BigInt(gfn);
  });
}

/** Sub-ops Xen's hvm_grant_table_op lets HVM/PVH guests make; the rest are -ENOSYS ("need auditing"). */
const HVM_ALLOWED = new Set<number>([
  GNTTABOP.query_size, GNTTABOP.setup_table, GNTTABOP.set_version, GNTTABOP.get_version, GNTTABOP.copy,
  GNTTABOP.map_grant_ref, GNTTABOP.unmap_grant_ref, GNTTABOP.swap_grant_ref,
]);

function grantTableOp(h: Hcall): number {
  const raw = h.uint(0);
  const cmd = raw & GNTTABOP_CMD_MASK;
  const uop = h.ptr(1);
  const count = h.int(2);
  const g = h.g;
  if (!HVM_ALLOWED.has(cmd)) throw new XenError(ENOSYS);
  if (count < 0) throw new XenError(EINVAL);
  if (raw !== cmd) throw new XenError(EINVAL, 'continuation bits on a sub-op that has none');
  switch (cmd) {
    case GNTTABOP.setup_table:
      return setupTable(h, uop, count);
    case GNTTABOP.query_size: {
      if (count !== 1) throw new XenError(EINVAL);
      const a = g.readStruct(GnttabQuerySize, uop);
      const t = target(h, a.dom);
      if (typeof t === 'number') { g.writeFields(GnttabQuerySize, uop, { status: t }); return 0; }
      g.writeFields(GnttabQuerySize, uop, { nr_frames: t.nrFrames, max_nr_frames: t.maxFrames, status: GNTST.okay });
      return 0;
    }
    case GNTTABOP.set_version: {
      const a = g.readStruct(GnttabSetVersion, uop);
      let err: XenError | null = null;
      if (a.version !== 1 && a.version !== 2) err = new XenError(EINVAL, `grant table version ${a.version}`);
      else {
        try {
          h.dom.grant.setVersion(a.version, h.dom.physmap);
        } catch (e) {
          if (!(e instanceof XenError)) throw e;
          err = e;
        }
      }
      // the version in force is reported either way
      g.writeFields(GnttabSetVersion, uop, { version: h.dom.grant.version });
      if (err) throw err;
      return 0;
    }
    case GNTTABOP.get_version: {
      const a = g.readStruct(GnttabGetVersion, uop);
      const t = target(h, a.dom);
      if (typeof t === 'number') throw new XenError(t === GNTST.bad_domain ? ESRCH : EPERM);
      g.writeFields(GnttabGetVersion, uop, { version: t.version });
      return 0;
    }
    case GNTTABOP.copy:
      return gnttabCopy(h, cmd, uop, count);
    case GNTTABOP.map_grant_ref: {
      for (let i = 0; i < count; i++) {
        if (i && i % OP_PREEMPT_EVERY === 0) return continueWith(h, cmd, uop + BigInt(i * GnttabMapGrantRef.size), count - i);
        const at = uop + BigInt(i * GnttabMapGrantRef.size);
        const op = g.readStruct(GnttabMapGrantRef, at);
        const r = mapOne(h, op);
        g.writeFields(GnttabMapGrantRef, at, r.handle === undefined ? { status: r.status } : { status: r.status, handle: r.handle, dev_bus_addr: 0n });
      }
      return 0;
    }
    case GNTTABOP.unmap_grant_ref: {
      for (let i = 0; i < count; i++) {
        if (i && i % OP_PREEMPT_EVERY === 0) return continueWith(h, cmd, uop + BigInt(i * GnttabUnmapGrantRef.size), count - i);
        const at = uop + BigInt(i * GnttabUnmapGrantRef.size);
        g.writeFields(GnttabUnmapGrantRef, at, { status: unmapOne(h, g.readStruct(GnttabUnmapGrantRef, at)) });
      }
      return 0;
    }
    case GNTTABOP.swap_grant_ref: {
      for (let i = 0; i < count; i++) {
        if (i && i % OP_PREEMPT_EVERY === 0) return continueWith(h, cmd, uop + BigInt(i * GnttabSwapGrantRef.size), count - i);
        const at = uop + BigInt(i * GnttabSwapGrantRef.size);
        const op = g.readStruct(GnttabSwapGrantRef, at);
        g.writeFields(GnttabSwapGrantRef, at, { status: h.dom.grant.swap(op.ref_a, op.ref_b) });
      }
      return 0;
    }
    default:
      throw new XenError(ENOSYS);
  }
}

/** The hypercall, with frames the guest gave back settled once it is done (a grant mapping may displace RAM). */
function grantTableOpEntry(h: Hcall): number {
  try {
    return grantTableOp(h);
  } finally {
    h.dom.grant.settleFreedPages(h.dom.physmap, (hp) => h.dom.mem.discard(hp * PAGE_SIZE, PAGE_SIZE));
  }
}

registerHypercall(HYPERCALL.grant_table_op, grantTableOpEntry);


// --- the control domain's grant device ------------------------------------------

/** One side of a Gntdev copy: a grant of another domain, or a buffer of the caller's own. */
export type GntdevCopySide = { domid: number; ref: number; offset: number } | { buf: Uint8Array; offset: number };

/** A grant the control domain has mapped: the page (a view of the granter's memory) and its handle. */
export interface GntdevMapping {
  handle: number;
  domid: number;
  ref: number;
  readonly: boolean;
  /** the granted page; it stays valid until unmapped, even after the granter dies */
  page: Uint8Array;
  /** the page's index in the granter's memory file (what a process mapping that file needs) */
  hostPage: number;
}

/**
 * What Linux's gntdev gives a dom0: grants of other domains mapped into this
 * process (the control domain's backends), and GNTTABOP_copy between a grant
 * and a buffer of its own, with the same checks, pins and GNTST_ codes as
 * a guest's map and copy. The caller is domain `domid` (0: the control
 * domain); `lookup` finds a domain's table from this thread. A read-only
 * mapping holds only GTF_reading: the view itself is not write-protected
 * (in-process backends are trusted code).
 */
export class Gntdev {
  readonly maptrack: Maptrack;

  constructor(private readonly lookup: (domid: number) => GrantTable | null, readonly domid = 0, maxMaptrackFrames = DEFAULT_MAX_MAPTRACK_FRAMES) {
    this.maptrack = new Maptrack(maxMaptrackFrames);
  }

  /** Maps grant `ref` of domain `domid`: the mapping, or a GNTST_ code. */
  map(domid: number, ref: number, readonly = false): GntdevMapping | number {
    const t = this.lookup(domid);
    if (!t) return GNTST.bad_domain;
    const handle = this.maptrack.alloc();
    if (handle < 0) return GNTST.no_device_space;
    const p = t.acquire(ref, this.domid, readonly, true);
    if (typeof p === 'number') {
      this.maptrack.put(handle);
      return p;
    }
    const mem = t.retain();
    this.maptrack.set(handle, { ref, flags: GNTMAP_host_map | (readonly ? GNTMAP_readonly : 0), domid, granter: t, hp: p.hp, gfn: -1, mem });
    return { handle, domid, ref, readonly, page: mem.bytes.subarray(p.hp * PAGE_SIZE, (p.hp + 1) * PAGE_SIZE), hostPage: p.hp };
  }

  /** Unmaps a handle map() gave: GNTST_okay, or bad_handle for one not in use. */
  unmap(handle: number): number {
    const m = this.maptrack.get(handle);
    if (!m) return GNTST.bad_handle;
    m.granter.release(m.ref, (m.flags & GNTMAP_readonly) !== 0);
    m.mem.close();
    this.maptrack.put(handle);
    return GNTST.okay;
  }

  /** GNTTABOP_copy for the control domain: one GNTST_ code per operation, the batch going on after a failure. */
  copy(ops: { source: GntdevCopySide; dest: GntdevCopySide; len: number }[]): number[] {
    return ops.map((op) => this.copyOne(op.source, op.dest, op.len));
  }

  private claimSide(s: GntdevCopySide, readonly: boolean): (CopyBuf & { done(): void }) | number {
    if ('buf' in s) return { table: null as never, bytes: s.buf, base: 0, start: 0, length: Math.min(PAGE_SIZE, s.buf.length), ref: -1, readonly, done: () => {} };
    const t = this.lookup(s.domid);
    if (!t) return GNTST.bad_domain;
    const p = t.acquire(s.ref, this.domid, readonly, false);
    if (typeof p === 'number') return p;
    return { table: t, bytes: t.m.bytes, base: p.hp * PAGE_SIZE, start: p.start, length: p.length, ref: s.ref, readonly, done: () => t.release(s.ref, readonly) };
  }

  private copyOne(source: GntdevCopySide, dest: GntdevCopySide, len: number): number {
    const src = this.claimSide(source, true);
    if (typeof src === 'number') return src;
    const dst = this.claimSide(dest, false);
    if (typeof dst === 'number') {
      src.done();
      return dst;
    }
    try {
      if (!Number.isInteger(len) || len < 0 || source.offset + len > PAGE_SIZE || dest.offset + len > PAGE_SIZE) return GNTST.bad_copy_arg;
      if (source.offset < src.start || source.offset + len > src.start + src.length) return GNTST.general_error;
      if (dest.offset < dst.start || dest.offset + len > dst.start + dst.length) return GNTST.general_error;
      dst.bytes.set(src.bytes.subarray(src.base + source.offset, src.base + source.offset + len), dst.base + dest.offset);
      return GNTST.okay;
    } finally {
      dst.done();
      src.done();
    }
  }

  /** Unmaps everything (the control domain going away). */
  close(): void {
    for (const [h] of [...this.maptrack.mappings()]) this.unmap(h);
  }
}
