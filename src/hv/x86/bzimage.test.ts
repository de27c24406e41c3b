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
import { LZMA_ALONE_HEADER, LzmaDecoder, LzmaError, unlzma2, unlzmaAlone } from './lzma.js';
import { XzError, bcjX86Decode, crc32, crc64, unxz } from './unxz.js';
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

/** Linux's scripts/xz_wrap.sh options for an x86 kernel. */
const XZ_WRAP = ['--check=crc32', '--x86', '--lzma2=dict=32MiB'];

/** Compresses as Linux's Makefile.lib does (size_append after all but gzip). */
function compress(kind: KernelCompression, data: Uint8Array): Uint8Array {
  if (kind === 'gzip') return gzipSync(data, { level: 9 });
  const argv: Record<string, [string, string[]]> = {
    lz4: ['lz4', ['-l', '-9', '-c']],
    zstd: ['zstd', ['-19', '-c', '-q']],
    bzip2: ['bzip2', ['-9', '-c']],
    // scripts/xz_wrap.sh for x86, and Makefile.lib's cmd_lzma (`lzma -9`).
    xz: ['xz', ['--format=xz', ...XZ_WRAP, '-c']],
    lzma: ['xz', ['--format=lzma', '-9', '-c']],
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

const xz = (data: Uint8Array, args: string[]): Uint8Array => new Uint8Array(execFileSync('xz', [...args, '-c'], { input: data, maxBuffer: 256 << 20 }));

/** Where the index of a one-stream .xz file begins: its footer records the index size. */
const xzIndexAt = (z: Uint8Array): number => z.length - 12 - (new DataView(z.buffer, z.byteOffset).getUint32(z.length - 8, true) + 1) * 4;

function expectLzmaError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LzmaError, `not an LzmaError: ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

describe('xz and lzma (unxz.ts, lzma.ts)', () => {
  const elf = pvhElf();
  // Incompressible: LZMA2 stores it in uncompressed chunks.
  const noise = new Uint8Array(300000);
  for (let i = 0, x = 99; i < noise.length; i++) { x = (x * 1103515245 + 12345) >>> 0; noise[i] = x >>> 24; }

  test('checks: CRC32 and CRC64 of known strings', () => {
    const abc = new TextEncoder().encode('123456789');
    assert.equal(crc32(abc), 0xcbf43926);
    assert.equal(Buffer.from(crc64(abc)).readBigUInt64LE(), 0x995dc9bbdf1939fan);
    assert.equal(crc32(new Uint8Array(0)), 0);
  });

  test('xz output of every shape decodes to its input: filters, checks, presets, blocks, stored chunks', (t) => {
    if (!haveTool(t, 'xz', 'xz-utils')) return;
    const shapes: string[][] = [
      XZ_WRAP, ['--check=none'], ['--check=crc64'], ['--check=sha256'], ['--check=crc32', '-0'], ['--check=crc64', '--x86', '--lzma2=preset=9e'],
      ['--check=crc32', '--x86=start=4096', '--lzma2'],
      // Several blocks: one-threaded (sizes only in the index), and threaded (sizes in each block header too).
      [...XZ_WRAP, '--block-size=4096'], ['--check=crc64', '-T2', '--block-size=20000'],
      ['--lzma2=lc=0,lp=2,pb=4'], ['--lzma2=lc=4,lp=0,pb=0'],
    ];
    for (const data of [elf, noise, new Uint8Array(1), new Uint8Array(100000)]) {
      for (const args of shapes) {
        assert.deepEqual(Buffer.from(unxz(xz(data, args), data.length)), Buffer.from(data), args.join(' '));
      }
    }
  });

  test('concatenated streams with stream padding decode to the inputs one after the other', (t) => {
    if (!haveTool(t, 'xz', 'xz-utils')) return;
    const a = xz(elf, XZ_WRAP);
    const b = xz(noise, ['--check=crc64']);
    const both = cat(elf, noise);
    assert.deepEqual(Buffer.from(unxz(cat(a, b), both.length)), Buffer.from(both));
    assert.deepEqual(Buffer.from(unxz(cat(a, new Uint8Array(8), b, new Uint8Array(4)), both.length)), Buffer.from(both));
    expectLzmaError(() => unxz(cat(a, new Uint8Array(3), b), both.length), /3 bytes of stream padding \(not a multiple of 4\)/);
    expectLzmaError(() => unxz(cat(a, Uint8Array.from([1, 2, 3, 4])), elf.length), /xz stream 1: .*(too few|no stream header magic)/);
  });

  test('lzma (.lzma alone) of every shape decodes to its input', (t) => {
    if (!haveTool(t, 'xz', 'xz-utils')) return;
    for (const data of [elf, noise, new Uint8Array(1), new Uint8Array(100000)]) {
      for (const args of [['-9'], ['-0'], ['--lzma1=lc=0,lp=4,pb=4'], ['--lzma1=lc=4,lp=0,pb=0']]) {
        const z = xz(data, ['--format=lzma', ...args]);
        // xz writes an unknown size and an end marker.
        assert.equal(new DataView(z.buffer).getBigUint64(5, true), 0xffffffffffffffffn);
        assert.deepEqual(Buffer.from(unlzmaAlone(z, data.length)), Buffer.from(data), args.join(' '));
      }
    }
  });

  test('a .lzma header with the size (as the LZMA SDK writes it) decodes with or without an end marker', (t) => {
    if (!haveTool(t, 'xz', 'xz-utils')) return;
    // With the size recorded, the end marker xz wrote still follows.
    const z = xz(elf, ['--format=lzma', '-9']);
    new DataView(z.buffer).setBigUint64(5, BigInt(elf.length), true);
    assert.deepEqual(Buffer.from(unlzmaAlone(z, elf.length)), Buffer.from(elf));
    // A recorded size the caller does not expect.
    expectLzmaError(() => unlzmaAlone(z, elf.length + 1), /\.lzma header records 200724 bytes, not 200725/);
    // The same data with one byte more expected in the header: the end marker comes early.
    new DataView(z.buffer).setBigUint64(5, BigInt(elf.length + 1), true);
    expectLzmaError(() => unlzmaAlone(z, elf.length + 1), /\.lzma data: an end marker where none may be|ends early|expands/);
  });

  test('LZMA2 chunks by hand: stored chunks, and the control bytes it refuses', () => {
    const run = (bytes: number[], room = 16) => {
      const out = new Uint8Array(room);
      const r = unlzma2(Uint8Array.from(bytes), 0, bytes.length, out, 0, room, 'the room', new LzmaDecoder());
      return new TextDecoder().decode(out.subarray(0, r.outPos));
    };
    // 0x01: stored after a dictionary reset, 0x02: stored, sizes - 1 big-endian; 0x00 ends.
    assert.equal(run([0x01, 0x00, 0x02, 0x61, 0x62, 0x63, 0x02, 0x00, 0x00, 0x21, 0x00]), 'abc!');
    expectLzmaError(() => run([0x02, 0x00, 0x00, 0x61, 0x00]), /does not reset the dictionary/);
    expectLzmaError(() => run([0x01, 0x00, 0x00, 0x61, 0x03]), /control byte 0x3 is reserved/);
    // An LZMA chunk that resets only the state after a dictionary reset: no properties yet.
    expectLzmaError(() => run([0x01, 0x00, 0x00, 0x61, 0xa0, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 0, 0]), /carries no properties/);
    expectLzmaError(() => run([0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 0x00], 4), /stored chunk of 6 bytes expands beyond the room/);
    expectLzmaError(() => run([0x01, 0x00, 0x05, 1, 2]), /overruns the data/);
    expectLzmaError(() => run([0x01, 0x00, 0x00, 0x61]), /ends before its end byte/);
    // Properties lc=4 lp=1 (0x0d) are not LZMA2's.
    expectLzmaError(() => run([0xe0, 0x00, 0x00, 0x00, 0x04, 0x0d, 0, 0, 0, 0, 0, 0x00]), /lc \+ lp is more than 4/);
    // Range-coded data must start with a 0 byte.
    expectLzmaError(() => run([0xe0, 0x00, 0x00, 0x00, 0x04, 0x5d, 1, 0, 0, 0, 0, 0x00]), /does not start as range-coded data does/);
  });

  test('the x86 BCJ filter: a call made absolute is made relative again; the last 4 bytes are left alone', () => {
    // At offset 16: E8 with absolute target 0x1000 -> relative 0x1000 - (16 + 5).
    const buf = new Uint8Array(32);
    buf.set([0xe8, 0x00, 0x10, 0x00, 0x00], 16);
    buf.set([0xe8, 0x00, 0x10, 0x00], 28);
    bcjX86Decode(buf, 0, buf.length);
    assert.deepEqual([...buf.subarray(16, 21)], [0xe8, 0xeb, 0x0f, 0x00, 0x00]);
    assert.deepEqual([...buf.subarray(28)], [0xe8, 0x00, 0x10, 0x00]);
    // A top byte neither 00 nor ff: not a converted call.
    const other = Uint8Array.from([0xe8, 1, 2, 3, 4, 0, 0, 0, 0]);
    bcjX86Decode(other, 0, other.length);
    assert.deepEqual([...other], [0xe8, 1, 2, 3, 4, 0, 0, 0, 0]);
  });

  test('a wrong check, a wrong CRC or a wrong recorded size is an XzError', (t) => {
    if (!haveTool(t, 'xz', 'xz-utils')) return;
    const z32 = xz(elf, XZ_WRAP);
    const bad32 = z32.slice();
    bad32[xzIndexAt(bad32) - 1] ^= 1; // the block's CRC32, just before the index
    expectLzmaError(() => unxz(bad32, elf.length), /^block 0: CRC32 of its 200724 uncompressed bytes does not match$/);
    const z64 = xz(elf, ['--check=crc64']);
    const bad64 = z64.slice();
    bad64[xzIndexAt(bad64) - 8] ^= 0x80;
    expectLzmaError(() => unxz(bad64, elf.length), /^block 0: CRC64 of its 200724 uncompressed bytes does not match$/);
    const zsha = xz(elf, ['--check=sha256']);
    zsha[xzIndexAt(zsha) - 32] ^= 1;
    expectLzmaError(() => unxz(zsha, elf.length), /SHA-256 .* does not match/);
    const flags = z32.slice();
    flags[8] ^= 1; // the stream header's CRC32
    expectLzmaError(() => unxz(flags, elf.length), /stream header CRC32 does not match/);
    const header = z32.slice();
    header[12 + 2] ^= 1; // a byte of the block header
    expectLzmaError(() => unxz(header, elf.length), /xz block 0 header: CRC32 does not match/);
    const index = z32.slice();
    index[xzIndexAt(index) + 2] ^= 1; // the index's record
    expectLzmaError(() => unxz(index, elf.length), /index/);
    const footer = z32.slice();
    footer[footer.length - 2] ^= 1;
    expectLzmaError(() => unxz(footer, elf.length), /footer/);
    assert.throws(() => unxz(Uint8Array.from([1, 2, 3]), 1), XzError);
  });

  test('a payload that expands past the recorded size, or short of it, is refused; nothing past it is written', (t) => {
    if (!haveTool(t, 'xz', 'xz-utils')) return;
    for (const args of [XZ_WRAP, ['--check=none', '-T2', '--block-size=20000'], ['--check=none']]) {
      for (const data of [elf, noise]) {
        const z = xz(data, args);
        expectLzmaError(() => unxz(z, data.length - 1), /expands beyond|records .* beyond/);
        expectLzmaError(() => unxz(z, 1), /expands beyond|records .* beyond/);
        expectLzmaError(() => unxz(z, data.length + 1), /expands to .* bytes, .* expected/);
      }
    }
    for (const data of [elf, noise]) {
      const z = xz(data, ['--format=lzma', '-9']);
      expectLzmaError(() => unlzmaAlone(z, data.length - 1), /expands beyond the .* bytes expected/);
      expectLzmaError(() => unlzmaAlone(z, data.length + 1), /\.lzma data/);
    }
  });

  test('truncated, corrupted and unsupported input: an LzmaError each, in bounded time', { timeout: 60000 }, (t) => {
    if (!haveTool(t, 'xz', 'xz-utils')) return;
    const t0 = performance.now();
    const cases: [string, Uint8Array, (z: Uint8Array) => unknown][] = [
      ['xz', xz(elf, XZ_WRAP), (z) => unxz(z, elf.length)],
      ['xz, no check', xz(elf, ['--check=none']), (z) => unxz(z, elf.length)],
      ['lzma', xz(elf, ['--format=lzma', '-9']), (z) => unlzmaAlone(z, elf.length)],
    ];
    for (const [what, z, decode] of cases) {
      for (let n = 0; n < z.length; n += Math.max(1, Math.floor(z.length / 97))) {
        assert.throws(() => decode(z.subarray(0, n)), LzmaError, `${what} cut at ${n}`);
      }
      assert.throws(() => decode(z.subarray(0, z.length - 1)), LzmaError, `${what} less its last byte`);
      // A byte changed anywhere in the LZMA data: caught by the range decoder's end, a distance, a size or the check.
      let caught = 0;
      for (let at = 40; at < z.length - 60; at += 37) {
        const bad = z.slice();
        bad[at] ^= 0x5a;
        try {
          decode(bad);
        } catch (e) {
          assert.ok(e instanceof LzmaError, `${what} with byte ${at} changed: not an LzmaError: ${String(e)}`);
          caught++;
          continue;
        }
        // Only possible without a check; the output is then wrong.
        assert.equal(what, 'xz, no check', `${what} with byte ${at} changed decodes`);
      }
      assert.ok(caught > 0);
    }
    // A .lzma header: properties, dictionary size, size unknown; then range-coded data.
    const alone = (props: number) => cat(Uint8Array.from([props]), le32(1 << 20), new Uint8Array(8).fill(0xff), new Uint8Array(20));
    expectLzmaError(() => unlzmaAlone(alone(0xe1), 10), /properties byte 0xe1 is out of range/);
    // lc=4 lp=1 pb=0: props (0 * 5 + 1) * 9 + 4.
    expectLzmaError(() => unlzmaAlone(alone(13), 10), /lc=4 lp=1: lc \+ lp is more than 4/);
    expectLzmaError(() => unlzmaAlone(new Uint8Array(5), 10), /shorter than its header/);
    expectLzmaError(() => unxz(xz(elf, ['--check=crc32', '--delta=dist=4', '--lzma2']), elf.length), /delta filter is not supported/);
    expectLzmaError(() => unxz(xz(elf, ['--check=crc32', '--powerpc', '--lzma2']), elf.length), /PowerPC BCJ filter is not supported/);
    t.diagnostic(`${(performance.now() - t0).toFixed(0)} ms`);
  });
});

describe('bzImage (bzimage.ts)', () => {
  const elf = pvhElf();
  const supported: [KernelCompression, string, string][] = [
    ['gzip', 'gzip', 'gzip'], ['lz4', 'lz4', 'lz4'], ['zstd', 'zstd', 'zstd'], ['bzip2', 'bzip2', 'bzip2'],
    ['xz', 'xz', 'xz-utils'], ['lzma', 'xz', 'xz-utils'],
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

  test('an LZO payload is refused by name; an unknown one by its bytes', () => {
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
    const xzp = compress('xz', elf);
    new DataView(xzp.buffer, xzp.byteOffset).setUint32(xzp.length - 4, elf.length - 1, true);
    expectError(() => parsePvhKernel(bzImage(xzp)), /^bzImage xz payload is corrupt: .*expands beyond the 200723 bytes expected/);
    const lzp = compress('lzma', elf);
    lzp[LZMA_ALONE_HEADER + 100] ^= 0x10;
    expectError(() => parsePvhKernel(bzImage(lzp)), /^bzImage lzma payload is corrupt: \.lzma data/);
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
  t.diagnostic(`${file.length}-byte bzImage -> ${k.bytes.length}-byte ELF in ${ms.toFixed(0)} ms (${(k.bytes.length / 2 ** 20 / (ms / 1000)).toFixed(0)} MiB/s), PHYS32_ENTRY 0x${k.phys32Entry.toString(16)}`);
});

test("Debian's vmlinux xz-compressed as Linux's scripts/xz_wrap.sh does (x86 BCJ, LZMA2, CRC32) loads as the same PVH kernel", { timeout: 180000 }, (t) => {
  const vmlinux = join(root, '.cache/linux/vmlinux');
  if (!havePeer(t, existsSync(vmlinux), "Debian's cloud kernel in .cache/linux", 'scripts/fetch-linux.sh')) return;
  if (!haveTool(t, 'xz', 'xz-utils')) return;
  const elf = readFileSync(vmlinux);
  const file = bzImage(compress('xz', elf));
  const t0 = performance.now();
  const k = parsePvhKernel(file);
  const ms = performance.now() - t0;
  assert.equal(k.format, 'bzImage/xz');
  assert.ok(Buffer.from(k.bytes).equals(elf), 'the decompressed payload is the ELF');
  assert.equal(k.phys32Entry, parsePvhElf(elf).phys32Entry);
  t.diagnostic(`${file.length}-byte bzImage -> ${k.bytes.length}-byte ELF in ${ms.toFixed(0)} ms (${(k.bytes.length / 2 ** 20 / (ms / 1000)).toFixed(0)} MiB/s)`);
});
