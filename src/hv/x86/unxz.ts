// The .xz container (Lasse Collin's xz-file-format.txt, version 1.1.0; Linux's
// lib/xz/xz_dec_stream.c and xz_dec_bcj.c, Xen's xen/common/unxz.c), as
// Linux's scripts/xz_wrap.sh makes it for an x86 kernel:
// `xz --check=crc32 --x86 --lzma2=dict=32MiB`. A stream is a 12-byte header
// (magic, flags naming the check, CRC32), blocks, an index listing every
// block's sizes, and a 12-byte footer (CRC32, index size, the flags again,
// magic "YZ"). Each block is a header (its filter chain: here the x86 BCJ
// filter, then LZMA2, lzma.ts), the compressed data, zero padding to four
// bytes and the check of its uncompressed data. Streams may be concatenated,
// with zero padding in fours between and after them.
//
// Checks (the stream flags name one for every block): CRC32, CRC64 and
// SHA-256 (node:crypto) are verified, none has nothing to verify, and the IDs
// the format reserves are skipped by their size, as xz does. Every size
// the stream records (block header, index, footer) is compared with what was
// decoded; a mismatch, a bad CRC or an unsupported filter is an XzError,
// corrupt LZMA2 data an LzmaError, and nothing is written past the output
// size the caller gives.

import { createHash } from 'node:crypto';
import { LzmaDecoder, LzmaError, unlzma2 } from './lzma.js';

export class XzError extends LzmaError {
  override name = 'XzError';
}

/** Stream header magic (xz-file-format.txt 2.1.1.1): 0xfd "7zXZ" 0x00. */
export const XZ_MAGIC = Uint8Array.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
/** Stream footer magic (2.1.2.4): "YZ". */
const XZ_FOOTER_MAGIC = [0x59, 0x5a];
/** Stream header and footer are 12 bytes each (2.1.1, 2.1.2). */
const STREAM_HEADER_SIZE = 12;
const STREAM_FOOTER_SIZE = 12;
/** Check IDs (2.1.1.2). */
export const XZ_CHECK = { none: 0x00, crc32: 0x01, crc64: 0x04, sha256: 0x0a } as const;
/** Check IDs are 4 bits; the size of each, reserved ones included (3.4). */
const CHECK_ID_MAX = 0x0f;
const checkSize = (id: number): number => (id === 0 ? 0 : 4 << Math.floor((id - 1) / 3));
/** Block header flags (3.1.2): bits 0-1 the number of filters - 1, 6 compressed size present, 7 uncompressed size present, 2-5 reserved. */
const BLOCK_FILTERS_MASK = 0x03;
const BLOCK_COMPRESSED_SIZE = 0x40;
const BLOCK_UNCOMPRESSED_SIZE = 0x80;
const BLOCK_RESERVED = 0x3c;
/** Filter IDs (5.3): LZMA2 must be last; the branch converters may precede it. */
const FILTER_LZMA2 = 0x21;
const FILTER_X86 = 0x04;
const FILTER_NAMES: Record<number, string> = {
  0x03: 'delta', 0x04: 'x86 BCJ', 0x05: 'PowerPC BCJ', 0x06: 'IA-64 BCJ', 0x07: 'ARM BCJ', 0x08: 'ARM-Thumb BCJ',
  0x09: 'SPARC BCJ', 0x0a: 'ARM64 BCJ', 0x0b: 'RISC-V BCJ', 0x21: 'LZMA2',
};
/** LZMA2's one properties byte codes the dictionary size; 40 (4 GiB - 1) is the largest (5.3.1). */
const LZMA2_DICT_PROPS_MAX = 40;
/** A variable-length integer is at most 9 bytes of 7 bits (1.2). */
const VLI_BYTES_MAX = 9;

const hex = (v: number): string => `0x${v.toString(16)}`;
const le32 = (b: Uint8Array, at: number): number => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;

// ---------------------------------------------------------------------------
// Checks.

