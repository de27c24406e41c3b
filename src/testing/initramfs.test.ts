// The initramfs writer: cpio "newc" as the kernel's unpacker reads it
// (init/initramfs.c): 110-byte ASCII headers, names and data padded to 4
// bytes, the TRAILER!!! entry last; gzip around it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync } from 'node:zlib';
import { busyboxInitramfs, cpioNewc, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG } from './initramfs.js';

interface Parsed { name: string; mode: number; size: number; rdev: [number, number]; data: Buffer; nlink: number }

/** A reader written from the format's description, independent of the writer. */
function parse(b: Buffer): Parsed[] {
  const out: Parsed[] = [];
  let o = 0;
  for (;;) {
    assert.equal(o % 4, 0, 'every header starts 4-byte aligned');
    assert.equal(b.toString('ascii', o, o + 6), '070701');
    const f = (i: number) => parseInt(b.toString('ascii', o + 6 + 8 * i, o + 14 + 8 * i), 16);
    const [mode, nlink, size, rmaj, rmin, namesize, check] = [f(1), f(4), f(6), f(9), f(10), f(11), f(12)];
    assert.equal(check, 0);
    const name = b.toString('latin1', o + 110, o + 110 + namesize - 1);
    assert.equal(b[o + 110 + namesize - 1], 0, 'the name is NUL-terminated');
    let d = o + 110 + namesize;
    d += (4 - (d % 4)) % 4;
    const data = b.subarray(d, d + size);
    o = d + size;
    o += (4 - (o % 4)) % 4;
    if (name === 'TRAILER!!!') {
      assert.equal(o, b.length, 'nothing after the trailer');
      return out;
    }
    out.push({ name, mode, size, rdev: [rmaj, rmin], data: Buffer.from(data), nlink });
  }
}

test('cpioNewc: names, modes, data, device numbers and padding read back', () => {
  const a = parse(cpioNewc([
    { name: 'd', mode: S_IFDIR | 0o755 },
    { name: 'd/f', mode: S_IFREG | 0o644, data: 'hello' }, // 5 bytes: padded
    { name: 'l', mode: S_IFLNK | 0o777, data: 'd/f' },
    { name: 'console', mode: S_IFCHR | 0o600, rdev: [5, 1] },
  ]));
  assert.deepEqual(a.map((e) => e.name), ['d', 'd/f', 'l', 'console']);
  assert.equal(a[0]!.mode, S_IFDIR | 0o755);
  assert.equal(a[0]!.nlink, 2);
  assert.equal(a[1]!.data.toString(), 'hello');
  assert.equal(a[2]!.data.toString(), 'd/f', 'a symlink\'s data is its target');
  assert.deepEqual(a[3]!.rdev, [5, 1]);
});

test('busyboxInitramfs: gzip of busybox, its applet links, /dev/console and /init', () => {
  const fake = Buffer.from('\x7fELF not really busybox');
  const script = busyboxInitramfs({ init: 'echo hi\n' }, fake);
  const e = parse(gunzipSync(script));
  const by = new Map(e.map((x) => [x.name, x]));
  assert.deepEqual(by.get('bin/busybox')!.data, fake);
  assert.equal(by.get('bin/sh')!.data.toString(), 'busybox');
  assert.equal(by.get('sbin')!.data.toString(), 'bin', '/sbin/poweroff and /sbin/reboot resolve');
  assert.deepEqual(by.get('dev/console')!.rdev, [5, 1]);
  assert.equal(by.get('init')!.data.toString(), '#!/bin/sh\necho hi\n');
  assert.equal(by.get('init')!.mode, S_IFREG | 0o755);
  // without a script, /init is busybox's own init, with the files given
  const withInit = new Map(parse(gunzipSync(busyboxInitramfs({ files: { 'etc/inittab': '::sysinit:/etc/rc\n', 'etc/rc': '#!/bin/sh\n' } }, fake)))
    .map((x) => [x.name, x]));
  assert.equal(withInit.get('init')!.mode, S_IFLNK | 0o777);
  assert.equal(withInit.get('init')!.data.toString(), 'bin/busybox');
  assert.equal(withInit.get('etc/inittab')!.mode, S_IFREG | 0o644);
  assert.equal(withInit.get('etc/rc')!.mode, S_IFREG | 0o755, 'a script is executable');
});
