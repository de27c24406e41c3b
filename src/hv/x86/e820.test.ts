import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { havePeer } from '../../testing/peers.js';

import {
  E820Entry20, HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_MEMMAP_TYPE_ACPI, XEN_HVM_MEMMAP_TYPE_PMEM, XEN_HVM_MEMMAP_TYPE_RAM,
  XEN_HVM_MEMMAP_TYPE_RESERVED, XEN_HVM_START_MAGIC_VALUE,
} from '../abi/start_info.js';
import {
  CONSOLE_RING_PFN, FOUR_GIB, LAPIC_BASE, MMIO_HOLE_START, SPECIAL_PAGES_END, SPECIAL_PAGES_START, XENSTORE_RING_PFN,
  buildPvhE820, decodeE820Xenmem, encodeE820Xenmem, encodeHvmMemmap, ramRanges, type E820Entry,
} from './e820.js';

const MiB = 0x100000;
const RAM = XEN_HVM_MEMMAP_TYPE_RAM;
const RES = XEN_HVM_MEMMAP_TYPE_RESERVED;

describe('buildPvhE820', () => {
  test('small guest: low RAM and the special pages', () => {
    assert.deepEqual(buildPvhE820(64 * MiB), [
      { addr: 0, size: 64 * MiB, type: RAM },
      { addr: 0xfeff8000, size: 0x8000, type: RES },
    ]);
  });

  test('with ACPI tables: an E820_ACPI range at 0xFC000000, in address order; bad sizes refused', () => {
    assert.deepEqual(buildPvhE820(64 * MiB, { acpiBytes: 0x2000 }), [
      { addr: 0, size: 64 * MiB, type: RAM },
      { addr: 0xfc000000, size: 0x2000, type: XEN_HVM_MEMMAP_TYPE_ACPI },
      { addr: 0xfeff8000, size: 0x8000, type: RES },
    ]);
    assert.throws(() => buildPvhE820(64 * MiB, { acpiBytes: 100 }), RangeError);
    assert.throws(() => buildPvhE820(64 * MiB, { acpiBytes: LAPIC_BASE }), RangeError);
  });

  test('exactly up to the MMIO hole: no high RAM', () => {
    assert.deepEqual(buildPvhE820(0xfc000000), [
      { addr: 0, size: 0xfc000000, type: RAM },
      { addr: 0xfeff8000, size: 0x8000, type: RES },
    ]);
  });

  test('large guest: the rest of RAM above 4 GiB', () => {
    const mem = 6 * 1024 * MiB;
    assert.deepEqual(buildPvhE820(mem), [
      { addr: 0, size: 0xfc000000, type: RAM },
      { addr: 0xfeff8000, size: 0x8000, type: RES },
      { addr: 0x1_0000_0000, size: mem - 0xfc000000, type: RAM },
    ]);
  });

  test('rejects sizes that are not whole pages', () => {
    for (const bad of [0, -4096, 4095, 1.5 * 4096, Number.NaN, 2 ** 60]) assert.throws(() => buildPvhE820(bad), RangeError, String(bad));
  });

  test('special pages, ring pfns and the hole', () => {
    assert.equal(XENSTORE_RING_PFN, 0xfeffc);
    assert.equal(CONSOLE_RING_PFN, 0xfefff);
    assert.equal(SPECIAL_PAGES_START, 0xfeff8000);
    assert.equal(SPECIAL_PAGES_END, 0xff000000);
    assert.equal(MMIO_HOLE_START, 0xfc000000);
    assert.equal(LAPIC_BASE, 0xfee00000);
    assert.ok(MMIO_HOLE_START <= Math.min(LAPIC_BASE, SPECIAL_PAGES_START));
    // Both rings lie inside the RESERVED range of the map, never in RAM.
    const map = buildPvhE820(0xfc000000);
    for (const pfn of [XENSTORE_RING_PFN, CONSOLE_RING_PFN]) {
      const gpa = pfn * 4096;
      const e = map.find((x) => x.addr <= gpa && gpa + 4096 <= x.addr + x.size);
      assert.equal(e?.type, RES);
    }
  });
});

