// The PVH boot information block handed to a guest in EBX at its
// XEN_ELFNOTE_PHYS32_ENTRY, and the memory-map entry formats around it.
//
// Layouts and numbers from Xen's public headers:
//   public/arch-x86/hvm/start_info.h  hvm_start_info (v1), hvm_modlist_entry,
//                                     hvm_memmap_table_entry, XEN_HVM_MEMMAP_TYPE_*
//   public/xen.h                      SIF_* flags
//   public/memory.h (XENMEM_memory_map) entries "in the same format as returned
//                                     by the BIOS INT 0x15 EAX=0xE820 call": the
//                                     20-byte packed e820entry.
// The layout is the same for 32-bit and 64-bit guests (all fields fixed width).

import { struct } from './layout.js';

/** XEN_HVM_START_MAGIC_VALUE ("xEn3" with bit 7 of the 'E' set). */
export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;

/** hvm_start_info.version we write: 1 adds memmap_paddr/memmap_entries. */
export const HVM_START_INFO_VERSION = 1;

/** public/xen.h SIF_* flags (the ones meaningful in hvm_start_info.flags). */
export const SIF_PRIVILEGED = 1 << 0;
export const SIF_INITDOMAIN = 1 << 1;

/** hvm_start_info, 56 bytes in version 1 (48 in version 0). */
export const HvmStartInfo = struct('hvm_start_info', 56, {
  magic: [0, 'u32'],
  version: [4, 'u32'],
  flags: [8, 'u32'],
  nr_modules: [12, 'u32'],
  modlist_paddr: [16, 'u64'],
  cmdline_paddr: [24, 'u64'],
  rsdp_paddr: [32, 'u64'],
  memmap_paddr: [40, 'u64'],
  memmap_entries: [48, 'u32'],
  reserved: [52, 'u32'],
});

/** hvm_modlist_entry, 32 bytes. */
export const HvmModlistEntry = struct('hvm_modlist_entry', 32, {
  paddr: [0, 'u64'],
  size: [8, 'u64'],
  cmdline_paddr: [16, 'u64'],
  reserved: [24, 'u64'],
});

/** hvm_memmap_table_entry, 24 bytes. */
export const HvmMemmapTableEntry = struct('hvm_memmap_table_entry', 24, {
  addr: [0, 'u64'],
  size: [8, 'u64'],
  type: [16, 'u32'],
  reserved: [20, 'u32'],
});

/** The BIOS e820 entry XENMEM_memory_map returns: packed, 20 bytes. */
export const E820Entry20 = struct('e820entry', 20, {
  addr: [0, 'u64'],
  size: [8, 'u64'],
  type: [16, 'u32'],
});

/** XEN_HVM_MEMMAP_TYPE_* (the ACPI address range types, also the e820 types). */
export const XEN_HVM_MEMMAP_TYPE_RAM = 1;
export const XEN_HVM_MEMMAP_TYPE_RESERVED = 2;
export const XEN_HVM_MEMMAP_TYPE_ACPI = 3;
export const XEN_HVM_MEMMAP_TYPE_NVS = 4;
export const XEN_HVM_MEMMAP_TYPE_UNUSABLE = 5;
export const XEN_HVM_MEMMAP_TYPE_DISABLED = 6;
export const XEN_HVM_MEMMAP_TYPE_PMEM = 7;
