// memory_op (public/memory.h) for a PVH domain: the memory map, moving
// Xen-owned frames (shared_info, grant-table frames) into the guest's
// physmap, ballooning (populate_physmap / decrease_reservation) and the
// reservation queries. The command's upper bits carry the continuation start
// extent (cmd >> MEMOP_EXTENT_SHIFT), which we honour although we never
// preempt.

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL, PAGE_SIZE, Abi } from './abi/xen.js';
import { struct, abiPair, forAbi } from './abi/layout.js';
import { EINVAL, ENOENT, ENOSYS, XenError } from './errno.js';
import { E820Entry20 } from './abi/start_info.js';
import type { Domain } from './domain.js';
import { GuestFault } from './guest_access.js';

export const XENMEM = {
  increase_reservation: 0, decrease_reservation: 1, maximum_ram_page: 2, current_reservation: 3,
  maximum_reservation: 4, machphys_mfn_list: 5, populate_physmap: 6, add_to_physmap: 7, memory_map: 9,
  machine_memory_map: 10, set_memory_map: 13, maximum_gpfn: 14, remove_from_physmap: 15,
  add_to_physmap_batch: 23, get_vnumainfo: 26, acquire_resource: 28,
} as const;
export const MEMOP_EXTENT_SHIFT = 6;
export const MEMOP_CMD_MASK = (1 << MEMOP_EXTENT_SHIFT) - 1;

export const XENMAPSPACE = { shared_info: 0, grant_table: 1, gmfn: 2, gmfn_range: 3, gmfn_foreign: 4, dev_mmio: 5 } as const;
export const XENMAPIDX_grant_table_status = 0x80000000;

/**
 * GFNs a guest may populate or map frames at: below 2^39 bytes, which every
 * x86-64 host's KVM can back (a larger address would fail KVM's memory-slot
 * ioctl, and that must be the guest's -EINVAL, not a hypervisor error).
 */
export const MAX_GFN = 2 ** (39 - 12);

/** Extents (or gmfn_range frames) handled before a memory_op continues itself. */
export const PREEMPT_EVERY = 512;

/** Largest extent order a domU may use (Xen's CONFIG_DOMU_MAX_ORDER default). */
export const DOMU_MAX_ORDER = 9;
/** E820MAX in Xen: the largest map a guest may set. */
export const E820MAX = 1024;

/** struct xen_memory_reservation. */
export const XenMemoryReservation = abiPair(
  struct('xen_memory_reservation', 32, { extent_start: [0, 'u64'], nr_extents: [8, 'u64'], extent_order: [16, 'u32'], mem_flags: [20, 'u32'], domid: [24, 'u16'] }),
  struct('xen_memory_reservation_32', 20, { extent_start: [0, 'u32'], nr_extents: [4, 'u32'], extent_order: [8, 'u32'], mem_flags: [12, 'u32'], domid: [16, 'u16'] }),
);
/** struct xen_add_to_physmap. */
export const XenAddToPhysmap = abiPair(
  struct('xen_add_to_physmap', 24, { domid: [0, 'u16'], size: [2, 'u16'], space: [4, 'u32'], idx: [8, 'u64'], gpfn: [16, 'u64'] }),
  struct('xen_add_to_physmap_32', 16, { domid: [0, 'u16'], size: [2, 'u16'], space: [4, 'u32'], idx: [8, 'u32'], gpfn: [12, 'u32'] }),
);
/** struct xen_remove_from_physmap. */
export const XenRemoveFromPhysmap = abiPair(
  struct('xen_remove_from_physmap', 16, { domid: [0, 'u16'], gpfn: [8, 'u64'] }),
  struct('xen_remove_from_physmap_32', 8, { domid: [0, 'u16'], gpfn: [4, 'u32'] }),
);
/** struct xen_memory_map {u32 nr_entries; handle buffer}. */
export const XenMemoryMap = abiPair(
  struct('xen_memory_map', 16, { nr_entries: [0, 'u32'], buffer: [8, 'u64'] }),
  struct('xen_memory_map_32', 8, { nr_entries: [0, 'u32'], buffer: [4, 'u32'] }),
);
/** struct xen_foreign_memory_map {domid_t domid; struct xen_memory_map map}. */
export const XenForeignMemoryMap = abiPair(
  struct('xen_foreign_memory_map', 24, { domid: [0, 'u16'], nr_entries: [8, 'u32'], buffer: [16, 'u64'] }),
  struct('xen_foreign_memory_map_32', 12, { domid: [0, 'u16'], nr_entries: [4, 'u32'], buffer: [8, 'u32'] }),
);

const ulong = (abi: Abi) => (abi === 'x32' ? 4 : 8);


function readPfn(h: Hcall, base: bigint, i: number): number {
  const va = base + BigInt(i * ulong(h.abi));
  const v = h.x32 ? BigInt(h.g.readU32(va)) : h.g.readU64(va);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new XenError(EINVAL);
  return Number(v);
}