/** CRC-32 (IEEE 802.3, reflected 0xedb88320): the container's own CRCs and check ID 1. Slicing by four. */
const CRC32_TABLES = (() => {
  const t = new Uint32Array(4 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) for (let k = 1; k < 4; k++) t[k * 256 + n] = (t[(k - 1) * 256 + n]! >>> 8) ^ t[t[(k - 1) * 256 + n]! & 0xff]!;
  return t;
})();

export function crc32(b: Uint8Array, start = 0, end = b.length): number {
  const t = CRC32_TABLES;
  let c = ~0;
  let i = start;
  for (const stop = end - 3; i < stop; i += 4) {
    c ^= b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);
    c = t[768 + (c & 0xff)]! ^ t[512 + ((c >>> 8) & 0xff)]! ^ t[256 + ((c >>> 16) & 0xff)]! ^ t[c >>> 24]!;
  }
  for (; i < end; i++) c = t[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC-64 (ECMA-182, reflected 0xc96c5795d7870f42): check ID 4, in two 32-bit halves. */
const CRC64_POLY_HI = 0xc96c5795;
const CRC64_POLY_LO = 0xd7870f42;
const CRC64_TABLES = (() => {
  const hi = new Uint32Array(256);
  const lo = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let h = 0;
    let l = n;
    for (let k = 0; k < 8; k++) {
      const low = l & 1;
      l = ((l >>> 1) | (h << 31)) >>> 0;
      h >>>= 1;
      if (low) { l = (l ^ CRC64_POLY_LO) >>> 0; h = (h ^ CRC64_POLY_HI) >>> 0; }
    }
    hi[n] = h;
    lo[n] = l;
  }
  return { hi, lo };
})();

/** CRC-64 of `b[start..end)`, as the 8 bytes xz stores it (little-endian). */
export function crc64(b: Uint8Array, start = 0, end = b.length): Uint8Array {
  const { hi: th, lo: tl } = CRC64_TABLES;
  let h = ~0;
  let l = ~0;
  for (let i = start; i < end; i++) {
    const x = (l ^ b[i]!) & 0xff;
    l = ((l >>> 8) | (h << 24)) ^ tl[x]!;
    h = (h >>> 8) ^ th[x]!;
  }
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, ~l >>> 0, true);
  dv.setUint32(4, ~h >>> 0, true);
  return out;
}

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((v, i) => v === b[i]);

/** Verifies block data `out[start..end)` against the check at `input[at..)`; XzError on a mismatch. */
function verifyCheck(id: number, out: Uint8Array, start: number, end: number, input: Uint8Array, at: number, block: number): void {
  const stored = input.subarray(at, at + checkSize(id));
  let computed: Uint8Array;
  let name: string;
  switch (id) {
    case XZ_CHECK.none: return;
    case XZ_CHECK.crc32: {
      name = 'CRC32';
      computed = new Uint8Array(4);
      new DataView(computed.buffer).setUint32(0, crc32(out, start, end), true);
      break;
    }
    case XZ_CHECK.crc64:
      name = 'CRC64';
      computed = crc64(out, start, end);
      break;
    case XZ_CHECK.sha256:
      name = 'SHA-256';
      computed = createHash('sha256').update(out.subarray(start, end)).digest();
      break;
    default:
      return; // Reserved IDs: xz decodes them unverified.
  }
  if (!equal(stored, computed)) throw new XzError(`block ${block}: ${name} of its ${end - start} uncompressed bytes does not match`);
}

// ---------------------------------------------------------------------------
// The x86 BCJ filter (xz-file-format.txt 5.3.3; the converter of the LZMA
// SDK's Bra86.c, as xz_dec_bcj.c decodes it): in the encoder, the rel32 of
// every E8 (call) / E9 (jmp) whose top byte is 00 or ff became absolute; the
// decoder makes it relative again. A few bytes before an E8/E9 that was
// itself converted, or that looked like one, change the test (prevMask).

/** prevMask values after which a candidate is converted, and which byte of it is then tested. */
const X86_MASK_ALLOWED = [true, true, true, false, true, false, false, false];
const X86_MASK_BIT_NUM = [0, 1, 2, 2, 3, 3, 3, 3];
/** The converter leaves the last 4 bytes: an opcode there has no whole operand. */
const X86_LOOKAHEAD = 4;

const isMsByte = (b: number): boolean => b === 0x00 || b === 0xff;

