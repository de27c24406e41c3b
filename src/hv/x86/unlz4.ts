// LZ4 "legacy" frames, the format Linux compresses its kernel with for
// CONFIG_KERNEL_LZ4 (`lz4 -l`, lib/decompress_unlz4.c; Xen's
// xen/common/unlz4.c and lz4/decompress.c): the magic 0x184C2102, then blocks
// of a little-endian 32-bit compressed size and an LZ4 block that expands to
// at most 8 MiB. Blocks are independent (no match reaches into the block
// before). The magic may appear again between blocks (concatenated streams).
//
// Every length comes from the input and is checked before it is used: a
// malformed stream is an Lz4Error, never an out-of-bounds access or an output
// larger than the caller's limit.

export class Lz4Error extends Error {
  override name = 'Lz4Error';
}

/** ARCHIVE_MAGICNUMBER of lib/decompress_unlz4.c. */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
/** LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE: the most one legacy block expands to. */
export const LZ4_LEGACY_BLOCK_MAX = 8 << 20;
const MIN_MATCH = 4;

/**
 * Decodes one LZ4 block `src` into `dst` from `at`, writing at most `limit`
 * bytes; returns how many were written.
 */
export function lz4DecodeBlock(src: Uint8Array, dst: Uint8Array, at: number, limit: number): number {
  const end = Math.min(dst.length, at + limit);
  let ip = 0;
  let op = at;
  for (;;) {
    if (ip >= src.length) throw new Lz4Error('block ends inside a sequence token');
    const token = src[ip++]!;
    let lit = token >> 4;
    if (lit === 15) {
      for (;;) {
        if (ip >= src.length) throw new Lz4Error('block ends inside a literal length');
        const b = src[ip++]!;
        lit += b;
        if (b !== 255) break;
      }
    }
    if (ip + lit > src.length) throw new Lz4Error(`literal run of ${lit} bytes overruns the block`);
    if (op + lit > end) throw new Lz4Error(`block expands beyond ${limit} bytes`);
    // Short runs by hand: a subarray and a set cost more than the copy.
    if (lit < 32) for (let i = 0; i < lit; i++) dst[op++] = src[ip++]!;
    else {
      dst.set(src.subarray(ip, ip + lit), op);
      ip += lit;
      op += lit;
    }
    // The last sequence has literals only and ends the block.
    if (ip === src.length) return op - at;
    if (ip + 2 > src.length) throw new Lz4Error('block ends inside a match offset');
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || offset > op - at) throw new Lz4Error(`match offset ${offset} reaches before the block's output`);
    let len = token & 15;
    if (len === 15) {
      for (;;) {
        if (ip >= src.length) throw new Lz4Error('block ends inside a match length');
        const b = src[ip++]!;
        len += b;
        if (b !== 255) break;
      }
    }
    len += MIN_MATCH;
    if (op + len > end) throw new Lz4Error(`block expands beyond ${limit} bytes`);
    let from = op - offset;
    if (offset >= len && len >= 32) {
      dst.copyWithin(op, from, from + len);
      op += len;
    } else {
      // Short or overlapping (the match repeats the last `offset` bytes): byte by byte, as the format means.
      for (let i = 0; i < len; i++) dst[op++] = dst[from++]!;
    }
  }
}

const le32 = (b: Uint8Array, at: number): number => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;

/** Decodes a legacy stream that must expand to exactly `size` bytes. */
export function unlz4Legacy(input: Uint8Array, size: number): Uint8Array {
  if (input.length < 4 || le32(input, 0) !== LZ4_LEGACY_MAGIC) throw new Lz4Error('not an LZ4 legacy stream (no magic 0x184c2102)');
  const out = new Uint8Array(size);
  let ip = 4;
  let op = 0;
  while (ip < input.length) {
    if (ip + 4 > input.length) throw new Lz4Error(`${input.length - ip} stray bytes after the last block`);
    const chunk = le32(input, ip);
    ip += 4;
    if (chunk === LZ4_LEGACY_MAGIC) continue;
    if (chunk === 0 || ip + chunk > input.length) throw new Lz4Error(`block of ${chunk} bytes at offset ${ip - 4} overruns the ${input.length}-byte stream`);
    op += lz4DecodeBlock(input.subarray(ip, ip + chunk), out, op, Math.min(LZ4_LEGACY_BLOCK_MAX, size - op));
    ip += chunk;
  }
  if (op !== size) throw new Lz4Error(`stream expands to ${op} bytes, ${size} expected`);
  return out;
}
