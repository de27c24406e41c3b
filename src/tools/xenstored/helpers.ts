// Shared helpers for the xenstored tests and benchmark: a fake guest that
// speaks the ring protocol from a plain buffer, daemon fixtures, and a way to
// run the standalone daemon as a child process.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LocalClient, XsClientBase } from './client.js';
import type { DomainRingPort } from './conn.js';
import { Xenstored, type XenstoredOptions } from './daemon.js';
import {
  FrameReader, RING_CONNECTION, RING_REQ, RING_REQ_CONS, RING_REQ_PROD, RING_RSP, RING_RSP_CONS,
  RING_RSP_PROD, XENSTORE_RING_SIZE, XsType, encodeMessage, type XsMessage,
} from './wire.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/src/tools/xenode.js */
export const XENODE_JS = path.resolve(here, '..', 'xenode.js');
/** The repository root (dist/src/tools/xenstored -> ../../../..). */
export const REPO_ROOT = path.resolve(here, '..', '..', '..', '..');

export function tmpDir(prefix = 'xenstored-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** The guest side of a xenstore ring, living in an ordinary buffer. */
export class RingGuest extends XsClientBase {
  readonly page = new Uint8Array(4096);
  readonly view = new DataView(this.page.buffer);
  private readonly reader = new FrameReader();
  private pendingReq: Buffer = Buffer.alloc(0);
  notifications = 0;
  readonly port: DomainRingPort;
  /** When false the guest stops consuming responses (to test back-pressure). */
  consuming = true;
  /** Signal new requests only when the ring was consumed up to them, as Linux's xb_write does. */
  linuxSignals = false;
  messages: XsMessage[] = [];

  /** `daemon`: whom the guest's notifications reach (a test moves it to a restarted xenstored) */
  constructor(public daemon: Pick<Xenstored, 'ringNotified'>, readonly domid: number) {
    super();
    this.port = {
      page: this.page,
      notify: () => {
        this.notifications++;
        queueMicrotask(() => this.pump());
      },
    };
  }

  protected transmit(type: number, reqId: number, txId: number, payload: Buffer): void {
    this.sendBytes(encodeMessage(type, reqId, txId, payload));
  }

  /** Queue raw bytes towards the daemon (for malformed-input tests). */
  sendBytes(b: Buffer): void {
    this.pendingReq = Buffer.concat([this.pendingReq, b]);
    this.pushReq();
  }

  private pushReq(): void {
    if (this.pendingReq.length === 0) return;
    const cons = this.view.getUint32(RING_REQ_CONS, true);
    let prod = this.view.getUint32(RING_REQ_PROD, true);
    const space = XENSTORE_RING_SIZE - ((prod - cons) >>> 0);
    const n = Math.min(space, this.pendingReq.length);
    for (let i = 0; i < n; i++) {
      this.page[RING_REQ + (prod & (XENSTORE_RING_SIZE - 1))] = this.pendingReq[i]!;
      prod = (prod + 1) >>> 0;
    }
    this.pendingReq = this.pendingReq.subarray(n);
    if (n > 0) {
      const before = this.view.getUint32(RING_REQ_PROD, true);
      this.view.setUint32(RING_REQ_PROD, prod, true);
      if (!this.linuxSignals || ((before - this.view.getUint32(RING_REQ_CONS, true)) | 0) <= 0) this.daemon.ringNotified(this.domid);
    }
  }

  /** Consume responses from the ring and push more requests if there is room. */
  pump(): void {
    if (this.consuming) {
      const cons = this.view.getUint32(RING_RSP_CONS, true);
      const prod = this.view.getUint32(RING_RSP_PROD, true);
      const avail = (prod - cons) >>> 0;
      if (avail > 0 && avail <= XENSTORE_RING_SIZE) {
        const b = Buffer.alloc(avail);
        for (let i = 0; i < avail; i++) b[i] = this.page[RING_RSP + ((cons + i) & (XENSTORE_RING_SIZE - 1))]!;
        this.view.setUint32(RING_RSP_CONS, (cons + avail) >>> 0, true);
        this.reader.push(b);
        for (;;) {
          const r = this.reader.next();
          if (r === 'need-more' || r === 'oversize') break;
          const m = { ...r, payload: Buffer.from(r.payload) };
          this.messages.push(m);
          this.receive(m);
        }
        this.daemon.ringNotified(this.domid);
      }
    }
    this.pushReq();
  }

  /** Ask the daemon to reset the connection (connection field = XENSTORE_RECONNECT). */
  requestReconnect(): void {
    this.view.setUint32(RING_CONNECTION, 1, true);
    this.daemon.ringNotified(this.domid);
  }

  field(offset: number): number {
    return this.view.getUint32(offset, true);
  }

  close(): void {
    this.failAll(new Error('connection closed'));
  }
}

export interface Fixture {
  d: Xenstored;
  dom0: LocalClient;
  /** Introduce a guest with a ring in a plain buffer. */
  guest(domid: number): Promise<RingGuest>;
  /** Make INTRODUCE of g.domid map g's page, without introducing it. */
  attach(g: RingGuest): void;
  logs: string[];
  close(): Promise<void>;
}

export async function fixture(opts: XenstoredOptions = {}): Promise<Fixture> {
  const guests = new Map<number, RingGuest>();
  const logs: string[] = [];
  const d = new Xenstored({
    log: (l) => logs.push(l),
    ...opts,
    hooks: {
      mapDomainRing: (domid) => guests.get(domid)?.port ?? null,
      ...opts.hooks,
    },
  });
  await d.start();
  const dom0 = new LocalClient(d);
  return {
    d,
    dom0,
    logs,
    attach(g: RingGuest) {
      guests.set(g.domid, g);
    },
    async guest(domid: number): Promise<RingGuest> {
      const g = new RingGuest(d, domid);
      guests.set(domid, g);
      await dom0.introduce(domid, 1000 + domid, 10 + domid);
      return g;
    },
    async close() {
      dom0.close();
      await d.stop();
    },
  };
}

/**
 * One fixture listening on a Unix socket in a fresh directory, set up before a test file's
 * tests and closed after them: read ctx.f and ctx.sock inside the tests.
 */
export function socketFixture(): { f: Fixture; sock: string } {
  const ctx = { f: undefined as unknown as Fixture, sock: '' };
  before(async () => {
    ctx.sock = path.join(tmpDir(), 'socket');
    ctx.f = await fixture({ socketPath: ctx.sock });
  });
  after(() => ctx.f.close());
  return ctx;
}

/** Send a raw request and describe the reply as "TYPE payload" with NULs shown as '|'. */
export async function raw(c: XsClientBase, type: number, payload: string | Buffer, tx = 0): Promise<string> {
  const m = await c.rawRequest(type, payload, tx);
  const name = m.type === XsType.ERROR ? 'ERROR' : m.type === type ? 'OK' : `TYPE${m.type}`;
  return `${name} ${m.payload.toString('latin1').replace(/\0/g, '|')}`;
}

export interface Child {
  proc: ChildProcess;
  socket: string;
  stderr: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Run `xenode xenstored` in a child process and wait until its socket accepts. */
export async function spawnDaemon(socket: string, extra: string[] = []): Promise<Child> {
  try {
    fs.unlinkSync(socket);
  } catch {
    // absent
  }
  const proc = spawn(process.execPath, [XENODE_JS, 'xenstored', '--socket', socket, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const deadline = Date.now() + 10000;
  while (!err.includes('listening on')) {
    if (proc.exitCode !== null) throw new Error(`xenstored exited: ${err}`);
    if (Date.now() > deadline) throw new Error(`xenstored did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    proc,
    socket,
    stderr: () => err,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Find an executable on PATH (one implementation for every test). */
export { which } from '../../testing/peers.js';