/**
 * A frame the guest gives back leaves its reservation now; its memory is
 * punched out of the memfd and it becomes free for populate_physmap when
 * the call is done and no grant pins it (GrantTable.settleFreedPages), as
 * Xen frees a page on its last reference.
 */
function releasePage(d: Domain, hp: number): void {
  const kind = d.physmap.kindOfHostPage(hp);
  if (kind === 'ram' || kind === 'pool') {
    d.physmap.quarantine.push(hp);
    d.totPages--;
  }
}

function settle(d: Domain): void {
  d.grant.settleFreedPages(d.physmap, (hp) => d.mem.discard(hp * PAGE_SIZE, PAGE_SIZE));
}

/** Runs a physmap change; false when it was refused (out of KVM slots), which ends a reservation op early. */
function physmapChanged(change: () => void): boolean {
  try {
    change();
    return true;
  } catch (e) {
    if (e instanceof XenError) return false;
    throw e;
  }
}

function reservation(h: Hcall, cmd: number, start: number): number {
  const R = forAbi(XenMemoryReservation, h.x32);
  let raw: Uint8Array;
  // Xen answers an unreadable reservation with the start extent, not -EFAULT.
  try { raw = h.g.read(h.ptr(1), R.size); } catch (e) { if (e instanceof GuestFault) return start; throw e; }
  const r = R.decode(raw) as { extent_start: bigint | number; nr_extents: bigint | number; extent_order: number; mem_flags: number; domid: number };
  const d = h.target(r.domid);
  const nr = Number(r.nr_extents);
  const base = BigInt(r.extent_start);
  if (start >= nr) return start;
  if (r.extent_order > DOMU_MAX_ORDER) return start;
  // A count too large to carry in a continuation is refused as Xen does (nothing done).
  if (nr > 0xffffffff >>> MEMOP_EXTENT_SHIFT) return start;
  const pages = 1 << r.extent_order;
  let i = start;
  for (; i < nr; i++) {
    if (i - start >= PREEMPT_EVERY) return h.preempt({ 0: BigInt(((i << MEMOP_EXTENT_SHIFT) | cmd) >>> 0) });
    // A bad extent list ends the operation with the extents done so far (Xen's `goto out`).
    let gfn = 0;
    if (cmd !== XENMEM.increase_reservation) {
      try { gfn = readPfn(h, base, i); } catch (e) { if (e instanceof GuestFault) break; throw e; }
    }
    if (cmd === XENMEM.populate_physmap) {
      // Every page of the extent must be free to take; stop at the first that is not.
      if (d.totPages + pages > d.maxPages) break;
      if (gfn + pages > MAX_GFN) break;
      let ok = true;
      for (let p = 0; p < pages; p++) {
        if (d.physmap.hostPageOf(gfn + p) >= 0) continue; // already populated: nothing to do
        const hp = d.physmap.allocPoolPage(gfn + p);
        if (hp < 0 || !physmapChanged(() => d.physmap.map(gfn + p, hp))) {
          if (hp >= 0) d.physmap.freePoolPage(hp);
          ok = false;
          break;
        }
        d.totPages++;
      }
      if (!ok) break;
    } else if (cmd === XENMEM.decrease_reservation) {
      let ok = true;
      for (let p = 0; p < pages; p++) {
        const hp = d.physmap.hostPageOf(gfn + p);
        if (hp < 0) { ok = false; break; }
        const kind = d.physmap.kindOfHostPage(hp);
        if ((kind !== 'ram' && kind !== 'pool') || !physmapChanged(() => d.physmap.unmap(gfn + p))) { ok = false; break; }
        releasePage(d, hp);
      }
      if (!ok) break;
    } else {
      // increase_reservation: a translated guest gets nothing it could address
      // (no MFNs exist for it); account the pages and report them done.
      if (d.totPages + pages > d.maxPages) break;
      d.totPages += pages;
    }
  }
  h.g.flush();
  return i;
}

/**
 * XENMAPSPACE_* placement (shared by add_to_physmap and the batch form).
 * Whatever sat at `gpfn` is displaced: guest RAM there is freed, Xen-owned
 * frames are only unhooked (Xen's xenmem_add_to_physmap_one).
 */
export function addToPhysmap(d: Domain, space: number, idx: number, gpfn: number): void {
  switch (space) {
    case XENMAPSPACE.shared_info: {
      if (idx !== 0) throw new XenError(EINVAL);
      const displaced = d.physmap.map(gpfn, d.physmap.sharedInfoPage);
      if (displaced >= 0) releasePage(d, displaced);
      return;
    }
    case XENMAPSPACE.grant_table: {
      // Xen's gnttab_map_frame: a status frame in v2 (growing the table as far as it needs), else a shared frame
      let hp: number;
      if (d.grant.version === 2 && idx & XENMAPIDX_grant_table_status) hp = d.grant.statusFrame(idx & ~XENMAPIDX_grant_table_status);
      else {
        if (idx >= d.grant.nrFrames) d.grant.grow(idx + 1);
        hp = d.grant.hostPage(idx);
      }
      const displaced = d.physmap.map(gpfn, hp);
      if (displaced >= 0) releasePage(d, displaced);
      return;
    }
    case XENMAPSPACE.gmfn: {
      const hp = d.physmap.hostPageOf(idx);
      if (hp < 0) throw new XenError(EINVAL, `gfn 0x${idx.toString(16)} is not populated`);
      const displaced = d.physmap.map(gpfn, hp);
      if (displaced >= 0 && displaced !== hp) releasePage(d, displaced);
      return;
    }
    default:
      throw new XenError(EINVAL, `map space ${space}`);
  }
}

