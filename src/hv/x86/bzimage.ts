// Linux bzImage kernels for PVH, as libxenguest's bzImage loader takes them
// (tools/libs/guest/xg_dom_bzimageloader.c): the boot protocol's setup header
// (Documentation/arch/x86/boot.rst) names a compressed payload, the payload's
// first bytes name its compressor, and the decompressed payload is the ELF
// vmlinux, loaded as any PVH ELF is (pvh.ts). A bzImage is PVH-bootable only
// if that ELF carries XEN_ELFNOTE_PHYS32_ENTRY (CONFIG_XEN_PVH).
//
// Compressors, probed in Xen's order: gzip (node:zlib), bzip2 (seek-bzip),
// xz (unxz.ts: the .xz container with the x86 BCJ filter and LZMA2, as
// scripts/xz_wrap.sh makes it), lzma (lzma.ts: the legacy .lzma file), LZO
// (not supported: a clear error), LZ4 legacy (unlz4.ts), zstd (fzstd). Linux
// appends the decompressed size as a little-endian 32-bit word after every
// payload but gzip's (whose trailer ends with it anyway); the output must be
// exactly that long, and no longer than XC_DOM_DECOMPRESS_MAX. The
// decompressors of our own write into a buffer of that size and refuse
// output past it.

import { createRequire } from 'node:module';
import { gunzipSync } from 'node:zlib';
import { struct } from '../abi/layout.js';
import { PvhLoadError, parsePvhElf, type PvhImage } from './pvh.js';
import { unlz4Legacy } from './unlz4.js';
import { unlzmaAlone } from './lzma.js';
import { unxz } from './unxz.js';

/**
 * struct setup_header (arch/x86/include/uapi/asm/bootparam.h), offsets from
 * the start of the file (the header sits at 0x1f1 of the boot sector), up to
 * kernel_info_offset (protocol 2.15).
 */
export const SetupHeader = struct('setup_header', 0x26c, {
  setup_sects: [0x1f1, 'u8'],
  boot_flag: [0x1fe, 'u16'],
  header: [0x202, 'u32'],
  version: [0x206, 'u16'],
  loadflags: [0x211, 'u8'],
  payload_offset: [0x248, 'u32'],
  payload_length: [0x24c, 'u32'],
  init_size: [0x260, 'u32'],
});
/** "HdrS" (boot.rst). */
export const SETUP_HDR_MAGIC = 0x53726448;
/** payload_offset/payload_length exist from boot protocol 2.08 (xg_dom_bzimageloader's check). */
export const BOOT_PROTOCOL_MIN = 0x0208;
/** setup_sects 0 means 4 (boot.rst). */
const SETUP_SECTS_DEFAULT = 4;
/** XC_DOM_DECOMPRESS_MAX (xenguest.h): the most a kernel may decompress to. */
export const DECOMPRESS_MAX = 1 << 30;

export type KernelCompression = 'gzip' | 'bzip2' | 'xz' | 'lzma' | 'lzo' | 'lz4' | 'zstd';

