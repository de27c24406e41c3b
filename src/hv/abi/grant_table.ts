// Grant tables: numbers and layouts of public/grant_table.h (interface
// 0x00040e00 and later), checked against the header by abi/layout.test.ts.

import { struct, abiPair } from './layout.js';
import { PAGE_SIZE } from './xen.js';

export const GNTTABOP = {
  map_grant_ref: 0, unmap_grant_ref: 1, setup_table: 2, dump_table: 3, transfer: 4, copy: 5, query_size: 6,
  unmap_and_replace: 7, set_version: 8, get_status_frames: 9, get_version: 10, swap_grant_ref: 11, cache_flush: 12,
} as const;

/** Xen's do_grant_table_op: continuation state in the command's bits above these (GNTTABOP_CONTINUATION_ARG_SHIFT). */
export const GNTTABOP_CMD_MASK = (1 << 12) - 1;

/** enum grant_status. */
export const GNTST = {
  okay: 0, general_error: -1, bad_domain: -2, bad_gntref: -3, bad_handle: -4, bad_virt_addr: -5, bad_dev_addr: -6,
  no_device_space: -7, permission_denied: -8, bad_page: -9, bad_copy_arg: -10, address_too_big: -11, eagain: -12, no_space: -13,
} as const;

// GTF_* (grant entry flags).
export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_accept_transfer = 2;
export const GTF_transitive = 3;
export const GTF_type_mask = 3;
export const GTF_readonly = 1 << 2;
export const GTF_reading = 1 << 3;
export const GTF_writing = 1 << 4;
export const GTF_PWT = 1 << 5;
export const GTF_PCD = 1 << 6;
export const GTF_PAT = 1 << 7;
export const GTF_sub_page = 1 << 8;
export const GTF_transfer_committed = 1 << 2;
export const GTF_transfer_completed = 1 << 3;

// GNTMAP_* (map_grant_ref flags).
export const GNTMAP_device_map = 1 << 0;
export const GNTMAP_host_map = 1 << 1;
export const GNTMAP_readonly = 1 << 2;
export const GNTMAP_application_map = 1 << 3;
export const GNTMAP_contains_pte = 1 << 4;

// GNTCOPY_* (gnttab_copy flags).
export const GNTCOPY_source_gref = 1 << 0;
export const GNTCOPY_dest_gref = 1 << 1;

/** Reserved references the toolstack seeds (GNTTAB_RESERVED_*), kept across a version switch. */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;
export const GNTTAB_RESERVED_CONSOLE = 0;
export const GNTTAB_RESERVED_XENSTORE = 1;

/** grant_entry_v1 (8 bytes): flags u16, domid u16, frame u32. */
export const GrantEntryV1 = struct('grant_entry_v1', 8, { flags: [0, 'u16'], domid: [2, 'u16'], frame: [4, 'u32'] });
/**
 * union grant_entry_v2 (16 bytes): the header (flags, domid) and, by type,
 * full_page.frame u64 @8; sub_page {page_off u16 @4, length u16 @6, frame
 * u64 @8}; transitive {trans_domid u16 @4, gref u32 @8}.
 */
export const GrantEntryV2 = struct('grant_entry_v2', 16, {
  flags: [0, 'u16'], domid: [2, 'u16'], frame: [8, 'u64'], page_off: [4, 'u16'], length: [6, 'u16'], trans_domid: [4, 'u16'], trans_gref: [8, 'u32'],
});
/** grant_status_t: the v2 status word (GTF_reading / GTF_writing). */
export const GRANT_STATUS_SIZE = 2;

export const GRANT_ENTRIES_PER_FRAME_V1 = PAGE_SIZE / GrantEntryV1.size;
export const GRANT_ENTRIES_PER_FRAME_V2 = PAGE_SIZE / GrantEntryV2.size;
export const GRANT_STATUS_PER_FRAME = PAGE_SIZE / GRANT_STATUS_SIZE;

/** Xen's grant_to_status_frames: status frames a v2 table of `frames` grant frames needs. */
export function grantToStatusFrames(frames: number): number {
  return Math.ceil((frames * GRANT_ENTRIES_PER_FRAME_V2) / GRANT_STATUS_PER_FRAME);
}

/** Xen's status_to_grant_frames. */
export function statusToGrantFrames(status: number): number {
  return Math.ceil((status * GRANT_STATUS_PER_FRAME) / GRANT_ENTRIES_PER_FRAME_V2);
}

