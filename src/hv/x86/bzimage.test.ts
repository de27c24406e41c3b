import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';

import { HvmModlistEntry, HvmStartInfo } from '../abi/start_info.js';
import {
  BOOT_PROTOCOL_MIN, SETUP_HDR_MAGIC, SetupHeader, decompressBzImage, isBzImage, parseBzImage, parsePvhKernel, type KernelCompression,
} from './bzimage.js';
import { buildPvhE820 } from './e820.js';
import { XEN_ELFNOTE } from './elf.js';
import { PvhLoadError, loadPvh, parsePvhElf } from './pvh.js';
import { LZ4_LEGACY_MAGIC, Lz4Error, lz4DecodeBlock, unlz4Legacy } from './unlz4.js';
import { havePeer, which } from '../../testing/peers.js';
import { root } from '../../testing/xenode.js';

// ---------------------------------------------------------------------------
// A small 64-bit PVH ELF: one PT_LOAD at 1 MiB (code and data that compress
// well and badly), one PT_NOTE with XEN_ELFNOTE_PHYS32_ENTRY (or none).

const LOAD_AT = 0x100000;

function pvhElf(opts: { entryNote?: boolean; size?: number } = {}): Uint8Array {
  const size = opts.size ?? 0x30000;
  const note = new Uint8Array(12 + 4 + 4);
  const ndv = new DataView(note.buffer);
  ndv.setUint32(0, 4, true); // namesz "Xen\0"
  ndv.setUint32(4, 4, true);
  ndv.setUint32(8, XEN_ELFNOTE.PHYS32_ENTRY, true);
  note.set([0x58, 0x65, 0x6e, 0], 12);
  ndv.setUint32(16, LOAD_AT + 0x40, true);
  const phoff = 64;
  const dataAt = 0x1000;
  const noteAt = dataAt + size;
  const withNote = opts.entryNote ?? true;
  const out = new Uint8Array(noteAt + note.length);
  const dv = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, 62, true); // EM_X86_64
  dv.setUint32(20, 1, true);
  dv.setBigUint64(24, BigInt(LOAD_AT + 0x40), true);
  dv.setBigUint64(32, BigInt(phoff), true);
  dv.setUint16(52, 64, true);
  dv.setUint16(54, 56, true);
  dv.setUint16(56, withNote ? 2 : 1, true);
  const ph = (i: number, type: number, off: number, addr: number, len: number, align: number) => {
    const at = phoff + i * 56;
    dv.setUint32(at, type, true);
    dv.setUint32(at + 4, 5, true);
    dv.setBigUint64(at + 8, BigInt(off), true);
    dv.setBigUint64(at + 16, BigInt(addr), true);
    dv.setBigUint64(at + 24, BigInt(addr), true);
    dv.setBigUint64(at + 32, BigInt(len), true);
    dv.setBigUint64(at + 40, BigInt(len), true);
    dv.setBigUint64(at + 48, BigInt(align), true);
  };
  ph(0, 1, dataAt, LOAD_AT, size, 0x1000);
  if (withNote) ph(1, 4, noteAt, 0, note.length, 4);
  // Repetitive first half (long matches, overlapping copies), pseudo-random second half (literals).
  let x = 12345;
  for (let i = 0; i < size; i++) {
    if (i < size / 2) out[dataAt + i] = (i % 7) * 3 + ((i >> 9) & 1);
    else { x = (x * 1103515245 + 12345) >>> 0; out[dataAt + i] = x >>> 24; }
  }
  if (withNote) out.set(note, noteAt);
  return out;
}

const le32 = (v: number): Uint8Array => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v >>> 0, true); return b; };
const cat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

