// The domain's ACPI tables read back as an OS reads them: from the RSDP
// through the XSDT to each table, every checksum checked, and the DSDT's AML
// decoded by a reader written from the spec, independent of the encoder.

import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';

import {
  ACPI_FADT_HW_REDUCED_ACPI, ACPI_FADT_NO_CMOS_RTC, ACPI_FADT_NO_VGA, ACPI_LOCAL_APIC_ENABLED, AcpiFadt, AcpiHeader, AcpiMadt, AcpiMadtLapic,
  AcpiRsdp, FADT_X_PM1A_EVT_BLK_OFFSET, acpiSum,
} from './acpi2_0.js';
import { integer, pkgLength } from './aml.js';
import { buildAcpiTables, type AcpiTables } from './build.js';
import { ACPI_TABLES_START, LAPIC_BASE } from '../../hv/x86/e820.js';
import { apicIdOfVcpu } from '../../hv/x86/vlapic.js';

const sig = (b: Uint8Array, at: number, n: number): string => String.fromCharCode(...b.subarray(at, at + n));

/** The guest's view: tables by physical address. */
function reader(t: AcpiTables, base: number) {
  const dv = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
  const at = (pa: number | bigint) => Number(pa) - base;
  const tableAt = (pa: number | bigint): { sig: string; bytes: Uint8Array; off: number } => {
    const off = at(pa);
    const len = AcpiHeader.get(dv, off, 'length');
    const bytes = t.bytes.subarray(off, off + len);
    assert.equal(acpiSum(bytes), 0, `${sig(t.bytes, off, 4)} checksum`);
    return { sig: sig(t.bytes, off, 4), bytes, off };
  };
  return { dv, at, tableAt };
}

interface AmlNode { op: string; name?: string; id?: number; pblk?: [number, number]; value?: string | bigint; children?: AmlNode[] }

/** Decodes the terms the DSDT uses (ACPI 6.5 ch. 20); anything else fails the test. */
function decodeAml(b: Uint8Array): AmlNode[] {
  let i = 0;
  const pkg = (): number => {
    const start = i;
    const lead = b[i++]!;
    const extra = lead >> 6;
    let len = extra ? lead & 0xf : lead & 0x3f;
    for (let k = 0; k < extra; k++) len |= b[i++]! << (4 + 8 * k);
    return start + len;
  };
  const nameStr = (): string => {
    let s = '';
    if (b[i] === 0x5c) { s = '\\'; i++; }
    s += sig(b, i, 4);
    i += 4;
    return s;
  };
  const data = (): string | bigint => {
    const op = b[i++]!;
    const le = (n: number) => { let v = 0n; for (let k = n - 1; k >= 0; k--) v = (v << 8n) | BigInt(b[i + k]!); i += n; return v; };
    switch (op) {
      case 0x00: return 0n;
      case 0x01: return 1n;
      case 0xff: return (1n << 64n) - 1n;
      case 0x0a: return le(1);
      case 0x0b: return le(2);
      case 0x0c: return le(4);
      case 0x0e: return le(8);
      case 0x0d: { const end = b.indexOf(0, i); const s = sig(b, i, end - i); i = end + 1; return s; }
      default: throw new Error(`unexpected data op 0x${op.toString(16)} at ${i - 1}`);
    }
  };
  const terms = (end: number): AmlNode[] => {
    const out: AmlNode[] = [];
    while (i < end) {
      const op = b[i++]!;
      if (op === 0x10) { const e = pkg(); const name = nameStr(); out.push({ op: 'Scope', name, children: terms(e) }); }
      else if (op === 0x08) { const name = nameStr(); out.push({ op: 'Name', name, value: data() }); }
      else if (op === 0x5b && b[i] === 0x83) {
        i++;
        const e = pkg();
        const name = nameStr();
        const id = b[i++]!;
        const addr = new DataView(b.buffer, b.byteOffset + i, 4).getUint32(0, true);
        const len = b[i + 4]!;
        i += 5;
        out.push({ op: 'Processor', name, id, pblk: [addr, len], children: terms(e) });
      } else throw new Error(`unexpected AML op 0x${op.toString(16)} at ${i - 1}`);
    }
    assert.equal(i, end, 'a package ends where its PkgLength says');
    return out;
  };
  return terms(b.length);
}

function build(nrVcpus: number, onlineVcpus = nrVcpus): AcpiTables {
  return buildAcpiTables({ nrVcpus, onlineVcpus, lapicId: apicIdOfVcpu, lapicBase: LAPIC_BASE, base: ACPI_TABLES_START });
}

