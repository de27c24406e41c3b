// The API socket: newline-delimited JSON requests in, one response per
// request and stream events out (protocol.ts). Bad bytes get an error
// response and the connection stays up; a client vanishing mid-stream only
// ends its streams.

import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { API_VERSION, LineReader, type Ops, type Response, type StreamEvent } from './protocol.js';
import { ApiFailure } from './validate.js';

/** Longest request line accepted (a DomainConfig is a few KiB). */
const MAX_LINE = 1 << 20;
/** Streams one connection may hold open (each is a console reader or an event listener in the daemon). */
const MAX_STREAMS = 1024;
/**
 * Unread output beyond which a client is slowed: its streams end ('overrun')
 * and its further requests wait until it has read what it was sent.
 */
const MAX_BACKLOG = 8 << 20;

export interface Stream {
  /** ends the stream's source side (detach a console reader, unsubscribe) */
  close(): void;
  kind: 'console' | 'events';
}

/** One client connection as handlers see it. */
export class Connection {
  readonly streams = new Map<number, Stream>();
  private readonly lines = new LineReader(MAX_LINE, () => this.fail(0, 'EPROTO', `request longer than ${MAX_LINE} bytes`));
  /** reading paused until the client reads its backlog */
  private throttled = false;
  closed = false;

  constructor(readonly sock: net.Socket, private readonly server: ApiServer) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('error', () => { /* reported through 'close' */ });
    sock.on('close', () => this.onClose());
  }

  private send(m: Response | StreamEvent): void {
    if (this.closed) return;
    this.sock.write(JSON.stringify(m) + '\n');
    if (!this.throttled && this.sock.writableLength > MAX_BACKLOG) {
      // a client pipelining requests without reading the answers would grow the daemon without bound
      this.throttled = true;
      this.sock.pause();
      this.sock.once('drain', () => {
        this.throttled = false;
        this.sock.resume();
        this.serveLines();
      });
    }
  }

  respond(id: number, result: unknown): void {
    this.send({ id, ok: true, result });
  }

  fail(id: number, code: string, message: string): void {
    this.send({ id, ok: false, error: { code, message } });
  }

  /** Sends a stream event; ends the stream if the client stopped reading. */
  event(e: StreamEvent): void {
    if (this.closed || !this.streams.has(e.id)) return;
    if (this.sock.writableLength > MAX_BACKLOG) {
      this.endStream(e.id, 'overrun: the client is not reading');
      return;
    }
    this.send(e);
  }

  /** Registers a stream opened by request `id`; an id already streaming is refused (its source would leak). */
  addStream(id: number, s: Stream): void {
    if (this.streams.has(id)) {
      s.close();
      throw new ApiFailure('EBUSY', `stream ${id} is already open on this connection`);
    }
    if (this.streams.size >= MAX_STREAMS) {
      s.close();
      throw new ApiFailure('EBUSY', `this connection already has ${MAX_STREAMS} streams open`);
    }
    this.streams.set(id, s);
  }

  /** Ends a stream from the daemon's side (domain died, daemon stopping). */
  endStream(id: number, reason: string): void {
    const s = this.streams.get(id);
    if (!s) return;
    this.streams.delete(id);
    s.close();
    this.send({ id, event: 'end', reason });
  }

  private onData(chunk: string): void {
    this.lines.push(chunk);
    this.serveLines();
  }

  private serveLines(): void {
    let line: string | null;
    while (!this.throttled && !this.closed && (line = this.lines.shift()) !== null) this.server.handleLine(this, line);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.streams.values()) s.close();
    this.streams.clear();
    this.server.dropConnection(this);
  }

  close(): void {
    this.sock.end();
  }
}

export type Handler<Op extends keyof Ops> = (args: Record<string, unknown>, ctx: { conn: Connection; id: number }) => Promise<Ops[Op]['result']> | Ops[Op]['result'];
export type Handlers = { [Op in keyof Ops]: Handler<Op> };

