// The guest-physical memory map of a PVH domU, as libxl builds it
// (libxl__arch_domain_construct_memmap) and as the guest sees it twice: in
// hvm_start_info's memmap table and from XENMEM_memory_map.
//
// Layout for `mem` bytes of guest RAM:
//   RAM       [0, min(mem, MMIO_HOLE_START))
//   RESERVED  [SPECIAL_PAGES_START, SPECIAL_PAGES_END)   the "special pages"
//   RAM       [4 GiB, 4 GiB + the rest)                   only if mem > MMIO_HOLE_START
//   ACPI      [ACPI_TABLES_START, +size)                 only with ACPI tables
// With ACPI on (libxl's default for PVH) the builder puts the tables and the
// RSDP in pages at 0xFC000000, in the MMIO hole, and libxl lists them as
// E820_ACPI (libxl__arch_domain_construct_memmap's acpi_modules entries). The
// hole [MMIO_HOLE_START, 4 GiB) is otherwise unlisted; guests (GRUB, Mini-OS)
// pick GPAs there for grant frames and shared_info.

import { PAGE_SHIFT, PAGE_SIZE } from '../abi/xen.js';
import {
  E820Entry20, HvmMemmapTableEntry, XEN_HVM_MEMMAP_TYPE_ACPI, XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_MEMMAP_TYPE_RESERVED,
} from '../abi/start_info.js';

export { PAGE_SHIFT, PAGE_SIZE };
export const FOUR_GIB = 0x1_0000_0000;

/**
 * Start of the MMIO hole below 4 GiB for a PVH domU: libxl takes the lowest of
 * the special pages (0xFEFF8000), the LAPIC (0xFEE00000) and the ACPI info page
 * (0xFC000000), i.e. 0xFC000000.
 */
export const MMIO_HOLE_START = 0xfc00_0000;

/** Where libxl loads a PVH domain's ACPI tables (ACPI_INFO_PHYSICAL_ADDRESS, libacpi.h). */
export const ACPI_TABLES_START = 0xfc00_0000;

/** Local APIC MMIO base (the architectural default of IA32_APIC_BASE). */
export const LAPIC_BASE = 0xfee0_0000;

/**
 * The special pages: NR_SPECIAL_PAGES frames ending just below pfn 0xFF000.
 * special_pfn(x) = 0xFF000 - NR_SPECIAL_PAGES + x, with the SPECIALPAGE_*
 * indices of libxenguest (xg_dom_x86.c; not in a public header).
 */
export const NR_SPECIAL_PAGES = 8;
export const SPECIAL_PAGES_END_PFN = 0xff000;
export const SPECIAL_PAGES_START_PFN = SPECIAL_PAGES_END_PFN - NR_SPECIAL_PAGES; // 0xFEFF8
export const SPECIAL_PAGES_START = SPECIAL_PAGES_START_PFN * PAGE_SIZE; // 0xFEFF8000
export const SPECIAL_PAGES_END = SPECIAL_PAGES_END_PFN * PAGE_SIZE; // 0xFF000000

export const SPECIALPAGE = {
  PAGING: 0,
  ACCESS: 1,
  SHARING: 2,
  BUFIOREQ: 3,
  XENSTORE: 4,
  IOREQ: 5,
  IDENT_PT: 6,
  CONSOLE: 7,
} as const;

export function specialPfn(index: number): number {
  return SPECIAL_PAGES_START_PFN + index;
}

/** HVM_PARAM_STORE_PFN of a PVH domU: 0xFEFFC. */
export const XENSTORE_RING_PFN = specialPfn(SPECIALPAGE.XENSTORE);
/** HVM_PARAM_CONSOLE_PFN of a PVH domU: 0xFEFFF. */
export const CONSOLE_RING_PFN = specialPfn(SPECIALPAGE.CONSOLE);