describe('ACPI tables (libacpi/build.ts)', () => {
  for (const [nr, online] of [[1, 1], [2, 2], [4, 2], [128, 128]] as const) {
    test(`${nr} vCPUs (${online} online): RSDP -> XSDT -> FADT/DSDT and MADT, checksums and contents`, () => {
      const t = build(nr, online);
      const { dv, at, tableAt } = reader(t, ACPI_TABLES_START);
      assert.equal(t.rsdpPaddr % 4096, 0, 'the RSDP on its own page after the tables');
      assert.equal(t.bytes.length % 4096, 0);
      // RSDP
      const r = at(t.rsdpPaddr);
      assert.equal(sig(t.bytes, r, 8), 'RSD PTR ');
      assert.equal(acpiSum(t.bytes.subarray(r, r + 20)), 0, 'RSDP checksum (first 20 bytes)');
      assert.equal(acpiSum(t.bytes.subarray(r, r + 36)), 0, 'RSDP extended checksum');
      const rsdp = AcpiRsdp.read(dv, r);
      assert.equal(rsdp.revision, 2);
      assert.equal(rsdp.length, 36);
      assert.equal(sig(t.bytes, r + 9, 3), 'Xen');
      // XSDT
      const x = tableAt(rsdp.xsdt_address);
      assert.equal(x.sig, 'XSDT');
      const entries = (x.bytes.length - 36) / 8;
      const tables = Array.from({ length: entries }, (_, k) => tableAt(dv.getBigUint64(x.off + 36 + 8 * k, true)));
      assert.deepEqual(tables.map((e) => e.sig), ['FACP', 'APIC']);
      for (const e of [x, ...tables]) {
        assert.equal(sig(e.bytes, 10, 6), 'Xen\0\0\0');
        assert.equal(sig(e.bytes, 16, 8), 'HVM\0\0\0\0\0');
        assert.equal(sig(e.bytes, 28, 4), 'HVML');
      }
      // FADT: hardware-reduced, no fixed hardware
      const f = tables[0]!;
      assert.equal(f.bytes.length, 268);
      assert.equal(AcpiHeader.get(dv, f.off, 'revision'), 5);
      const fadt = AcpiFadt.read(dv, f.off);
      assert.ok(fadt.flags & ACPI_FADT_HW_REDUCED_ACPI, 'HW_REDUCED_ACPI');
      assert.equal(fadt.iapc_boot_arch, ACPI_FADT_NO_VGA | ACPI_FADT_NO_CMOS_RTC);
      assert.equal(fadt.sci_int, 0);
      assert.equal(fadt.pm1a_evt_blk + fadt.pm1a_cnt_blk + fadt.pm_tmr_blk + fadt.gpe0_blk + fadt.smi_cmd, 0);
      assert.equal(fadt.firmware_ctrl, 0, 'no FACS (optional when hardware-reduced)');
      assert.ok(f.bytes.subarray(FADT_X_PM1A_EVT_BLK_OFFSET, 268).every((v) => v === 0), 'no extended fixed registers');
      assert.equal(BigInt(fadt.dsdt), fadt.x_dsdt);
      // MADT: one enabled local APIC per online vCPU, no I/O APIC, no 8259
      const m = tables[1]!;
      const madt = AcpiMadt.read(dv, m.off);
      assert.equal(madt.lapic_addr, LAPIC_BASE);
      assert.equal(madt.flags, 0);
      assert.equal(m.bytes.length, 44 + 8 * nr);
      for (let cpu = 0; cpu < nr; cpu++) {
        const e = AcpiMadtLapic.read(dv, m.off + 44 + 8 * cpu);
        assert.deepEqual(e, { type: 0, length: 8, acpi_processor_id: cpu, apic_id: apicIdOfVcpu(cpu), flags: cpu < online ? ACPI_LOCAL_APIC_ENABLED : 0 });
      }
      // DSDT: \_SB with Processor PRxx, ID = the MADT's UID, no P_BLK
      const d = tableAt(fadt.dsdt);
      assert.equal(d.sig, 'DSDT');
      assert.equal(AcpiHeader.get(dv, d.off, 'revision'), 2);
      const aml = decodeAml(d.bytes.subarray(36));
      assert.equal(aml.length, 1);
      assert.equal(aml[0]!.op, 'Scope');
      assert.equal(aml[0]!.name, '\\_SB_');
      const cpus = aml[0]!.children!;
      assert.equal(cpus.length, nr);
      cpus.forEach((p, cpu) => {
        assert.deepEqual(p, {
          op: 'Processor', name: `PR${cpu.toString(16).toUpperCase().padStart(2, '0')}`, id: cpu, pblk: [0, 0],
          children: [{ op: 'Name', name: '_HID', value: 'ACPI0007' }, { op: 'Name', name: '_UID', value: BigInt(cpu) }],
        });
      });
    });
  }

  test('bad configurations are refused', () => {
    assert.throws(() => build(0), RangeError);
    assert.throws(() => build(129), RangeError);
    assert.throws(() => build(2, 3), RangeError);
    assert.throws(() => buildAcpiTables({ nrVcpus: 1, onlineVcpus: 1, lapicId: () => 255, lapicBase: LAPIC_BASE, base: ACPI_TABLES_START }), /x2APIC/);
    assert.throws(() => buildAcpiTables({ nrVcpus: 1, onlineVcpus: 1, lapicId: apicIdOfVcpu, lapicBase: LAPIC_BASE, base: 0x123 }), RangeError);
  });
});

describe('AML encoding (libacpi/aml.ts)', () => {
  test('PkgLength: one byte below 64 in all, then two, three bytes (the length counts itself)', () => {
    assert.deepEqual([...pkgLength(0)], [1]);
    assert.deepEqual([...pkgLength(62)], [63]);
    assert.deepEqual([...pkgLength(63)], [0x40 | (65 & 0xf), 65 >> 4]);
    assert.deepEqual([...pkgLength(4093)], [0x40 | 0xf, 0xff]);
    assert.deepEqual([...pkgLength(4094)], [0x80 | 0x1, 0x00, 0x01]); // 4097 = 0x1001
  });

  test('integers take the shortest form', () => {
    assert.deepEqual([...integer(0)], [0x00]);
    assert.deepEqual([...integer(1)], [0x01]);
    assert.deepEqual([...integer(2)], [0x0a, 2]);
    assert.deepEqual([...integer(0x1234)], [0x0b, 0x34, 0x12]);
    assert.deepEqual([...integer(0x12345678)], [0x0c, 0x78, 0x56, 0x34, 0x12]);
    assert.deepEqual([...integer(0x1_0000_0000n)], [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
  });
});
