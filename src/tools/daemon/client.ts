// The client side of the daemon API (protocol.ts): one Unix-socket connection
// carrying any number of concurrent requests, matched to responses by id, and
// the streams (console, domain events) some requests open. The xl CLI and the
// tests talk to the daemon only through this.

import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { API_VERSION, LineReader, type Ops, type Request, type Response, type StreamEvent, type ApiError, type DomainChange } from './protocol.js';

/** An error the daemon answered with (or a transport failure, code ECONNREFUSED/ENOENT/ECONNRESET/EPROTO). */
export class ApiCallError extends Error implements ApiError {
  constructor(readonly code: string, message: string, readonly op?: string) {
    super(message);
    this.name = 'ApiCallError';
  }
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * Where the daemon keeps its state (configs, logs, console logs):
 * $XENODE_STATE_DIR, else /var/lib/xenode for root, else
 * $XDG_STATE_HOME/xenode (default ~/.local/state/xenode).
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XENODE_STATE_DIR) return path.resolve(env.XENODE_STATE_DIR);
  if (isRoot()) return '/var/lib/xenode';
  const xdg = env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(xdg, 'xenode');
}

/**
 * The API socket: $XENODE_SOCKET; else <state>/xenode.sock when
 * $XENODE_STATE_DIR is set (one variable isolates a whole daemon, as tests
 * do); else /run/xenode/xenode.sock for root; else
 * $XDG_RUNTIME_DIR/xenode/xenode.sock, falling back to <state>/xenode.sock.
 */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XENODE_SOCKET) return path.resolve(env.XENODE_SOCKET);
  if (env.XENODE_STATE_DIR) return path.join(defaultStateDir(env), 'xenode.sock');
  if (isRoot()) return '/run/xenode/xenode.sock';
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'xenode', 'xenode.sock');
  return path.join(defaultStateDir(env), 'xenode.sock');
}

/** An open stream (console or domain events). */
export interface StreamHandle {
  /** the id of the request that opened it */
  readonly id: number;
  /** resolves with the reason when the stream ends (detach, domain died, connection lost) */
  readonly ended: Promise<string>;
  /** stops the stream (idempotent) */
  close(): Promise<void>;
}

export interface ConsoleHandle extends StreamHandle {
  readonly domid: number;
}

interface Pending {
  op: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Stream {
  onEvent: (e: StreamEvent) => void;
  end: (reason: string) => void;
}

type Hello = Ops['hello']['result'];

export class DaemonClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly streams = new Map<number, Stream>();
  private readonly lines = new LineReader();
  private closed = false;
  /** the daemon's answer to `hello` */
  hello!: Hello;

