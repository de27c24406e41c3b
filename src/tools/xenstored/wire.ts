// xs_wire framing: message types, error names, limits and an incremental
// frame parser. Numbers follow xen/io/xs_wire.h (plus the GET/SET_FEATURE and
// GET/SET_QUOTA types added after Xen 4.17).

export const XsType = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  // 20 was XS_RESTRICT, removed from the protocol.
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
  GET_FEATURE: 23,
  SET_FEATURE: 24,
  GET_QUOTA: 25,
  SET_QUOTA: 26,
} as const;
export type XsTypeName = keyof typeof XsType;
export const XS_TYPE_COUNT = 27;

const TYPE_NAMES: string[] = [];
for (const [k, v] of Object.entries(XsType)) TYPE_NAMES[v] = k;
export function typeName(t: number): string {
  return TYPE_NAMES[t] ?? `TYPE_${t}`;
}

/** Error names in the order of xsd_errors[] (the wire carries the name). */
export const XS_ERRORS = [
  'EINVAL', 'EACCES', 'EEXIST', 'EISDIR', 'ENOENT', 'ENOMEM', 'ENOSPC', 'EIO',
  'ENOTEMPTY', 'ENOSYS', 'EROFS', 'EBUSY', 'EAGAIN', 'EISCONN', 'E2BIG', 'EPERM',
] as const;
export type XsErrno = (typeof XS_ERRORS)[number];

/** An error that is reported to the client as an XS_ERROR reply. */
export class XsError extends Error {
  constructor(public readonly errno: XsErrno, detail?: string) {
    super(detail ? `${errno}: ${detail}` : errno);
    this.name = 'XsError';
  }
}

export const HEADER_SIZE = 16;
export const XENSTORE_PAYLOAD_MAX = 4096;
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

// Ring page layout (struct xenstore_domain_interface).
export const XENSTORE_RING_SIZE = 1024;
export const RING_REQ = 0;
export const RING_RSP = 1024;
export const RING_REQ_CONS = 2048;
export const RING_REQ_PROD = 2052;
export const RING_RSP_CONS = 2056;
export const RING_RSP_PROD = 2060;
export const RING_SERVER_FEATURES = 2064;
export const RING_CONNECTION = 2068;
export const RING_ERROR = 2072;
export const RING_EVTCHN_PORT = 2076;
export const RING_PAGE_SIZE = 4096;

export const FEATURE_RECONNECTION = 1;
export const FEATURE_ERROR = 2;
export const FEATURE_WATCH_DEPTH = 4;
export const XENSTORE_CONNECTED = 0;
export const XENSTORE_RECONNECT = 1;
export const XENSTORE_ERROR_NONE = 0;
export const XENSTORE_ERROR_COMM = 1;
export const XENSTORE_ERROR_RINGIDX = 2;
export const XENSTORE_ERROR_PROTO = 3;

export interface XsMessage {
  type: number;
  reqId: number;
  txId: number;
  payload: Buffer;
}

/** Encode one message (header + payload) into a fresh buffer. */
export function encodeMessage(type: number, reqId: number, txId: number, payload: Buffer | string): Buffer {
  const plen = typeof payload === 'string' ? Buffer.byteLength(payload, 'latin1') : payload.length;
  const b = Buffer.allocUnsafe(HEADER_SIZE + plen);
  b.writeUInt32LE(type >>> 0, 0);
  b.writeUInt32LE(reqId >>> 0, 4);
  b.writeUInt32LE(txId >>> 0, 8);
  b.writeUInt32LE(plen, 12);
  if (typeof payload === 'string') b.write(payload, HEADER_SIZE, 'latin1');
  else payload.copy(b, HEADER_SIZE);
  return b;
}

/** Build a payload of NUL-terminated strings. */
export function nulJoin(parts: readonly string[]): Buffer {
  let n = 0;
  for (const p of parts) n += Buffer.byteLength(p, 'latin1') + 1;
  const b = Buffer.allocUnsafe(n);
  let o = 0;
  for (const p of parts) {
    o += b.write(p, o, 'latin1');
    b[o++] = 0;
  }
  return b;
}

