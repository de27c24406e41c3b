// ACPI table layouts, as tools/libacpi/acpi2_0.h declares them for Xen's
// guests, from the ACPI specification (6.5, chapter 5.2): the RSDP, the
// common description header, the XSDT, the FADT (revision 5, 268 bytes), the
// MADT with its processor local APIC entries, and the generic address
// structure. Offsets are from the start of each structure.

import { struct } from '../../hv/abi/layout.js';

/** Root System Description Pointer, ACPI 2.0+ form (spec 5.2.5.3). */
export const AcpiRsdp = struct('acpi_20_rsdp', 36, {
  checksum: [8, 'u8'], // of the first 20 bytes
  revision: [15, 'u8'],
  rsdt_address: [16, 'u32'],
  length: [20, 'u32'],
  xsdt_address: [24, 'u64'],
  extended_checksum: [32, 'u8'], // of all `length` bytes
});
export const RSDP_SIGNATURE = 'RSD PTR ';
export const RSDP_OEM_ID_OFFSET = 9;
export const RSDP_V1_LENGTH = 20;
export const ACPI_2_0_RSDP_REVISION = 2;

/** The description header every table but the RSDP starts with (spec 5.2.6). */
export const AcpiHeader = struct('acpi_header', 36, {
  length: [4, 'u32'],
  revision: [8, 'u8'],
  checksum: [9, 'u8'],
  oem_revision: [24, 'u32'],
  creator_revision: [32, 'u32'],
});
export const HEADER_SIGNATURE_OFFSET = 0;
export const HEADER_OEM_ID_OFFSET = 10;
export const HEADER_OEM_TABLE_ID_OFFSET = 16;
export const HEADER_CREATOR_ID_OFFSET = 28;

/** libacpi's identity (acpi2_0.h: ACPI_OEM_ID, ACPI_OEM_TABLE_ID, ACPI_CREATOR_ID). */
export const ACPI_OEM_ID = 'Xen';
export const ACPI_OEM_TABLE_ID = 'HVM';
export const ACPI_OEM_REVISION = 0;
export const ACPI_CREATOR_ID = 'HVML';
export const ACPI_CREATOR_REVISION = 0;

/** XSDT: the header, then 64-bit table addresses (spec 5.2.8). */
export const XSDT_SIGNATURE = 'XSDT';
export const ACPI_2_0_XSDT_REVISION = 1;

/** Generic Address Structure (spec 5.2.3.2), 12 bytes. */
export const AcpiGas = struct('acpi_20_generic_address', 12, {
  address_space_id: [0, 'u8'], register_bit_width: [1, 'u8'], register_bit_offset: [2, 'u8'], access_size: [3, 'u8'], address: [4, 'u64'],
});

/** Fixed ACPI Description Table, revision 5 (spec 5.2.9; ACPI 5.0 adds the sleep registers at 244). */
export const AcpiFadt = struct('acpi_fadt', 268, {
  firmware_ctrl: [36, 'u32'],
  dsdt: [40, 'u32'],
  preferred_pm_profile: [45, 'u8'],
  sci_int: [46, 'u16'],
  smi_cmd: [48, 'u32'],
  pm1a_evt_blk: [56, 'u32'],
  pm1a_cnt_blk: [64, 'u32'],
  pm_tmr_blk: [76, 'u32'],
  gpe0_blk: [80, 'u32'],
  pm1_evt_len: [88, 'u8'],
  pm1_cnt_len: [89, 'u8'],
  pm_tmr_len: [91, 'u8'],
  iapc_boot_arch: [109, 'u16'],
  flags: [112, 'u32'],
  reset_value: [128, 'u8'],
  arm_boot_arch: [129, 'u16'],
  minor_revision: [131, 'u8'],
  x_firmware_ctrl: [132, 'u64'],
  x_dsdt: [140, 'u64'],
});
export const FADT_SIGNATURE = 'FACP';
export const ACPI_FADT_REVISION = 5;
export const FADT_RESET_REG_OFFSET = 116;
export const FADT_X_PM1A_EVT_BLK_OFFSET = 148;
export const FADT_SLEEP_CONTROL_REG_OFFSET = 244;
export const FADT_SLEEP_STATUS_REG_OFFSET = 256;
/** FADT flags (spec table 5.10). */
export const ACPI_FADT_WBINVD = 1 << 0;
export const ACPI_FADT_PWR_BUTTON = 1 << 4;
export const ACPI_FADT_SLP_BUTTON = 1 << 5;
export const ACPI_FADT_HW_REDUCED_ACPI = 1 << 20;
/** IA-PC boot architecture flags (spec table 5.11). */
export const ACPI_FADT_LEGACY_DEVICES = 1 << 0;
export const ACPI_FADT_8042 = 1 << 1;
export const ACPI_FADT_NO_VGA = 1 << 2;
export const ACPI_FADT_NO_MSI = 1 << 3;
export const ACPI_FADT_NO_CMOS_RTC = 1 << 5;

/** Multiple APIC Description Table (spec 5.2.12): the header, the local APIC address and flags, then entries. */
export const AcpiMadt = struct('acpi_20_madt', 44, {
  lapic_addr: [36, 'u32'],
  flags: [40, 'u32'],
});
export const MADT_SIGNATURE = 'APIC';
/** libacpi's ACPI_2_0_MADT_REVISION. */
export const ACPI_2_0_MADT_REVISION = 2;
/** MADT flags: PCAT_COMPAT, a dual 8259 is present (there is none). */
export const ACPI_PCAT_COMPAT = 1 << 0;

/** Processor Local APIC structure (spec 5.2.12.2), 8 bytes. */
export const AcpiMadtLapic = struct('acpi_20_madt_lapic', 8, {
  type: [0, 'u8'], length: [1, 'u8'], acpi_processor_id: [2, 'u8'], apic_id: [3, 'u8'], flags: [4, 'u32'],
});
export const ACPI_PROCESSOR_LOCAL_APIC = 0;
export const ACPI_LOCAL_APIC_ENABLED = 1 << 0;

export const DSDT_SIGNATURE = 'DSDT';
/** Revision 2 and up: AML integers are 64 bits. */
export const DSDT_REVISION = 2;

/** The byte that makes `bytes` sum to 0 mod 256 when stored in it (it is counted as 0). */
export function acpiChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return (0x100 - sum) & 0xff;
}

/** Sum of `bytes` mod 256 (0 for a table whose checksum is right). */
export function acpiSum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return sum;
}