/** One memory-map range. `addr`/`size` are byte values (< 2^53). */
export interface E820Entry {
  addr: number;
  size: number;
  /** XEN_HVM_MEMMAP_TYPE_* / E820 type. */
  type: number;
}

/**
 * The memory map libxl gives a PVH domU with `memBytes` of RAM. `memBytes` must
 * be a positive whole number of pages.
 */
export function buildPvhE820(memBytes: number, o: { acpiBytes?: number } = {}): E820Entry[] {
  if (!Number.isSafeInteger(memBytes) || memBytes <= 0 || memBytes % PAGE_SIZE !== 0) {
    throw new RangeError(`guest memory must be a positive multiple of ${PAGE_SIZE} bytes, got ${memBytes}`);
  }
  const acpi = o.acpiBytes ?? 0;
  if (!Number.isSafeInteger(acpi) || acpi < 0 || acpi % PAGE_SIZE !== 0 || ACPI_TABLES_START + acpi > LAPIC_BASE) {
    throw new RangeError(`ACPI area must be whole pages below the local APIC, got ${acpi} bytes`);
  }
  const low = Math.min(memBytes, MMIO_HOLE_START);
  const map: E820Entry[] = [{ addr: 0, size: low, type: XEN_HVM_MEMMAP_TYPE_RAM }];
  if (acpi) map.push({ addr: ACPI_TABLES_START, size: acpi, type: XEN_HVM_MEMMAP_TYPE_ACPI });
  map.push({ addr: SPECIAL_PAGES_START, size: SPECIAL_PAGES_END - SPECIAL_PAGES_START, type: XEN_HVM_MEMMAP_TYPE_RESERVED });
  if (memBytes > low) map.push({ addr: FOUR_GIB, size: memBytes - low, type: XEN_HVM_MEMMAP_TYPE_RAM });
  return map;
}

/** Encodes entries as XENMEM_memory_map returns them (packed 20-byte e820entry). */
export function encodeE820Xenmem(map: readonly E820Entry[]): Uint8Array {
  const out = new Uint8Array(map.length * E820Entry20.size);
  const dv = new DataView(out.buffer);
  map.forEach((e, i) => E820Entry20.write(dv, i * E820Entry20.size, { addr: BigInt(e.addr), size: BigInt(e.size), type: e.type }));
  return out;
}

/** Decodes packed 20-byte e820 entries (e.g. a XENMEM_set_memory_map buffer). */
export function decodeE820Xenmem(bytes: Uint8Array, count: number): E820Entry[] {
  if (count * E820Entry20.size > bytes.length) throw new RangeError(`${count} e820 entries need ${count * E820Entry20.size} bytes, have ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: E820Entry[] = [];
  for (let i = 0; i < count; i++) {
    const v = E820Entry20.read(dv, i * E820Entry20.size);
    out.push({ addr: Number(v.addr), size: Number(v.size), type: v.type });
  }
  return out;
}

/** Encodes entries as hvm_start_info's memmap table (24-byte hvm_memmap_table_entry). */
export function encodeHvmMemmap(map: readonly E820Entry[]): Uint8Array {
  const out = new Uint8Array(map.length * HvmMemmapTableEntry.size);
  const dv = new DataView(out.buffer);
  map.forEach((e, i) => HvmMemmapTableEntry.write(dv, i * HvmMemmapTableEntry.size, { addr: BigInt(e.addr), size: BigInt(e.size), type: e.type, reserved: 0 }));
  return out;
}

/** The RAM ranges of `map` clipped to [0, limit), sorted and merged, as [start, end) pairs. */
export function ramRanges(map: readonly E820Entry[], limit: number): [number, number][] {
  const r = map
    .filter((e) => e.type === XEN_HVM_MEMMAP_TYPE_RAM && e.size > 0)
    .map((e): [number, number] => [e.addr, Math.min(e.addr + e.size, limit)])
    .filter(([s, e]) => s < e)
    .sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [s, e] of r) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}
