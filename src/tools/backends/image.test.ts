// The images behind a vbd: a raw file read and written directly, and a
// qcow2 file served by Debian's qemu-nbd over NBD; both give the same bytes,
// zeros past the end and after a discard, and what was written is in the
// image afterwards (for qcow2, as qemu-img reads it back).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { havePeer, which } from '../../testing/peers.js';
import { openImage, type ImageFormat } from './image.js';

const MIB = 1 << 20;
const haveQemuNbd = which('qemu-nbd') !== null && which('qemu-img') !== null;

function qemuImg(...args: string[]): void {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

/** A 4 MiB image whose every 512-byte sector holds its own number, in `format`. */
function makeImage(dir: string, format: ImageFormat): string {
  const raw = path.join(dir, 'disk.raw');
  const b = Buffer.alloc(4 * MIB);
  for (let s = 0; s < b.length / 512; s++) b.writeUInt32LE(s, s * 512);
  writeFileSync(raw, b);
  if (format === 'raw') return raw;
  const img = path.join(dir, `disk.${format}`);
  qemuImg('convert', '-f', 'raw', '-O', format, raw, img);
  return img;
}

/** The image's bytes as a guest would see them. */
function contents(dir: string, img: string, format: ImageFormat): Buffer {
  if (format === 'raw') return readFileSync(img);
  const out = path.join(dir, 'back.raw');
  qemuImg('convert', '-f', format, '-O', 'raw', img, out);
  return readFileSync(out);
}

for (const format of ['raw', 'qcow2'] as const) {
  test(`${format}: size, reads, writes, zeros past the end and after a discard, all in the image afterwards`, async (t) => {
    if (format !== 'raw' && !havePeer(t, haveQemuNbd, 'qemu-nbd and qemu-img', 'apt-get install qemu-utils')) return;
    const dir = mkdtempSync(path.join(tmpdir(), `xenode-image-${format}-`));
    const file = makeImage(dir, format);
    const im = await openImage(file, format, false);
    try {
      assert.equal(im.size, BigInt(4 * MIB));
      const b = new Uint8Array(1024);
      await im.read(b, 7 * 512);
      assert.deepEqual([new DataView(b.buffer).getUint32(0, true), new DataView(b.buffer).getUint32(512, true)], [7, 8]);
      // sixteen reads in flight at once, each answered with its own sector
      const many = await Promise.all(Array.from({ length: 16 }, async (_, i) => {
        const x = new Uint8Array(512);
        await im.read(x, (100 + i * 37) * 512);
        return new DataView(x.buffer).getUint32(0, true);
      }));
      assert.deepEqual(many, Array.from({ length: 16 }, (_, i) => 100 + i * 37));
      // across the end: the part past it reads as zeros
      const tail = new Uint8Array(1024).fill(0xff);
      await im.read(tail, 4 * MIB - 512);
      assert.equal(new DataView(tail.buffer).getUint32(0, true), 8191);
      assert.ok(tail.subarray(512).every((x) => x === 0));
      await im.write(new Uint8Array(4096).fill(0xab), MIB);
      await im.discard(2 * MIB, 64 * 1024);
      const z = new Uint8Array(64 * 1024).fill(1);
      await im.read(z, 2 * MIB);
      assert.ok(z.every((x) => x === 0), 'discarded bytes read as zeros');
      await im.flush();
    } finally {
      await im.close();
    }
    const after = contents(dir, file, format);
    assert.equal(after.length, 4 * MIB);
    assert.ok(after.subarray(MIB, MIB + 4096).every((x) => x === 0xab), 'the write is in the image');
    assert.ok(after.subarray(2 * MIB, 2 * MIB + 64 * 1024).every((x) => x === 0), 'the discard is in the image');
    assert.equal(after.readUInt32LE(3 * MIB), (3 * MIB) / 512, 'the rest untouched');
  });
}

test('qemu-nbd: an image that is not there, or not the format asked, is refused with its reason; a read-only one refuses writes', async (t) => {
  if (!havePeer(t, haveQemuNbd, 'qemu-nbd and qemu-img', 'apt-get install qemu-utils')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-image-bad-'));
  await assert.rejects(openImage(path.join(dir, 'none.qcow2'), 'qcow2', false), /qemu-nbd exited .*(No such file|Could not open)/);
  const raw = makeImage(dir, 'raw');
  await assert.rejects(openImage(raw, 'qcow2', false), /qemu-nbd exited .*(qcow2|Image is not in qcow2 format)/i);
  const q = makeImage(mkdtempSync(path.join(tmpdir(), 'xenode-image-ro-')), 'qcow2');
  const ro = await openImage(q, 'qcow2', true);
  try {
    const b = new Uint8Array(512);
    await ro.read(b, 512);
    assert.equal(new DataView(b.buffer).getUint32(0, true), 1);
    await assert.rejects(ro.write(b, 0), /nbd: the server answered error/);
  } finally {
    await ro.close();
  }
  // nothing of it is left: no socket directory, no process
  assert.equal(existsSync(dir), true);
  assert.equal(spawnSync('pgrep', ['-f', `qemu-nbd.*${path.basename(q)}`]).status, 1, 'qemu-nbd is gone');
});
