// The ACPI tables a PVH domain is given, as libxl builds them with libacpi
// (tools/libacpi/build.c acpi_build_tables, called from libxl_x86_acpi.c):
// an RSDP pointing at an XSDT, which lists a hardware-reduced FADT (pointing at
// the DSDT) and a MADT with one processor local APIC per vCPU, enabled for
// those online at boot, and no I/O APIC (a PVH domain has none). The DSDT
// declares one processor object per vCPU under \_SB, its processor ID being
// the MADT entry's ACPI processor UID. Nothing here describes a device the
// domain does not have: no PM timer, no PM1 or GPE blocks, no P_BLK (the
// domain has no such I/O ports), no CMOS RTC, no VGA, no 8042.
//
// Layout in guest memory (from `base`, page-aligned, as libxl's tables area):
// the tables, each 16-byte aligned (DSDT, FADT, MADT, XSDT), then the RSDP on
// the next page (libxl puts it after the tables when the kernel, like Linux's,
// carries XENFEAT_linux_rsdp_unrestricted).

import { PAGE_SIZE } from '../../hv/abi/xen.js';
import {
  ACPI_2_0_MADT_REVISION, ACPI_2_0_RSDP_REVISION, ACPI_2_0_XSDT_REVISION, ACPI_CREATOR_ID, ACPI_CREATOR_REVISION,
  ACPI_FADT_HW_REDUCED_ACPI, ACPI_FADT_NO_CMOS_RTC, ACPI_FADT_NO_VGA, ACPI_FADT_PWR_BUTTON, ACPI_FADT_REVISION, ACPI_FADT_SLP_BUTTON,
  ACPI_FADT_WBINVD, ACPI_LOCAL_APIC_ENABLED, ACPI_OEM_ID, ACPI_OEM_REVISION, ACPI_OEM_TABLE_ID, ACPI_PROCESSOR_LOCAL_APIC, AcpiFadt,
  AcpiHeader, AcpiMadt, AcpiMadtLapic, AcpiRsdp, DSDT_REVISION, DSDT_SIGNATURE, FADT_SIGNATURE, HEADER_CREATOR_ID_OFFSET,
  HEADER_OEM_ID_OFFSET, HEADER_OEM_TABLE_ID_OFFSET, MADT_SIGNATURE, RSDP_OEM_ID_OFFSET, RSDP_SIGNATURE, RSDP_V1_LENGTH, XSDT_SIGNATURE,
  acpiChecksum,
} from './acpi2_0.js';
import { integer, name, processor, scope, string } from './aml.js';

export interface AcpiConfig {
  /** vCPUs the domain has (max_vcpus): one MADT entry and one processor object each. */
  nrVcpus: number;
  /** vCPUs online at boot (vcpus): their MADT entries are enabled. */
  onlineVcpus: number;
  /** The APIC ID of vCPU `cpu`, as its local APIC and CPUID report it. */
  lapicId: (cpu: number) => number;
  /** Local APIC MMIO base. */
  lapicBase: number;
  /** Guest-physical address of the tables area (page-aligned, below 4 GiB). */
  base: number;
}

export interface AcpiTables {
  /** The bytes to copy to `base`: tables, then the RSDP page. */
  bytes: Uint8Array;
  rsdpPaddr: number;
  xsdtPaddr: number;
  fadtPaddr: number;
  madtPaddr: number;
  dsdtPaddr: number;
}

/** The most vCPUs the 8-bit processor UIDs and APIC IDs of these tables describe. */
export const ACPI_MAX_VCPUS = 128;

const align16 = (n: number): number => (n + 15) & ~15;
const pageUp = (n: number): number => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;

function ascii(out: Uint8Array, at: number, s: string, len: number): void {
  for (let i = 0; i < len; i++) out[at + i] = i < s.length ? s.charCodeAt(i) : 0;
}

/** A table: its signature and libacpi's OEM fields in the header, `body` after it, the checksum last. */
function table(signature: string, revision: number, length: number, fill: (t: Uint8Array, dv: DataView) => void): Uint8Array {
  const t = new Uint8Array(length);
  const dv = new DataView(t.buffer);
  ascii(t, 0, signature, 4);
  AcpiHeader.write(dv, 0, { length, revision, checksum: 0, oem_revision: ACPI_OEM_REVISION, creator_revision: ACPI_CREATOR_REVISION });
  ascii(t, HEADER_OEM_ID_OFFSET, ACPI_OEM_ID, 6);
  ascii(t, HEADER_OEM_TABLE_ID_OFFSET, ACPI_OEM_TABLE_ID, 8);
  ascii(t, HEADER_CREATOR_ID_OFFSET, ACPI_CREATOR_ID, 4);
  fill(t, dv);
  AcpiHeader.set(dv, 0, 'checksum', acpiChecksum(t));
  return t;
}

/** The DSDT: one Processor per vCPU under \_SB, named PRxx as libacpi's mk_dsdt names them. */
function dsdt(nrVcpus: number): Uint8Array {
  const cpus = Array.from({ length: nrVcpus }, (_, cpu) =>
    processor(`PR${cpu.toString(16).toUpperCase().padStart(2, '0')}`, cpu, 0, 0,
      name('_HID', string('ACPI0007')),
      name('_UID', integer(cpu))));
  const aml = scope('\\_SB', ...cpus);
  return table(DSDT_SIGNATURE, DSDT_REVISION, AcpiHeader.size + aml.length, (t) => t.set(aml, AcpiHeader.size));
}