export class ApiServer {
  private server: net.Server | null = null;
  readonly conns = new Set<Connection>();

  constructor(
    readonly socketPath: string,
    private readonly handlers: Handlers,
    private readonly log: (m: string) => void,
  ) {}

  /** Listens (socket mode 0600; its directory is created 0700 if missing). */
  async listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true, mode: 0o700 });
    const server = net.createServer((s) => this.conns.add(new Connection(s, this)));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        reject(e.code === 'EADDRINUSE' ? new Error(`${this.socketPath} is in use (another xenode daemon is starting?)`) : e);
      });
      // the socket is created with the process umask; tighten before anyone can have a reason to connect
      const old = process.umask(0o177);
      server.listen(this.socketPath, () => {
        process.umask(old);
        server.removeAllListeners('error');
        resolve();
      });
    });
    fs.chmodSync(this.socketPath, 0o600);
    server.on('error', (e) => this.log(`API socket error: ${e.message}`));
    this.server = server;
  }

  dropConnection(c: Connection): void {
    this.conns.delete(c);
  }

  handleLine(conn: Connection, line: string): void {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      conn.fail(0, 'EPROTO', `malformed JSON: ${line.slice(0, 60)}`);
      return;
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req)) {
      conn.fail(0, 'EPROTO', 'a request must be a JSON object {v, id, op, args}');
      return;
    }
    const r = req as Record<string, unknown>;
    const id = typeof r.id === 'number' && Number.isSafeInteger(r.id) && r.id >= 0 ? r.id : null;
    if (id === null) {
      conn.fail(0, 'EPROTO', 'request id must be a non-negative integer');
      return;
    }
    if (r.v !== API_VERSION) {
      conn.fail(id, 'EPROTO', `protocol version ${JSON.stringify(r.v)} is not supported (this daemon speaks ${API_VERSION})`);
      return;
    }
    if (typeof r.op !== 'string' || !Object.hasOwn(this.handlers, r.op)) {
      conn.fail(id, 'EPROTO', `unknown op ${JSON.stringify(r.op)}`);
      return;
    }
    if (r.args !== undefined && (typeof r.args !== 'object' || r.args === null || Array.isArray(r.args))) {
      conn.fail(id, 'EINVAL', 'args must be an object');
      return;
    }
    const handler = this.handlers[r.op as keyof Ops] as Handler<keyof Ops>;
    const args = (r.args ?? {}) as Record<string, unknown>;
    let out;
    try {
      out = handler(args, { conn, id });
    } catch (e) {
      this.failWith(conn, id, r.op, e);
      return;
    }
    if (out instanceof Promise) {
      out.then((v) => conn.respond(id, v ?? null), (e: unknown) => this.failWith(conn, id, r.op as string, e));
    } else {
      conn.respond(id, out ?? null);
    }
  }

  private failWith(conn: Connection, id: number, op: string, e: unknown): void {
    if (e instanceof ApiFailure) {
      conn.fail(id, e.code, e.message);
      return;
    }
    // our bug, not the client's: keep serving, keep the trace
    this.log(`${op}: internal error: ${e instanceof Error ? e.stack : String(e)}`);
    conn.fail(id, 'EIO', `${op} failed: ${e instanceof Error ? e.message : String(e)}`);
  }

  async close(): Promise<void> {
    for (const c of this.conns) {
      for (const id of [...c.streams.keys()]) c.endStream(id, 'daemon stopping');
      c.close();
    }
    const s = this.server;
    this.server = null;
    if (s) {
      const closed = new Promise<void>((r) => s.close(() => r()));
      // clients get a moment to read the last events, then their sockets go
      await Promise.race([closed, new Promise((r) => setTimeout(r, 300).unref())]);
      for (const c of this.conns) c.sock.destroy();
      await closed;
    }
    try { fs.unlinkSync(this.socketPath); } catch { /* gone */ }
  }
}