/** Compresses as Linux's Makefile.lib does (size_append after all but gzip). */
function compress(kind: KernelCompression, data: Uint8Array): Uint8Array {
  if (kind === 'gzip') return gzipSync(data, { level: 9 });
  const argv: Record<string, [string, string[]]> = {
    lz4: ['lz4', ['-l', '-9', '-c']],
    zstd: ['zstd', ['-19', '-c', '-q']],
    bzip2: ['bzip2', ['-9', '-c']],
    xz: ['xz', ['--format=xz', '--check=crc32', '-c']],
    lzma: ['xz', ['--format=lzma', '-c']],
  };
  const [cmd, args] = argv[kind]!;
  return cat(new Uint8Array(execFileSync(cmd, args, { input: data, maxBuffer: 64 << 20 })), le32(data.length));
}

/** A bzImage: boot sector and setup (setup_sects + 1 sectors), then the payload, as arch/x86/boot/tools/build.c lays it out. */
function bzImage(payload: Uint8Array, o: { version?: number; setupSects?: number; payloadOffset?: number; payloadLength?: number } = {}): Uint8Array {
  const setupSects = o.setupSects ?? 2;
  const pmStart = ((setupSects || 4) + 1) * 512;
  const payloadOffset = o.payloadOffset ?? 0x80;
  const out = new Uint8Array(pmStart + payloadOffset + payload.length + 16);
  const dv = new DataView(out.buffer);
  SetupHeader.write(dv, 0, {
    setup_sects: setupSects, boot_flag: 0xaa55, header: SETUP_HDR_MAGIC, version: o.version ?? 0x020f, loadflags: 1,
    payload_offset: payloadOffset, payload_length: o.payloadLength ?? payload.length, init_size: 0,
  });
  out.set(payload, pmStart + payloadOffset);
  return out;
}

const haveTool = (t: import('node:test').TestContext, cmd: string, pkg: string): boolean =>
  havePeer(t, which(cmd) !== null, `${cmd}, to make a test payload`, `apt-get install ${pkg}`);

