// Grant tables, version 1 (public/grant_table.h). The table's frames are
// Xen-owned pages of the domain's memfd (so a backend on any thread can read
// grant entries wherever the guest mapped them). This issue provides the
// table itself and its management ops; map/copy arrive with the backends.

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL, DOMID_SELF, PAGE_SIZE } from './abi/xen.js';
import { struct, abiPair, forAbi } from './abi/layout.js';
import { EINVAL, ENOSYS, EOPNOTSUPP, XenError } from './errno.js';
import type { Domain } from './domain.js';

export const GNTTABOP = {
  map_grant_ref: 0, unmap_grant_ref: 1, setup_table: 2, dump_table: 3, transfer: 4, copy: 5, query_size: 6,
  unmap_and_replace: 7, set_version: 8, get_status_frames: 9, get_version: 10, swap_grant_ref: 11, cache_flush: 12,
} as const;

export const GNTST = {
  okay: 0, general_error: -1, bad_domain: -2, bad_gntref: -3, bad_handle: -4, bad_virt_addr: -5, bad_dev_addr: -6,
  no_device_space: -7, permission_denied: -8, bad_page: -9, bad_copy_arg: -10, address_too_big: -11, eagain: -12, no_space: -13,
} as const;

export const GTF_permit_access = 1;
export const GTF_readonly = 1 << 2;
/** grant_entry_v1 (8 bytes): flags u16, domid u16, frame u32. */
export const GrantEntryV1 = struct('grant_entry_v1', 8, { flags: [0, 'u16'], domid: [2, 'u16'], frame: [4, 'u32'] });
export const GRANT_ENTRIES_PER_FRAME = PAGE_SIZE / GrantEntryV1.size;
/** Reserved references the toolstack seeds (public/grant_table.h GNTTAB_RESERVED_*). */
export const GNTTAB_RESERVED_CONSOLE = 0;
export const GNTTAB_RESERVED_XENSTORE = 1;

/** gnttab_setup_table: dom u16 @0, nr_frames u32 @4, status i16 @8, frame_list handle @16 [@12]. */
export const GnttabSetupTable = abiPair(
  struct('gnttab_setup_table', 24, { dom: [0, 'u16'], nr_frames: [4, 'u32'], status: [8, 'i16'], frame_list: [16, 'u64'] }),
  struct('gnttab_setup_table_32', 16, { dom: [0, 'u16'], nr_frames: [4, 'u32'], status: [8, 'i16'], frame_list: [12, 'u32'] }),
);
/** gnttab_query_size: dom u16, nr_frames u32, max_nr_frames u32, status i16 (16 bytes). */
export const GnttabQuerySize = struct('gnttab_query_size', 16, { dom: [0, 'u16'], nr_frames: [4, 'u32'], max_nr_frames: [8, 'u32'], status: [12, 'i16'] });
export const GnttabSetVersion = struct('gnttab_set_version', 4, { version: [0, 'u32'] });
export const GnttabGetVersion = struct('gnttab_get_version', 8, { dom: [0, 'u16'], version: [4, 'u32'] });

export class GrantTable {
  /** Frames in use (the table grows up to maxFrames, never shrinks). */
  nrFrames = 1;
  version = 1;

  constructor(readonly dom: Domain, readonly maxFrames: number) {}

  hostPage(frame: number): number {
    return this.dom.physmap.grantBase + frame;
  }

  /** Grows the table to `n` frames; false if beyond the maximum. */
  grow(n: number): void {
    if (n > this.maxFrames || n < 1) throw new XenError(EINVAL, `grant table frame ${n - 1} beyond max ${this.maxFrames}`);
    if (n > this.nrFrames) this.nrFrames = n;
  }

  /** Byte offset of entry `ref` in the domain memory, or -1 if beyond the table. */
  entryOffset(ref: number): number {
    if (ref < 0 || ref >= this.nrFrames * GRANT_ENTRIES_PER_FRAME) return -1;
    const frame = Math.floor(ref / GRANT_ENTRIES_PER_FRAME);
    return this.hostPage(frame) * PAGE_SIZE + (ref % GRANT_ENTRIES_PER_FRAME) * GrantEntryV1.size;
  }
}

/** The table's domain, or the GNTST_ status that refuses it (bad_domain when it does not exist). */
function target(h: Hcall, dom: number): Domain | number {
  if (dom === DOMID_SELF || dom === h.dom.domid) return h.dom;
  return h.dom.host.domainExists(dom) && !h.dom.privileged ? GNTST.permission_denied : GNTST.bad_domain;
}

function grantTableOp(h: Hcall): number {
  const cmd = h.uint(0);
  const uop = h.ptr(1);
  const count = h.uint(2);
  const g = h.g;
  switch (cmd) {
    case GNTTABOP.setup_table: {
      if (count !== 1) throw new XenError(EINVAL);
      const S = forAbi(GnttabSetupTable, h.x32);
      const a = S.decode(g.read(uop, S.size)) as { dom: number; nr_frames: number; frame_list: bigint | number };
      const d = target(h, a.dom);
      if (typeof d === 'number') { g.writeFields(S, uop, { status: d }); return 0; }
      if (a.nr_frames > d.grant.maxFrames) { g.writeFields(S, uop, { status: GNTST.general_error }); return 0; }
      d.grant.grow(Math.max(1, a.nr_frames));
      const ul = h.x32 ? 4 : 8;
      for (let i = 0; i < a.nr_frames; i++) {
        const gfn = d.physmap.gfnOfHostPage(d.grant.hostPage(i));
        const v = gfn < 0 ? (h.x32 ? 0xffffffffn : 0xffffffffffffffffn) : BigInt(gfn);
        if (ul === 4) g.writeU32(BigInt(a.frame_list) + BigInt(i * 4), Number(v & 0xffffffffn));
        else g.writeU64(BigInt(a.frame_list) + BigInt(i * 8), v);
      }
      g.writeFields(S, uop, { status: GNTST.okay });
      return 0;
    }
    case GNTTABOP.query_size: {
      if (count !== 1) throw new XenError(EINVAL);
      const a = g.readStruct(GnttabQuerySize, uop);
      const d = target(h, a.dom);
      if (typeof d === 'number') { g.writeFields(GnttabQuerySize, uop, { status: d }); return 0; }
      g.writeFields(GnttabQuerySize, uop, { nr_frames: d.grant.nrFrames, max_nr_frames: d.grant.maxFrames, status: GNTST.okay });
      return 0;
    }
    case GNTTABOP.set_version: {
      if (count !== 1) throw new XenError(EINVAL);
      const a = g.readStruct(GnttabSetVersion, uop);
      // Only version 1 is offered (as with max_grant_version = 1): 2 is -EOPNOTSUPP, others -EINVAL;
      // the current version is reported either way.
      if (a.version !== 1) {
        g.writeFields(GnttabSetVersion, uop, { version: h.dom.grant.version });
        throw new XenError(a.version === 2 ? EOPNOTSUPP : EINVAL, `grant table version ${a.version}`);
      }
      g.writeFields(GnttabSetVersion, uop, { version: 1 });
      return 0;
    }
    case GNTTABOP.get_version: {
      if (count !== 1) throw new XenError(EINVAL);
      const a = g.readStruct(GnttabGetVersion, uop);
      const d = h.target(a.dom);
      g.writeFields(GnttabGetVersion, uop, { version: d.grant.version });
      return 0;
    }
    default:
      // map/unmap/copy come with the device backends; transfer and the rest are PV-only.
      throw new XenError(ENOSYS);
  }
}

registerHypercall(HYPERCALL.grant_table_op, grantTableOp);
