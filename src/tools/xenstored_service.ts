// xenstored as the toolstack holds it: inside its own process (`xenode run`,
// the tests of one domain), or as a process of its own (the daemon), as on
// Xen where xenstored is a daemon of the control domain that outlives a
// crash of the toolstack's own code and may itself be killed and started
// again. The process is started with the hypervisor's privileged interface
// as domain 0 on fd 3 (it maps each guest's xenstore page through its grant
// and binds its store port) and an IPC channel for what the hypervisor tells
// Xen's xenstored (a domain died) and for driver domains' streams. When it
// dies it is started again: it finds its store in its journal and its
// guests' connections in its domain file, and the toolstack's connections
// (ReconnectingClient) come back by themselves.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Hypervisor } from '../hv/hypervisor.js';
import { Xenstored, LocalClient, ReconnectingClient, type XsClientBase } from './xenstored/index.js';
import type { XenstoredCommand } from './xenstored/main.js';
import { XenstoreRings } from './services.js';
import { RestartBudget, START_TIMEOUT_MS, eachLine } from './supervise.js';

const XENODE_JS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'xenode.js');


export interface XenstoredService {
  /** 'process' when xenstored is a process of its own */
  readonly kind: 'in-process' | 'process';
  /** the process serving the store now (this one's for an in-process store; null between a death and its restart) */
  readonly pid: number | null;
  /** how many times it was started (1 for one that never died) */
  readonly starts: number;
  /** the store itself, when it is in this process */
  readonly daemon: Xenstored | null;
  /** a privileged connection of the toolstack's */
  connect(): Promise<XsClientBase>;
  /** serve `s` as domain `domid`'s own connection (a driver domain's) */
  attachDomainStream(s: net.Socket, domid: number): void;
  /** the hypervisor says domain `domid` shut down or died (@releaseDomain) */
  domainDied(domid: number): void;
  /**
   * XS_RELEASE of a domain about to be destroyed. In this process it is done
   * before this returns: the store must let go of the ring (guest memory)
   * and the port before the hypervisor frees them.
   */
  release(domid: number): void;
  /** `f` runs each time xenstored has been started again and is up (its old connections are gone) */
  onRestart(f: () => void): void;
  stop(): Promise<void>;
}

/** xenstored inside the toolstack's process; rings reached in place (`ringOffset`: where a domain's ring GFN is in its memory). */
export async function inProcessXenstored(hv: Hypervisor, ringOffset: (domid: number, gfn: number) => number | null, o: { socketPath?: string; log?: (line: string) => void }): Promise<XenstoredService> {
  const rings = new XenstoreRings(hv, ringOffset);
  const xs = new Xenstored({ hooks: rings, log: o.log, socketPath: o.socketPath });
  rings.xs = xs;
  await xs.start();
  return {
    kind: 'in-process',
    pid: process.pid,
    starts: 1,
    daemon: xs,
    connect: async () => new LocalClient(xs),
    attachDomainStream: (s, domid) => xs.attachDomainStream(s, domid),
    domainDied: (domid) => xs.domainDied(domid),
    release: (domid) => {
      try { xs.release(domid); } catch { /* not introduced */ }
    },
    onRestart: () => { /* it lives and dies with this process */ },
    stop: () => xs.stop(),
  };
}

export interface XenstoredProcessOptions {
  socketPath: string;
  /** its journal and its domains' connections; both are removed at first start (a new hypervisor has no domains yet) */
  dbPath: string;
  domainsPath: string;
  log: (line: string) => void;
  /** domains that died but are not destroyed yet: said again to a xenstored started again */
  deadDomains: () => Iterable<number>;
}

/** xenstored as a process of the control domain's, started again when it dies. */
export class XenstoredProcess implements XenstoredService {
  readonly kind = 'process';
  readonly daemon = null;
  private child: ChildProcess | null = null;
  private up = false;
  /** the driver domains' streams that wait for a xenstored that is up (deaths are said to each one that starts: deadDomains) */
  private backlog: { m: XenstoredCommand; handle?: net.Socket }[] = [];
  private stopping = false;
  private readonly deaths = new RestartBudget();
  private exited: Promise<void> = Promise.resolve();
  /** the toolstack's connection for RELEASE (the other process maps the ring itself: it outlives the domain's memory) */
  private admin: XsClientBase | null = null;
  starts = 0;

  private constructor(private readonly hv: Hypervisor, private readonly o: XenstoredProcessOptions) {}

  get pid(): number | null {
    return this.up ? this.child?.pid ?? null : null;
  }