/** Payload magics in the order xc_dom_probe_bzimage_kernel tries them. */
const MAGICS: readonly [KernelCompression, readonly number[]][] = [
  ['gzip', [0x1f, 0x8b]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['lzma', [0x5d, 0x00]],
  ['lzo', [0x89, 0x4c, 0x5a, 0x4f, 0x00]],
  ['lz4', [0x02, 0x21]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
];

export interface BzImage {
  /** Boot protocol version (0x020f = 2.15). */
  version: number;
  setupSects: number;
  /** File offset of the payload. */
  payloadStart: number;
  payloadLength: number;
  compression: KernelCompression;
  /** The compressed payload, a view of the file. */
  payload: Uint8Array;
}

const hex = (v: number): string => `0x${v.toString(16)}`;

/** True when `bytes` carries a boot-protocol setup header ("HdrS" at 0x202). */
export function isBzImage(bytes: Uint8Array): boolean {
  if (bytes.length < SetupHeader.size) return false;
  return SetupHeader.get(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0, 'header') === SETUP_HDR_MAGIC;
}

/** Reads the setup header and finds the payload; PvhLoadError for a malformed or too old bzImage. */
export function parseBzImage(bytes: Uint8Array): BzImage {
  if (!isBzImage(bytes)) throw new PvhLoadError('not a bzImage: no "HdrS" setup header at 0x202');
  const h = SetupHeader.read(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0);
  if (h.version < BOOT_PROTOCOL_MIN) {
    throw new PvhLoadError(`bzImage boot protocol ${h.version >> 8}.${String(h.version & 0xff).padStart(2, '0')} is too old: the payload is named from 2.08 on`);
  }
  const setupSects = h.setup_sects || SETUP_SECTS_DEFAULT;
  const payloadStart = (setupSects + 1) * 512 + h.payload_offset;
  if (h.payload_length < 4 || payloadStart + h.payload_length > bytes.length) {
    throw new PvhLoadError(`bzImage payload (offset ${hex(payloadStart)}, length ${hex(h.payload_length)}) lies outside the ${bytes.length}-byte file`);
  }
  const payload = bytes.subarray(payloadStart, payloadStart + h.payload_length);
  const found = MAGICS.find(([, m]) => m.every((b, i) => payload[i] === b));
  if (!found) {
    const first = Array.from(payload.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new PvhLoadError(`bzImage payload has an unknown compression format (first bytes ${first})`);
  }
  return { version: h.version, setupSects, payloadStart, payloadLength: h.payload_length, compression: found[0], payload };
}

const require = createRequire(import.meta.url);

/** A decompressor from npm, loaded when a kernel needs it. */
function library<T>(name: string, format: KernelCompression): T {
  try {
    return require(name) as T;
  } catch (e) {
    throw new PvhLoadError(`bzImage payload is ${format}-compressed and its decompressor (npm package ${name}) is not installed: run npm ci`, { cause: e });
  }
}

interface Fzstd {
  Decompress: new (ondata: (data: Uint8Array, final?: boolean) => unknown) => { push(chunk: Uint8Array, final?: boolean): unknown };
}

/** zstd through fzstd's stream decoder, so output past the recorded size is refused as it comes (no allocation a frame header asks for). */
function unzstd(stream: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  let ended = false;
  const d = new (library<Fzstd>('fzstd', 'zstd').Decompress)((data, final) => {
    if (at + data.length > size) throw new PvhLoadError(`bzImage zstd payload expands beyond the ${size} bytes recorded after it`);
    out.set(data, at);
    at += data.length;
    if (final) ended = true;
  });
  d.push(stream, true);
  if (!ended && at !== size) throw new PvhLoadError(`bzImage zstd payload ends after ${at} bytes, ${size} recorded after it`);
  return at === size ? out : out.subarray(0, at);
}

/** Decompresses the payload to the ELF it holds, of exactly the size Linux recorded after it. */
export function decompressBzImage(bz: BzImage): Uint8Array {
  const p = bz.payload;
  const size = new DataView(p.buffer, p.byteOffset + p.length - 4, 4).getUint32(0, true);
  const what = `bzImage ${bz.compression} payload`;
  if (size === 0 || size > DECOMPRESS_MAX) throw new PvhLoadError(`${what} claims to expand to ${size} bytes (limit ${DECOMPRESS_MAX})`);
  // Linux's size_append word follows every stream but gzip's.
  const stream = bz.compression === 'gzip' ? p : p.subarray(0, p.length - 4);
  let out: Uint8Array;
  try {
    switch (bz.compression) {
      case 'gzip':
        out = gunzipSync(stream, { maxOutputLength: size });
        break;
      case 'lz4':
        out = unlz4Legacy(stream, size);
        break;
      case 'zstd':
        out = unzstd(stream, size);
        break;
      case 'bzip2':
        out = library<{ decode(d: Uint8Array, out?: Uint8Array): Uint8Array }>('seek-bzip', 'bzip2').decode(Buffer.from(stream.buffer, stream.byteOffset, stream.length), Buffer.alloc(size));
        break;
      case 'xz':
        out = unxz(stream, size);
        break;
      case 'lzma':
        out = unlzmaAlone(stream, size);
        break;
      case 'lzo':
        throw new PvhLoadError(`${what}: ${bz.compression} kernels are not supported (rebuild with CONFIG_KERNEL_GZIP, CONFIG_KERNEL_LZ4, CONFIG_KERNEL_ZSTD, CONFIG_KERNEL_XZ, CONFIG_KERNEL_LZMA or CONFIG_KERNEL_BZIP2, or load the ELF vmlinux)`);
    }
  } catch (e) {
    if (e instanceof PvhLoadError) throw e;
    throw new PvhLoadError(`${what} is corrupt: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  if (out.length !== size) throw new PvhLoadError(`${what} expands to ${out.length} bytes, ${size} recorded after it`);
  return out;
}

export interface KernelImage extends PvhImage {
  /** How the kernel came: a plain ELF, or a bzImage with its compressor. */
  format: 'elf' | `bzImage/${KernelCompression}`;
}

/**
 * A PVH kernel as the builder takes it, an ELF or a bzImage holding one
 * (xc_dom_probe_bzimage_kernel before the ELF loader). PvhLoadError for
 * anything that is neither, or whose kernel cannot be entered through PVH.
 */
export function parsePvhKernel(bytes: Uint8Array): KernelImage {
  if (!isBzImage(bytes)) {
    try {
      return { ...parsePvhElf(bytes), format: 'elf' };
    } catch (e) {
      if (e instanceof PvhLoadError && e.reason === 'not-elf') throw new PvhLoadError(`neither an ELF kernel nor a bzImage (${e.message})`, { cause: e });
      throw e;
    }
  }
  const bz = parseBzImage(bytes);
  const elf = decompressBzImage(bz);
  const format = `bzImage/${bz.compression}` as const;
  try {
    return { ...parsePvhElf(elf), format };
  } catch (e) {
    if (!(e instanceof PvhLoadError)) throw e;
    if (e.reason === 'no-phys32-entry') {
      throw new PvhLoadError(`${format}: not PVH-bootable: its kernel has no XEN_ELFNOTE_PHYS32_ENTRY note (Linux needs CONFIG_XEN_PVH=y)`, { cause: e });
    }
    throw new PvhLoadError(`${format}: its kernel: ${e.message}`, { cause: e });
  }
}