/**
 * Undoes the x86 BCJ filter on `buf[start..end)` in place, the block's data
 * at offset `startOffset` (the filter's property; 0 by default).
 */
export function bcjX86Decode(buf: Uint8Array, start: number, end: number, startOffset = 0): void {
  if (end - start <= X86_LOOKAHEAD) return;
  const stop = end - X86_LOOKAHEAD;
  let prevMask = 0;
  let prevPos = start - 1;
  for (let i = start; i < stop; i++) {
    while ((buf[i]! & 0xfe) !== 0xe8) if (++i >= stop) return;
    const gap = i - prevPos;
    if (gap > 3) prevMask = 0;
    else {
      prevMask = (prevMask << (gap - 1)) & 7;
      if (prevMask !== 0 && (!X86_MASK_ALLOWED[prevMask] || isMsByte(buf[i + 4 - X86_MASK_BIT_NUM[prevMask]!]!))) {
        prevPos = i;
        prevMask = (prevMask << 1) | 1;
        continue;
      }
    }
    prevPos = i;
    if (!isMsByte(buf[i + 4]!)) {
      prevMask = (prevMask << 1) | 1;
      continue;
    }
    let src = buf[i + 1]! | (buf[i + 2]! << 8) | (buf[i + 3]! << 16) | (buf[i + 4]! << 24);
    const pc = (startOffset + (i - start) + 5) | 0;
    let dest: number;
    for (;;) {
      dest = (src - pc) | 0;
      if (prevMask === 0) break;
      const j = X86_MASK_BIT_NUM[prevMask]! * 8;
      if (!isMsByte((dest >>> (24 - j)) & 0xff)) break;
      src = dest ^ ((1 << (32 - j)) - 1);
    }
    // Bits 0-24 kept, bit 24 extended through the top byte.
    dest &= 0x01ffffff;
    if (dest & 0x01000000) dest |= 0xfe000000;
    buf[i + 1] = dest;
    buf[i + 2] = dest >>> 8;
    buf[i + 3] = dest >>> 16;
    buf[i + 4] = dest >>> 24;
    i += 4;
  }
}

// ---------------------------------------------------------------------------
// The container.

/** A cursor over a region of the input, for headers and the index. */
class Reader {
  constructor(readonly b: Uint8Array, public at: number, readonly end: number, readonly what: string) {}

  byte(): number {
    if (this.at >= this.end) throw new XzError(`${this.what} ends early`);
    return this.b[this.at++]!;
  }

  /** A variable-length integer (1.2): 7 bits a byte, low first, no needless trailing zero byte. */
  vli(name: string): number {
    let v = 0;
    for (let k = 0; k < VLI_BYTES_MAX; k++) {
      const b = this.byte();
      v += (b & 0x7f) * 2 ** (7 * k);
      if (!(b & 0x80)) {
        if (b === 0 && k > 0) throw new XzError(`${this.what}: ${name} is not minimally encoded`);
        if (v > Number.MAX_SAFE_INTEGER) throw new XzError(`${this.what}: ${name} is too large`);
        return v;
      }
    }
    throw new XzError(`${this.what}: ${name} runs past ${VLI_BYTES_MAX} bytes`);
  }

  zeros(to: number, name: string): void {
    if (to > this.end) throw new XzError(`${this.what} ends early`);
    for (; this.at < to; this.at++) if (this.b[this.at] !== 0) throw new XzError(`${this.what}: ${name} is not zero`);
  }
}

/** Stream flags (2.1.1.2): a zero byte, then the check ID in the low 4 bits. Returns the check ID. */
function streamFlags(b: Uint8Array, at: number, what: string): number {
  if (b[at] !== 0 || (b[at + 1]! & ~CHECK_ID_MAX) !== 0) throw new XzError(`${what}: stream flags ${hex(b[at]!)} ${hex(b[at + 1]!)} have reserved bits set`);
  return b[at + 1]!;
}

interface Filter { id: number; startOffset: number }