/** gnttab_map_grant_ref (32 bytes in both ABIs: every member is fixed-width). */
export const GnttabMapGrantRef = struct('gnttab_map_grant_ref', 32, {
  host_addr: [0, 'u64'], flags: [8, 'u32'], ref: [12, 'u32'], dom: [16, 'u16'], status: [18, 'i16'], handle: [20, 'u32'], dev_bus_addr: [24, 'u64'],
});
/** gnttab_unmap_grant_ref (24 bytes). */
export const GnttabUnmapGrantRef = struct('gnttab_unmap_grant_ref', 24, {
  host_addr: [0, 'u64'], dev_bus_addr: [8, 'u64'], handle: [16, 'u32'], status: [20, 'i16'],
});
/** gnttab_unmap_and_replace (24 bytes). */
export const GnttabUnmapAndReplace = struct('gnttab_unmap_and_replace', 24, {
  host_addr: [0, 'u64'], new_addr: [8, 'u64'], handle: [16, 'u32'], status: [20, 'i16'],
});
/** gnttab_setup_table: dom u16 @0, nr_frames u32 @4, status i16 @8, frame_list handle @16 [@12]. */
export const GnttabSetupTable = abiPair(
  struct('gnttab_setup_table', 24, { dom: [0, 'u16'], nr_frames: [4, 'u32'], status: [8, 'i16'], frame_list: [16, 'u64'] }),
  struct('gnttab_setup_table_32', 16, { dom: [0, 'u16'], nr_frames: [4, 'u32'], status: [8, 'i16'], frame_list: [12, 'u32'] }),
);
/** gnttab_dump_table: dom u16, status i16. */
export const GnttabDumpTable = struct('gnttab_dump_table', 4, { dom: [0, 'u16'], status: [2, 'i16'] });
/** gnttab_transfer: mfn xen_pfn_t @0, domid u16 @8 [@4], ref @12 [@8], status @16 [@12]. */
export const GnttabTransfer = abiPair(
  struct('gnttab_transfer', 24, { mfn: [0, 'u64'], domid: [8, 'u16'], ref: [12, 'u32'], status: [16, 'i16'] }),
  struct('gnttab_transfer_32', 16, { mfn: [0, 'u32'], domid: [4, 'u16'], ref: [8, 'u32'], status: [12, 'i16'] }),
);
/**
 * gnttab_copy: source and dest are gnttab_copy_ptr {union {ref, gmfn
 * (xen_pfn_t)} u; domid u16; offset u16}, then len, flags, status (u16/i16).
 */
export const GnttabCopy = abiPair(
  struct('gnttab_copy', 40, {
    source_gmfn: [0, 'u64'], source_ref: [0, 'u32'], source_domid: [8, 'u16'], source_offset: [10, 'u16'],
    dest_gmfn: [16, 'u64'], dest_ref: [16, 'u32'], dest_domid: [24, 'u16'], dest_offset: [26, 'u16'],
    len: [32, 'u16'], flags: [34, 'u16'], status: [36, 'i16'],
  }),
  struct('gnttab_copy_32', 24, {
    source_gmfn: [0, 'u32'], source_ref: [0, 'u32'], source_domid: [4, 'u16'], source_offset: [6, 'u16'],
    dest_gmfn: [8, 'u32'], dest_ref: [8, 'u32'], dest_domid: [12, 'u16'], dest_offset: [14, 'u16'],
    len: [16, 'u16'], flags: [18, 'u16'], status: [20, 'i16'],
  }),
);
/** gnttab_query_size: dom u16, nr_frames u32, max_nr_frames u32, status i16 (16 bytes). */
export const GnttabQuerySize = struct('gnttab_query_size', 16, { dom: [0, 'u16'], nr_frames: [4, 'u32'], max_nr_frames: [8, 'u32'], status: [12, 'i16'] });
export const GnttabSetVersion = struct('gnttab_set_version', 4, { version: [0, 'u32'] });
/** gnttab_get_status_frames: nr_frames u32 @0, dom u16 @4, status i16 @6, frame_list handle (uint64_t *) @8. */
export const GnttabGetStatusFrames = abiPair(
  struct('gnttab_get_status_frames', 16, { nr_frames: [0, 'u32'], dom: [4, 'u16'], status: [6, 'i16'], frame_list: [8, 'u64'] }),
  struct('gnttab_get_status_frames_32', 12, { nr_frames: [0, 'u32'], dom: [4, 'u16'], status: [6, 'i16'], frame_list: [8, 'u32'] }),
);
export const GnttabGetVersion = struct('gnttab_get_version', 8, { dom: [0, 'u16'], version: [4, 'u32'] });
export const GnttabSwapGrantRef = struct('gnttab_swap_grant_ref', 12, { ref_a: [0, 'u32'], ref_b: [4, 'u32'], status: [8, 'i16'] });