function expectError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PvhLoadError, `not a PvhLoadError: ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

// ---------------------------------------------------------------------------

describe('LZ4 legacy (unlz4.ts)', () => {
  test('lz4 -l output of every shape decodes to its input, over several blocks', (t) => {
    if (!haveTool(t, 'lz4', 'lz4')) return;
    // 8 MiB blocks: 9 MiB of input makes two.
    const big = new Uint8Array(9 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff ^ (i >> 13);
    for (const data of [pvhElf(), big, new Uint8Array(1), new Uint8Array(100000)]) {
      const z = new Uint8Array(execFileSync('lz4', ['-l', '-c'], { input: data, maxBuffer: 64 << 20 }));
      assert.deepEqual(Buffer.from(unlz4Legacy(z, data.length)), Buffer.from(data));
    }
  });

  test('hand-made block: literals, an overlapping match, the literal-only last sequence', () => {
    // token 0x21: 2 literals "ab", offset 2, match length 1+4 -> "ababab a" ...; then token 0x10: 1 literal "!"
    const block = Uint8Array.from([0x21, 0x61, 0x62, 0x02, 0x00, 0x10, 0x21]);
    const out = new Uint8Array(8);
    assert.equal(lz4DecodeBlock(block, out, 0, 8), 8);
    assert.equal(new TextDecoder().decode(out), 'abababa!');
  });

  test('malformed streams are Lz4Errors, never reads or writes out of bounds', () => {
    const magic = le32(LZ4_LEGACY_MAGIC);
    const stream = (block: number[]) => cat(magic, le32(block.length), Uint8Array.from(block));
    assert.throws(() => unlz4Legacy(Uint8Array.from([1, 2, 3, 4]), 1), Lz4Error);
    assert.throws(() => unlz4Legacy(cat(magic, le32(100), new Uint8Array(10)), 10), /overruns/);
    assert.throws(() => unlz4Legacy(stream([0x00, 0x05, 0x00]), 10), /reaches before/); // match before any output
    assert.throws(() => unlz4Legacy(stream([0xf0]), 10), /literal length/);
    assert.throws(() => unlz4Legacy(stream([0x50, 1, 2]), 10), /overruns the block/);
    assert.throws(() => unlz4Legacy(stream([0x30, 1, 2, 3]), 2), /expands beyond/); // more output than the recorded size
    assert.throws(() => unlz4Legacy(stream([0x10, 1]), 2), /expands to 1 bytes, 2 expected/);
    assert.throws(() => unlz4Legacy(cat(stream([0x10, 1]), Uint8Array.from([9, 9])), 1), /stray bytes/);
  });
});

describe('bzImage (bzimage.ts)', () => {
  const elf = pvhElf();
  const supported: [KernelCompression, string, string][] = [
    ['gzip', 'gzip', 'gzip'], ['lz4', 'lz4', 'lz4'], ['zstd', 'zstd', 'zstd'], ['bzip2', 'bzip2', 'bzip2'],
  ];
  for (const [kind, tool, pkg] of supported) {
    test(`a ${kind} payload loads exactly as the ELF inside it`, (t) => {
      if (!haveTool(t, tool, pkg)) return;
      const file = bzImage(compress(kind, elf));
      assert.ok(isBzImage(file));
      const bz = parseBzImage(file);
      assert.equal(bz.compression, kind);
      assert.equal(bz.version, 0x020f);
      assert.deepEqual(Buffer.from(decompressBzImage(bz)), Buffer.from(elf));
      const k = parsePvhKernel(file);
      assert.equal(k.format, `bzImage/${kind}`);
      const plain = parsePvhElf(elf);
      assert.equal(k.phys32Entry, plain.phys32Entry);
      assert.deepEqual(k.segments, plain.segments);
      // Loaded into RAM, byte for byte the same as the plain ELF.
      const mem = 8 << 20;
      const a = new Uint8Array(mem);
      const b = new Uint8Array(mem);
      const ra = loadPvh(a, k, { memmap: buildPvhE820(mem), cmdline: 'x' });
      const rb = loadPvh(b, plain, { memmap: buildPvhE820(mem), cmdline: 'x' });
      assert.deepEqual(ra, rb);
      assert.ok(Buffer.from(a).equals(Buffer.from(b)));
    });
  }

  test('setup_sects 0 means 4 sectors of setup', () => {
    const file = bzImage(compress('gzip', elf), { setupSects: 0 });
    assert.equal(parseBzImage(file).payloadStart, 5 * 512 + 0x80);
    assert.equal(parsePvhKernel(file).format, 'bzImage/gzip');
  });

  test('the plain ELF still loads, and says so', () => {
    assert.equal(parsePvhKernel(elf).format, 'elf');
  });

  test('a bzImage without XEN_ELFNOTE_PHYS32_ENTRY is refused as not PVH-bootable', () => {
    expectError(() => parsePvhKernel(bzImage(compress('gzip', pvhElf({ entryNote: false })))),
      /^bzImage\/gzip: not PVH-bootable: .*XEN_ELFNOTE_PHYS32_ENTRY.*CONFIG_XEN_PVH/);
  });

  test('xz, lzma and LZO payloads are refused by name; an unknown one by its bytes', (t) => {
    if (!haveTool(t, 'xz', 'xz-utils')) return;
    expectError(() => parsePvhKernel(bzImage(compress('xz', elf))), /bzImage xz payload: xz kernels are not supported/);
    expectError(() => parsePvhKernel(bzImage(compress('lzma', elf))), /bzImage lzma payload: lzma kernels are not supported/);
    expectError(() => parsePvhKernel(bzImage(cat(Uint8Array.from([0x89, 0x4c, 0x5a, 0x4f, 0, 1, 2, 3]), le32(10)))), /lzo kernels are not supported/);
    expectError(() => parsePvhKernel(bzImage(Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]))), /unknown compression format \(first bytes 01 02 03 04 05 06\)/);
  });

  test('malformed bzImages: each a clear PvhLoadError', () => {
    const gz = compress('gzip', elf);
    expectError(() => parsePvhKernel(bzImage(gz, { version: BOOT_PROTOCOL_MIN - 1 })), /boot protocol 2\.07 is too old/);
    expectError(() => parsePvhKernel(bzImage(gz, { payloadLength: gz.length + 100 })), /lies outside the/);
    expectError(() => parsePvhKernel(bzImage(gz, { payloadLength: 3 })), /lies outside the/);
    // A corrupt stream, and one whose recorded size is a lie.
    const bad = gz.slice();
    bad.fill(0x55, 20, 200);
    expectError(() => parsePvhKernel(bzImage(bad)), /bzImage gzip payload is corrupt/);
    const lz = compress('lz4', elf);
    new DataView(lz.buffer, lz.byteOffset).setUint32(lz.length - 4, elf.length + 1, true);
    expectError(() => parsePvhKernel(bzImage(lz)), /expands to .* bytes, .* expected|expands to/);
    new DataView(lz.buffer, lz.byteOffset).setUint32(lz.length - 4, 0x7fffffff, true);
    expectError(() => parsePvhKernel(bzImage(lz)), /claims to expand to 2147483647 bytes/);
    const zs = compress('zstd', elf);
    new DataView(zs.buffer, zs.byteOffset).setUint32(zs.length - 4, elf.length - 1, true);
    expectError(() => parsePvhKernel(bzImage(zs)), /bzImage zstd payload (is corrupt|expands)/);
    // Neither an ELF nor a bzImage.
    expectError(() => parsePvhKernel(new Uint8Array(4096)), /^neither an ELF kernel nor a bzImage/);
  });

  test('a ramdisk as the builder passes it is start_info module 0, without a command line (as libxl)', () => {
    const mem = 8 << 20;
    const ram = new Uint8Array(mem);
    const initrd = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff);
    const r = loadPvh(ram, parsePvhKernel(bzImage(compress('gzip', elf))), { memmap: buildPvhE820(mem), modules: [{ data: initrd }], cmdline: 'console=hvc0' });
    const dv = new DataView(ram.buffer);
    const si = HvmStartInfo.read(dv, r.startInfoGpa);
    assert.equal(si.nr_modules, 1);
    const m = HvmModlistEntry.read(dv, Number(si.modlist_paddr));
    assert.equal(Number(m.size), initrd.length);
    assert.equal(m.cmdline_paddr, 0n);
    assert.deepEqual(ram.subarray(Number(m.paddr), Number(m.paddr) + initrd.length), initrd);
  });
});

test("Debian's cloud vmlinuz (an LZ4 legacy bzImage) loads as a PVH kernel: its payload is the ELF lz4 extracts", (t) => {
  const vmlinuz = join(root, '.cache/linux/vmlinuz');
  const vmlinux = join(root, '.cache/linux/vmlinux');
  if (!havePeer(t, existsSync(vmlinuz) && existsSync(vmlinux), "Debian's cloud kernel in .cache/linux", 'scripts/fetch-linux.sh')) return;
  const file = readFileSync(vmlinuz);
  const t0 = performance.now();
  const k = parsePvhKernel(file);
  const ms = performance.now() - t0;
  assert.equal(k.format, 'bzImage/lz4');
  assert.equal(k.bits, 64);
  assert.equal(k.guestOs, 'linux');
  assert.ok(Buffer.from(k.bytes).equals(readFileSync(vmlinux)), 'the decompressed payload is the ELF lz4 -d gives');
  assert.equal(k.phys32Entry, parsePvhElf(readFileSync(vmlinux)).phys32Entry);
  t.diagnostic(`${file.length}-byte bzImage -> ${k.bytes.length}-byte ELF in ${ms.toFixed(0)} ms, PHYS32_ENTRY 0x${k.phys32Entry.toString(16)}`);
});
