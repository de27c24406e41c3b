// A client of the NBD protocol (the nbd project's doc/proto.md), enough to
// put a disk image format we do not read ourselves (qcow2, vhd, qed) behind
// blkback: QEMU's qemu-nbd serves the image on a Unix socket and does the
// format; this speaks the fixed-newstyle handshake with NBD_OPT_EXPORT_NAME
// and simple replies, with any number of requests in flight, matched by
// their handle.

import net from 'node:net';

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
const NBD_FLAG_NO_ZEROES = 1 << 1;
const NBD_OPT_EXPORT_NAME = 1;
const NBD_REQUEST_MAGIC = 0x25609513;
const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** transmission flags */
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
const NBD_CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, WRITE_ZEROES: 6 } as const;

export class NbdError extends Error {
  constructor(message: string, readonly errno = 0) {
    super(message);
    this.name = 'NbdError';
  }
}

interface Pending { resolve: () => void; reject: (e: Error) => void; read?: Uint8Array }

export class NbdClient {
  private buf: Buffer = Buffer.alloc(0);
  private readonly pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  /** the read reply whose data is being received */
  private reading: { p: Pending; got: number } | null = null;
  private dead: Error | null = null;

  private constructor(private readonly sock: net.Socket, readonly size: bigint, readonly flags: number) {
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (e) => this.fail(new NbdError(`nbd connection: ${e.message}`)));
    sock.on('close', () => this.fail(new NbdError('nbd connection closed')));
  }

  /** Connects to an NBD server's Unix socket and negotiates the default export. */
  static connect(path: string, timeoutMs = 10_000): Promise<NbdClient> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      let got = Buffer.alloc(0);
      let stage = 0;
      const timer = setTimeout(() => done(new NbdError(`nbd handshake with ${path} took over ${timeoutMs} ms`)), timeoutMs);
      let settled = false;
      const done = (e: Error | null, c?: NbdClient) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.off('data', onData);
        sock.off('error', onError);
        sock.off('close', onClose);
        if (e) { sock.destroy(); reject(e); } else resolve(c!);
      };
      const onError = (e: Error) => done(new NbdError(`nbd ${path}: ${e.message}`));
      const onClose = () => done(new NbdError(`nbd ${path}: closed during the handshake`));
      const onData = (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (stage === 0 && got.length >= 18) {
          if (got.readBigUInt64BE(0) !== NBDMAGIC || got.readBigUInt64BE(8) !== IHAVEOPT) return done(new NbdError(`${path} is not a newstyle NBD server`));
          const hflags = got.readUInt16BE(16);
          if (!(hflags & NBD_FLAG_FIXED_NEWSTYLE)) return done(new NbdError(`${path}: the server does not do fixed newstyle negotiation`));
          const noZeroes = (hflags & NBD_FLAG_NO_ZEROES) !== 0;
          const out = Buffer.alloc(4 + 16);
          out.writeUInt32BE(NBD_FLAG_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_NO_ZEROES : 0), 0);
          out.writeBigUInt64BE(IHAVEOPT, 4);
          out.writeUInt32BE(NBD_OPT_EXPORT_NAME, 12);
          out.writeUInt32BE(0, 16); // the default export: ""
          sock.write(out);
          got = got.subarray(18);
          stage = noZeroes ? 1 : 2;
        }
        const want = stage === 1 ? 10 : 10 + 124;
        if (stage >= 1 && got.length >= want) {
          const c = new NbdClient(sock, got.readBigUInt64BE(0), got.readUInt16BE(8));
          const rest = got.subarray(want);
          done(null, c);
          if (rest.length) c.onData(rest);
        }
      };
      sock.on('data', onData);
      sock.on('error', onError);
      sock.on('close', onClose);
    });
  }

  get readOnly(): boolean { return (this.flags & NBD_FLAG_READ_ONLY) !== 0; }

  private fail(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    if (this.reading) this.reading.p.reject(e);
    this.reading = null;
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      if (this.reading) {
        const r = this.reading, dst = r.p.read!;
        const n = Math.min(dst.length - r.got, this.buf.length);
        dst.set(this.buf.subarray(0, n), r.got);
        r.got += n;
        this.buf = this.buf.subarray(n);
        if (r.got < dst.length) return;
        this.reading = null;
        r.p.resolve();
        continue;
      }
      if (this.buf.length < 16) return;
      if (this.buf.readUInt32BE(0) !== NBD_SIMPLE_REPLY_MAGIC) {
        this.fail(new NbdError('nbd: a reply without the simple reply magic'));
        this.sock.destroy();
        return;
      }
      const error = this.buf.readUInt32BE(4), handle = this.buf.readBigUInt64BE(8);
      this.buf = this.buf.subarray(16);
      const p = this.pending.get(handle);
      if (!p) {
        this.fail(new NbdError(`nbd: a reply to handle ${handle}, which was not asked`));
        this.sock.destroy();
        return;
      }
      this.pending.delete(handle);
      if (error) p.reject(new NbdError(`nbd: the server answered error ${error}`, error));
      else if (p.read && p.read.length) this.reading = { p, got: 0 };
      else p.resolve();
    }
  }

  private request(type: number, offset: bigint, length: number, data?: Uint8Array, read?: Uint8Array): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    const handle = this.nextHandle++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(offset, 16);
    h.writeUInt32BE(length, 24);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { resolve, reject, read });
      this.sock.write(h);
      // copied: the caller's buffer may be reused once the request is on its way
      if (data) this.sock.write(Buffer.from(data));
    });
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.request(NBD_CMD.READ, BigInt(offset), dst.length, undefined, dst);
  }

  write(src: Uint8Array, offset: number): Promise<void> {
    return this.request(NBD_CMD.WRITE, BigInt(offset), src.length, src);
  }

  flush(): Promise<void> {
    if (!(this.flags & NBD_FLAG_SEND_FLUSH)) return Promise.resolve();
    return this.request(NBD_CMD.FLUSH, 0n, 0);
  }

  /** NBD_CMD_WRITE_ZEROES, the server free to punch a hole; false when the server does not offer it. */
  async writeZeroes(offset: number, length: number): Promise<boolean> {
    if (!(this.flags & NBD_FLAG_SEND_WRITE_ZEROES)) return false;
    await this.request(NBD_CMD.WRITE_ZEROES, BigInt(offset), length);
    return true;
  }

  /** NBD_CMD_DISC, then the socket closed. */
  close(): void {
    if (!this.dead) {
      const h = Buffer.alloc(28);
      h.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
      h.writeUInt16BE(NBD_CMD.DISC, 6);
      this.sock.end(h);
      this.fail(new NbdError('nbd connection closed by the client'));
    }
  }
}
