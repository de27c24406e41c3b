// A small ACPI Machine Language encoder: the few terms a domain's DSDT needs
// (ACPI 6.5, chapter 20, "ACPI Machine Language Specification"). Xen's
// libacpi writes its DSDT as ASL and compiles it with iasl at build time
// (mk_dsdt.c); we encode the same kind of terms directly.

const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const NAME_OP = 0x08;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const SCOPE_OP = 0x10;
const EXT_OP_PREFIX = 0x5b;
const PROCESSOR_OP = 0x83;
const ROOT_CHAR = 0x5c;
const ONES_OP = 0xff;

export type Aml = Uint8Array;

export function concat(...parts: Aml[]): Aml {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** A NameSeg: four characters of [A-Z0-9_], the first not a digit, padded with '_' (20.2.2). */
export function nameSeg(name: string): Aml {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(name)) throw new RangeError(`bad AML NameSeg '${name}'`);
  return Uint8Array.from(name.padEnd(4, '_'), (c) => c.charCodeAt(0));
}

/** A NameString: an optional root prefix and one NameSeg ("\\_SB", "PR00"). */
export function nameString(name: string): Aml {
  if (name.startsWith('\\')) return concat(Uint8Array.of(ROOT_CHAR), nameSeg(name.slice(1)));
  return nameSeg(name);
}

/**
 * PkgLength (20.2.4) for `n` bytes that follow it: one byte below 64, else a
 * lead byte holding the count of further bytes and the low nibble. The
 * encoded length counts the PkgLength itself.
 */
export function pkgLength(n: number): Aml {
  for (let extra = 0; extra <= 3; extra++) {
    const total = n + 1 + extra;
    if (extra === 0 && total < 0x40) return Uint8Array.of(total);
    if (extra > 0 && total < 1 << (4 + 8 * extra)) {
      const out = new Uint8Array(1 + extra);
      out[0] = (extra << 6) | (total & 0xf);
      for (let i = 0; i < extra; i++) out[1 + i] = (total >> (4 + 8 * i)) & 0xff;
      return out;
    }
  }
  throw new RangeError(`AML package of ${n} bytes is too long`);
}

/** An integer as the shortest ComputationalData (20.2.3). */
export function integer(v: number | bigint): Aml {
  const x = BigInt(v);
  if (x < 0n || x >= 1n << 64n) throw new RangeError(`AML integer ${v} out of range`);
  if (x === 0n) return Uint8Array.of(ZERO_OP);
  if (x === 1n) return Uint8Array.of(ONE_OP);
  if (x === (1n << 64n) - 1n) return Uint8Array.of(ONES_OP);
  const le = (prefix: number, bytes: number): Aml => {
    const out = new Uint8Array(1 + bytes);
    out[0] = prefix;
    for (let i = 0; i < bytes; i++) out[1 + i] = Number((x >> BigInt(8 * i)) & 0xffn);
    return out;
  };
  if (x < 0x100n) return le(BYTE_PREFIX, 1);
  if (x < 0x10000n) return le(WORD_PREFIX, 2);
  if (x < 0x100000000n) return le(DWORD_PREFIX, 4);
  return le(QWORD_PREFIX, 8);
}

/** A String: ASCII 0x01-0x7f, NUL-terminated. */
export function string(s: string): Aml {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 1 || c > 0x7f) throw new RangeError(`AML string ${JSON.stringify(s)} is not ASCII without NUL`);
  }
  return concat(Uint8Array.of(STRING_PREFIX), Uint8Array.from(s, (c) => c.charCodeAt(0)), Uint8Array.of(0));
}

/** Name(name, data) */
export function name(n: string, data: Aml): Aml {
  return concat(Uint8Array.of(NAME_OP), nameString(n), data);
}

/** Scope(name) { terms } */
export function scope(n: string, ...terms: Aml[]): Aml {
  const body = concat(nameString(n), ...terms);
  return concat(Uint8Array.of(SCOPE_OP), pkgLength(body.length), body);
}

/** Processor(name, id, pblkAddress, pblkLength) { terms } */
export function processor(n: string, id: number, pblkAddress: number, pblkLength: number, ...terms: Aml[]): Aml {
  if (!Number.isInteger(id) || id < 0 || id > 0xff) throw new RangeError(`processor id ${id}`);
  const pblk = new Uint8Array(5);
  new DataView(pblk.buffer).setUint32(0, pblkAddress >>> 0, true);
  pblk[4] = pblkLength & 0xff;
  const body = concat(nameString(n), Uint8Array.of(id), pblk, ...terms);
  return concat(Uint8Array.of(EXT_OP_PREFIX, PROCESSOR_OP), pkgLength(body.length), body);
}