  private constructor(private readonly sock: net.Socket, readonly socketPath: string) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('error', () => { /* reported through 'close' */ });
    sock.on('close', () => this.onClose());
  }

  /** Connects and checks the protocol version with `hello`. */
  static async connect(socketPath: string = defaultSocketPath()): Promise<DaemonClient> {
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath);
      s.once('connect', () => { s.removeAllListeners('error'); resolve(s); });
      s.once('error', (e: NodeJS.ErrnoException) => {
        const code = e.code ?? 'EIO';
        const hint = code === 'ENOENT' || code === 'ECONNREFUSED' ? ' (is `xenode daemon` running? XENODE_SOCKET / XENODE_STATE_DIR choose the socket)' : '';
        reject(new ApiCallError(code, `cannot connect to the xenode daemon at ${socketPath}: ${e.message}${hint}`));
      });
    });
    const c = new DaemonClient(sock, socketPath);
    try {
      c.hello = await c.call('hello', {});
    } catch (e) {
      c.close();
      throw e;
    }
    if (c.hello.version !== API_VERSION) {
      c.close();
      throw new ApiCallError('EPROTO', `daemon speaks API version ${c.hello.version}, this client ${API_VERSION}`);
    }
    return c;
  }

  /** One request; resolves with its result or rejects with ApiCallError. */
  call<Op extends keyof Ops>(op: Op, args: Ops[Op]['args']): Promise<Ops[Op]['result']> {
    return this.send(op, args).promise;
  }

  private send<Op extends keyof Ops>(op: Op, args: Ops[Op]['args'], stream?: Stream): { id: number; promise: Promise<Ops[Op]['result']> } {
    const id = this.nextId++;
    const promise = new Promise<Ops[Op]['result']>((resolve, reject) => {
      if (this.closed) {
        reject(new ApiCallError('ECONNRESET', 'connection to the xenode daemon is closed', op));
        return;
      }
      this.pending.set(id, { op, resolve: resolve as (v: unknown) => void, reject });
      // registered before sending: stream events may follow the response at once
      if (stream) this.streams.set(id, stream);
      const req: Request<Op> = { v: API_VERSION, id, op, args };
      this.sock.write(JSON.stringify(req) + '\n');
    });
    return { id, promise };
  }

  /**
   * Attaches to a domain's console: `onData` gets every byte the guest
   * writes (after the kept tail when `replay`), until close() or the domain dies.
   */
  async attachConsole(dom: string | number, onData: (data: Buffer) => void, opts: { replay?: boolean } = {}): Promise<ConsoleHandle> {
    const s = this.openStream((e) => { if (e.event === 'console') onData(Buffer.from(e.data, 'base64')); });
    const { id, promise } = this.send('console.attach', { dom, replay: opts.replay ?? false }, s.stream);
    let r;
    try { r = await promise; } catch (e) { this.streams.delete(id); throw e; }
    return { id, domid: r.domid, ended: s.ended, close: () => this.closeStream(id, 'console.detach') };
  }

  /** Subscribes to domain changes (created, shutdown, destroyed, restarted, ...). */
  async subscribe(onChange: (c: DomainChange) => void): Promise<StreamHandle> {
    const s = this.openStream((e) => { if (e.event === 'domain') onChange(e.change); });
    const { id, promise } = this.send('events.subscribe', {}, s.stream);
    try { await promise; } catch (e) { this.streams.delete(id); throw e; }
    return { id, ended: s.ended, close: () => this.closeStream(id, 'stream.close') };
  }

  private openStream(onEvent: (e: StreamEvent) => void): { stream: Stream; ended: Promise<string> } {
    let end!: (reason: string) => void;
    const ended = new Promise<string>((r) => { end = r; });
    return { stream: { onEvent, end }, ended };
  }

  private async closeStream(id: number, op: 'console.detach' | 'stream.close'): Promise<void> {
    const s = this.streams.get(id);
    if (!s) return;
    if (!this.closed) {
      try { await this.call(op, { stream: id }); } catch (e) {
        // the daemon may have ended it first (domain died): not an error
        if (!(e instanceof ApiCallError && (e.code === 'ENOENT' || e.code === 'ECONNRESET'))) throw e;
      }
    }
    this.streams.delete(id);
    s.end('detached');
  }

  private onData(chunk: string): void {
    this.lines.push(chunk);
    let line: string | null;
    while (!this.closed && (line = this.lines.shift()) !== null) {
      let msg: Response | StreamEvent;
      try { msg = JSON.parse(line) as Response | StreamEvent; } catch {
        this.fail(new ApiCallError('EPROTO', `daemon sent a malformed message: ${line.slice(0, 80)}`));
        return;
      }
      if ('ok' in msg) {
        const p = this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id);
        if (msg.ok) p.resolve(msg.result);
        else p.reject(new ApiCallError(msg.error.code, msg.error.message, p.op));
      } else if ('event' in msg) {
        const s = this.streams.get(msg.id);
        if (!s) continue;
        if (msg.event === 'end') {
          this.streams.delete(msg.id);
          s.end(msg.reason);
        } else {
          s.onEvent(msg);
        }
      }
    }
  }

  private fail(e: ApiCallError): void {
    this.sock.destroy();
    this.onClose(e);
  }

  private onClose(e: ApiCallError = new ApiCallError('ECONNRESET', 'the xenode daemon closed the connection')): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) p.reject(new ApiCallError(e.code, e.message, p.op));
    this.pending.clear();
    for (const s of this.streams.values()) s.end('disconnected');
    this.streams.clear();
  }

  /** Closes the connection; pending calls reject, streams end with 'disconnected'. */
  close(): void {
    this.sock.end();
    this.sock.destroy();
    this.onClose(new ApiCallError('ECONNRESET', 'connection to the xenode daemon is closed'));
  }
}