function fadt(dsdtPaddr: number): Uint8Array {
  return table(FADT_SIGNATURE, ACPI_FADT_REVISION, AcpiFadt.size, (_, dv) => {
    AcpiFadt.set(dv, 0, 'dsdt', dsdtPaddr);
    AcpiFadt.set(dv, 0, 'x_dsdt', BigInt(dsdtPaddr));
    // No fixed-feature hardware: no SCI, PM1, PM timer, GPE, reset or sleep registers; no fixed buttons.
    AcpiFadt.set(dv, 0, 'flags', ACPI_FADT_HW_REDUCED_ACPI | ACPI_FADT_WBINVD | ACPI_FADT_PWR_BUTTON | ACPI_FADT_SLP_BUTTON);
    AcpiFadt.set(dv, 0, 'iapc_boot_arch', ACPI_FADT_NO_VGA | ACPI_FADT_NO_CMOS_RTC);
  });
}

function madt(c: AcpiConfig): Uint8Array {
  return table(MADT_SIGNATURE, ACPI_2_0_MADT_REVISION, AcpiMadt.size + c.nrVcpus * AcpiMadtLapic.size, (_, dv) => {
    AcpiMadt.set(dv, 0, 'lapic_addr', c.lapicBase);
    AcpiMadt.set(dv, 0, 'flags', 0); // no 8259 PICs
    for (let cpu = 0; cpu < c.nrVcpus; cpu++) {
      AcpiMadtLapic.write(dv, AcpiMadt.size + cpu * AcpiMadtLapic.size, {
        type: ACPI_PROCESSOR_LOCAL_APIC, length: AcpiMadtLapic.size, acpi_processor_id: cpu, apic_id: c.lapicId(cpu),
        flags: cpu < c.onlineVcpus ? ACPI_LOCAL_APIC_ENABLED : 0,
      });
    }
  });
}

function xsdt(entries: number[]): Uint8Array {
  return table(XSDT_SIGNATURE, ACPI_2_0_XSDT_REVISION, AcpiHeader.size + 8 * entries.length, (_, dv) => {
    entries.forEach((e, i) => dv.setBigUint64(AcpiHeader.size + 8 * i, BigInt(e), true));
  });
}

function rsdp(xsdtPaddr: number): Uint8Array {
  const r = new Uint8Array(AcpiRsdp.size);
  const dv = new DataView(r.buffer);
  ascii(r, 0, RSDP_SIGNATURE, 8);
  ascii(r, RSDP_OEM_ID_OFFSET, ACPI_OEM_ID, 6);
  AcpiRsdp.write(dv, 0, { checksum: 0, revision: ACPI_2_0_RSDP_REVISION, rsdt_address: 0, length: AcpiRsdp.size, xsdt_address: BigInt(xsdtPaddr), extended_checksum: 0 });
  AcpiRsdp.set(dv, 0, 'checksum', acpiChecksum(r.subarray(0, RSDP_V1_LENGTH)));
  AcpiRsdp.set(dv, 0, 'extended_checksum', acpiChecksum(r));
  return r;
}

/** Builds the tables for `c` (acpi_build_tables). RangeError for a configuration they cannot describe. */
export function buildAcpiTables(c: AcpiConfig): AcpiTables {
  if (!Number.isInteger(c.nrVcpus) || c.nrVcpus < 1 || c.nrVcpus > ACPI_MAX_VCPUS) throw new RangeError(`ACPI tables describe 1..${ACPI_MAX_VCPUS} vCPUs, not ${c.nrVcpus}`);
  if (!Number.isInteger(c.onlineVcpus) || c.onlineVcpus < 1 || c.onlineVcpus > c.nrVcpus) throw new RangeError(`online vCPUs ${c.onlineVcpus} not in 1..${c.nrVcpus}`);
  if (c.base % PAGE_SIZE !== 0 || c.base < 0 || c.base >= 2 ** 32) throw new RangeError(`ACPI tables base 0x${c.base.toString(16)} is not a page below 4 GiB`);
  for (let cpu = 0; cpu < c.nrVcpus; cpu++) {
    const id = c.lapicId(cpu);
    if (!Number.isInteger(id) || id < 0 || id > 0xfe) throw new RangeError(`vCPU ${cpu}'s APIC ID ${id} needs an x2APIC entry`);
  }
  const d = dsdt(c.nrVcpus);
  const dsdtPaddr = c.base;
  const fadtPaddr = dsdtPaddr + align16(d.length);
  const f = fadt(dsdtPaddr);
  const madtPaddr = fadtPaddr + align16(f.length);
  const m = madt(c);
  const xsdtPaddr = madtPaddr + align16(m.length);
  const x = xsdt([fadtPaddr, madtPaddr]);
  const rsdpPaddr = pageUp(xsdtPaddr + x.length);
  const r = rsdp(xsdtPaddr);
  const bytes = new Uint8Array(rsdpPaddr + PAGE_SIZE - c.base);
  for (const [t, at] of [[d, dsdtPaddr], [f, fadtPaddr], [m, madtPaddr], [x, xsdtPaddr], [r, rsdpPaddr]] as const) bytes.set(t, at - c.base);
  return { bytes, rsdpPaddr, xsdtPaddr, fadtPaddr, madtPaddr, dsdtPaddr };
}