/** Decodes one block header at `at` (3.1); returns its sizes, filters and where its data begins. */
function blockHeader(input: Uint8Array, at: number, n: number): { size: number; compressed: number; uncompressed: number; filters: Filter[] } {
  const what = `xz block ${n} header`;
  const size = (input[at]! + 1) * 4;
  if (at + size > input.length) throw new XzError(`${what} (${size} bytes) overruns the data`);
  if (crc32(input, at, at + size - 4) !== le32(input, at + size - 4)) throw new XzError(`${what}: CRC32 does not match`);
  const r = new Reader(input, at + 1, at + size - 4, what);
  const flags = r.byte();
  if (flags & BLOCK_RESERVED) throw new XzError(`${what}: flags ${hex(flags)} have reserved bits set`);
  const compressed = flags & BLOCK_COMPRESSED_SIZE ? r.vli('compressed size') : -1;
  const uncompressed = flags & BLOCK_UNCOMPRESSED_SIZE ? r.vli('uncompressed size') : -1;
  if (compressed === 0) throw new XzError(`${what}: compressed size 0`);
  const filters: Filter[] = [];
  const count = (flags & BLOCK_FILTERS_MASK) + 1;
  for (let k = 0; k < count; k++) {
    const id = r.vli('filter ID');
    const propsSize = r.vli('filter properties size');
    if (r.at + propsSize > r.end) throw new XzError(`${what}: filter properties overrun the header`);
    const props = input.subarray(r.at, r.at + propsSize);
    r.at += propsSize;
    const name = FILTER_NAMES[id] ?? `filter ${hex(id)}`;
    const last = k === count - 1;
    if (id === FILTER_LZMA2) {
      if (!last) throw new XzError(`${what}: LZMA2 is not the last filter`);
      if (propsSize !== 1 || (props[0]! & 0xc0) !== 0 || props[0]! > LZMA2_DICT_PROPS_MAX) throw new XzError(`${what}: LZMA2 properties are malformed`);
      filters.push({ id, startOffset: 0 });
    } else if (id === FILTER_X86) {
      if (last) throw new XzError(`${what}: the chain ends in x86 BCJ, not LZMA2`);
      if (propsSize !== 0 && propsSize !== 4) throw new XzError(`${what}: x86 BCJ properties are ${propsSize} bytes (0 or 4)`);
      filters.push({ id, startOffset: propsSize === 4 ? le32(props, 0) : 0 });
    } else {
      throw new XzError(`${what}: ${name} filter is not supported (only x86 BCJ and LZMA2, as Linux's xz_wrap.sh uses for x86)`);
    }
  }
  r.zeros(r.end, 'header padding');
  return { size, compressed, uncompressed, filters };
}

/**
 * Decodes an .xz file (one or more streams) that must expand to exactly
 * `size` bytes. LzmaError (XzError for the container) for anything malformed.
 */