/** Split a payload on NULs. A trailing NUL terminates the last string (no empty tail element). */
export function splitNul(payload: Buffer): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === 0) {
      out.push(payload.toString('latin1', start, i));
      start = i + 1;
    }
  }
  if (start < payload.length) out.push(payload.toString('latin1', start, payload.length));
  return out;
}

export type FrameResult = XsMessage | 'need-more' | 'oversize';

/**
 * Incremental parser for a byte stream of xs_wire messages. Bytes are pushed as
 * they arrive; complete frames are taken one at a time. Only a partial trailing
 * frame is ever copied, so parsing stays linear in the input size.
 */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;

  /** Bytes received and not yet consumed as frames. */
  get buffered(): number {
    return this.buf.length - this.off;
  }

  push(chunk: Buffer): void {
    const rest = this.buf.length - this.off;
    if (rest === 0) {
      this.buf = chunk;
      this.off = 0;
      return;
    }
    const nb = Buffer.allocUnsafe(rest + chunk.length);
    this.buf.copy(nb, 0, this.off);
    chunk.copy(nb, rest);
    this.buf = nb;
    this.off = 0;
  }

  /** True when a whole frame (or an oversize header) is waiting: next() will not say 'need-more'. */
  get complete(): boolean {
    const avail = this.buf.length - this.off;
    if (avail < HEADER_SIZE) return false;
    const len = this.buf.readUInt32LE(this.off + 12);
    return len > XENSTORE_PAYLOAD_MAX || avail >= HEADER_SIZE + len;
  }

  /**
   * Take the next complete frame. The payload is a view into the receive
   * buffer: callers that keep it past the next push() must copy it.
   */
  next(): FrameResult {
    const avail = this.buf.length - this.off;
    if (avail < HEADER_SIZE) return 'need-more';
    const b = this.buf;
    const o = this.off;
    const len = b.readUInt32LE(o + 12);
    if (len > XENSTORE_PAYLOAD_MAX) return 'oversize';
    if (avail < HEADER_SIZE + len) return 'need-more';
    const msg: XsMessage = {
      type: b.readUInt32LE(o),
      reqId: b.readUInt32LE(o + 4),
      txId: b.readUInt32LE(o + 8),
      payload: b.subarray(o + HEADER_SIZE, o + HEADER_SIZE + len),
    };
    this.off = o + HEADER_SIZE + len;
    if (this.off === this.buf.length) {
      this.buf = EMPTY;
      this.off = 0;
    }
    return msg;
  }
}
const EMPTY = Buffer.alloc(0);

/** Growable output buffer of framed messages; take() hands the bytes over. */
export class OutBuf {
  private buf: Buffer;
  private len = 0;
  /** Number of framed messages currently buffered. */
  count = 0;

  constructor(private readonly initial = 16384) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  get length(): number {
    return this.len;
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const nb = Buffer.allocUnsafe(size);
    this.buf.copy(nb, 0, 0, this.len);
    this.buf = nb;
  }

  /** Append one framed message. */
  message(type: number, reqId: number, txId: number, payload: Buffer | string): void {
    const plen = payload.length; // latin1: one byte per character
    this.reserve(HEADER_SIZE + plen);
    const b = this.buf;
    let o = this.len;
    b.writeUInt32LE(type >>> 0, o);
    b.writeUInt32LE(reqId >>> 0, o + 4);
    b.writeUInt32LE(txId >>> 0, o + 8);
    b.writeUInt32LE(plen, o + 12);
    o += HEADER_SIZE;
    if (typeof payload === 'string') b.write(payload, o, 'latin1');
    else payload.copy(b, o);
    this.len = o + plen;
    this.count++;
  }

  /** Hand over the buffered bytes (a buffer no longer touched by this object). */
  take(): Buffer {
    let out: Buffer;
    if (this.len <= 4096) {
      // Small batches are copied into a pooled buffer; ours is reused.
      out = Buffer.allocUnsafe(this.len);
      this.buf.copy(out, 0, 0, this.len);
    } else {
      out = this.buf.subarray(0, this.len);
      this.buf = Buffer.allocUnsafe(this.initial);
    }
    this.len = 0;
    this.count = 0;
    return out;
  }
}