  static async start(hv: Hypervisor, o: XenstoredProcessOptions): Promise<XenstoredProcess> {
    for (const f of [o.dbPath, o.domainsPath, `${o.domainsPath}.tmp`]) fs.rmSync(f, { force: true });
    const x = new XenstoredProcess(hv, o);
    await x.launch();
    try {
      x.admin = await x.connect();
    } catch (e) {
      await x.stop();
      throw e;
    }
    return x;
  }

  private launch(): Promise<void> {
    // --no-fsync: what write() put in the page cache outlives a killed process, and nothing here outlives the host
    // (a new daemon starts without domains and removes both files), so no sync is waited for
    const child = spawn(process.execPath, [XENODE_JS, 'xenstored', '--control-domain', '--no-fsync', '--socket', this.o.socketPath, '--db', this.o.dbPath, '--domains', this.o.domainsPath], {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'ipc'],
    });
    this.child = child;
    this.up = false;
    this.starts++;
    const priv = child.stdio[3] as net.Socket;
    this.hv.servePrivcmdDom0(priv, { mayMap: true, peerPid: child.pid });
    const said = eachLine(child.stderr!, (line) => this.o.log(line.replace(/^xenstored: /, ''))); // the caller's log names it already
    const ready = new Promise<void>((resolve, reject) => {
      const late = setTimeout(() => {
        reject(new Error(`xenstored (pid ${child.pid}) did not come up within ${START_TIMEOUT_MS / 1000} s`));
        child.kill('SIGKILL');
      }, START_TIMEOUT_MS);
      child.on('message', (m: { op?: string }) => {
        if (m?.op !== 'up' || this.child !== child) return;
        clearTimeout(late);
        this.up = true;
        // what it cannot know of: domains that died while no xenstored ran
        for (const domid of this.o.deadDomains()) this.tell({ op: 'died', domid });
        const q = this.backlog;
        this.backlog = [];
        for (const b of q) this.tell(b.m, b.handle);
        if (this.starts > 1) {
          for (const f of this.restartListeners) {
            try { f(); } catch (e) { this.o.log(`after xenstored's restart: ${(e as Error).message}`); }
          }
        }
        resolve();
      });
      child.once('exit', (code, signal) => {
        clearTimeout(late);
        reject(new Error(`xenstored ${signal ? `was killed by ${signal}` : `exited with ${code}`} before it was up${said() ? `: ${said().trim()}` : ''}`));
      });
    });
    this.exited = new Promise<void>((res) => {
      child.once('exit', (code, signal) => {
        priv.destroy();
        const wasUp = this.up;
        if (this.child === child) {
          this.child = null;
          this.up = false;
        }
        res();
        if (this.stopping || (!wasUp && this.starts === 1)) return;
        this.o.log(`xenstored (pid ${child.pid}) ${signal ? `killed by ${signal}` : `exited with ${code}`}`);
        this.restart();
      });
    });
    ready.catch(() => {});
    return ready;
  }

  private restart(): void {
    if (!this.deaths.died()) {
      this.o.log(`xenstored ${this.deaths.why}; left down (guests' xenstore requests wait in their rings)`);
      return;
    }
    this.launch().then(
      () => this.o.log(`xenstored started again (pid ${this.child?.pid})`),
      (e: Error) => this.o.log(`xenstored cannot be started again: ${e.message}`),
    );
  }

  private tell(m: XenstoredCommand, handle?: net.Socket): void {
    if (!this.up || !this.child?.connected) {
      // a death is said to every xenstored that starts (deadDomains), a stream waits for one
      if (m.op === 'attach') this.backlog.push({ m, handle });
      return;
    }
    this.child.send(m, handle, (e) => {
      if (e && m.op === 'attach') this.o.log(`d${m.domid}: its xenstore stream could not be handed to xenstored: ${e.message}`);
    });
  }

  connect(): Promise<XsClientBase> {
    return ReconnectingClient.connect(this.o.socketPath);
  }

  /** `s` must not have been read from in this process (a paused socket): what node read of it would not go with it */
  attachDomainStream(s: net.Socket, domid: number): void {
    this.tell({ op: 'attach', domid }, s);
  }

  domainDied(domid: number): void {
    this.tell({ op: 'died', domid });
  }

  release(domid: number): void {
    this.admin?.release(domid).catch(() => { /* not introduced */ });
  }

  private readonly restartListeners: (() => void)[] = [];
  onRestart(f: () => void): void {
    this.restartListeners.push(f);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.admin?.close();
    for (const b of this.backlog) b.handle?.destroy();
    this.backlog = [];
    const child = this.child;
    if (child) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(t);
    }
  }
}
