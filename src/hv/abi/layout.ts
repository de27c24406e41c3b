// Typed accessors for structures that live in guest memory or in hypercall
// argument buffers. Each structure's layout is declared once (offset and type
// of every field, taken from Xen's public headers) and read or written through
// the Struct object, never through scattered numeric offsets.

export type FieldType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'u64' | 'i64';

/** Field spec: byte offset and type. u64/i64 read as bigint, the rest as number. */
export type FieldSpec = readonly [offset: number, type: FieldType];

type ValueOf<T extends FieldType> = T extends 'u64' | 'i64' ? bigint : number;

export type Fields = Record<string, FieldSpec>;
export type Values<F extends Fields> = { [K in keyof F]: ValueOf<F[K][1]> };

/** Bytes of each field type. */
export const FIELD_WIDTH: Record<FieldType, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, u64: 8, i64: 8 };

export function readField(dv: DataView, at: number, type: FieldType): number | bigint {
  switch (type) {
    case 'u8': return dv.getUint8(at);
    case 'i8': return dv.getInt8(at);
    case 'u16': return dv.getUint16(at, true);
    case 'i16': return dv.getInt16(at, true);
    case 'u32': return dv.getUint32(at, true);
    case 'i32': return dv.getInt32(at, true);
    case 'u64': return dv.getBigUint64(at, true);
    case 'i64': return dv.getBigInt64(at, true);
  }
}

export function writeField(dv: DataView, at: number, type: FieldType, v: number | bigint): void {
  switch (type) {
    case 'u8': dv.setUint8(at, Number(v)); return;
    case 'i8': dv.setInt8(at, Number(v)); return;
    case 'u16': dv.setUint16(at, Number(v), true); return;
    case 'i16': dv.setInt16(at, Number(v), true); return;
    case 'u32': dv.setUint32(at, Number(v) >>> 0, true); return;
    case 'i32': dv.setInt32(at, Number(v) | 0, true); return;
    case 'u64': dv.setBigUint64(at, BigInt.asUintN(64, BigInt(v)), true); return;
    case 'i64': dv.setBigInt64(at, BigInt.asIntN(64, BigInt(v)), true); return;
  }
}

/**
 * A C structure's layout. `size` is sizeof() in the named ABI; fields must lie
 * inside it (checked at definition time so a typo in a layout fails at load).
 */
export class Struct<F extends Fields> {
  constructor(readonly name: string, readonly size: number, readonly fields: F) {
    for (const [k, [off, t]] of Object.entries(fields)) {
      if (off < 0 || off + FIELD_WIDTH[t] > size) throw new Error(`${name}.${k} lies outside ${size} bytes`);
    }
  }

  get<K extends keyof F & string>(dv: DataView, base: number, field: K): ValueOf<F[K][1]> {
    const [off, t] = this.fields[field];
    return readField(dv, base + off, t) as ValueOf<F[K][1]>;
  }

  set<K extends keyof F & string>(dv: DataView, base: number, field: K, v: ValueOf<F[K][1]> | number): void {
    const [off, t] = this.fields[field];
    writeField(dv, base + off, t, v);
  }

  read(dv: DataView, base = 0): Values<F> {
    const out: Record<string, number | bigint> = {};
    for (const [k, [off, t]] of Object.entries(this.fields)) out[k] = readField(dv, base + off, t);
    return out as Values<F>;
  }

  /** Writes the given fields (others untouched). */
  write(dv: DataView, base: number, v: Partial<{ [K in keyof F]: ValueOf<F[K][1]> | number }>): void {
    for (const [k, val] of Object.entries(v)) {
      if (val === undefined) continue;
      const spec = this.fields[k];
      if (!spec) throw new Error(`${this.name} has no field ${k}`);
      writeField(dv, base + spec[0], spec[1], val as number | bigint);
    }
  }

  /** Reads a structure out of a byte array (e.g. a hypercall argument copied from the guest). */
  decode(bytes: Uint8Array): Values<F> {
    if (bytes.length < this.size) throw new RangeError(`${this.name}: ${bytes.length} < ${this.size} bytes`);
    return this.read(new DataView(bytes.buffer, bytes.byteOffset, this.size));
  }

  /** Builds the structure's bytes from field values (unlisted fields zero). */
  encode(v: Partial<{ [K in keyof F]: ValueOf<F[K][1]> | number }>): Uint8Array {
    const b = new Uint8Array(this.size);
    this.write(new DataView(b.buffer), 0, v);
    return b;
  }

  offsetOf(field: keyof F & string): number {
    return this.fields[field][0];
  }
}

export function struct<F extends Fields>(name: string, size: number, fields: F): Struct<F> {
  return new Struct(name, size, fields);
}

/** A structure whose layout differs between the 64-bit and 32-bit (compat) ABIs. */
export interface AbiPair<A extends Fields, B extends Fields = A> {
  readonly x64: Struct<A>;
  readonly x32: Struct<B>;
}

export function abiPair<A extends Fields, B extends Fields>(x64: Struct<A>, x32: Struct<B>): AbiPair<A, B> {
  return { x64, x32 };
}

/** The layout of a pair for the caller's ABI, loosely typed (field widths differ between ABIs). */
export function forAbi<A extends Fields, B extends Fields>(p: AbiPair<A, B>, x32: boolean): Struct<Fields> {
  return (x32 ? p.x32 : p.x64) as unknown as Struct<Fields>;
}