describe('memory map encodings', () => {
  const map: E820Entry[] = [
    { addr: 0, size: 0x0123_4000, type: RAM },
    { addr: 0xfeff8000, size: 0x8000, type: RES },
    { addr: FOUR_GIB, size: 0x2_0000_0000, type: XEN_HVM_MEMMAP_TYPE_PMEM },
  ];

  test('XENMEM_memory_map: packed 20-byte e820 entries', () => {
    const b = encodeE820Xenmem(map);
    assert.equal(b.length, 60);
    assert.equal(Buffer.from(b.subarray(20, 40)).toString('hex'),
      '0080fffe00000000' + '0080000000000000' + '02000000');
    assert.equal(Buffer.from(b.subarray(40, 60)).toString('hex'),
      '0000000001000000' + '0000000002000000' + '07000000');
    assert.deepEqual(decodeE820Xenmem(b, 3), map);
    assert.throws(() => decodeE820Xenmem(b, 4), RangeError);
  });

  test('hvm_memmap_table_entry: 24 bytes with a zero reserved word', () => {
    const b = encodeHvmMemmap(map);
    assert.equal(b.length, 72);
    assert.equal(Buffer.from(b.subarray(24, 48)).toString('hex'),
      '0080fffe00000000' + '0080000000000000' + '02000000' + '00000000');
    const dv = new DataView(b.buffer);
    assert.equal(HvmMemmapTableEntry.get(dv, 48, 'addr'), 0x1_0000_0000n);
    assert.equal(HvmMemmapTableEntry.get(dv, 48, 'type'), 7);
  });

  test('ramRanges clips, sorts and merges', () => {
    assert.deepEqual(ramRanges([
      { addr: 0x200000, size: 0x100000, type: RAM },
      { addr: 0, size: 0x100000, type: RAM },
      { addr: 0x100000, size: 0x100000, type: RAM },
      { addr: 0x400000, size: 0x100000, type: RES },
      { addr: 0x500000, size: 0x100000, type: RAM },
    ], 0x580000), [[0, 0x300000], [0x500000, 0x580000]]);
  });
});

describe('hvm_start_info layouts', () => {
  test('sizes and offsets from start_info.h', () => {
    assert.equal(XEN_HVM_START_MAGIC_VALUE, 0x336ec578);
    assert.equal(HvmStartInfo.size, 56);
    assert.equal(HvmModlistEntry.size, 32);
    assert.equal(HvmMemmapTableEntry.size, 24);
    assert.equal(E820Entry20.size, 20);
    assert.equal(HvmStartInfo.offsetOf('memmap_paddr'), 40);
    assert.equal(HvmStartInfo.offsetOf('memmap_entries'), 48);
  });

  test('offsets agree with the C compiler on Xen\'s public header', (t) => {
    const inc = ['/usr/include', '/tmp/xenh/usr/include'].find((d) => existsSync(join(d, 'xen/arch-x86/hvm/start_info.h')));
    let cc: string | null;
    try { cc = execFileSync('sh', ['-c', 'command -v cc || command -v gcc'], { encoding: 'utf8' }).trim() || null; } catch { cc = null; }
    if (!havePeer(t, inc !== undefined && cc !== null, 'a C compiler and xen/arch-x86/hvm/start_info.h', 'apt-get install gcc libxen-dev') || !inc || !cc) return;
    const dir = mkdtempSync(join(tmpdir(), 'xenode-si-'));
    try {
      const fields: [string, string, Record<string, readonly [number, string]>, number][] = [
        ['hvm_start_info', 'struct hvm_start_info', HvmStartInfo.fields, HvmStartInfo.size],
        ['hvm_modlist_entry', 'struct hvm_modlist_entry', HvmModlistEntry.fields, HvmModlistEntry.size],
        ['hvm_memmap_table_entry', 'struct hvm_memmap_table_entry', HvmMemmapTableEntry.fields, HvmMemmapTableEntry.size],
      ];
      const lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <stdint.h>', '#include <xen/arch-x86/hvm/start_info.h>', 'int main(void) {'];
      for (const [name, ctype, f] of fields) {
        lines.push(`printf("${name} size %zu\\n", sizeof(${ctype}));`);
        for (const k of Object.keys(f)) lines.push(`printf("${name}.${k} %zu %zu\\n", offsetof(${ctype}, ${k}), sizeof(((${ctype} *)0)->${k}));`);
      }
      lines.push(`printf("magic %u\\n", (unsigned)XEN_HVM_START_MAGIC_VALUE);`, 'return 0; }');
      writeFileSync(join(dir, 'si.c'), lines.join('\n'));
      execFileSync(cc, ['-I', inc, '-o', join(dir, 'si'), join(dir, 'si.c')]);
      const out = execFileSync(join(dir, 'si'), { encoding: 'utf8' });
      const got = new Map(out.trim().split('\n').map((l) => { const [k, ...v] = l.split(' '); return [k!, v.join(' ')]; }));
      const width: Record<string, number> = { u8: 1, u16: 2, u32: 4, u64: 8 };
      for (const [name, , f, size] of fields) {
        assert.equal(got.get(name), `size ${size}`);
        for (const [k, [off, type]] of Object.entries(f)) assert.equal(got.get(`${name}.${k}`), `${off} ${width[type]}`, `${name}.${k}`);
      }
      assert.equal(got.get('magic'), String(XEN_HVM_START_MAGIC_VALUE));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