export function unxz(input: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  const room = `the ${size} bytes expected`;
  const dec = new LzmaDecoder();
  let at = 0;
  let op = 0;
  let block = 0;
  for (let stream = 0; at < input.length; stream++) {
    if (stream > 0) {
      // Stream padding (2.2): zero bytes, a multiple of four, between or after streams.
      const from = at;
      while (at < input.length && input[at] === 0) at++;
      if ((at - from) % 4 !== 0) throw new XzError(`${at - from} bytes of stream padding (not a multiple of 4) after stream ${stream}`);
      if (at === input.length) break;
    }
    const what = `xz stream ${stream}`;
    const streamStart = at;
    if (input.length - at < STREAM_HEADER_SIZE + STREAM_FOOTER_SIZE) throw new XzError(`${what}: ${input.length - at} bytes are too few for a stream`);
    if (!XZ_MAGIC.every((v, k) => input[at + k] === v)) throw new XzError(`${what}: no stream header magic`);
    const check = streamFlags(input, at + 6, what);
    if (crc32(input, at + 6, at + 8) !== le32(input, at + 8)) throw new XzError(`${what}: stream header CRC32 does not match`);
    at += STREAM_HEADER_SIZE;
    const csize = checkSize(check);
    const records: number[] = [];
    for (;;) {
      if (at >= input.length) throw new XzError(`${what} ends before its index`);
      if (input[at] === 0) break; // The index indicator.
      const h = blockHeader(input, at, block);
      const dataStart = at + h.size;
      const blockOut = op;
      if (h.uncompressed >= 0 && op + h.uncompressed > size) throw new XzError(`xz block ${block} records ${h.uncompressed} uncompressed bytes, beyond ${room}`);
      const limit = h.uncompressed >= 0 ? op + h.uncompressed : size;
      const dataEnd = h.compressed >= 0 ? dataStart + h.compressed : input.length;
      if (dataEnd > input.length) throw new XzError(`xz block ${block} records ${h.compressed} compressed bytes, more than the data holds`);
      const r = unlzma2(input, dataStart, dataEnd, out, op, limit, h.uncompressed >= 0 ? `the block's ${h.uncompressed} bytes` : room, dec);
      const compressed = r.inPos - dataStart;
      if (h.compressed >= 0 && compressed !== h.compressed) throw new XzError(`xz block ${block}: its LZMA2 data ends after ${compressed} bytes, ${h.compressed} recorded`);
      if (h.uncompressed >= 0 && r.outPos - op !== h.uncompressed) throw new XzError(`xz block ${block} expands to ${r.outPos - op} bytes, ${h.uncompressed} recorded`);
      op = r.outPos;
      for (const f of h.filters) if (f.id === FILTER_X86) bcjX86Decode(out, blockOut, op, f.startOffset);
      const pad = new Reader(input, r.inPos, input.length, `xz block ${block}`);
      pad.zeros(r.inPos + ((4 - ((h.size + compressed) & 3)) & 3), 'block padding');
      if (pad.at + csize > input.length) throw new XzError(`xz block ${block} ends inside its check`);
      verifyCheck(check, out, blockOut, op, input, pad.at, block);
      at = pad.at + csize;
      records.push(h.size + compressed + csize, op - blockOut);
      block++;
    }
    // The index (4): the indicator, the number of records, each block's unpadded and uncompressed size, padding, CRC32.
    const indexStart = at;
    const ix = new Reader(input, at + 1, input.length, `${what} index`);
    const count = ix.vli('number of records');
    if (count !== records.length / 2) throw new XzError(`${what} index lists ${count} blocks, ${records.length / 2} decoded`);
    for (let k = 0; k < records.length; k += 2) {
      const unpadded = ix.vli('unpadded size');
      const uncompressed = ix.vli('uncompressed size');
      if (unpadded !== records[k] || uncompressed !== records[k + 1]) {
        throw new XzError(`${what} index records block ${k / 2} as ${unpadded} bytes expanding to ${uncompressed}, decoded ${records[k]} expanding to ${records[k + 1]}`);
      }
    }
    ix.zeros(ix.at + ((4 - ((ix.at - indexStart) & 3)) & 3), 'index padding');
    if (ix.at + 4 > input.length) throw new XzError(`${what} ends inside its index`);
    if (crc32(input, indexStart, ix.at) !== le32(input, ix.at)) throw new XzError(`${what} index CRC32 does not match`);
    at = ix.at + 4;
    const indexSize = at - indexStart;
    // The footer (2.1.2): CRC32 of what follows it, the index size in fours - 1, the flags again, "YZ".
    if (at + STREAM_FOOTER_SIZE > input.length) throw new XzError(`${what} ends before its footer`);
    if (crc32(input, at + 4, at + 10) !== le32(input, at)) throw new XzError(`${what} footer CRC32 does not match`);
    const backward = (le32(input, at + 4) + 1) * 4;
    if (backward !== indexSize) throw new XzError(`${what} footer records a ${backward}-byte index, ${indexSize} found`);
    if (streamFlags(input, at + 8, what) !== check || input[at + 8] !== input[streamStart + 6]) throw new XzError(`${what} footer's stream flags differ from its header's`);
    if (input[at + 10] !== XZ_FOOTER_MAGIC[0] || input[at + 11] !== XZ_FOOTER_MAGIC[1]) throw new XzError(`${what} footer has no "YZ" magic`);
    at += STREAM_FOOTER_SIZE;
  }
  if (op !== size) throw new XzError(`xz data expands to ${op} bytes, ${size} expected`);
  return out;
}