/** memory_op, with the frames a call gave back settled when it is done. */
function memoryOpEntry(h: Hcall): number {
  try {
    return memoryOp(h);
  } finally {
    settle(h.dom);
  }
}

function memoryOp(h: Hcall): number {
  const raw = h.uint(0);
  const cmd = raw & MEMOP_CMD_MASK;
  const start = raw >>> MEMOP_EXTENT_SHIFT;
  const arg = h.ptr(1);
  const g = h.g;
  switch (cmd) {
    case XENMEM.increase_reservation:
    case XENMEM.decrease_reservation:
    case XENMEM.populate_physmap:
      return reservation(h, cmd, start);
    case XENMEM.current_reservation:
    case XENMEM.maximum_reservation: {
      const domid = g.read(arg, 2);
      const d = h.target(domid[0]! | (domid[1]! << 8));
      return cmd === XENMEM.current_reservation ? d.totPages : d.maxPages;
    }
    case XENMEM.maximum_gpfn: {
      const domid = g.read(arg, 2);
      const d = h.target(domid[0]! | (domid[1]! << 8));
      const segs = d.physmap.segments();
      const last = segs[segs.length - 1];
      return last ? last.gfn + last.count - 1 : 0;
    }
    case XENMEM.memory_map: {
      const M = forAbi(XenMemoryMap, h.x32);
      const m = M.decode(g.read(arg, M.size)) as { nr_entries: number; buffer: bigint | number };
      const map = h.dom.memoryMap ?? h.dom.builderMemoryMap;
      const n = Math.min(m.nr_entries, map.length / E820Entry20.size);
      g.write(BigInt(m.buffer), map.subarray(0, n * E820Entry20.size));
      g.writeFields(M, arg, { nr_entries: n });
      return 0;
    }
    case XENMEM.set_memory_map: {
      const F = forAbi(XenForeignMemoryMap, h.x32);
      const f = F.decode(g.read(arg, F.size)) as { domid: number; nr_entries: number; buffer: bigint | number };
      const d = h.target(f.domid);
      if (f.nr_entries > E820MAX) throw new XenError(EINVAL);
      // Kept as the guest gave it (as Xen does): XENMEM_memory_map hands the same bytes back.
      d.memoryMap = g.read(BigInt(f.buffer), f.nr_entries * E820Entry20.size);
      return 0;
    }
    case XENMEM.add_to_physmap: {
      const A = forAbi(XenAddToPhysmap, h.x32);
      const a = A.decode(g.read(arg, A.size)) as { domid: number; size: number; space: number; idx: bigint | number; gpfn: bigint | number };
      const d = h.target(a.domid);
      const idx = Number(a.idx);
      const gpfn = Number(a.gpfn);
      if (!Number.isSafeInteger(gpfn) || gpfn + Math.max(1, a.size) > MAX_GFN) throw new XenError(EINVAL);
      if (a.space === XENMAPSPACE.gmfn_range) {
        // Moves `size` frames, a batch at a time; idx/gpfn/size in the guest's
        // structure carry the progress, and the call continues itself until size is 0.
        const n = Math.min(a.size, PREEMPT_EVERY);
        for (let i = 0; i < n; i++) addToPhysmap(d, XENMAPSPACE.gmfn, idx + i, gpfn + i);
        g.writeFields(A, arg, { idx: idx + n, gpfn: gpfn + n, size: a.size - n });
        if (a.size > n) { g.flush(); return h.preempt(); }
      } else if (a.space === XENMAPSPACE.gmfn_foreign) {
        throw new XenError(EINVAL, 'gmfn_foreign is only valid in add_to_physmap_batch');
      } else {
        addToPhysmap(d, a.space, idx, gpfn);
      }
      g.flush();
      return 0;
    }
    case XENMEM.remove_from_physmap: {
      const R = forAbi(XenRemoveFromPhysmap, h.x32);
      const r = R.decode(g.read(arg, R.size)) as { domid: number; gpfn: bigint | number };
      const d = h.target(r.domid);
      const gpfn = Number(r.gpfn);
      const hp = d.physmap.hostPageOf(gpfn);
      if (hp < 0) throw new XenError(ENOENT);
      d.physmap.unmap(gpfn);
      releasePage(d, hp);
      g.flush();
      return 0;
    }
    default:
      throw new XenError(ENOSYS);
  }
}

registerHypercall(HYPERCALL.memory_op, memoryOpEntry);
