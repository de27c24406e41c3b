// The builder's ACPI tables as the domain will find them (libxl__dom_load_acpi):
// pages at 0xFC000000 in the domain's physmap, the RSDP named by
// hvm_start_info.rsdp_paddr, an E820_ACPI entry covering them in both memory
// maps, and a MADT with one local APIC per vCPU; with acpi off, none of it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { needsTcg } from '../testing/accel.js';
import { guest } from '../testing/xenode.js';
import { Toolstack } from './toolstack.js';
import { HvmStartInfo, XEN_HVM_MEMMAP_TYPE_ACPI } from '../hv/abi/start_info.js';
import { decodeE820Xenmem, ACPI_TABLES_START } from '../hv/x86/e820.js';
import { PAGE_SIZE } from '../hv/abi/xen.js';
import { acpiSum } from './libacpi/acpi2_0.js';

test('a PVH domain gets its ACPI tables at 0xFC000000, named by start_info and listed as E820_ACPI; acpi = 0 gives none', needsTcg(), async () => {
  const ts = await Toolstack.start({ pcpus: 1, accel: 'tcg', log: () => {} });
  try {
    const kernel = readFileSync(guest('hello'));
    const on = await ts.create({ name: 'acpi-on', kernel, memoryMiB: 8, vcpus: 2, maxVcpus: 3 }, () => {}, { paused: true });
    const b = on.built;
    const t = b.acpi!;
    assert.ok(t, 'tables built by default');
    const pm = b.build.physmap;
    const mem = b.build.mem.bytes;
    const at = (gpa: number): number => pm.hostPageOf(Math.floor(gpa / PAGE_SIZE)) * PAGE_SIZE + (gpa % PAGE_SIZE);
    // The tables, byte for byte, where the guest reads them.
    for (let off = 0; off < t.bytes.length; off += PAGE_SIZE) {
      assert.ok(pm.hostPageOf((ACPI_TABLES_START + off) / PAGE_SIZE) >= 0, `GFN of 0x${(ACPI_TABLES_START + off).toString(16)} mapped`);
      assert.ok(Buffer.from(mem.subarray(at(ACPI_TABLES_START + off), at(ACPI_TABLES_START + off) + PAGE_SIZE)).equals(Buffer.from(t.bytes.subarray(off, off + PAGE_SIZE))));
    }
    const si = HvmStartInfo.read(new DataView(mem.buffer, mem.byteOffset, mem.byteLength), at(b.load.startInfoGpa));
    assert.equal(Number(si.rsdp_paddr), t.rsdpPaddr);
    assert.equal(String.fromCharCode(...mem.subarray(at(t.rsdpPaddr), at(t.rsdpPaddr) + 8)), 'RSD PTR ');
    assert.equal(acpiSum(mem.subarray(at(t.rsdpPaddr), at(t.rsdpPaddr) + 36)), 0);
    // One MADT entry per vCPU (3), the first two enabled.
    const madt = at(t.madtPaddr);
    assert.equal(new DataView(mem.buffer, mem.byteOffset + madt + 4, 4).getUint32(0, true), 44 + 3 * 8);
    assert.deepEqual([0, 1, 2].map((i) => mem[madt + 44 + 8 * i + 4]), [1, 1, 0]);
    const e820 = decodeE820Xenmem(b.e820, b.e820.length / 20);
    assert.deepEqual(e820.filter((e) => e.type === XEN_HVM_MEMMAP_TYPE_ACPI), [{ addr: ACPI_TABLES_START, size: t.bytes.length, type: XEN_HVM_MEMMAP_TYPE_ACPI }]);

    const off = await ts.create({ name: 'acpi-off', kernel, memoryMiB: 8, vcpus: 1, acpi: false }, () => {}, { paused: true });
    assert.equal(off.built.acpi, undefined);
    assert.equal(off.built.build.physmap.hostPageOf(ACPI_TABLES_START / PAGE_SIZE), -1);
    const m2 = off.built.build.mem.bytes;
    const si2 = HvmStartInfo.read(new DataView(m2.buffer, m2.byteOffset, m2.byteLength), off.built.build.physmap.hostPageOf(Math.floor(off.built.load.startInfoGpa / PAGE_SIZE)) * PAGE_SIZE + (off.built.load.startInfoGpa % PAGE_SIZE));
    assert.equal(si2.rsdp_paddr, 0n);
    assert.ok(decodeE820Xenmem(off.built.e820, off.built.e820.length / 20).every((e) => e.type !== XEN_HVM_MEMMAP_TYPE_ACPI));
  } finally {
    await ts.shutdown();
  }
});
